"""The SGD update of one NumPy parameter in a single pass (:class:`connsim.trainer.optim.SGD`).

The element-wise NumPy update reads and writes the parameter, its gradient and its momentum
buffer about eight times; this kernel reads each once. Scalars arrive in the parameter's dtype and
no fastmath is used, so every operation rounds as NumPy's does: the result is bit-identical
(tested against the NumPy update).
"""

import numba

from .._config import njit

JIT = not numba.config.DISABLE_JIT  # else the NumPy update: a Python loop would crawl


@njit
def sgd_update(p, g, buf, has_buf, mask, lr, momentum, wd, nesterov, out):
    """``out = (p - lr * d) * mask`` with ``d`` PyTorch's SGD direction; ``buf`` (the momentum
    buffer, ignored when ``momentum`` is 0) is updated in place (``has_buf``: it holds the last
    step's value; else it is set to the gradient). ``mask`` with no elements means no mask."""
    masked = mask.size > 0
    for i in range(p.size):
        gi = g[i]
        if wd != 0:
            gi = wd * p[i] + gi
        if momentum != 0:
            bi = buf[i] * momentum + gi if has_buf else gi
            buf[i] = bi
            gi = gi + momentum * bi if nesterov else bi
        v = p[i] - lr * gi
        out[i] = v * mask[i] if masked else v

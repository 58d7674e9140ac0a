"""Fused NumPy-only kernels of the trainer: the SGD update of one parameter in a single pass
(:class:`connsim.trainer.optim.SGD`).

The element-wise array update reads and writes the parameter, its gradient and its momentum
buffer about eight times; the kernel reads each once. The array version stays for other backends
and under ``NUMBA_DISABLE_JIT``. Scalars arrive in the arrays' dtype and no fastmath is used, so
every operation rounds as NumPy's does: results are bit-identical (tested against the array
version). The kernel is serial: a second Numba thread would fight BLAS's for the cores.
"""

import numba

from .._config import njit

JIT = not numba.config.DISABLE_JIT  # else the array version runs: this loop would crawl


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

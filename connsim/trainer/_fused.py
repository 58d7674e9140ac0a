"""Fused NumPy-only kernels of the trainer: the SGD update of one parameter in a single pass
(:class:`connsim.trainer.optim.SGD`), BatchNorm's statistics and passes (with the ReLU that
follows it, when fused), pooling, a conv layer's input gradient from its window gradients, and
the products and weight gradient of a dense or conv layer at its kept weights
(:mod:`connsim.trainer.layers`).

The array versions stay for other backends and under ``NUMBA_DISABLE_JIT``. Every kernel is
serial: a second Numba thread would fight BLAS's for the cores.

- The SGD update reads the parameter, its gradient and its momentum buffer once each (the
  array update reads and writes them about eight times). Scalars arrive in the arrays' dtype and
  no fastmath is used, so every operation rounds as NumPy's does: bit-identical.
- Pooling does NumPy's operations in NumPy's order and dtype: bit-identical, except that the
  sign of a zero maximum may differ (NumPy's vectorised maximum leaves it open). The sum of a
  conv layer's window gradients, plane by plane, is bit-identical to the array version's.
- BatchNorm's sums (mean, variance, the gradients of its scale and shift) and a sparse layer's
  products and weight gradient accumulate in float64 and may be reassociated (``sum_njit``),
  and BatchNorm's input gradient is evaluated in float64 and rounded once: they differ from
  NumPy's float32 pairwise sums by rounding, and are the more accurate. Normalising, scaling
  and shifting round as NumPy's element-wise operations do.

BatchNorm kernels see an ``(N, C, H, W)`` or ``(N, C)`` array as a C-contiguous 3-D array of
*planes* whose channel axis is ``axis``: ``(C, 1, N*H*W)`` (0) when channels come first in
memory (a conv layer's output, a view of its ``(C, N, H, W)`` product), ``(N, C, H*W)`` (1) for
a C-contiguous map and ``(N, 1, C)`` (2) for a C-contiguous ``(N, C)`` batch, so that the inner
loop always runs along memory.
"""

import numba
import numpy as np

from .._config import njit, sum_njit

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


@sum_njit
def bn_moments(x, axis, mean, var):
    """Per-channel mean and biased variance (two passes, the second over centred values) of the
    planes ``x`` (channels on ``axis``) into the float64 arrays ``mean`` and ``var``."""
    a, b, s = x.shape
    count = x.size // mean.size
    mean[:] = 0.0
    var[:] = 0.0
    for i in range(a):
        for j in range(b):
            if axis == 2:
                for k in range(s):
                    mean[k] += np.float64(x[i, j, k])
            else:
                t = 0.0
                for k in range(s):
                    t += np.float64(x[i, j, k])
                mean[i if axis == 0 else j] += t
    mean /= count
    for i in range(a):
        for j in range(b):
            if axis == 2:
                for k in range(s):
                    d = x[i, j, k] - mean[k]
                    var[k] += d * d
            else:
                c = i if axis == 0 else j
                m, t = mean[c], 0.0
                for k in range(s):
                    d = x[i, j, k] - m
                    t += d * d
                var[c] += t
    var /= count


@njit
def bn_apply(x, axis, mean, inv_std, weight, bias, relu, xhat, y):
    """``xhat = (x - mean) * inv_std`` and ``y = weight * xhat + bias`` per channel, in the
    arrays' dtype, as NumPy's element-wise operations round them; with ``relu``, then
    ``y * (y > 0)`` (:class:`connsim.trainer.layers.ReLU`'s product: -0.0 for negatives, NaN
    kept)."""
    a, b, s = x.shape
    for i in range(a):
        for j in range(b):
            if axis == 2:
                for k in range(s):
                    h = (x[i, j, k] - mean[k]) * inv_std[k]
                    xhat[i, j, k] = h
                    r = weight[k] * h + bias[k]
                    y[i, j, k] = r * 0.0 if relu and not r > 0 else r
            else:
                c = i if axis == 0 else j
                m, v, w, o = mean[c], inv_std[c], weight[c], bias[c]
                for k in range(s):
                    h = (x[i, j, k] - m) * v
                    xhat[i, j, k] = h
                    r = w * h + o
                    y[i, j, k] = r * 0.0 if relu and not r > 0 else r


@sum_njit
def bn_grad_sums(dy, xhat, axis, out, gbias, gweight):
    """Per-channel sums of ``dy`` and ``dy * xhat`` into the float64 arrays ``gbias`` and
    ``gweight`` (the gradients of the shift and the scale). With an ``out`` (the forward
    output after a fused ReLU; no elements: none), ``dy`` counts only where ``out > 0``, as
    ``dy * (out > 0)`` (``ReLU``'s backward product)."""
    a, b, s = dy.shape
    # the ReLU test is written out in every loop of these kernels: a helper taking ``out`` and
    # the indices stopped the loops vectorising (a LeNet-5 step went from 9.9 to 14.7 ms)
    relu = out.size > 0
    gbias[:] = 0.0
    gweight[:] = 0.0
    for i in range(a):
        for j in range(b):
            if axis == 2:
                for k in range(s):
                    g = np.float64(dy[i, j, k])
                    if relu and not out[i, j, k] > 0:
                        g = g * 0.0
                    gbias[k] += g
                    gweight[k] += g * xhat[i, j, k]
            else:
                t = u = 0.0
                for k in range(s):
                    g = np.float64(dy[i, j, k])
                    if relu and not out[i, j, k] > 0:
                        g = g * 0.0
                    t += g
                    u += g * xhat[i, j, k]
                c = i if axis == 0 else j
                gbias[c] += t
                gweight[c] += u


@njit
def bn_input_grad(dy, xhat, axis, out, scale, shift, slope, dx):
    """``dx = scale * (dy - shift - xhat * slope)`` per channel, in float64, rounded once
    (``out``: as in :func:`bn_grad_sums`)."""
    a, b, s = dy.shape
    relu = out.size > 0
    for i in range(a):
        for j in range(b):
            if axis == 2:
                for k in range(s):
                    g = np.float64(dy[i, j, k])
                    if relu and not out[i, j, k] > 0:
                        g = g * 0.0
                    dx[i, j, k] = scale[k] * (g - shift[k] - xhat[i, j, k] * slope[k])
            else:
                c = i if axis == 0 else j
                f, m, r = scale[c], shift[c], slope[c]
                for k in range(s):
                    g = np.float64(dy[i, j, k])
                    if relu and not out[i, j, k] > 0:
                        g = g * 0.0
                    dx[i, j, k] = f * (g - m - xhat[i, j, k] * r)


@njit
def pool_forward(x, kh, kw, sh, sw, avg, div, out, arg):
    """Average (``avg``: the window's sum in kernel order over ``div``) or max pooling of the
    C-contiguous ``(A, B, H, W)`` array ``x`` into ``out``; max pooling stores in ``arg`` the
    first kernel offset holding the maximum (NaN counts as the maximum, as NumPy's). Each output
    row takes the kernel offsets in turn, as NumPy's reduction over the stacked windows does."""
    if kh == kw == sh == sw == 2:
        _pool2_forward(x, avg, div, out, arg)
        return
    a, b, ho, wo = out.shape
    for i in range(a):
        for j in range(b):
            for r in range(ho):
                row = out[i, j, r]
                for q in range(wo):
                    row[q] = x[i, j, r * sh, q * sw]
                if not avg:
                    arg[i, j, r, :] = 0
                for u in range(kh):
                    src = x[i, j, r * sh + u]
                    for v in range(1 if u == 0 else 0, kw):
                        if avg:
                            for q in range(wo):
                                row[q] += src[q * sw + v]
                        else:
                            for q in range(wo):
                                e, m = src[q * sw + v], row[q]
                                if e > m or (e != e and m == m):
                                    row[q] = e
                                    arg[i, j, r, q] = u * kw + v
                if avg:
                    for q in range(wo):
                        row[q] = row[q] / div


@njit
def pool_backward(dy, arg, kh, kw, sh, sw, avg, div, dx):
    """Add each output's gradient to its window in ``dx`` (zeros on entry), kernel offset by
    kernel offset as the array version does: ``dy / div`` everywhere (average; ``div`` is the
    window's size) or ``dy`` where ``arg`` picked the offset and ``dy * div`` elsewhere (max;
    ``div`` is 0). ``div`` comes in the arrays' dtype."""
    if kh == kw == sh == sw == 2:
        _pool2_backward(dy, arg, avg, div, dx)
        return
    a, b, ho, wo = dy.shape
    for i in range(a):
        for j in range(b):
            for u in range(kh):
                for v in range(kw):
                    at = u * kw + v
                    for r in range(ho):
                        src, dst = dy[i, j, r], dx[i, j, r * sh + u]
                        for q in range(wo):
                            g = src[q]
                            if avg:
                                g = g / div
                            elif arg[i, j, r, q] != at:
                                g = g * div
                            dst[q * sw + v] += g


@njit
def _max_step(e, m, at, k):
    """One kernel offset ``k`` of max pooling: the new maximum and its offset (the first
    offset holding the maximum; NaN counts as the maximum)."""
    if e > m or (e != e and m == m):
        return e, k
    return m, at


@njit
def _pool2_forward(x, avg, div, out, arg):
    """:func:`pool_forward` for 2x2 windows at stride 2, the same operations in the same order:
    with the window's shape and stride known to the compiler, the row loops vectorise."""
    a, b, ho, wo = out.shape
    for i in range(a):
        for j in range(b):
            for r in range(ho):
                x0, x1, row = x[i, j, 2 * r], x[i, j, 2 * r + 1], out[i, j, r]
                if avg:
                    for q in range(wo):
                        row[q] = (((x0[2 * q] + x0[2 * q + 1]) + x1[2 * q]) + x1[2 * q + 1]) / div
                    continue
                pick = arg[i, j, r]
                for q in range(wo):
                    m, at = _max_step(x0[2 * q + 1], x0[2 * q], 0, 1)
                    m, at = _max_step(x1[2 * q], m, at, 2)
                    row[q], pick[q] = _max_step(x1[2 * q + 1], m, at, 3)


@njit
def _pool2_backward(dy, arg, avg, div, dx):
    """:func:`pool_backward` for 2x2 windows at stride 2: every input position gets one
    output's share, added to ``dx``'s zero as there."""
    a, b, ho, wo = dy.shape
    for i in range(a):
        for j in range(b):
            for r in range(ho):
                d0, d1, g = dx[i, j, 2 * r], dx[i, j, 2 * r + 1], dy[i, j, r]
                if avg:
                    for q in range(wo):
                        v = g[q] / div
                        d0[2 * q] += v
                        d0[2 * q + 1] += v
                        d1[2 * q] += v
                        d1[2 * q + 1] += v
                    continue
                pick = arg[i, j, r]
                for q in range(wo):
                    v, z = g[q], g[q] * div
                    d0[2 * q] += v if pick[q] == 0 else z
                    d0[2 * q + 1] += v if pick[q] == 1 else z
                    d1[2 * q] += v if pick[q] == 2 else z
                    d1[2 * q + 1] += v if pick[q] == 3 else z


@njit
def window_sum(dcols, kh, kw, sh, sw, dx):
    """A conv layer's input gradient from its window gradients: ``dx[c, n, i*sh + u, j*sw + v]
    += dcols[c, u*kw + v, n, i, j]``, in the arrays' types as NumPy's ``+=`` rounds them. Every
    element adds its terms in kernel-offset order, as the array version's slice additions do,
    but one ``(c, n)`` plane at a time, so that the plane stays in cache for all offsets."""
    nc, _, nb, ho, wo = dcols.shape
    for c in range(nc):
        for n in range(nb):
            plane = dx[c, n]
            for u in range(kh):
                for v in range(kw):
                    src = dcols[c, u * kw + v, n]
                    for i in range(ho):
                        row, g = plane[i * sh + u], src[i]
                        for j in range(wo):
                            row[j * sw + v] += g[j]


@sum_njit
def kept_weight_grad(dyt, xt, rows, cols, flat, out):
    """``out[flat[k]] = dyt[rows[k]] . xt[cols[k]]`` (batch on the last axis of both): the weight
    gradient of a dense or conv layer at its kept weights (``xt`` a transposed input or a window
    matrix), accumulated in float64."""
    for k in range(rows.size):
        r, c = rows[k], cols[k]
        t = 0.0
        for j in range(dyt.shape[1]):
            t += np.float64(dyt[r, j]) * xt[c, j]
        out[flat[k]] = t


@sum_njit
def sparse_matmul(src, ptr, idx, pos, w, bias, out):
    """``out[:, j] = bias[j] + sum(w[pos[k]] * src[idx[k]] for k in range(ptr[j], ptr[j + 1]))``,
    accumulated in float64 and rounded once (``bias`` with no elements: none).

    ``src`` holds the batch on its last axis (a transposed input or output gradient, or a conv
    layer's window matrix), so every term adds one contiguous row; ``out`` is
    ``(batch, len(ptr) - 1)``: C-ordered like a dense layer's product, or the transposed view of
    a conv layer's ``(channels, batch)`` product. With the kept weights grouped by output
    (``ptr`` a CSR row pointer, ``idx`` their sources) it is a sparse layer's forward pass;
    grouped by source (``idx`` their outputs), its input gradient. (Splitting long batches into
    blocks that stay in cache made the loops 1.4-3.7x slower on LeNet-300-100: the bound and
    the offset stop LLVM from vectorising them.)
    """
    acc = np.empty(src.shape[1], np.float64)
    for j in range(ptr.size - 1):
        acc[:] = bias[j] if bias.size else 0.0
        for k in range(ptr[j], ptr[j + 1]):
            wk = np.float64(w[pos[k]])
            row = src[idx[k]]
            for b in range(acc.size):
                acc[b] += wk * row[b]
        for b in range(acc.size):
            out[b, j] = acc[b]

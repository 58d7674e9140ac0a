"""Layers with explicit forward and backward passes, written once for NumPy and CuPy.

Every layer holds ``params`` and, after :meth:`backward`, ``grads`` (dicts of arrays of the
layer's backend ``xp``). Prunable layers (:class:`Dense`, :class:`Conv2d`) carry a 0/1 ``mask`` that
multiplies the weight in the forward pass and the weight gradient in the backward pass.
Convolution and pooling gather their windows as ``kh*kw`` strided slices (an im2col without
``as_strided``) and run one matrix product per layer. On NumPy, BatchNorm's training passes,
pooling and a sparse layer's products and weight gradient run as fused Numba kernels instead
(``connsim.trainer._fused``, which says how their arithmetic compares).

A large NumPy :class:`Dense` or :class:`Conv2d` layer whose mask keeps at most
:data:`SPARSE_BELOW` of its weights multiplies by its kept weights only instead
(``sparse='auto'``; measured in ``docs/performance.md``): the forward pass and the input gradient
cost ``kept x batch`` instead of ``weights x batch`` (fused kernels with the dense products'
layouts; SciPy's CSR products for a dense layer where the kernels do not run), and the weight
gradient is computed at the kept weights only.
"""

from __future__ import annotations

import math

import numpy as np

from .._validation import check_choice
from .backend import fused_kernels


def _slices(kh, kw, sh, sw, ho, wo):
    """(i, j, window slice) for every kernel offset: the input positions each offset reads."""
    for i in range(kh):
        for j in range(kw):
            yield i * kw + j, (slice(None), slice(None), slice(i, i + sh * (ho - 1) + 1, sh),
                               slice(j, j + sw * (wo - 1) + 1, sw))


def _channel_shape(x):
    """Shape that broadcasts a per-channel vector over ``x`` (channels on axis 1)."""
    return (1, -1) + (1,) * (x.ndim - 2)


def _planes(x):
    """``x`` (``(N, C, ...)``, NumPy) as the C-contiguous planes of the BatchNorm kernels, and
    their channel axis (see ``connsim.trainer._fused``)."""
    n, c = x.shape[:2]
    t = x.reshape(n, c, -1).transpose(1, 0, 2)
    axis = 0 if t.flags.c_contiguous else 2 if x.ndim == 2 else 1
    return _like_planes(x, axis), axis


def _like_planes(a, axis):
    """``a`` as planes with channels on ``axis`` (a copy only when ``a`` is in another order)."""
    n, c = a.shape[:2]
    v = a.reshape(n, c, -1)
    v = v.transpose(1, 0, 2) if axis == 0 else v
    v = v if v.flags.c_contiguous else v.copy()
    return v.reshape(c, 1, -1) if axis == 0 else v.reshape(n, 1, c) if axis == 2 else v


def _from_planes(p, axis, shape):
    """The ``(N, C, ...)`` array of ``shape`` whose planes are ``p`` (a view)."""
    if axis == 0:
        return p.reshape((shape[1], shape[0]) + shape[2:]).swapaxes(0, 1)
    return p.reshape(shape)


def _memory_order(x):
    """``x`` (``(N, C, H, W)``) C-contiguous in its memory order, and whether that order puts
    channels first (a conv layer's output); a copy only for other layouts."""
    t = x.transpose(1, 0, 2, 3)
    if t.flags.c_contiguous:
        return t, True
    return (x if x.flags.c_contiguous else x.copy()), False


SPARSE_BELOW = 0.05  # mask density up to which a NumPy layer multiplies its kept weights only
SPARSE_MIN = 16384  # weights below which the call overhead outweighs the saving
SPARSE_CHUNK = 1 << 21  # kept weights x batch gathered at once for the weight gradient
SPARSE_CHOICES = ("auto", True, False)
GEMM_COLUMNS = 4096  # batch x output positions per matrix product of a NumPy conv layer


def _column_blocks(xp, n):
    """Column ranges of a conv layer's matrix products over ``n`` columns (batch x output
    positions). On NumPy, products with few rows and many thousand columns (LeNet-5's first
    layer: 6 x 25 by 73,728) run 3-4x faster through OpenBLAS in blocks of
    :data:`GEMM_COLUMNS` that stay in cache (``docs/performance.md``); other backends take one."""
    step = GEMM_COLUMNS if getattr(xp, "__name__", "") == "numpy" and n > 2 * GEMM_COLUMNS else n
    return [slice(a, a + step) for a in range(0, n, step)]


def _blocked_matmul(xp, a, b):
    """``a @ b`` for ``b`` of shape ``(G, K, N)``, by column blocks."""
    blocks = _column_blocks(xp, b.shape[-1])
    if len(blocks) == 1:
        return a @ b
    out = xp.empty(a.shape[:-1] + b.shape[-1:], dtype=xp.result_type(a, b))
    for s in blocks:
        out[..., s] = a @ b[..., s]
    return out


def _blocked_matmul_t(xp, a, b):
    """``a @ b^T`` (the last two axes) for ``a`` ``(G, M, N)`` and ``b`` ``(G, P, N)``: the sum
    over the ``N`` columns, block by block."""
    blocks = _column_blocks(xp, a.shape[-1])
    out = a[..., blocks[0]] @ b[..., blocks[0]].transpose(0, 2, 1)
    for s in blocks[1:]:
        out += a[..., s] @ b[..., s].transpose(0, 2, 1)
    return out


def _sparse_on(xp, mask, sparse) -> bool:
    """Whether a layer with ``mask`` takes the sparse path (``sparse``: 'auto', True, False)."""
    if sparse not in SPARSE_CHOICES:
        raise ValueError(f"sparse must be one of {SPARSE_CHOICES}, got {sparse!r}")
    if mask is None or sparse is False or getattr(xp, "__name__", "") != "numpy":
        return False
    return sparse is True or (mask.size >= SPARSE_MIN
                              and xp.count_nonzero(mask) <= SPARSE_BELOW * mask.size)


def _sparse_plan(rows, src, flat, n_out, n_src):
    """The kernels' ``(pointer, other end, flat position)`` of the kept weights (row-major
    ``rows``, their sources ``src``), grouped by output (forward pass) and by source (input
    gradient)."""
    by_out = np.zeros(n_out + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_out), out=by_out[1:])
    by_src = np.zeros(n_src + 1, dtype=np.int64)
    np.cumsum(np.bincount(src, minlength=n_src), out=by_src[1:])
    order = np.argsort(src, kind="stable")
    return (by_out, src, flat), (by_src, rows[order], flat[order])


class Dense:
    """``y = x (W * M)^T + b`` with ``W`` of shape ``(out, in)``.

    ``sparse``: ``'auto'`` multiplies through the kept weights only (CSR order) when the backend is
    NumPy, the layer has at least :data:`SPARSE_MIN` weights and its mask keeps at most
    :data:`SPARSE_BELOW` of them; ``True`` does so for any masked layer (NumPy only), ``False``
    never. Both paths give the same values up to the order of floating-point sums.
    """

    multi = False  # reads one input (layers with ``multi`` read the list of a node's inputs)
    input_grad = True  # False: backward skips the input gradient and returns None

    def __init__(self, xp, weight, bias=None, mask=None, sparse="auto"):
        self.xp = xp
        self.params = {"weight": weight}
        if bias is not None:
            self.params["bias"] = bias
        self.mask = mask
        self.grads = {}
        self.csr = None  # the kept weights as CSR (rows = outputs), when the sparse path is on
        if _sparse_on(xp, mask, sparse):
            import scipy.sparse  # the products where the kernels do not run

            rows, cols = xp.nonzero(mask)  # row-major: the order of the CSR's data
            flat = rows * mask.shape[1] + cols
            self.kept = (rows, cols, flat)
            self.csr = scipy.sparse.csr_matrix(
                (weight[rows, cols], (rows, cols)), shape=mask.shape)
            self.plan = _sparse_plan(rows, cols, flat, *mask.shape)

    def _w(self):
        w = self.params["weight"]
        return w if self.mask is None else w * self.mask

    def forward(self, x, train=True):
        """Forward pass; keeps ``x`` for the backward pass."""
        self.x = x
        if self.csr is not None:
            self.xt = x.T.copy()  # the batch along memory, for the products and the gradient
            w = self.params["weight"].ravel()
            kernels = fused_kernels(self.xp)
            if kernels is not None:  # bias added in the kernel; C-ordered as the dense product
                bias = self.params.get("bias", w[:0])
                y = np.empty((x.shape[0], self.csr.shape[0]), dtype=np.result_type(x, w, self.mask, bias))
                kernels.sparse_matmul(self.xt, *self.plan[0], w, bias, y)
                return y
            self.csr.data = w[self.kept[2]]
            y = (self.csr @ self.xt).T
        else:
            y = x @ self._w().T
        if "bias" in self.params:
            y = y + self.params["bias"]
        return y

    def backward(self, dy):
        """Store the weight (and bias) gradients; return the input gradient."""
        if self.csr is not None:
            rows, cols, flat = self.kept
            gw = self.xp.zeros(self.params["weight"].shape,
                               dtype=np.result_type(dy, self.xt, self.mask))
            dyt, xt = dy.T.copy(), self.xt  # rows of the batch: contiguous gathers
            out = gw.ravel()
            kernels = fused_kernels(self.xp)
            if kernels is not None:
                kernels.kept_weight_grad(dyt, xt, rows, cols, flat, out)
            else:
                step = max(1, SPARSE_CHUNK // dy.shape[0])  # gathered temporaries stay bounded
                for a in range(0, flat.size, step):
                    k = slice(a, a + step)
                    out[flat[k]] = self.xp.einsum("kb,kb->k", dyt[rows[k]], xt[cols[k]])
            self.grads["weight"] = gw
        else:
            gw = dy.T @ self.x
            self.grads["weight"] = gw if self.mask is None else gw * self.mask
        if "bias" in self.params:
            self.grads["bias"] = dy.sum(axis=0)
        if not self.input_grad:
            return None
        if self.csr is None:
            return dy @ self._w()
        if kernels is not None:
            w = self.params["weight"].ravel()
            dx = np.empty((dy.shape[0], self.csr.shape[1]), dtype=np.result_type(dy, w, self.mask))
            kernels.sparse_matmul(dyt, *self.plan[1], w, w[:0], dx)
            return dx
        return (self.csr.T @ dyt).T


class Conv2d:
    """2-D convolution with stride, zero padding and ``groups``; weight ``(out, in/groups, kh, kw)``.

    Output channel ``o`` reads the ``in/groups`` input channels of its group ``o // (out/groups)``;
    ``groups = in = out`` is a depthwise convolution. One batched matrix product per layer.
    ``input_grad = False`` (set by the network for a layer that reads the data) skips the input
    gradient: :meth:`backward` then returns ``None``.

    ``sparse`` is :class:`Dense`'s, on NumPy where the fused kernels run (elsewhere the layer
    keeps the dense products): the window matrix is multiplied by the kept weights only, and
    the weight gradient is computed at the kept weights only. The windows are still gathered
    (and their gradients summed) in full.
    """

    multi = False
    input_grad = True

    def __init__(self, xp, weight, bias=None, mask=None, stride=(1, 1), padding=(0, 0), groups=1,
                 sparse="auto"):
        self.xp = xp
        self.params = {"weight": weight}
        if bias is not None:
            self.params["bias"] = bias
        self.mask, self.stride, self.padding = mask, tuple(stride), tuple(padding)
        self.groups = groups
        self.grads = {}
        self.kept = None  # (output, window row, flat position) of the kept weights: sparse path
        if _sparse_on(xp, mask, sparse) and fused_kernels(xp) is not None:
            m = mask.reshape(mask.shape[0], -1)  # (out, in/groups*kh*kw)
            rows, cols = np.nonzero(m)
            src = rows // (m.shape[0] // groups) * m.shape[1] + cols  # the window matrix's row
            self.kept = (rows, src, rows * m.shape[1] + cols)
            self.plan = _sparse_plan(rows, src, self.kept[2], m.shape[0], groups * m.shape[1])

    def _wg(self):
        """The masked weight as ``(groups, out/groups, in/groups*kh*kw)``."""
        w = self.params["weight"]
        w = w if self.mask is None else w * self.mask
        return w.reshape(self.groups, w.shape[0] // self.groups, -1)

    def forward(self, x, train=True):
        """Forward pass; keeps what the backward pass needs."""
        xp = self.xp
        n, c, h, w = x.shape
        o, _, kh, kw = self.params["weight"].shape
        (sh, sw), (ph, pw) = self.stride, self.padding
        ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        xpad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
        # windows written straight into (C, kh*kw, N, Ho, Wo) = (groups, C/groups*kh*kw, N*Ho*Wo)
        cols = xp.empty((c, kh * kw, n, ho, wo), dtype=x.dtype)
        for k, s in _slices(kh, kw, sh, sw, ho, wo):
            cols[:, k] = xpad[s].transpose(1, 0, 2, 3)
        self.cols = cols.reshape(self.groups, -1, n * ho * wo)
        self.shape = (n, c, h, w, ho, wo)
        if self.kept is not None:  # bias added in the kernel
            wf = self.params["weight"].ravel()
            bias = self.params.get("bias", wf[:0])
            y = np.empty((o, n * ho * wo), dtype=np.result_type(x, wf, self.mask, bias))
            fused_kernels(xp).sparse_matmul(self.cols.reshape(-1, n * ho * wo), *self.plan[0], wf,
                                            bias, y.T)
            return y.reshape(o, n, ho, wo).transpose(1, 0, 2, 3)
        y = _blocked_matmul(xp, self._wg(), self.cols).reshape(o, n, ho, wo).transpose(1, 0, 2, 3)
        if "bias" in self.params:
            y = y + self.params["bias"][None, :, None, None]
        return y

    def backward(self, dy):
        """Store the weight (and bias) gradients; return the input gradient."""
        xp = self.xp
        n, c, h, w, ho, wo = self.shape
        o, _, kh, kw = self.params["weight"].shape
        (sh, sw), (ph, pw) = self.stride, self.padding
        dy2 = dy.transpose(1, 0, 2, 3).reshape(self.groups, o // self.groups, n * ho * wo)
        fused = fused_kernels(xp)
        kernels = fused if self.kept is not None else None
        if kernels is not None:
            dy2, cols = dy2.reshape(o, -1), self.cols.reshape(-1, n * ho * wo)
            wf = self.params["weight"].ravel()
            gw = np.zeros(self.params["weight"].shape, dtype=np.result_type(dy, cols, self.mask))
            kernels.kept_weight_grad(dy2, cols, *self.kept, gw.ravel())
            self.grads["weight"] = gw
        else:
            gw = _blocked_matmul_t(xp, dy2, self.cols).reshape(self.params["weight"].shape)
            self.grads["weight"] = gw if self.mask is None else gw * self.mask
        if "bias" in self.params:
            self.grads["bias"] = dy.sum(axis=(0, 2, 3))
        if not self.input_grad:
            return None
        # summed channel-first, (C, N, H, W), where every window's gradient dcols[:, k] is
        # contiguous: no transposed copy, and fewer, longer inner loops than batch-first
        if kernels is not None:
            dcols = np.empty(cols.shape, dtype=np.result_type(dy, wf, self.mask))
            kernels.sparse_matmul(dy2, *self.plan[1], wf, wf[:0], dcols.T)
            dcols = dcols.reshape(c, kh * kw, n, ho, wo)
        else:
            dcols = _blocked_matmul(xp, self._wg().transpose(0, 2, 1), dy2).reshape(
                c, kh * kw, n, ho, wo)
        dx = xp.zeros((c, n, h + 2 * ph, w + 2 * pw), dtype=dy.dtype)
        if fused is not None:
            fused.window_sum(dcols, kh, kw, sh, sw, dx)
        else:
            for k, s in _slices(kh, kw, sh, sw, ho, wo):
                dx[s] += dcols[:, k]
        return dx[:, :, ph:ph + h, pw:pw + w].transpose(1, 0, 2, 3)


class Pool2d:
    """Max or average pooling (no padding). A window over the whole map is global pooling."""

    multi = False

    def __init__(self, xp, mode, kernel, stride):
        self.xp, self.mode, self.kernel, self.stride = xp, mode, tuple(kernel), tuple(stride)
        self.params, self.grads = {}, {}

    def forward(self, x, train=True):
        """Forward pass (average or max over each window)."""
        n, c, h, w = x.shape
        (kh, kw), (sh, sw) = self.kernel, self.stride
        ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
        self.shape = x.shape
        if (kh, kw) == (h, w) and self.mode == "avg":
            return x.mean(axis=(2, 3), keepdims=True)
        kernels = fused_kernels(self.xp)
        if kernels is not None:  # the windows' sums or maxima in one pass, in x's memory order
            xm, self.cf = _memory_order(x)
            out = np.empty(xm.shape[:2] + (ho, wo), dtype=x.dtype)
            self.arg = np.empty(out.shape if self.mode == "max" else (0,) * 4, dtype=np.int64)
            kernels.pool_forward(xm, kh, kw, sh, sw, self.mode == "avg", x.dtype.type(kh * kw),
                                 out, self.arg)
            return out.transpose(1, 0, 2, 3) if self.cf else out
        win = self.xp.stack([x[s] for _, s in _slices(kh, kw, sh, sw, ho, wo)])
        if self.mode == "avg":
            return win.mean(axis=0)
        self.arg = win.argmax(axis=0)
        return win.max(axis=0)

    def backward(self, dy):
        """The input gradient."""
        xp = self.xp
        n, c, h, w = self.shape
        (kh, kw), (sh, sw) = self.kernel, self.stride
        if (kh, kw) == (h, w) and self.mode == "avg":
            return xp.broadcast_to(dy / (h * w), self.shape).copy()
        ho, wo = dy.shape[2:]
        kernels = fused_kernels(xp)
        if kernels is not None:
            dym = dy.transpose(1, 0, 2, 3) if self.cf else dy
            dym = dym if dym.flags.c_contiguous else dym.copy()
            dx = np.zeros(dym.shape[:2] + (h, w), dtype=dy.dtype)
            avg = self.mode == "avg"
            kernels.pool_backward(dym, self.arg, kh, kw, sh, sw, avg,
                                  dy.dtype.type(kh * kw if avg else 0), dx)
            return dx.transpose(1, 0, 2, 3) if self.cf else dx
        dx = xp.zeros(self.shape, dtype=dy.dtype)
        for k, s in _slices(kh, kw, sh, sw, ho, wo):
            dx[s] += dy / (kh * kw) if self.mode == "avg" else dy * (self.arg == k)
        return dx


class Add:
    """Elementwise sum of its inputs (a residual join)."""

    multi = True

    def __init__(self):
        self.params, self.grads = {}, {}

    def forward(self, xs, train=True):
        """Sum of the inputs."""
        self.n = len(xs)
        y = xs[0]
        for x in xs[1:]:
            y = y + x
        return y

    def backward(self, dy):
        """The output gradient, once per input."""
        return [dy] * self.n


class Concat:
    """Concatenation of its inputs along the channel axis 1."""

    multi = True

    def __init__(self, xp):
        self.xp, self.params, self.grads = xp, {}, {}

    def forward(self, xs, train=True):
        """The inputs concatenated along channels."""
        self.sizes = [x.shape[1] for x in xs]
        return self.xp.concatenate(xs, axis=1)

    def backward(self, dy):
        """Each input's slice of the output gradient."""
        out, start = [], 0
        for size in self.sizes:
            out.append(dy[:, start:start + size])
            start += size
        return out


class Flatten:
    """``(N, C, H, W) -> (N, C*H*W)`` in PyTorch order."""

    multi = True

    def __init__(self):
        self.params, self.grads = {}, {}

    def forward(self, xs, train=True):
        """The input flattened per example."""
        self.shape = xs[0].shape
        return xs[0].reshape(self.shape[0], -1)

    def backward(self, dy):
        """The output gradient in the input's shape (a one-element list)."""
        return [dy.reshape(self.shape)]


class BatchNorm:
    """Batch normalisation over the channel axis 1 (inputs ``(N, C)`` or ``(N, C, H, W)``).

    Training uses batch statistics (biased variance) and updates running statistics with
    ``momentum`` (unbiased variance, as PyTorch); evaluation uses the running statistics.
    ``relu=True`` applies the :class:`ReLU` that follows in the same pass, with the same values
    and gradients, bit for bit: the network fuses the two where nothing comes between them.
    """

    def __init__(self, xp, channels, momentum=0.1, eps=1e-5, dtype="float32", relu=False):
        self.xp, self.momentum, self.eps, self.relu = xp, momentum, eps, relu
        self.params = {"weight": xp.ones(channels, dtype=dtype), "bias": xp.zeros(channels,
                                                                                  dtype=dtype)}
        self.running_mean = xp.zeros(channels, dtype=dtype)
        self.running_var = xp.ones(channels, dtype=dtype)
        self.grads = {}

    def forward(self, x, train=True):
        """Normalise with batch statistics (``train``) or running ones, then scale and shift."""
        xp = self.xp
        axes = (0,) if x.ndim == 2 else (0, 2, 3)
        shape = _channel_shape(x)
        kernels = fused_kernels(xp) if train else None
        if kernels is not None:
            planes, axis = _planes(x)
            mean, var = np.empty(x.shape[1]), np.empty(x.shape[1])
            kernels.bn_moments(planes, axis, mean, var)
            mean, var = mean.astype(x.dtype), var.astype(x.dtype)
        elif train:
            mean = x.mean(axis=axes)
            centred = x - mean.reshape(shape)
            var = (centred * centred).mean(axis=axes)  # x.var's arithmetic, without its 2nd mean
        else:
            mean, var = self.running_mean, self.running_var
            centred = x - mean.reshape(shape)
        if train:
            count = x.size // x.shape[1]
            m = self.momentum
            self.running_mean = (1 - m) * self.running_mean + m * mean
            self.running_var = (1 - m) * self.running_var + m * var * (count / max(1, count - 1))
        self.train, self.axes = train, axes
        self.inv_std = 1.0 / xp.sqrt(var + self.eps)
        w, b = self.params["weight"], self.params["bias"]
        if kernels is None:
            self.xhat = centred * self.inv_std.reshape(shape)
            y = w.reshape(shape) * self.xhat + b.reshape(shape)
            if not self.relu:
                return y
            self.positive = y > 0
            return y * self.positive
        xhat, y = np.empty_like(planes), np.empty_like(planes)
        kernels.bn_apply(planes, axis, mean, self.inv_std, w, b, self.relu, xhat, y)
        self.xhat = _from_planes(xhat, axis, x.shape)
        self.out = y if self.relu else y[:0]  # where the ReLU passed gradients: out > 0
        return _from_planes(y, axis, x.shape)

    def backward(self, dy):
        """Store the scale and shift gradients; return the input gradient."""
        axes, shape = self.axes, _channel_shape(dy)
        kernels = fused_kernels(self.xp) if self.train else None
        if kernels is not None:
            xhat, axis = _planes(self.xhat)
            dyp = _like_planes(dy, axis)
            gbias, gweight = np.empty(dy.shape[1]), np.empty(dy.shape[1])
            kernels.bn_grad_sums(dyp, xhat, axis, self.out, gbias, gweight)
            self.grads["weight"], self.grads["bias"] = (gweight.astype(dy.dtype),
                                                       gbias.astype(dy.dtype))
            count = dy.size // dy.shape[1]
            scale = self.params["weight"].astype(np.float64) * self.inv_std
            dx = np.empty_like(dyp)
            kernels.bn_input_grad(dyp, xhat, axis, self.out, scale, gbias / count,
                                  gweight / count, dx)
            return _from_planes(dx, axis, dy.shape)
        if self.relu:
            dy = dy * self.positive
        self.grads["weight"] = (dy * self.xhat).sum(axis=axes)
        self.grads["bias"] = dy.sum(axis=axes)
        g = dy * self.params["weight"].reshape(shape)
        inv = self.inv_std.reshape(shape)
        if not self.train:
            return g * inv
        count = dy.size // dy.shape[1]
        return inv / count * (count * g - g.sum(axis=axes).reshape(shape)
                              - self.xhat * (g * self.xhat).sum(axis=axes).reshape(shape))


class ReLU:
    """Rectified linear unit, ``max(x, 0)``."""

    def __init__(self):
        self.params, self.grads = {}, {}

    def forward(self, x, train=True):
        """``max(x, 0)``; keeps where ``x > 0``."""
        self.positive = x > 0
        return x * self.positive

    def backward(self, dy):
        """The gradient where the input was positive, 0 elsewhere."""
        return dy * self.positive


class ScaledTanh:
    """LeCun's scaled hyperbolic tangent ``1.7159 tanh(2x/3)`` (``f(1) ~ 1``, ``f(0) = 0``)."""

    A, B = 1.7159, 2.0 / 3.0

    def __init__(self, xp):
        self.xp = xp
        self.params, self.grads = {}, {}

    def forward(self, x, train=True):
        """``A tanh(B x)``; keeps ``tanh(B x)`` for the backward pass."""
        self.t = self.xp.tanh(x * self.B)
        return self.A * self.t

    def backward(self, dy):
        """``dy A B (1 - tanh^2(B x))``."""
        return dy * (self.A * self.B) * (1 - self.t * self.t)


class UnitMask:
    """Multiplies the channels (units) of a node's output by a 0/1 keep vector.

    A masked unit outputs exactly 0 and passes no gradient. After :meth:`backward`, ``mask_grad``
    holds dLoss/dmask (the sum of ``x * dy`` over everything but the channel axis: the SNIP score
    of a unit); with ``record=True`` :meth:`forward` keeps the masked output in ``output`` for
    activation statistics.
    """

    def __init__(self, xp, keep):
        self.xp, self.keep = xp, keep
        self.params, self.grads = {}, {}
        self.record, self.output, self.mask_grad = False, None, None

    def forward(self, x, train=True):
        """``x * keep`` over the channel axis."""
        self.x = x
        y = x * self.keep.reshape(_channel_shape(x))
        if self.record:
            self.output = y
        return y

    def backward(self, dy):
        """Store dLoss/dmask; return ``dy * keep``."""
        axes = (0,) + tuple(range(2, dy.ndim))
        self.mask_grad = (self.x * dy).sum(axis=axes)
        return dy * self.keep.reshape(_channel_shape(dy))


def cross_entropy(xp, logits, labels):
    """Mean softmax cross-entropy and its gradient with respect to the logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    logsum = xp.log(xp.exp(z).sum(axis=1, keepdims=True))
    logp = z - logsum
    n = logits.shape[0]
    rows = xp.arange(n)
    loss = -logp[rows, labels].mean()
    grad = xp.exp(logp)
    grad[rows, labels] -= 1.0
    return loss, grad / n


def make_layer(xp, node, weight=None, bias=None, mask=None, *, linear: bool = False,
               sparse="auto"):
    """The trainer's layer for an architecture node (the trainer's table of operations).

    ``weight``, ``bias`` and ``mask`` are backend arrays for prunable nodes. ``linear`` builds the
    linearised layer SynFlow scores: every pool averages. ``sparse`` is :class:`Dense`'s (and
    :class:`Conv2d`'s).
    """
    op = node.op
    if op == "dense":
        return Dense(xp, weight, bias, mask, sparse)
    if op == "conv":
        return Conv2d(xp, weight, bias, mask, node.stride, node.padding, node.groups, sparse)
    if op == "pool":
        return Pool2d(xp, "avg" if linear else node.mode, node.kernel, node.stride)
    if op == "add":
        return Add()
    if op == "concat":
        return Concat(xp)
    if op == "flatten":
        return Flatten()
    raise ValueError(f"the trainer has no layer for operation {op!r}")


def make_activation(xp, name: str):
    """The trainer's layer for an activation of :data:`connsim.architectures.ACTIVATIONS`."""
    if name == "relu":
        return ReLU()
    if name == "scaled-tanh":
        return ScaledTanh(xp)
    raise ValueError(f"the trainer has no activation {name!r}")


INITS = ("kaiming", "xavier", "fan-avg", "uniform")
UNIFORM_LIMIT = 0.05  # init 'uniform': U(-0.05, 0.05), the granularity paper's MLP


def init_weight(shape, scheme: str, rng):
    """Host (NumPy float64) initial weights: Kaiming normal (fan in, ReLU gain), Xavier/Glorot
    uniform, variance scaling with the average fan (normal, variance 1/fan_avg), or ``uniform``:
    U(-0.05, 0.05) whatever the fan."""
    check_choice(scheme, INITS, "init")
    if scheme == "uniform":
        return rng.uniform(-UNIFORM_LIMIT, UNIFORM_LIMIT, shape)
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    fan_in, fan_out = shape[1] * receptive, shape[0] * receptive
    if scheme == "kaiming":
        return rng.normal(0.0, math.sqrt(2.0 / fan_in), shape)
    if scheme == "xavier":
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, shape)
    return rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), shape)

"""Every backward pass against central finite differences in float64."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connsim import ArchBuilder, get_arch
from connsim.trainer.backend import to_numpy
from connsim.trainer.layers import BatchNorm, Conv2d, Dense, Pool2d, ReLU, cross_entropy, init_weight
from connsim.trainer.network import Network
from tests.conftest import TRAINER_BACKENDS
from tests.naive import _ungrouped, numeric_grad

EPS = 1e-6


def numeric_grad_fn(f, x):
    """Central differences of ``f(x)`` (f takes the whole array) at a host array ``x``."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[i] = EPS
        g[i] = (f(x + step) - f(x - step)) / (2 * EPS)
    return g


def check_layer(layer, x, train=True, atol=1e-6):
    rng = np.random.default_rng(0)
    r = rng.normal(size=layer.forward(x, train).shape)

    def f():
        return float((layer.forward(x, train) * r).sum())

    layer.forward(x, train)
    dx = layer.backward(r)
    np.testing.assert_allclose(dx, numeric_grad(f, x), atol=atol, rtol=1e-5)
    for key, p in layer.params.items():
        layer.forward(x, train)
        layer.backward(r)
        analytic = layer.grads[key].copy()
        np.testing.assert_allclose(analytic, numeric_grad(f, p), atol=atol, rtol=1e-5,
                                   err_msg=key)


@settings(max_examples=20)
@given(st.integers(1, 4), st.integers(1, 5), st.booleans(), st.integers(0, 2**31))
def test_dense_gradients(n_in, n_out, masked, seed):
    rng = np.random.default_rng(seed)
    mask = (rng.random((n_out, n_in)) < 0.6).astype(float) if masked else None
    layer = Dense(np, rng.normal(size=(n_out, n_in)), rng.normal(size=n_out), mask)
    check_layer(layer, rng.normal(size=(3, n_in)))
    if masked:
        assert (layer.grads["weight"][mask == 0] == 0).all()


@settings(max_examples=25)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 2),
       st.integers(0, 2), st.integers(3, 6), st.booleans(), st.integers(0, 2**31))
def test_conv_gradients(c_in, c_out, k, stride, pad, size, bias, seed):
    rng = np.random.default_rng(seed)
    if size + 2 * pad < k:
        k = 1
    mask = (rng.random((c_out, c_in, k, k)) < 0.7).astype(float)
    layer = Conv2d(np, rng.normal(size=(c_out, c_in, k, k)), rng.normal(size=c_out) if bias
                   else None, mask, (stride, stride), (pad, pad))
    check_layer(layer, rng.normal(size=(2, c_in, size, size)))


@settings(max_examples=20)
@given(st.sampled_from([(2, 2, 2), (4, 2, 2), (2, 4, 2), (3, 3, 3), (3, 6, 3), (4, 4, 1)]),
       st.integers(1, 3), st.integers(1, 2), st.integers(0, 1), st.booleans(), st.integers(0, 2**31))
def test_grouped_conv_gradients(channels, k, stride, pad, masked, seed):
    c_in, c_out, groups = channels
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(c_out, c_in // groups, k, k))
    m = (rng.random(w.shape) < 0.6).astype(float) if masked else None
    layer = Conv2d(np, w, rng.normal(size=c_out), m, (stride, stride), (pad, pad), groups)
    check_layer(layer, rng.normal(size=(2, c_in, 4, 4)))


def test_grouped_conv_equals_a_dense_conv_with_zeros_outside_the_groups():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 6, 5, 5))
    for groups in (1, 2, 3, 6):
        w = rng.normal(size=(12, 6 // groups, 3, 3))
        y = Conv2d(np, w, None, None, (2, 2), (1, 1), groups).forward(x)
        ref = Conv2d(np, _ungrouped(w, groups), None, None, (2, 2), (1, 1)).forward(x)
        np.testing.assert_allclose(y, ref, atol=1e-12)


def test_conv_matches_direct_definition():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 5, 6))
    w = rng.normal(size=(4, 3, 3, 2))
    layer = Conv2d(np, w, None, None, (2, 1), (1, 0))
    y = layer.forward(x)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))
    ref = np.zeros(y.shape)
    for o in range(4):
        for yy in range(y.shape[2]):
            for xx in range(y.shape[3]):
                ref[:, o, yy, xx] = (xp[:, :, 2 * yy:2 * yy + 3, xx:xx + 2] * w[o]).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(y, ref, atol=1e-12)


@settings(max_examples=20)
@given(st.sampled_from(["max", "avg"]), st.integers(1, 3), st.integers(1, 3), st.integers(3, 6),
       st.integers(0, 2**31))
def test_pool_gradients(mode, k, s, size, seed):
    rng = np.random.default_rng(seed)
    check_layer(Pool2d(np, mode, (k, k), (s, s)), rng.normal(size=(2, 2, size, size)))


def test_global_pool_gradient_and_value():
    x = np.random.default_rng(2).normal(size=(2, 3, 4, 4))
    layer = Pool2d(np, "avg", (4, 4), (4, 4))
    np.testing.assert_allclose(layer.forward(x)[:, :, 0, 0], x.mean(axis=(2, 3)))
    check_layer(layer, x)


@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 2, 2)])
@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_gradients(shape, train):
    rng = np.random.default_rng(3)
    bn = BatchNorm(np, shape[1], dtype="float64")
    bn.params["weight"] = rng.normal(size=shape[1])
    bn.params["bias"] = rng.normal(size=shape[1])
    bn.running_mean, bn.running_var = rng.normal(size=shape[1]), rng.uniform(0.5, 2, shape[1])
    check_layer(bn, rng.normal(size=shape), train=train)


def test_batchnorm_train_eval_semantics():
    rng = np.random.default_rng(4)
    bn = BatchNorm(np, 2, momentum=0.1, dtype="float64")
    x = rng.normal(3.0, 2.0, size=(400, 2))
    y = bn.forward(x, train=True)
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-12)  # batch statistics
    np.testing.assert_allclose(y.std(axis=0), 1, atol=1e-4)
    np.testing.assert_allclose(bn.running_mean, 0.1 * x.mean(axis=0))
    np.testing.assert_allclose(bn.running_var, 0.9 + 0.1 * x.var(axis=0, ddof=1))
    for _ in range(200):
        bn.forward(x, train=True)
    y_eval = bn.forward(x, train=False)  # running statistics: the batch's, variance unbiased
    ref = (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0, ddof=1) + bn.eps)
    np.testing.assert_allclose(y_eval, ref, atol=1e-8)
    before = bn.running_mean.copy()
    bn.forward(x + 10, train=False)
    np.testing.assert_array_equal(bn.running_mean, before)  # evaluation never updates them


def test_relu_and_cross_entropy():
    rng = np.random.default_rng(5)
    check_layer(ReLU(), rng.normal(size=(3, 4)))
    logits = rng.normal(size=(4, 5))
    labels = np.array([0, 3, 4, 1])
    loss, g = cross_entropy(np, logits, labels)
    ref = -np.mean(np.log(np.exp(logits)[np.arange(4), labels] / np.exp(logits).sum(1)))
    assert loss == pytest.approx(ref)

    def f():
        return cross_entropy(np, logits, labels)[0]

    np.testing.assert_allclose(g, numeric_grad(f, logits), atol=1e-8)
    big, _ = cross_entropy(np, np.array([[1000.0, -1000.0]]), np.array([1]))
    assert np.isfinite(big) and big == pytest.approx(2000.0)


def tiny_net():
    b = ArchBuilder("tiny", (2, 6, 6))
    b.conv(3, 3, padding=1, name="c1", bias=True, batchnorm=True, relu=True)
    b.pool("max", 2, name="p")
    b.conv(3, 3, padding=1, name="c2", batchnorm=True)
    b.add(["p", "c2"], name="add", relu=True)
    b.conv(4, 1, stride=2, name="c3", relu=True)
    b.global_pool(name="gap")
    b.flatten()
    b.dense(5, name="fc1", batchnorm=True, relu=True)
    b.dense(3, name="fc2", bias=True)
    return b.build()


def modern_net():
    """Depthwise and grouped convs, an inverted-residual add and a concat."""
    b = ArchBuilder("modern", (2, 5, 5))
    b.conv(4, 1, name="expand", batchnorm=True, relu=True)
    b.conv(4, 3, padding=1, groups=4, name="depthwise", batchnorm=True, relu=True)
    b.conv(2, 1, name="project")
    b.add(["input", "project"], name="add")
    b.conv(4, 3, padding=1, groups=2, name="grouped", src="add", relu=True)
    b.concat(["grouped", "add"], name="cat")
    b.global_pool(name="gap")
    b.flatten()
    b.dense(3, name="fc", bias=True)
    return b.build()


@pytest.mark.parametrize("backend", TRAINER_BACKENDS)
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("make", [tiny_net, modern_net])
def test_whole_network_gradient(make, train, backend):
    arch = make()
    rng = np.random.default_rng(6)
    masks = {n.name: rng.random(arch.weight_shape(n)) < 0.8 for n in arch.layers}
    net = Network(arch, masks, rng=1, dtype="float64", backend=backend)
    xp = net.xp
    for _, layer, key in net.parameters():  # generic values: no unit sits on a ReLU kink
        layer.params[key] = xp.asarray(rng.normal(0.3, 1.0, layer.params[key].shape))
    net.apply_masks()
    x = rng.normal(size=(4, *arch.input_shape))
    labels = xp.asarray(np.array([0, 1, 2, 1]))

    def f():
        return float(cross_entropy(xp, net.forward(x, train), labels)[0])

    _, g = cross_entropy(xp, net.forward(x, train), labels)
    net.backward(g)
    for name, layer, key in net.parameters():
        analytic = to_numpy(layer.grads[key])
        host = to_numpy(layer.params[key])

        def set_param(value, layer=layer, key=key):
            layer.params[key] = xp.asarray(value)

        def f_at(value, set_param=set_param):
            set_param(value)
            return f()

        numeric = numeric_grad_fn(f_at, host)
        set_param(host)
        np.testing.assert_allclose(analytic, numeric, atol=1e-6, rtol=1e-4, err_msg=name)


def test_init_schemes():
    rng = np.random.default_rng(7)
    w = init_weight((256, 128, 3, 3), "kaiming", rng)
    assert w.std() == pytest.approx(np.sqrt(2 / (128 * 9)), rel=0.02)
    w = init_weight((300, 100), "xavier", rng)
    assert np.abs(w).max() <= np.sqrt(6 / 400) and w.std() == pytest.approx(np.sqrt(2 / 400),
                                                                            rel=0.03)
    w = init_weight((300, 100), "fan-avg", rng)
    assert w.std() == pytest.approx(np.sqrt(1 / 200), rel=0.03)
    with pytest.raises(ValueError, match="init must be"):
        init_weight((2, 2), "orthogonal", rng)


def test_every_zoo_architecture_builds_and_runs():
    rng = np.random.default_rng(8)
    for name in ["lenet-300-100", "lenet-5", "vgg-11", "resnet-20", "mobilenet-v2"]:
        arch = get_arch(name)
        net = Network(arch, rng=0)
        x = rng.normal(size=(2, *arch.input_shape)).astype(np.float32)
        logits = net.forward(x)
        assert logits.shape == (2, arch.output.channels) and np.isfinite(logits).all()
        net.backward(cross_entropy(np, logits, np.array([0, 1]))[1])


# ---------------------------------------------------------------------------- fused kernels
# Each test runs a layer twice: once on the trainer's Numba kernels (``connsim.trainer._fused``,
# plain Python under NUMBA_DISABLE_JIT) and once on its array version, and compares.

def _both_paths(monkeypatch, run):
    """``run()`` on the kernels, then on the array version."""
    from connsim.trainer import _fused, layers

    monkeypatch.setattr(layers, "fused_kernels", lambda xp: _fused)
    fused = run()
    monkeypatch.setattr(layers, "fused_kernels", lambda xp: None)
    return fused, run()


def _layout(x, layout):
    """The values of ``x`` as a C-contiguous array, as a view of channel-first memory (a conv
    layer's output) or as a strided slice (neither)."""
    if layout == "channel-first":
        out = np.ascontiguousarray(x.swapaxes(0, 1)).swapaxes(0, 1)
        assert not out.flags.c_contiguous or x.shape[0] == 1 or x.shape[1] == 1
    elif layout == "strided":
        out = np.repeat(x, 2, axis=-1)[..., ::2]
        assert not out.flags.c_contiguous and not out.flags.f_contiguous
    else:
        out = np.ascontiguousarray(x)
    np.testing.assert_array_equal(out, x)
    return out


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5, 5), (1, 2, 3, 3), (5, 1)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("layout", ["c", "channel-first", "strided"])
def test_batchnorm_kernels_match_the_array_version(monkeypatch, shape, dtype, layout):
    rng = np.random.default_rng(7)
    x = _layout((rng.normal(size=shape) * 3 + 1).astype(dtype), layout)
    dy = _layout(rng.normal(size=shape).astype(dtype), "channel-first" if layout == "c" else
                 "strided" if layout == "channel-first" else "c")
    w, b = rng.normal(size=shape[1]).astype(dtype), rng.normal(size=shape[1]).astype(dtype)

    def run():
        bn = BatchNorm(np, shape[1], dtype=dtype)
        bn.params["weight"], bn.params["bias"] = w, b
        y = bn.forward(x, train=True)
        return y, bn.backward(dy), dict(bn.grads), bn.running_mean, bn.running_var

    (y, dx, grads, rm, rv), (y0, dx0, grads0, rm0, rv0) = _both_paths(monkeypatch, run)
    tol = {"float64": 1e-12, "float32": 2e-5}[dtype]
    for got, want in [(y, y0), (dx, dx0), (grads["weight"], grads0["weight"]),
                      (grads["bias"], grads0["bias"]), (rm, rm0), (rv, rv0)]:
        assert got.dtype == want.dtype == np.dtype(dtype)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * 10)
    # a conv layer's channel-first output stays channel-first; other layouts come out C-ordered
    if layout == "channel-first" and min(shape[:2]) > 1:
        assert y.swapaxes(0, 1).flags.c_contiguous and dx.swapaxes(0, 1).flags.c_contiguous
    elif min(shape[:2]) > 1:
        assert y.flags.c_contiguous and dx.flags.c_contiguous


@pytest.mark.parametrize("kernels", [True, False])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("shape, layout", [((6, 3), "c"), ((4, 3, 5, 6), "c"),
                                           ((4, 3, 5, 6), "channel-first"),
                                           ((4, 3, 5, 6), "strided")])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batchnorm_with_relu_is_batchnorm_then_relu_bit_for_bit(monkeypatch, kernels, train,
                                                               shape, layout, dtype):
    """``BatchNorm(relu=True)`` against ``BatchNorm`` followed by ``ReLU``: the same bytes for
    the output, the input gradient and both parameter gradients, on the kernels and on the
    array version, in training and evaluation, with outputs at exactly 0, gradients of inf and
    NaN and -0.0 (ReLU's product keeps NaN, turns negatives into -0.0 and inf * 0 into NaN)."""
    from connsim.trainer import _fused, layers

    monkeypatch.setattr(layers, "fused_kernels", lambda xp: _fused if kernels else None)
    rng = np.random.default_rng(9)
    x = _layout(rng.normal(size=shape).astype(dtype), layout)
    w, b = rng.normal(size=shape[1]).astype(dtype), rng.normal(size=shape[1]).astype(dtype)
    mean = rng.normal(size=shape[1]).astype(dtype)  # eval: nonzero running statistics
    dy = rng.normal(size=shape).astype(dtype)
    special = dy.copy()  # in channel 0 only: a NaN spreads over its channel's sums
    special[:4, 0] = np.array([np.inf, np.nan, -0.0, -np.inf]).reshape(
        (4,) + (1,) * (len(shape) - 2))

    def run(fused, grad):
        bn = BatchNorm(np, shape[1], dtype=dtype, relu=fused)
        bn.params["weight"], bn.params["bias"] = w.copy(), b.copy()
        bn.running_mean = mean.copy()
        ops = [bn] if fused else [bn, ReLU()]
        y = x
        for op in ops:
            y = op.forward(y, train=train)
        g = _layout(grad, layout)
        for op in reversed(ops):
            with np.errstate(invalid="ignore"):  # inf * 0
                g = op.backward(g)
        return y, g, bn.grads["weight"], bn.grads["bias"]

    for grad in (dy, special):
        fused = run(True, grad)
        for got, want in zip(fused, run(False, grad), strict=True):
            assert got.dtype == want.dtype and got.shape == want.shape
            assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want).tobytes()
        assert (fused[0] == 0).any()  # the ReLU cut some values
        assert np.isfinite(fused[1][:, 1:]).all()  # the other channels stay finite
    assert np.isnan(fused[1][:, 0]).any()


def test_network_fuses_batchnorm_and_relu_unless_a_unit_mask_comes_between():
    from connsim.granularity import UnitMasks

    arch = get_arch("lenet-300-100")
    ops = Network(arch, rng=0).ops["fc1"]
    assert [type(op).__name__ for op in ops] == ["Dense", "BatchNorm"] and ops[1].relu
    keep = {"fc1": np.ones(300, dtype=bool)}
    for position, names in [("pre", ["Dense", "BatchNorm", "UnitMask", "ReLU"]),
                            ("post", ["Dense", "BatchNorm", "UnitMask"])]:
        net = Network(arch, rng=0, units=UnitMasks(keep, position=position))
        assert [type(op).__name__ for op in net.ops["fc1"]] == names
        assert net.ops["fc1"][1].relu == (position == "post")


def test_batchnorm_kernel_sums_are_the_more_accurate():
    from connsim.trainer import _fused

    rng = np.random.default_rng(8)
    x = (rng.normal(size=(64, 2, 8, 8)) * 1e-3 + 1e3).astype(np.float32)  # cancellation-prone
    mean, var = np.empty(2), np.empty(2)
    planes = x.reshape(64, 2, -1)
    _fused.bn_moments(planes, 1, mean, var)
    exact = x.astype(np.float64)
    np.testing.assert_allclose(mean, exact.mean(axis=(0, 2, 3)), rtol=1e-15)
    np.testing.assert_allclose(var, exact.var(axis=(0, 2, 3)), rtol=1e-9)


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize(("k", "s"), [(2, 2), (3, 2), (3, 1), (2, 3)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("layout", ["c", "channel-first", "strided"])
def test_pool_kernels_are_bit_identical_to_the_array_version(monkeypatch, mode, k, s, dtype,
                                                             layout):
    rng = np.random.default_rng(9)
    x = np.round(rng.normal(size=(3, 2, 7, 8)), 1).astype(dtype)  # ties between window entries
    x[0, 0, 1, 1] = np.nan  # NaN wins the maximum, first NaN the argmax
    x[1, 1, 2, :] = -0.0
    x[2, 0, 0, 0] = np.inf
    x = _layout(x, layout)

    def run():
        layer = Pool2d(np, mode, (k, k), (s, s))
        y = layer.forward(x)
        if hasattr(layer, "cf"):  # the kernels ran: channel-first memory stays channel-first
            assert layer.cf == (layout == "channel-first")
        dy = np.random.default_rng(10).normal(size=y.shape).astype(dtype)
        dy[0, 0, 0, :] = [-0.0, np.inf, -np.inf] + [1.0] * (y.shape[3] - 3)
        dy = _layout(dy, "c" if layout == "strided" else "strided")
        with np.errstate(invalid="ignore"):  # the array version's inf * 0
            return y, layer.backward(dy)

    (y, dx), (y0, dx0) = _both_paths(monkeypatch, run)
    assert y.shape == y0.shape and dx.shape == dx0.shape == x.shape
    assert y.dtype == y0.dtype and dx.dtype == dx0.dtype
    # NumPy's vectorised maximum leaves the sign of a zero maximum open: values, then bytes
    np.testing.assert_array_equal(y, y0)
    assert y[y != 0].tobytes() == y0[y0 != 0].tobytes()
    assert np.ascontiguousarray(dx).tobytes() == np.ascontiguousarray(dx0).tobytes()


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.integers(2, 30), st.integers(1, 9), st.sampled_from([0.0, 0.1, 0.5, 1.0]),
       st.booleans(), st.sampled_from(["float32", "float64"]),
       st.sampled_from(["c", "channel-first", "strided"]), st.integers(0, 2**31 - 1))
def test_sparse_dense_products_match_the_dense_oracle(n_out, n_in, batch, density, bias, dtype,
                                                      layout, seed):
    """The sparse path's forward pass and input gradient (the kernels, and SciPy's products of
    the array version) against the dense products of the masked weight, in float64: empty rows
    and columns, a layer with no kept weight, batches of one, inputs and gradients in C order,
    Fortran order or strided. With the kernels both come out C-ordered, as the dense products
    do (mixed layouts slowed the next layer 4-8x)."""
    from connsim.trainer import _fused, layers

    rng = np.random.default_rng(seed)
    mask = (rng.random((n_out, n_in)) < density).astype(dtype)
    w = rng.normal(size=mask.shape).astype(dtype)
    b = rng.normal(size=n_out).astype(dtype) if bias else None
    x = rng.normal(size=(batch, n_in)).astype(dtype)
    dy = rng.normal(size=(batch, n_out)).astype(dtype)
    if batch > 1 and n_out > 1:
        x, dy = _layout(x, layout), _layout(dy, layout)
    wm = w.astype(np.float64) * mask
    want_y = x.astype(np.float64) @ wm.T + (0 if b is None else b)
    want_dx = dy.astype(np.float64) @ wm
    tol = {"float32": dict(rtol=2e-5, atol=2e-5), "float64": dict(rtol=1e-12, atol=1e-12)}[dtype]
    for kernels in (_fused, None):
        layer = Dense(np, w.copy(), None if b is None else b.copy(), mask, sparse=True)
        old = layers.fused_kernels
        layers.fused_kernels = lambda xp, k=kernels: k
        try:
            y = layer.forward(x)
            dx = layer.backward(dy)
        finally:
            layers.fused_kernels = old
        assert y.dtype == dx.dtype == np.dtype(dtype)
        np.testing.assert_allclose(y, want_y, **tol)
        np.testing.assert_allclose(dx, want_dx, **tol)
        np.testing.assert_allclose(layer.grads["weight"], (dy.T.astype(np.float64) @ x) * mask,
                                   **tol)
        if kernels is not None:
            assert y.flags.c_contiguous and dx.flags.c_contiguous


@settings(max_examples=40, deadline=None)
@given(groups=st.sampled_from([1, 2, 3]), per_in=st.integers(1, 2), per_out=st.integers(1, 3),
       kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       stride=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       pad=st.tuples(st.integers(0, 1), st.integers(0, 2)),
       density=st.sampled_from([0.0, 0.15, 1.0]), bias=st.booleans(),
       dtypes=st.sampled_from([("float32", "float32"), ("float64", "float64"),
                               ("float32", "float64"), ("float64", "float32")]),
       layout=st.sampled_from(["c", "channel-first", "strided"]), seed=st.integers(0, 2**31 - 1))
def test_sparse_conv_matches_the_dense_products(groups, per_in, per_out, kernel, stride, pad,
                                                density, bias, dtypes, layout, seed):
    """A conv layer on the sparse path (its kept weights only, through the kernels) against the
    same layer's dense masked products: output, input gradient and both parameter gradients,
    values and dtypes. Grouped and depthwise layers (with channel multipliers), non-square
    kernels, strides and padding, inputs and gradients in other memory layouts, weights and
    data of different float types, no kept weight at all and every weight kept."""
    from connsim.trainer import _fused, layers

    rng = np.random.default_rng(seed)
    wdt, xdt = dtypes
    c_in, c_out = groups * per_in, groups * per_out
    mask = (rng.random((c_out, per_in, *kernel)) < density).astype(wdt)
    w = rng.normal(size=mask.shape).astype(wdt) * mask
    b = rng.normal(size=c_out).astype(wdt) if bias else None
    x = _layout(rng.normal(size=(3, c_in, 7, 6)).astype(xdt), layout)
    tol = dict(rtol=1e-4, atol=1e-4) if "float32" in dtypes else dict(rtol=1e-11, atol=1e-12)
    old = layers.fused_kernels
    layers.fused_kernels = lambda xp: _fused  # the kernels, also under NUMBA_DISABLE_JIT
    try:
        got = []
        for sparse in (True, False):
            layer = Conv2d(np, w.copy(), None if b is None else b.copy(), mask, stride, pad,
                           groups, sparse=sparse)
            assert (layer.kept is not None) == sparse
            y = layer.forward(x)
            dy = np.random.default_rng(seed + 1).normal(size=y.shape).astype(xdt)
            dx = layer.backward(_layout(dy, layout))
            got.append((y, dx, layer.grads["weight"], layer.grads.get("bias")))
    finally:
        layers.fused_kernels = old
    (y, dx, gw, gb), (y0, dx0, gw0, gb0) = got
    for a, a0 in ((y, y0), (dx, dx0), (gw, gw0)):
        assert a.shape == a0.shape and a.dtype == a0.dtype
        np.testing.assert_allclose(a, a0, **tol)
    assert np.all(gw[mask == 0] == 0)
    if bias:
        np.testing.assert_allclose(gb, gb0, **tol)


@pytest.mark.parametrize("wdt, xdt", [("float64", "float32"), ("float32", "float64")])
def test_sparse_dense_gives_the_dense_products_dtypes(wdt, xdt):
    """With weights (and mask and bias) of one float type and data of another, the sparse path
    returns and stores what the dense products would: the promoted type."""
    rng = np.random.default_rng(5)
    mask = (rng.random((4, 6)) < 0.5).astype(wdt)
    w, b = rng.normal(size=(4, 6)).astype(wdt) * mask, np.ones(4, dtype=wdt)
    x, dy = rng.normal(size=(3, 6)).astype(xdt), rng.normal(size=(3, 4)).astype(xdt)
    got = []
    for sparse in (True, False):
        layer = Dense(np, w.copy(), b.copy(), mask, sparse=sparse)
        y = layer.forward(x)
        dx = layer.backward(dy)
        got.append((y, dx, layer.grads["weight"]))
    for a, a0 in zip(*got, strict=True):
        assert a.dtype == a0.dtype == np.float64
        np.testing.assert_allclose(a, a0, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("k", "stride", "padding", "groups"),
                         [((3, 3), (1, 1), (1, 1), 1), ((5, 3), (2, 1), (0, 2), 2),
                          ((2, 2), (3, 3), (0, 0), 1), ((3, 3), (2, 2), (1, 1), 4)])
@pytest.mark.parametrize(("xdt", "wdt"), [("float32", "float32"), ("float64", "float64"),
                                          ("float32", "float64")])
def test_conv_input_gradient_kernel_is_bit_identical_to_the_array_version(
        monkeypatch, k, stride, padding, groups, xdt, wdt):
    """The window gradients summed into the input gradient plane by plane (``window_sum``):
    the same additions, in the same order and types, as the array version's slices."""
    rng = np.random.default_rng(12)
    w = rng.normal(size=(8, 4 // groups, *k)).astype(wdt)
    x = rng.normal(size=(3, 4, 9, 10)).astype(xdt)

    def run():
        layer = Conv2d(np, w.copy(), None, stride=stride, padding=padding, groups=groups)
        y = layer.forward(x)
        dy = np.random.default_rng(13).normal(size=y.shape).astype(xdt)
        return layer.backward(dy)

    dx, dx0 = _both_paths(monkeypatch, run)
    assert dx.dtype == dx0.dtype and dx.shape == dx0.shape == x.shape
    assert np.ascontiguousarray(dx).tobytes() == np.ascontiguousarray(dx0).tobytes()


def test_sparse_dense_kernel_gradient_matches_the_array_version(monkeypatch):
    rng = np.random.default_rng(11)
    w = rng.normal(size=(40, 30))
    mask = (rng.random(w.shape) < 0.1).astype(np.float64)
    x, dy = rng.normal(size=(17, 30)), rng.normal(size=(17, 40))

    def run():
        layer = Dense(np, w.copy(), mask=mask, sparse=True)
        layer.forward(x)
        return layer.backward(dy), layer.grads["weight"]

    (dx, gw), (dx0, gw0) = _both_paths(monkeypatch, run)
    np.testing.assert_allclose(gw, gw0, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(gw, (dy.T @ x) * mask, rtol=1e-12, atol=1e-13)
    assert np.all(gw[mask == 0] == 0)
    np.testing.assert_array_equal(dx, dx0)

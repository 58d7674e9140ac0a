import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connsim import ArchBuilder, _kernels, connectivity, effective_masks, get_arch, measure, ones_masks
from connsim.granularity import unit_masks
from connsim.measures import summarize
from tests.naive import synflow_effective
from tests.strategies import conv_archs, modern_archs, random_masks

densities = st.floats(0.05, 0.9)
seeds = st.integers(0, 2**32 - 1)


def assert_masks_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@given(conv_archs(), densities, seeds)
def test_position_level_equals_linearised_gradient_pattern(arch, d, seed):
    masks = random_masks(arch, d, seed)
    assert_masks_equal(effective_masks(arch, masks, level="position"),
                       synflow_effective(arch, masks, seed))


@given(conv_archs(padded=False), densities, seeds)
def test_levels_agree_on_unpadded_convs(arch, d, seed):
    masks = random_masks(arch, d, seed)
    ch = connectivity(arch, masks, level="channel")
    pos = connectivity(arch, masks, level="position")
    assert_masks_equal(ch.effective, pos.effective)
    for node in arch.nodes:
        np.testing.assert_array_equal(ch.active(node.name)[: pos.active(node.name).size],
                                      pos.active(node.name))


@given(st.lists(st.integers(1, 8), min_size=2, max_size=5), densities, seeds)
def test_levels_agree_on_mlps(widths, d, seed):
    arch = get_arch("mlp:" + "-".join(map(str, widths)))
    masks = random_masks(arch, d, seed)
    assert_masks_equal(effective_masks(arch, masks, level="channel"),
                       effective_masks(arch, masks, level="position"))
    assert_masks_equal(effective_masks(arch, masks), synflow_effective(arch, masks, seed))


@given(conv_archs(), densities, seeds, st.sampled_from(["channel", "position"]))
def test_effective_properties(arch, d, seed, level):
    masks = random_masks(arch, d, seed)
    eff = effective_masks(arch, masks, level=level)
    for k in masks:  # effective is a subset of direct
        assert not (eff[k] & ~masks[k]).any()
    assert_masks_equal(effective_masks(arch, eff, level=level), eff)  # idempotent
    if level == "position":  # position level refines the channel level
        ch = effective_masks(arch, masks, level="channel")
        for k in masks:
            assert not (eff[k] & ~ch[k]).any()


@given(conv_archs(), densities, seeds, st.data())
def test_removing_a_weight_never_adds_effective_weights(arch, d, seed, data):
    masks = random_masks(arch, d, seed)
    kept = [(k, idx) for k in masks for idx in zip(*np.nonzero(masks[k]), strict=True)]
    if not kept:
        return
    layer, idx = data.draw(st.sampled_from(kept))
    fewer = {k: v.copy() for k, v in masks.items()}
    fewer[layer][idx] = False
    for level in ("channel", "position"):
        before = effective_masks(arch, masks, level=level)
        after = effective_masks(arch, fewer, level=level)
        for k in masks:
            assert not (after[k] & ~before[k]).any()


def test_padding_only_weight_is_channel_effective_but_not_position_effective():
    b = ArchBuilder("pad", (1, 1, 1))
    b.conv(1, 3, padding=1, name="c")
    b.flatten()
    b.dense(1, name="fc")
    arch = b.build()
    masks = {"c": np.zeros((1, 1, 3, 3), bool), "fc": np.ones((1, 1), bool)}
    masks["c"][0, 0, 0, 0] = True  # reads only zero padding of the 1x1 map
    assert measure(arch, masks, level="channel").effective == 2
    pos = measure(arch, masks, level="position")
    assert pos.effective == 0 and pos.disconnected
    masks["c"][0, 0, 1, 1] = True  # the centre tap reads the pixel
    eff = effective_masks(arch, masks, level="position")["c"]
    assert eff[0, 0, 1, 1] and not eff[0, 0, 0, 0]


def test_bias_only_unit_is_not_reachable():
    arch = get_arch("mlp:2-2-1")
    masks = {"fc1": np.array([[1, 1], [0, 0]]), "fc2": np.array([[1, 1]])}
    c = connectivity(arch, masks)
    assert c.forward["fc1"].tolist() == [True, False]
    assert c.effective["fc2"].tolist() == [[True, False]]
    m = measure(arch, masks)
    assert (m.kept, m.effective, m.removable_units, m.hidden_units) == (4, 3, 1, 2)


def test_dense_network_is_fully_effective_and_disconnection():
    arch = get_arch("lenet-5")
    for level in ("channel", "position"):
        m = measure(arch, ones_masks(arch), level=level)
        assert m.effective == m.kept == arch.total_params
        assert m.effective_compression == 1.0 and not m.disconnected
    masks = ones_masks(arch)
    masks["fc2"][:] = False
    m = measure(arch, masks)
    assert m.disconnected and m.effective == 0
    assert m.to_dict()["effective"]["compression"] is None
    assert m.to_dict()["direct"]["compression"] == pytest.approx(arch.total_params / m.kept)


@pytest.mark.parametrize("level", ["channel", "position"])
def test_a_cut_first_layer_leaves_the_backward_side_intact(level):
    """No reached source after the cut: later layers skip their forward reads, yet their
    co-reachability is still computed in full (it is reported) and nothing is effective."""
    arch = get_arch("lenet-5")
    masks = random_masks(arch, 0.3, 1)
    masks["conv1"][:] = False
    got = connectivity(arch, masks, level=level)
    assert not any(e.any() for e in got.effective.values())
    whole = connectivity(arch, {**masks, "conv1": np.ones_like(masks["conv1"])}, level=level)
    for node in arch.nodes[1:]:  # the backward side does not depend on the first layer's mask
        np.testing.assert_array_equal(got.backward[node.name], whole.backward[node.name], node.name)
        assert not got.forward[node.name].any()


def test_residual_shortcut_keeps_network_connected():
    arch = get_arch("resnet-20")
    masks = ones_masks(arch)
    for name in masks:
        if name.startswith("layer1.") and name.endswith("conv2"):
            masks[name][:] = False  # identity shortcuts carry the signal past the dead convs
    for level in ("channel", "position"):
        c = connectivity(arch, masks, level=level)
        assert not c.disconnected
        assert not c.effective["layer1.0.conv1"].any()  # feeds only a dead conv2
        assert c.effective["layer2.0.conv1"].all()


@pytest.mark.slow
def test_vgg19_position_level_at_high_compression_is_sparser():
    arch = get_arch("vgg-19")
    masks = random_masks(arch, 0.002, 0)
    ch = measure(arch, masks, level="channel")
    pos = measure(arch, masks, level="position")
    assert pos.effective <= ch.effective <= ch.kept


def test_level_and_layout_validation():
    arch = get_arch("mlp:3-2")
    with pytest.raises(ValueError, match="level"):
        connectivity(arch, ones_masks(arch), level="pixel")
    keras = {"fc1": np.ones((3, 2))}
    assert measure(arch, keras, layout="keras").kept == 6
    with pytest.raises(ValueError, match="layout='keras'"):
        measure(arch, keras)


@settings(max_examples=40)
@given(st.one_of(modern_archs(), conv_archs()), densities, seeds, st.booleans())
def test_measure_counts_what_the_effective_masks_hold(arch, d, seed, with_units):
    """``measure`` counts in its backward pass and writes no effective mask: its result equals
    the counts of the written masks, with and without deleted units."""
    masks = random_masks(arch, d, seed)
    units = unit_masks(arch, masks, "channel", "output") if with_units else None
    assert measure(arch, masks, units=units) == summarize(connectivity(arch, masks, units=units))


@settings(max_examples=40)
@given(st.one_of(modern_archs(), conv_archs()), densities, seeds, st.integers(0, 10**6),
       st.booleans())
def test_layers_behind_a_cut_change_no_count_and_no_effective_weight(arch, d, seed, cut,
                                                                     with_units):
    """``measure`` and ``effective_masks`` leave out the co-reachability that a layer with no
    reached input would pass back (``connectivity`` reports it): with one layer's mask emptied
    (a cut), their counts and masks still equal those of ``connectivity``, with and without
    deleted units."""
    masks = random_masks(arch, d, seed)
    masks[arch.layer_names[cut % len(arch.layer_names)]][...] = False
    units = unit_masks(arch, masks, "channel", "output") if with_units else None
    conn = connectivity(arch, masks, units=units)
    assert measure(arch, masks, units=units) == summarize(conn)
    if units is None:
        assert_masks_equal(effective_masks(arch, masks), conn.effective)
        out = {name: np.ones(m.shape, bool) for name, m in masks.items()}
        assert_masks_equal(effective_masks(arch, masks, out=out), conn.effective)
        own = {name: m.copy() for name, m in masks.items()}
        assert_masks_equal(effective_masks(arch, own, out=own), conn.effective)


@settings(max_examples=30)
@given(st.one_of(modern_archs(), conv_archs()), densities, seeds, st.sampled_from(["channel",
                                                                                   "position"]))
def test_effective_masks_into_given_arrays_and_in_place(arch, d, seed, level):
    masks = random_masks(arch, d, seed)
    want = effective_masks(arch, masks, level=level)
    out = {name: np.ones(a.shape, bool) for name, a in want.items()}  # every byte must be written
    got = effective_masks(arch, masks, level=level, out=out)
    assert all(got[name] is out[name] for name in out)
    assert_masks_equal(got, want)
    assert_same_reach(connectivity(arch, masks, level=level, out=out),
                      connectivity(arch, masks, level=level))
    own = {name: m.copy() for name, m in masks.items()}
    got = effective_masks(arch, own, level=level, out=own)
    assert all(got[name] is own[name] for name in own)
    assert_masks_equal(own, want)


def test_effective_masks_out_is_checked():
    arch = get_arch("mlp:4-3-2")
    masks = ones_masks(arch)
    fresh = {"fc1": np.empty((3, 4), bool), "fc2": np.empty((2, 3), bool)}
    both = np.empty(18, bool)
    cases = [
        ([np.empty((3, 4), bool)], "out must be a mapping"),
        ({"fc1": fresh["fc1"]}, r"exactly \['fc1', 'fc2'\]"),
        ({**fresh, "fc1": np.empty((3, 4), np.uint8)}, "out\\['fc1'\\] must be a boolean"),
        ({**fresh, "fc1": [[True] * 4] * 3}, "boolean ndarray, got list"),
        ({**fresh, "fc2": np.empty((3, 2), bool)}, r"of shape \(2, 3\).*got shape \(3, 2\)"),
        ({**fresh, "fc1": np.empty((4, 3), bool).T}, "non-contiguous"),
        ({**fresh, "fc1": np.broadcast_to(np.empty((1, 4), bool), (3, 4))}, "contiguous"),
        ({**fresh, "fc2": masks["fc1"][:2, :3]}, "non-contiguous"),
        ({"fc1": both[:12].reshape(3, 4), "fc2": both[6:12].reshape(2, 3)},
         "overlaps the output of layer 'fc1'"),
        ({**fresh, "fc2": masks["fc1"].reshape(-1)[:6].reshape(2, 3)},
         "overlaps the mask of layer 'fc1'"),
    ]
    read_only = np.empty((3, 4), bool)
    read_only.flags.writeable = False
    cases.append(({**fresh, "fc1": read_only}, "read-only"))
    for out, match in cases:
        before = {name: m.copy() for name, m in masks.items()}
        with pytest.raises(ValueError, match=match):
            effective_masks(arch, masks, out=out)
        assert_masks_equal(masks, before)  # nothing written
    base = np.ones(13, bool)  # fc1's mask, and the same bytes shifted by one
    masks["fc1"] = base[:12].reshape(3, 4)
    with pytest.raises(ValueError, match="overlaps the mask of layer 'fc1'"):
        effective_masks(arch, masks, out={**fresh, "fc1": base[1:].reshape(3, 4)})
    with pytest.raises(ValueError, match=r"exactly \['fc1', 'fc2'\]"):  # not sortable keys
        effective_masks(arch, masks, out={"fc1": fresh["fc1"], 2: fresh["fc2"]})
    # connectivity keeps its masks: it never overwrites them
    with pytest.raises(ValueError, match="overlaps the mask of layer 'fc1'.*effective_masks can"):
        connectivity(arch, masks, out={**fresh, "fc1": masks["fc1"]})
    # masks given in Keras layout are copied to PyTorch layout: a square one is not the output
    square = get_arch("mlp:4-4-4")
    keras = {name: np.ones((4, 4), bool) for name in square.layer_names}
    with pytest.raises(ValueError, match="overlaps the mask as given of layer 'fc1'"):
        effective_masks(square, keras, layout="keras", out=keras)
    assert all(m.all() for m in keras.values())


def test_in_place_on_masks_large_enough_for_threads():
    """``out=masks`` on layers split over Numba's threads (masks of 1 MiB and more)."""
    arch = get_arch("mlp:1100-1100-1100-10")
    masks = random_masks(arch, 0.002, 5)
    want = effective_masks(arch, masks)
    assert masks["fc2"].nbytes >= _kernels.PARALLEL_BYTES
    assert 0 < sum(int(w.sum()) for w in want.values()) < sum(int(m.sum()) for m in masks.values())
    got = effective_masks(arch, masks, out=masks)
    assert_masks_equal(got, want)
    assert all(got[name] is masks[name] for name in masks)


def test_reach_and_zeros_written_where_no_source_is_reached():
    """Layers behind a cut (no reached source) still pass co-reachability back, at every thread
    count, whether their zero effective masks are written into ``out`` or left as fresh zeros."""
    arch = get_arch("mlp:1100-1100-1100-10")
    masks = random_masks(arch, 0.01, 3)
    masks["fc1"][:] = False  # nothing past the input is reached
    assert masks["fc2"].nbytes >= _kernels.PARALLEL_BYTES
    want = connectivity(arch, masks)
    assert want.backward["fc1"].any() and not want.forward["fc1"].any()
    for threads in range(1, numba.config.NUMBA_NUM_THREADS + 1):
        numba.set_num_threads(threads)
        try:
            out = {name: np.ones(m.shape, bool) for name, m in masks.items()}
            got = connectivity(arch, masks, out=out)
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        assert_same_reach(got, want)
        assert not any(m.any() for m in got.effective.values())


def two_readers_of_a_flatten():
    b = ArchBuilder("two-readers", (2, 2, 2))
    b.conv(2, 1, name="c")
    flat = b.flatten(name="f")
    b.dense(3, name="d1", src=flat)
    b.dense(3, name="d2", src=flat)
    b.concat(["d1", "d2"])
    b.dense(2, name="out")
    return b.build()


@pytest.mark.parametrize("empty", ["d1", "d2"])
def test_a_flatten_read_by_two_layers_reports_what_either_reads(empty):
    """The units of a flatten are co-reached when any layer that reads it uses them: one reader
    with an empty mask leaves them to the other, as at the position level."""
    arch = two_readers_of_a_flatten()
    masks = {n.name: np.ones(arch.weight_shape(n), bool) for n in arch.layers}
    masks[empty][:] = False
    channel, position = connectivity(arch, masks), connectivity(arch, masks, level="position")
    assert channel.backward["f"].all()
    np.testing.assert_array_equal(channel.backward["f"], position.backward["f"])
    assert summarize(channel) == measure(arch, masks)
    assert [m.active_in for m in summarize(channel).layers] == [2, 8, 8, 3]


def assert_same_reach(got, want):
    for name in want.forward:
        np.testing.assert_array_equal(got.forward[name], want.forward[name], err_msg=name)
        np.testing.assert_array_equal(got.backward[name], want.backward[name], err_msg=name)


def test_boolean_bytes_other_than_one_are_kept_weights():
    """A boolean array may hold any nonzero byte (a view of uint8 data): each is one kept
    weight, to every mask kernel (forward, backward, counts)."""
    arch = get_arch("mlp:20-9-3")
    rng = np.random.default_rng(0)
    raw = {n.name: (rng.random(arch.weight_shape(n)) < 0.6) * rng.integers(1, 256, arch.weight_shape(n))
           for n in arch.layers}
    masks = {name: a.astype(np.uint8).view(bool) for name, a in raw.items()}
    canonical = {name: a != 0 for name, a in raw.items()}
    want = summarize(connectivity(arch, canonical))
    assert measure(arch, masks) == want
    got = connectivity(arch, masks)
    assert_masks_equal(got.effective, effective_masks(arch, canonical))
    assert all(np.isin(a.view(np.uint8), (0, 1)).all() for a in [*got.effective.values(),
                                                                 *got.backward.values()])
    assert want.kept == sum(int(np.count_nonzero(a)) for a in raw.values())

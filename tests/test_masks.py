import numpy as np
import pytest

from connsim import check_masks, get_arch, ones_masks
from connsim.masks import from_layout, to_layout


def test_check_masks_canonical_form():
    arch = get_arch("lenet-5")
    masks = {k: v.astype(np.float32) for k, v in ones_masks(arch).items()}
    out = check_masks(arch, masks)
    assert list(out) == list(arch.layer_names)
    assert all(v.dtype == bool and v.flags.c_contiguous for v in out.values())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.pop("fc2"), "missing layers \\['fc2'\\]"),
        (lambda m: m.update(fc9=np.ones(3)), "unknown layers \\['fc9'\\]"),
        (lambda m: m.update(fc1=np.ones((5, 5))), "expected shape \\(120, 400\\)"),
        (lambda m: m.update(fc1=np.full((120, 400), 0.5)), "not binary"),
        (lambda m: m.update(fc1=np.full((120, 400), np.nan)), "NaN"),
        (lambda m: m.update(fc1=np.full((120, 400), "a")), "dtype"),
        (lambda m: m.update(fc1=np.ones((0, 400))), "expected shape"),
    ],
)
def test_bad_masks(change, message):
    arch = get_arch("lenet-5")
    masks = ones_masks(arch)
    change(masks)
    with pytest.raises((ValueError, TypeError), match=message):
        check_masks(arch, masks)


def test_not_a_mapping():
    with pytest.raises(TypeError, match="mapping"):
        check_masks(get_arch("lenet-5"), [np.ones(3)])


def test_layout_roundtrip():
    rng = np.random.default_rng(0)
    for shape in [(4, 3), (4, 3, 5, 2)]:
        a = rng.random(shape) < 0.5
        k = to_layout(a, "keras")
        assert k.shape == ((3, 4) if a.ndim == 2 else (5, 2, 3, 4))
        np.testing.assert_array_equal(from_layout(k, "keras"), a)
    with pytest.raises(ValueError, match="layout"):
        to_layout(a, "jax")

import json

import pytest

from connsim import ArchBuilder, from_dict, get_arch, load_arch

# SPEC section 3 totals
TOTALS = [
    ("lenet-300-100", {}, 266_200),
    ("lenet-5", {}, 61_770),
    ("vgg-16", {"classes": 10}, 14_715_584),
    ("vgg-19", {"classes": 100}, 20_070_080),
    ("resnet-18", {"classes": 200, "input_shape": (3, 64, 64)}, 11_261_632),
    ("resnet-20", {}, 267_696 + 2_560 + 640),
    ("mlp:784-300-100-10", {}, 266_200),
]


@pytest.mark.parametrize(("name", "kw", "total"), TOTALS)
def test_zoo_totals(name, kw, total):
    assert get_arch(name, **kw).total_params == total


def test_resnet20_parts():
    arch = get_arch("resnet-20")
    main = [n for n in arch.layers if n.op == "conv" and "shortcut" not in n.name]
    short = [n for n in arch.layers if "shortcut" in n.name]
    assert len(main) == 19
    assert sum(arch.n_params(n) for n in main) == 267_696
    assert sum(arch.n_params(n) for n in short) == 2_560
    assert arch.n_params("fc") == 640
    assert not arch.is_chain


def test_chain_flags_and_shapes():
    assert get_arch("vgg-16").is_chain
    arch = get_arch("lenet-5")
    assert arch["flatten"].shape == (400,)
    assert arch.weight_shape("conv2") == (16, 6, 5, 5)
    assert arch.weight_shape("fc1") == (120, 400)
    assert get_arch("resnet-18").weight_shape("layer2.0.shortcut") == (128, 64, 1, 1)


def test_every_zoo_name_builds():
    for name in ["vgg-11", "vgg-13", "resnet-32", "resnet-56"]:
        assert get_arch(name).total_params > 0
    assert get_arch("resnet-56").total_params > get_arch("resnet-32").total_params


def test_input_shape_and_classes():
    a = get_arch("lenet-300-100", input_shape=(1, 28, 28), classes=5)
    assert a.nodes[1].op == "flatten"
    assert a.total_params == 784 * 300 + 300 * 100 + 100 * 5
    assert get_arch("lenet-5", input_shape=(1, 28, 28))["flatten"].shape == (16 * 4 * 4,)


@pytest.mark.parametrize("name", ["vgg-99", "resnet", "lenet", "mlp:3", "mlp:a-b"])
def test_unknown_names(name):
    with pytest.raises(ValueError, match="valid names|MLP|at least two"):
        get_arch(name)


def test_builder_errors():
    b = ArchBuilder("x", (1, 4, 4))
    with pytest.raises(ValueError, match="flatten"):
        b.dense(3)
    with pytest.raises(ValueError, match="does not fit"):
        b.conv(2, 7)
    with pytest.raises(ValueError, match="positive"):
        b.conv(0, 3)
    b.conv(2, 3, name="c")
    with pytest.raises(ValueError, match="duplicate"):
        b.conv(2, 1, name="c")
    with pytest.raises(ValueError, match="different shapes"):
        b.add(["input", "c"])
    with pytest.raises(ValueError, match="input_shape"):
        ArchBuilder("y", (3, 0, 4))
    with pytest.raises(ValueError, match="no prunable"):
        ArchBuilder("z", (4,)).build()


def test_zero_width_layer_rejected():
    with pytest.raises(ValueError, match="positive"):
        from_dict({"input": [4], "layers": [{"type": "dense", "out": 0}]})


def test_dangling_node_rejected():
    b = ArchBuilder("d", (4,))
    b.dense(3, name="a")
    b.dense(2, src="input", name="b")
    with pytest.raises(ValueError, match="feed nothing"):
        b.build()


SPEC = """
name = "tiny-res"
input = [3, 8, 8]
[[layers]]
name = "stem"
type = "conv"
out = 4
kernel = 3
padding = "same"
[[layers]]
name = "c1"
type = "conv"
out = 4
kernel = 3
padding = 1
[[layers]]
type = "add"
name = "sum"
inputs = ["stem", "c1"]
[[layers]]
type = "pool"
mode = "max"
kernel = 2
[[layers]]
type = "global_pool"
[[layers]]
type = "flatten"
[[layers]]
name = "fc"
type = "dense"
out = 10
"""


def test_spec_file_toml_and_json_roundtrip(tmp_path):
    p = tmp_path / "tiny.toml"
    p.write_text(SPEC)
    arch = load_arch(p)
    assert arch.name == "tiny-res"
    assert not arch.is_chain
    assert arch.total_params == 3 * 4 * 9 + 4 * 4 * 9 + 4 * 10
    assert arch["sum"].inputs == ("stem", "c1")
    q = tmp_path / "tiny.json"
    q.write_text(json.dumps(arch.to_dict()))
    again = get_arch(str(q))
    assert again.nodes == arch.nodes


def test_spec_file_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('input = [4]\n[[layers]]\ntype = "dense"\nout = 3\nwidth = 2\n')
    with pytest.raises(ValueError, match="unknown keys.*width"):
        load_arch(bad)
    bad.write_text('input = [4]\n[[layers]]\ntype = "lstm"\n')
    with pytest.raises(ValueError, match="type must be one of"):
        load_arch(bad)
    bad.write_text("input = [4\n")
    with pytest.raises(ValueError, match="not valid"):
        load_arch(bad)
    bad.write_text('input = [4]\n[[layers]]\ntype = "dense"\nout = 3\ninput = "nope"\n')
    with pytest.raises(ValueError, match="unknown input node 'nope'"):
        load_arch(bad)
    with pytest.raises(FileNotFoundError):
        load_arch(tmp_path / "missing.toml")
    txt = tmp_path / "spec.yaml"
    txt.write_text("x")
    with pytest.raises(ValueError, match=".toml or .json"):
        load_arch(txt)

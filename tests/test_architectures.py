import json
import os

import pytest

from connsim import ArchBuilder, from_dict, get_arch, load_arch
from connsim.architectures import SpecError

# the prunable-weight totals of docs/architectures.md
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


# ------------------------------------------------------------------------- hostile spec files


@pytest.mark.parametrize("text", ["[1, 2]", "3", '"lenet"', "null"])
def test_spec_top_level_must_be_a_table(tmp_path, text):
    path = tmp_path / "spec.json"
    path.write_text(text)
    with pytest.raises(SpecError, match="must be a table/object at its top level"):
        load_arch(path)
    with pytest.raises(SpecError, match="needs the keys 'input'"):
        from_dict(json.loads(text))


@pytest.mark.parametrize(("layer", "key"), [
    ('type = "dense"\nout = 2.7', "out"),
    ('type = "dense"\nout = true', "out"),
    ('type = "dense"\nout = "3"', "out"),
    ('type = "conv"\nout = 2\nkernel = 2.5', "kernel"),
    ('type = "conv"\nout = 2\nkernel = [3, 1.5]', "kernel"),
    ('type = "conv"\nout = 2\nstride = false', "stride"),
    ('type = "conv"\nout = 2\npadding = 0.5', "padding"),
    ('type = "pool"\nkernel = 2.5', "kernel"),
    ('type = "pool"\nstride = [2, 2, 2]', "stride"),
])
def test_spec_sizes_must_be_integers(tmp_path, layer, key):
    path = tmp_path / "spec.toml"
    path.write_text(f'input = [1, 8, 8]\n[[layers]]\nname = "x"\n{layer}\n')
    with pytest.raises(SpecError, match=rf"spec\.toml'?: layer 0 \(x\): '{key}' must be an integer"):
        load_arch(path)


def test_spec_input_shape_must_be_integers_and_whole_floats_are_fine():
    with pytest.raises(SpecError, match="each 'input' entry must be an integer, got 4.5"):
        from_dict({"input": [4.5], "layers": [{"type": "dense", "out": 2}]})
    with pytest.raises(SpecError, match="'input' must be a list"):
        from_dict({"input": "784", "layers": [{"type": "dense", "out": 2}]})
    arch = from_dict({"input": [4.0], "layers": [{"type": "dense", "out": 2.0}]})
    assert arch.total_params == 8


@pytest.mark.parametrize("spec", [
    {"input": [4], "layers": "dense"},
    {"input": [4], "layers": [[1, 2]]},
    {"input": [4], "layers": [{"type": ["dense"]}]},
    {"input": [4], "layers": [{"type": "dense", "out": 3, "name": [[["deep"]]]}]},
    {"input": [4], "layers": [{"type": "dense", "out": 3, "input": 7}]},
    {"input": [4], "layers": [{"type": "add", "inputs": "input"}]},
    {"input": [4], "layers": [{"type": "dense", "out": 3, "bias": "no"}]},
    {"input": [4], "layers": [{"type": "pool", "mode": 1}]},
    {"input": [4], "layers": [{"type": "dense"}]},
    {"input": [4], "name": ["x"], "layers": [{"type": "dense", "out": 3}]},
    {"input": [4], "layers": [{"type": "dense", "out": 3, 7: 1}]},
], ids=lambda s: json.dumps(s, default=str)[:60])
def test_malformed_specs_raise_one_clear_error(spec):
    with pytest.raises(SpecError) as info:
        from_dict(spec)
    assert isinstance(info.value, ValueError)  # callers that catch ValueError still work
    assert "Traceback" not in str(info.value) and len(str(info.value)) < 400


@pytest.mark.parametrize(("name", "text"), [
    ("deep.json", "[" * 100_000 + "]" * 100_000),
    ("deep.toml", "a = " + "[" * 100_000 + "]" * 100_000),
    ("deep-layer.json", '{"input": [4], "layers": [' + "[" * 900 + "]" * 900 + "]}"),
])
def test_deeply_nested_specs_do_not_crash(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SpecError, match="nested too deeply|must be a table/object"):
        load_arch(path)


def test_spec_path_that_is_a_directory_or_unreadable(tmp_path):
    folder = tmp_path / "spec.toml"
    folder.mkdir()
    with pytest.raises(SpecError, match="is a directory; an architecture spec file"):
        load_arch(folder)
    if os.geteuid() != 0:  # root reads files whatever their permissions
        path = tmp_path / "locked.json"
        path.write_text("{}")
        path.chmod(0)
        with pytest.raises(SpecError, match="(?i)permission denied"):
            load_arch(path)

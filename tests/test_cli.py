import json
import subprocess
import sys

import numpy as np
import pytest

from connsim import get_arch
from connsim.cli import main
from connsim.maskio import save_masks
from tests.strategies import random_masks


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_arch_json(capsys):
    code, out, _ = run(capsys, "arch", "vgg-19", "--classes", "100", "--json")
    obj = json.loads(out)
    assert code == 0 and obj["total"] == 20_070_080
    assert obj["layers"][0] == {"name": "conv1", "kind": "conv", "shape": [64, 3, 3, 3],
                                "params": 1728}


def test_arch_table_and_list(capsys):
    code, out, _ = run(capsys, "arch", "lenet-300-100")
    assert code == 0 and "266,200" in out and "fc1" in out
    code, out, _ = run(capsys, "arch")
    assert "resnet-18" in out


def test_measure_json_schema(tmp_path, capsys):
    arch = get_arch("lenet-300-100")
    path = tmp_path / "m.npz"
    save_masks(path, random_masks(arch, 0.01, 0))
    code, out, _ = run(capsys, "measure", str(path), "--arch", "lenet-300-100", "--json")
    obj = json.loads(out)
    assert code == 0
    assert {"arch", "level", "params", "direct", "effective", "disconnected", "layers"} <= set(obj)
    assert set(obj["direct"]) >= {"kept", "density", "compression"}
    assert obj["effective"]["kept"] < obj["direct"]["kept"]
    assert [lay["name"] for lay in obj["layers"]] == ["fc1", "fc2", "fc3"]
    assert sum(lay["effective"] for lay in obj["layers"]) == obj["effective"]["kept"]
    code, out, _ = run(capsys, "measure", str(path), "--arch", "lenet-300-100")
    assert "effective:" in out and "removable hidden units" in out


def test_measure_disconnected_has_null_compression(tmp_path, capsys):
    path = tmp_path / "m.npz"
    save_masks(path, {"fc1": np.ones((3, 3)), "fc2": np.zeros((2, 3))})
    code, out, _ = run(capsys, "measure", str(path), "--arch", "mlp:3-3-2", "--json",
                       "--level", "position")
    obj = json.loads(out)
    assert obj["disconnected"] and obj["effective"]["compression"] is None


def test_errors_exit_2_with_one_line(tmp_path, capsys):
    code, _, err = run(capsys, "arch", "vgg-99")
    assert code == 2 and "valid names" in err and err.count("\n") == 1
    code, _, err = run(capsys, "measure", str(tmp_path / "none.npz"), "--arch", "lenet-5")
    assert code == 2 and "does not exist" in err


@pytest.mark.parametrize("argv", [["--help"], ["measure", "--help"], ["arch", "--help"]])
def test_help(argv):
    out = subprocess.run([sys.executable, "-m", "connsim", *argv], capture_output=True,
                         text=True, check=True).stdout
    assert "usage: connsim" in out


def test_help_loads_only_the_command_it_shows():
    """``connsim --help`` lists every command without importing the library behind them (start-up
    time: benchmarks/bench_startup.py); ``connsim measure --help`` builds only measure's options."""
    code = ("import sys; from connsim.cli import main; main(sys.argv[1:]); "
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('connsim', 'numba', 'scipy'))), file=sys.stderr)")
    loaded = {}
    for argv, shown in ((["--help"], "study"), (["measure", "--help"], "--level")):
        r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                           check=True)
        loaded[argv[0]] = set(r.stderr.split())
        assert shown in r.stdout
    heavy = {"numba", "scipy.optimize", "connsim.graph", "connsim.trainer", "connsim.design"}
    assert not heavy & loaded["--help"]
    assert not heavy & loaded["measure"]
    assert "connsim.cli.measure" in loaded["measure"]


def test_quotas_json_and_infeasible(capsys):
    code, out, _ = run(capsys, "quotas", "--arch", "lenet-300-100", "--rule", "igq",
                       "--compression", "100", "--json")
    obj = json.loads(out)
    assert code == 0 and obj["rule"] == "igq" and obj["force"] == pytest.approx(9.16e-4, rel=1e-3)
    assert sum(lay["kept"] for lay in obj["layers"]) == 2662
    assert set(obj["layers"][0]) == {"name", "params", "density", "kept"}
    code, out, _ = run(capsys, "quotas", "--arch", "lenet-5", "--rule", "uniform", "--sparsity",
                       "0.9", "--json")
    assert json.loads(out)["force"] is None
    code, out, err = run(capsys, "quotas", "--arch", "lenet-5", "--rule", "uniform+",
                         "--compression", "100")
    assert code == 2 and "compression <= 99.95" in err and err.count("\n") == 1
    code, _, err = run(capsys, "quotas", "--arch", "lenet-5", "--rule", "custom")
    assert code == 2 and "--densities" in err
    code, out, _ = run(capsys, "quotas", "--arch", "mlp:4-3-2", "--rule", "custom",
                       "--densities", "0.5,1", "--json")
    assert [lay["kept"] for lay in json.loads(out)["layers"]] == [6, 6]


def test_prune_then_measure_roundtrip(tmp_path, capsys):
    out_path = str(tmp_path / "m.npz")
    code, out, _ = run(capsys, "prune", "--arch", "lenet-300-100", "--rule", "igq",
                       "--compression", "100", "--seed", "1", "--out", out_path, "--json")
    pruned = json.loads(out)
    assert code == 0 and pruned["direct"]["kept"] == 2662 and "probes" not in pruned
    code, out, _ = run(capsys, "measure", out_path, "--arch", "lenet-300-100", "--json")
    assert json.loads(out)["effective"] == pruned["effective"]
    code, out, _ = run(capsys, "prune", "--arch", "lenet-300-100", "--compression", "100",
                       "--target", "effective", "--out", out_path, "--json")
    eff = json.loads(out)
    assert eff["effective"]["density"] <= 0.01 and eff["probes"] >= 10
    assert eff["direct"]["density"] > 0.01
    # layerwise shuffling: random masks with the per-layer densities of the effective masks
    code, out, _ = run(capsys, "prune", "--arch", "lenet-300-100", "--rule", "induced",
                       "--masks", out_path, "--out", str(tmp_path / "shuffled.npz"), "--json")
    shuffled = json.loads(out)
    assert code == 0 and shuffled["direct"]["kept"] == eff["direct"]["kept"]
    assert [lay["kept"] for lay in shuffled["layers"]] == [lay["kept"] for lay in eff["layers"]]


def test_prune_requires_a_target(tmp_path, capsys):
    code, _, err = run(capsys, "prune", "--arch", "lenet-5", "--out", str(tmp_path / "x.npz"))
    assert code == 2 and "--density" in err
    assert not (tmp_path / "x.npz").exists()


def test_predict_json_schema_single_rule(capsys):
    code, out, _ = run(capsys, "predict", "--arch", "lenet-300-100", "--rule", "uniform",
                       "--compression", "10", "1000", "--samples", "50", "--json")
    obj = json.loads(out)
    assert code == 0 and obj["arch"] == "lenet-300-100" and obj["rule"] == "uniform"
    assert obj["approximate"] is False
    r = obj["results"][0]
    assert {"compression", "direct_density", "expected_effective_params", "effective_density",
            "effective_compression", "p_disconnected", "active_units", "mc"} <= set(r)
    assert set(r["mc"]) >= {"samples", "mask_model", "mean_effective_params", "stderr",
                            "p_disconnected"}
    assert len(r["active_units"]) == 3 and r["compression"] == pytest.approx(10)


def test_predict_several_rules_infeasible_points_and_plot(tmp_path, capsys):
    fig = tmp_path / "fig.png"
    code, out, _ = run(capsys, "predict", "--arch", "lenet-5", "--rule", "uniform,uniform+,igq",
                       "--compression", "10", "200", "--samples", "20", "--plot", str(fig),
                       "--json")
    obj = json.loads(out)
    assert code == 0 and [r["rule"] for r in obj["rules"]] == ["uniform", "uniform+", "igq"]
    assert "infeasible" in obj["rules"][1]["results"][1]  # uniform+ stops at compression 100
    assert fig.stat().st_size > 10_000 and fig.read_bytes()[:4] == b"\x89PNG"
    code, out, _ = run(capsys, "predict", "--arch", "resnet-20", "--compression", "100")
    assert code == 0 and "exact theory" in out  # residual blocks are handled exactly
    code, _, err = run(capsys, "predict", "--arch", "lenet-5", "--rule", "induced",
                       "--compression", "10")
    assert code == 2 and "unsupported" in err


def test_design_json(capsys):
    code, out, _ = run(capsys, "design", "--arch", "lenet-300-100", "--compression", "1000",
                       "--samples", "30", "--json")
    obj = json.loads(out)
    assert code == 0 and obj["objective"] == "effective"
    assert [r["rule"] for r in obj["comparison"]] == ["designed", "uniform", "erk", "igq"]
    assert sum(lay["kept"] for lay in obj["designed"]["layers"]) == 266
    assert obj["comparison"][0]["mc"]["samples"] == 30


@pytest.mark.parametrize(("flag", "sparse"), [([], "auto"), (["--sparse", "on"], True),
                                             (["--sparse", "off"], False)])
def test_train_sparse_option_reaches_the_config(flag, sparse):
    from connsim.cli import build_parser
    from connsim.cli.train import train_config

    args = build_parser("train").parse_args(["train", "--arch", "mlp:16-8-3", "--dataset",
                                             "synthetic", *flag])
    got = train_config(args).sparse
    assert got == sparse and type(got) is type(sparse)


def test_train_json_and_run_folder(tmp_path, capsys):
    arch_masks = tmp_path / "m.npz"
    arch = get_arch("mlp:16-8-3", input_shape=(1, 4, 4))
    save_masks(arch_masks, random_masks(arch, 0.5, 0))
    code, out, _ = run(capsys, "train", "--arch", "mlp:16-8-3", "--dataset", "synthetic",
                       "--input-shape", "1,4,4", "--classes", "3", "--iterations", "30",
                       "--batch-size", "20", "--lr", "0.05", "--masks", str(arch_masks),
                       "--out", str(tmp_path / "run"), "--json")
    obj = json.loads(out)
    assert code == 0
    assert {"arch", "dataset", "test_accuracy", "train_loss", "epochs", "seconds", "direct",
            "effective"} <= set(obj)
    assert obj["direct"]["density"] < 0.7 and (tmp_path / "run" / "weights.npz").exists()
    code, _, err = run(capsys, "train", "--arch", "mlp:16-8-3", "--dataset", "cifar10")
    assert code == 2 and "--data-dir" in err


def test_prune_methods_granularity_and_match(tmp_path, capsys):
    out = str(tmp_path / "s.npz")
    code, o, _ = run(capsys, "prune", "--arch", "lenet-5", "--method", "synflow", "--granularity",
                     "kernel", "--compression", "20", "--rounds", "5", "--out", out, "--json")
    obj = json.loads(o)
    assert code == 0 and obj["method"] == "synflow" and obj["scope"] == "global"
    assert obj["groups"]["granularity"] == "kernel"
    assert obj["groups"]["kept"] == round(obj["groups"]["total"] / 20)
    code, o, _ = run(capsys, "prune", "--arch", "lenet-5", "--method", "magnitude", "--scope",
                     "layer-matched", "--match", out, "--compression", "20",
                     "--out", str(tmp_path / "m.npz"), "--json")
    assert code == 0 and json.loads(o)["scope"] == "layer-matched"
    code, _, err = run(capsys, "prune", "--arch", "lenet-5", "--method", "snip",
                       "--compression", "20", "--out", str(tmp_path / "x.npz"))
    assert code == 2 and "--dataset" in err


def test_imp_resumes_from_its_folder(tmp_path, capsys):
    argv = ["imp", "--arch", "mlp:16-8-3", "--dataset", "synthetic", "--input-shape", "1,4,4",
            "--classes", "3", "--levels", "2", "--iterations", "10", "--batch-size", "20",
            "--out", str(tmp_path / "imp"), "--json"]
    code, o, _ = run(capsys, *argv)
    first = json.loads(o)["levels"]
    assert code == 0 and [r["level"] for r in first] == [0, 1, 2]
    code, o, _ = run(capsys, *argv)  # nothing left to do: the records are returned as they are
    assert json.loads(o)["levels"] == first


@pytest.mark.parametrize("extra", [
    ["--pruner", "sap", "--p", "0.5", "--q", "1", "--stop", "flow+accuracy", "--flow", "if"],
    ["--pruner", "sap", "--stop", "flow", "--flow", "gf", "--eps", "1e-9"],
    ["--pruner", "lth", "--fraction", "0.5", "--scope", "layerwise", "--stop", "cap"],
])
def test_imp_rounds_with_a_stopping_rule(tmp_path, capsys, extra):
    argv = ["imp", "--arch", "mlp:16-8-3", "--dataset", "synthetic", "--input-shape", "1,4,4",
            "--classes", "3", "--levels", "2", "--iterations", "5", "--batch-size", "20",
            "--warmup-iterations", "2", "--max-iterations", "3", "--flow-samples", "200",
            "--schedule", "constant", "--out", str(tmp_path / "imp"), "--json", *extra]
    code, o, _ = run(capsys, *argv)
    levels = json.loads(o)["levels"]
    assert code == 0 and [r["level"] for r in levels] == [0, 1, 2]
    stops = {r["stopped_by"] for r in levels}
    if "cap" in extra or "1e-9" in extra:  # nothing can stop these rounds early
        assert stops == {"cap"} and all(r["iterations"] == 3 for r in levels)
    assert all(r["direct_density"] > levels[k + 1]["direct_density"]
               for k, r in enumerate(levels[:-1]))
    code, _, err = run(capsys, *argv, "--max-iterations", "4")  # other settings: refused, named
    assert code == 2 and "stop.max_iterations: 3 in the folder, 4 now" in err
    if "sap" in extra:
        code, _, err = run(capsys, *argv, "--pruner", "lth")
        assert code == 2 and "pruner: 'sap' in the folder, 'lth' now" in err \
            and "sap.p" not in err


def test_imp_prunes_groups_by_a_criterion(tmp_path, capsys):
    argv = ["imp", "--arch", "mlp:16-8-8-3", "--dataset", "synthetic", "--input-shape", "1,4,4",
            "--classes", "3", "--levels", "2", "--iterations", "10", "--batch-size", "20",
            "--keep", "0.25", "--granularity", "node", "--criterion", "snip", "--samples", "50",
            "--out", str(tmp_path / "imp"), "--json"]
    code, o, _ = run(capsys, *argv)
    levels = json.loads(o)["levels"]
    assert code == 0 and [r["group_density"] for r in levels] == [1.0, 0.5, 0.25]
    masks = np.load(tmp_path / "imp" / "masks_2.npz")
    assert masks["fc3"].all()  # the classes
    assert masks["fc1"].any(axis=1).sum() + masks["fc2"].any(axis=1).sum() == 4  # of 16 units
    code, _, err = run(capsys, *argv, "--criterion", "stat")  # another criterion: refused, named
    assert code == 2 and "groups.criterion: 'snip' in the folder, 'stat' now" in err
    code, _, err = run(capsys, *argv[:-5], "--out", str(tmp_path / "x"), "--criterion", "stat",
                       "--granularity", "weight")
    assert code == 2 and "'stat' only at channel or node granularity" in err
    code, _, err = run(capsys, "imp", "--arch", "mlp:16-3", "--dataset", "synthetic",
                       "--input-shape", "1,4,4", "--classes", "3", "--exclude", "fc1",
                       "--out", str(tmp_path / "y"))
    assert code == 2 and "--exclude must be used with --keep" in err


def test_imp_stopping_options_are_checked(tmp_path, capsys):
    base = ["imp", "--arch", "mlp:16-8-3", "--dataset", "synthetic", "--input-shape", "1,4,4",
            "--classes", "3", "--out", str(tmp_path / "x")]
    for extra, says in [
        (["--stop", "accuracy"], "--warmup-iterations must be >= 1 with --stop accuracy"),
        (["--warmup-iterations", "2"], "--warmup-iterations must be 0 with --stop none"),
        (["--stop", "cap", "--rewind", "5"], "--rewind must be 0 with a stopping rule"),
        (["--pruner", "sap", "--scope", "layerwise"], "--scope must be global"),
        (["--pruner", "sap", "--p", "2", "--q", "1"], "q must be greater than p"),
        (["--stop", "cap", "--warmup-iterations", "1"], "--schedule constant"),
        (["--stop", "cap", "--schedule", "constant", "--validation", "0.99"], "--validation"),
        (["--stop", "flow", "--schedule", "constant", "--arch", "mlp:16-3"], "--flow gf"),
        (["--stop", "flow", "--flow-samples", "1"], "--flow-samples"),
    ]:
        code, _, err = run(capsys, *base, *extra)
        assert code == 2 and says in err, (extra, err)


def test_redundancy_measures_prunes_and_its_masks_work_everywhere(tmp_path, capsys):
    arch = ["--arch", "mlp:16-12-8-3", "--input-shape", "1,4,4", "--classes", "3"]
    data = ["--dataset", "synthetic"]
    code, _, _ = run(capsys, "train", *arch, *data, "--iterations", "40", "--batch-size", "20",
                     "--out", str(tmp_path / "run"))
    weights = str(tmp_path / "run" / "weights.npz")
    base = ["redundancy", *arch, *data, "--weights", weights, "--samples", "200"]
    code, o, _ = run(capsys, *base, "--json")
    obj = json.loads(o)
    assert code == 0 and obj["samples"] == 200
    assert [lay["name"] for lay in obj["layers"]] == ["fc1", "fc2"]
    for lay in obj["layers"]:
        assert lay["structural"] <= lay["redundancy"] <= lay["units"]
        assert set(lay["ranks"]) >= {"tol=0.001", "energy=0.99"}
    code, o, _ = run(capsys, *base)
    assert code == 0 and "maximum compression" in o and "structural" in o
    masks, new_weights = str(tmp_path / "h.npz"), str(tmp_path / "w.npz")
    code, o, _ = run(capsys, *base, "--compression", "1.1", "--out", masks, "--compensate",
                     "--weights-out", new_weights, "--json")
    pruning = json.loads(o)["pruning"]
    assert code == 0 and pruning["compression"] >= 1.1  # met or exceeded, never short
    code, o, _ = run(capsys, "measure", masks, *arch, "--json")
    assert code == 0 and json.loads(o)["direct"]["density"] < 1
    code, o, _ = run(capsys, "train", *arch, *data, "--iterations", "5", "--batch-size", "20",
                     "--masks", masks, "--json")
    assert code == 0 and json.loads(o)["direct"]["density"] < 1
    for extra, says in [
        (["--compression", "2"], "--compression"),
        (["--compression", "2", "--out", masks, "--compensate"], "--weights-out"),
        (["--tol", "0"], "--tol"),
        (["--samples", "0"], "--samples"),
    ]:
        code, _, err = run(capsys, *base, *extra)
        assert code == 2 and says in err, (extra, err)
    code, _, err = run(capsys, *base[:-4], "--weights", masks)
    assert code == 2 and "--weights" in err


def test_mobilenet_v2_end_to_end(tmp_path, capsys):
    """arch, predict, prune, measure and train on MobileNetV2 (train at the synthetic data's
    1x8x8 input with 4 classes, so masks are pruned for that shape)."""
    code, out, _ = run(capsys, "arch", "mobilenet-v2", "--json")
    assert code == 0 and json.loads(out)["total"] == 2_261_824
    code, out, _ = run(capsys, "predict", "--arch", "mobilenet-v2", "--rule", "erk",
                       "--compression", "100", "--samples", "50", "--json")
    row = json.loads(out)["results"][0]
    assert code == 0 and row["exact"] and row["effective_compression"] > 100
    shape = ["--arch", "mobilenet-v2", "--input-shape", "1,8,8", "--classes", "4"]
    masks = str(tmp_path / "m.npz")
    code, out, _ = run(capsys, "prune", *shape, "--method", "random", "--compression", "20",
                       "--out", masks, "--json")
    assert code == 0 and json.loads(out)["direct"]["compression"] == pytest.approx(20, rel=1e-3)
    code, out, _ = run(capsys, "measure", masks, *shape, "--level", "position", "--json")
    assert code == 0 and json.loads(out)["effective"]["kept"] > 0
    code, out, _ = run(capsys, "train", "--arch", "mobilenet-v2", "--dataset", "synthetic",
                       "--masks", masks, "--iterations", "2", "--batch-size", "8", "--json")
    obj = json.loads(out)
    assert code == 0 and obj["direct"]["compression"] == pytest.approx(20, rel=1e-3)

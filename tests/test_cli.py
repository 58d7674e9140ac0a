import json
import subprocess
import sys

import numpy as np
import pytest

from connsim import get_arch
from connsim.cli import main
from connsim.maskio import save_masks
from tests.conftest import random_masks


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

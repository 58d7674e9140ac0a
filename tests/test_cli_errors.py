"""Every subcommand with bad arguments: exit status 2, one line on stderr, no output written."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from connsim import get_arch, ones_masks
from connsim.cli import main
from connsim.maskio import save_masks

PRUNE = ["prune", "--arch", "lenet-300-100"]
TRAIN = ["train", "--arch", "mlp:64-16-10", "--dataset", "digits"]
IMP = ["imp", "--arch", "mlp:64-16-10", "--dataset", "digits"]
PREDICT = ["predict", "--arch", "lenet-300-100"]

# (arguments, a word the one-line message must contain); OUT is replaced by a fresh output path
BAD = [
    (["arch", "nonsense"], "unknown architecture"),
    (["arch", "lenet-5", "--classes", "0"], "--classes"),
    (["arch", "lenet-5", "--input-shape", "3,x,32"], "shape"),
    (["measure", "MISSING.npz", "--arch", "lenet-300-100"], "does not exist"),
    (["measure", "MASKS", "--arch", "lenet-5"], "does not fit"),
    (["measure", "MASKS", "--arch", "lenet-300-100", "--level", "pixel"], "--level"),
    (["quotas", "--arch", "vgg-19", "--rule", "uniform+", "--compression", "5000"], "uniform+"),
    (["quotas", "--arch", "vgg-19", "--rule", "igq", "--density", "1.5"], "--density"),
    (["quotas", "--arch", "vgg-19", "--rule", "igq", "--compression", "inf"], "--compression"),
    (["quotas", "--arch", "vgg-19", "--rule", "custom", "--densities", "a,b"], "--densities"),
    (PRUNE + ["--compression", "10", "--out", "OUT.txt"], ".npz"),
    (PRUNE + ["--compression", "10", "--out", "DIR"], "directory"),
    (PRUNE + ["--compression", "10", "--out", "NOFOLDER/m.npz"], "does not exist"),
    (PRUNE + ["--compression", "0.5", "--out", "OUT.npz"], "--compression"),
    (PRUNE + ["--sparsity", "nan", "--out", "OUT.npz"], "--sparsity"),
    (PRUNE + ["--method", "synflow", "--rounds", "-3", "--compression", "10", "--out", "OUT.npz"],
     "--rounds"),
    (PRUNE + ["--method", "snip", "--batches", "0", "--compression", "10", "--out", "OUT.npz"],
     "--batches"),
    (PRUNE + ["--method", "snip", "--compression", "10", "--out", "OUT.npz"], "needs data"),
    (PRUNE + ["--seed", "-1", "--compression", "10", "--out", "OUT.npz"], "--seed"),
    (PREDICT + ["--rule", ",", "--compression", "10"], "--rule"),
    (PREDICT + ["--rule", "igq,igq", "--compression", "10"], "twice"),
    (PREDICT + ["--rule", "induced", "--compression", "10"], "unsupported"),
    (PREDICT + ["--compression", "0"], "--compression"),
    (PREDICT + ["--compression", "10", "--samples", "-1"], "--samples"),
    (PREDICT + ["--compression", "10", "--samples", "10000000000000"], "memory"),
    (PREDICT + ["--compression", "10", "--plot", "OUT.txt"], "--plot"),
    (["design", "--arch", "lenet-5", "--compression", "0"], "--compression"),
    (["design", "--arch", "lenet-5", "--compression", "0.5"], "got '0.5'"),
    (["design", "--arch", "lenet-5", "--compression", "1"], "compression"),
    (TRAIN + ["--iterations", "0"], "--iterations"),
    (TRAIN + ["--batch-size", "0"], "--batch-size"),
    (TRAIN + ["--batch-size", "2000"], "batch size 2000"),
    (TRAIN + ["--epochs", "inf"], "--epochs"),
    (TRAIN + ["--epochs", "-1"], "--epochs"),
    (TRAIN + ["--lr", "nan"], "--lr"),
    (TRAIN + ["--momentum", "1.5"], "--momentum"),
    (TRAIN + ["--milestones", "10,x"], "--milestones"),
    (TRAIN + ["--out", "FILE"], "existing file"),
    (TRAIN + ["--masks", "MASKS"], "expected shape"),
    (TRAIN + ["--masks", "MISSING.npz"], "missing"),
    (TRAIN + ["--masks", "DIR"], "a directory"),
    (PRUNE + ["--method", "magnitude", "--weights", "MISSING.npz", "--compression", "10",
              "--out", "OUT.npz"], "missing"),
    (PRUNE + ["--compression", "10", "--out", "/proc/m.npz"], "not writable"),
    (TRAIN + ["--out", "/proc/run"], "not writable"),
    (IMP + ["--levels", "-2", "--out", "RUN"], "--levels"),
    (IMP + ["--rewind", "-3", "--out", "RUN"], "--rewind"),
    (IMP + ["--fraction", "1.5", "--out", "RUN"], "--fraction"),
    (IMP + ["--batch-size", "5000", "--out", "RUN"], "batch size"),
    (IMP + ["--out", "FILE"], "existing file"),
    (["prune", "--arch", "mlp:1000000-1000000-1000000", "--compression", "10", "--out",
      "OUT.npz"], "memory"),
]


def _fill(argv, tmp_path):
    arch = get_arch("lenet-300-100")
    masks = tmp_path / "masks.npz"
    if not masks.exists():
        save_masks(masks, ones_masks(arch))
        (tmp_path / "DIR").mkdir()
        (tmp_path / "FILE").write_text("not a folder")
    subs = {"OUT.npz": tmp_path / "out.npz", "OUT.txt": tmp_path / "out.txt",
            "DIR": tmp_path / "DIR", "NOFOLDER/m.npz": tmp_path / "no" / "m.npz",
            "MISSING.npz": tmp_path / "missing.npz", "MASKS": masks,
            "RUN": tmp_path / "run", "FILE": tmp_path / "FILE"}
    return [str(subs.get(a, a)) for a in argv]


@pytest.mark.parametrize(("argv", "word"), BAD, ids=[" ".join(a[:1] + a[-3:]) for a, _ in BAD])
def test_bad_arguments_exit_2_with_one_line_and_no_output(argv, word, tmp_path, capsys):
    argv = _fill(argv, tmp_path)
    before = set(os.listdir(tmp_path))
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"connsim {argv[0]}: error:") and word in lines[0], lines[0]
    assert "Traceback" not in err and out == ""
    assert set(os.listdir(tmp_path)) == before  # no output file, no temporary left behind


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("connsim ")
    assert main(["prune", "--help"]) == 0
    assert "--target" in capsys.readouterr().out


def test_json_is_standard_even_when_disconnected(tmp_path, capsys):
    arch = get_arch("mlp:4-3-2")
    masks = ones_masks(arch)
    masks["fc1"][:] = False  # nothing reaches the output: effective compression is infinite
    save_masks(tmp_path / "m.npz", masks)
    assert main(["measure", str(tmp_path / "m.npz"), "--arch", "mlp:4-3-2", "--json"]) == 0
    text = capsys.readouterr().out
    assert "Infinity" not in text and "NaN" not in text
    obj = json.loads(text)
    assert obj["disconnected"] is True and obj["effective"]["compression"] is None
    assert obj["direct"]["compression"] is not None


def test_broken_pipe_is_quiet(tmp_path):
    # a reader that goes away (connsim ... | head) must not produce a traceback
    code = "from connsim.cli import main; import sys; sys.exit(main(sys.argv[1:]))"
    p = subprocess.Popen([sys.executable, "-c", code, "quotas", "--arch", "vgg-19", "--rule",
                          "igq", "--compression", "100"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    p.stderr.close()
    assert p.wait(timeout=60) in (0, 141) and "Traceback" not in err, err


def test_ctrl_c_exits_130_quietly_and_promptly():
    # Monte Carlo runs its kernel in chunks, so an interrupt is seen within a chunk's time. The
    # child restores Python's SIGINT handler: a job started in the background inherits SIGINT
    # ignored, and Python then installs none.
    code = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from connsim.cli import main; import sys; sys.exit(main(sys.argv[1:]))")
    p = subprocess.Popen([sys.executable, "-c", code, "predict", "--arch", "vgg-19",
                          "--compression", "1000", "--samples", "2000000"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(4)
        p.send_signal(signal.SIGINT)
        start = time.monotonic()
        out, err = p.communicate(timeout=60)
    finally:  # a timeout fails this test only: no process left to warn in the next one
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 130, err
    assert "Traceback" not in err
    assert time.monotonic() - start < 10


def test_missing_packages_are_found_before_any_work(tmp_path, capsys, monkeypatch):
    import importlib.util

    monkeypatch.setitem(sys.modules, "safetensors", None)  # as if not installed
    argv = PRUNE + ["--method", "synflow", "--compression", "10", "--out",
                    str(tmp_path / "m.safetensors")]
    start = time.monotonic()
    assert main(argv) == 2
    assert "connsim[io]" in capsys.readouterr().err
    assert time.monotonic() - start < 2  # refused before SynFlow's rounds
    if importlib.util.find_spec("cupy") is None:
        assert main(TRAIN + ["--backend", "cupy", "--dataset", "mnist"]) == 2
        assert "connsim[gpu]" in capsys.readouterr().err  # before MNIST is loaded
    assert os.listdir(tmp_path) == []

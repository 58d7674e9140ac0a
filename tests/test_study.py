import io
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from connsim.cli import main
from connsim.study import StudyError, compile_expression, load_study, task_hash
from connsim.studydb import DatabaseError, ResultsDB
from connsim.studyresults import curves, export, plot_figure, progress, results
from connsim.studyrun import THREAD_VARIABLES, run_study
from connsim.studytasks import execute

# Tests that run tasks (Monte Carlo, measurement, training, on Dask workers that inherit the
# environment) are kernel_heavy: the NUMBA_DISABLE_JIT pass would run their kernels in Python.
STUDIES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "studies")
TIMING = {"started", "finished", "seconds", "worker"}  # the only columns two runs may differ in

SMALL = """
name = "small"
kind = "montecarlo"
[axes]
rule = ["uniform", "igq"]
compression = {geomspace = [10, 1000, 3]}
seed = [0, 1]
[settings]
arch = "lenet-300-100"
samples = 50
[derived]
z = "(mc_effective_params - theory_effective_params) / mc_stderr"
[figures.agreement]
x = "direct_compression"
y = "mc_effective_compression"
curves = ["rule"]
theory = "theory_effective_compression"
"""


def write(folder, text, name="s.toml"):
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def rows_without_timing(db_path):
    with ResultsDB(db_path, create=False) as db:
        return {r["hash"]: {k: v for k, v in r.items() if k not in TIMING} for r in db.rows()}


# ------------------------------------------------------------------- study files, hashes


def test_expansion_fills_defaults_and_hashes_every_point(tmp_path):
    study = load_study(write(tmp_path, SMALL))
    tasks = study.tasks()
    assert len(tasks) == 2 * 3 * 2
    assert len({t.hash for t in tasks}) == len(tasks)
    assert [t.config["compression"] for t in tasks[:6:2]] == [10.0, 100.0, 1000.0]
    assert tasks[0].config == {"arch": "lenet-300-100", "rule": "uniform", "compression": 10.0,
                               "seed": 0, "samples": 50, "mask_model": "bernoulli",
                               "level": "channel", "theory": True}
    assert study.database == os.path.join(tmp_path, "s.db")
    assert load_study(study.path, database="x.db").database == "x.db"


def test_hash_is_stable_across_processes(tmp_path):
    path = write(tmp_path, SMALL)
    here = [t.hash for t in load_study(path).tasks()]
    code = ("import sys, json; from connsim.study import load_study; "
            "print(json.dumps([t.hash for t in load_study(sys.argv[1]).tasks()]))")
    env = dict(os.environ, PYTHONHASHSEED="123")
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                         env=env, check=True)
    assert json.loads(out.stdout) == here


def test_any_change_makes_a_new_hash(tmp_path):
    base = {t.hash for t in load_study(write(tmp_path, SMALL)).tasks()}
    changed = load_study(write(tmp_path, SMALL.replace("samples = 50", "samples = 51"), "b.toml"))
    assert not base & {t.hash for t in changed.tasks()}
    one = load_study(write(tmp_path, SMALL.replace('"igq"]', '"erk"]'), "c.toml"))
    assert len(base & {t.hash for t in one.tasks()}) == 6  # the uniform half is unchanged
    config = {"arch": "lenet-5", "compression": 10.0}
    assert task_hash("predict", config, "0.1.0") != task_hash("predict", config, "0.1.1")
    assert task_hash("predict", config, "0.1.0") != task_hash("montecarlo", config, "0.1.0")
    # derived columns and figures are not part of a task's identity
    plain = load_study(write(tmp_path, SMALL.replace("mc_stderr", "2"), "d.toml"))
    assert {t.hash for t in plain.tasks()} == base


def test_variant_replaces_axes_and_settings(tmp_path):
    text = SMALL + '[variants.quick]\naxes = {compression = [10]}\nsettings = {samples = 5}\n'
    study = load_study(write(tmp_path, text), "quick")
    assert [t.config["compression"] for t in study.tasks()] == [10, 10, 10, 10]
    assert {t.config["samples"] for t in study.tasks()} == {5}
    assert study.database == os.path.join(tmp_path, "s.quick.db")


def test_table_axis_sets_several_inputs_and_a_label(tmp_path):
    text = """kind = "prune"
[axes]
pruner = [{method = "random", rule = "igq"}, {method = "magnitude", label = "mag"}]
[settings]
arch = "mlp:4-3-2"
compression = 2
"""
    tasks = load_study(write(tmp_path, text)).tasks()
    assert [(t.config["pruner"], t.config["method"], t.config["rule"]) for t in tasks] == [
        ("random+igq", "random", "igq"), ("mag", "magnitude", "uniform")]


HEAD = "kind = 'predict'\n[axes]\narch = ['lenet-5']\n"
OK = HEAD + "compression = [10]\n"
BAD = [
    ("setings = {}\n" + OK, "unknown top-level key 'setings'; did you mean 'settings'"),
    ("kind = 'predicts'\n[axes]\narch = ['lenet-5']", "kind"),
    ("[axes]\narch = ['lenet-5']", "missing key 'kind'"),
    ("kind = 'predict'\n[axes]\narch = ['lenet-5']", "needs 'compression'"),
    ("kind = 'predict'\n[axes]\narch = ['lenet-7']\ncompression = [10]", "axes.arch[0]"),
    (HEAD + "compression = [10, -1]", "axes.compression[1]"),
    (HEAD + "compression = [10, 10]", "repeats a value"),
    (HEAD + "compression = {geomspace = [10, 1]}", "bad geomspace"),
    (HEAD + "compression = {logspace = [1, 2, 3]}", "must be a list of values"),
    (HEAD + "compression = []", "non-empty list"),
    (OK + "[settings]\nsamples = 3", "unknown input 'samples'"),
    (OK + "[settings]\narch = 'lenet-5'", "set twice"),
    (OK + "[settings]\nrule = 3", "settings.rule"),
    (OK + "[derived]\nx = \"__import__('os')\"", "derived.x"),
    (OK + "[derived]\nx = 'a.b'", "Attribute is not allowed"),
    (OK + "[derived]\nrule = '1'", "shadows"),
    (OK + "[figures.f]\nx = 'compression'\ny = 'nope'", "figures.f.y: 'nope' is not a column"),
    (OK + "[figures.f]\nx = 'compression'", "missing key 'y'"),
    ("kind = 'predict'\n[axes]\nArch = ['lenet-5']\ncompression = [10]", "column name 'Arch'"),
    (HEAD + "compression = [nan]", "finite"),
    ("kind = 'train'\n[axes]\nlr = [0.1, -1]\n[settings]\narch = 'lenet-5'\nmethod = 'random'\n"
     "compression = 10", "axes.lr[1] must be"),
    (HEAD + "compression = [10\n", "not a valid TOML file"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_invalid_study_files_name_the_key(tmp_path, text, message):
    with pytest.raises(StudyError, match="s.toml") as e:
        load_study(write(tmp_path, text))
    assert message in str(e.value)


def test_missing_file_and_variant(tmp_path):
    with pytest.raises(StudyError, match="does not exist"):
        load_study(os.path.join(tmp_path, "none.toml"))
    with pytest.raises(StudyError, match="no variant 'quick'; the file has no variants"):
        load_study(write(tmp_path, SMALL), "quick")


@pytest.mark.parametrize("path", sorted(f for f in os.listdir(STUDIES) if f.endswith(".toml")))
def test_shipped_studies_load_with_their_quick_variant(path):
    for variant in (None, "quick"):
        study = load_study(os.path.join(STUDIES, path), variant)
        assert study.tasks() and study.figures
    assert len(load_study(os.path.join(STUDIES, path), "quick").tasks()) <= 128


@pytest.mark.parametrize(("expr", "row", "expected"), [
    ("a / b", {"a": 3.0, "b": 2.0}, 1.5),
    ("-a ** 2 + log10(b) * 3", {"a": 2, "b": 100}, -4 + 6),
    ("max(a, b) - abs(-a)", {"a": 1, "b": 5}, 4),
    ("a / b", {"a": 1, "b": 0}, math.nan),
    ("a + missing", {"a": 1}, math.nan),
    ("10 ** 10 ** 10", {}, math.nan),
])
def test_derived_expressions_match_python(expr, row, expected):
    got = compile_expression(expr)(row)
    assert got == pytest.approx(expected, nan_ok=True)


@pytest.mark.kernel_heavy
def test_task_kinds_equal_the_library_calls():
    import numpy as np

    import connsim
    from connsim.sampling import random_masks

    arch = connsim.get_arch("lenet-5")
    q = connsim.quota(arch, "igq", 1 / 300)
    m = connsim.measure(arch, random_masks(arch, q, rng=4), level="position")
    out = execute("measure", {"arch": "lenet-5", "rule": "igq", "compression": 300, "seed": 4,
                              "level": "position", "mask_model": "exact", "theory": True,
                              "save_masks": True}, connsim.__version__)
    assert out["status"] == "done", out["error"]
    r = out["result"]
    assert (r["effective_compression"], r["removable_units"]) == (m.effective_compression,
                                                                  m.removable_units)
    assert r["theory_effective_params"] == connsim.predict(arch, q).expected_effective_params
    with np.load(io.BytesIO(r["_artifacts"]["masks.npz"])) as saved:
        assert set(saved) == set(arch.layer_names)
    res = connsim.prune(arch, "synflow", 0.01, rounds=3, rng=1)
    out = execute("prune", {"arch": "lenet-5", "method": "synflow", "rule": "uniform",
                            "scope": "", "compression": 100, "target": "direct",
                            "level": "channel", "granularity": "weight", "seed": 1,
                            "dataset": "auto", "data_dir": "", "rounds": 3, "prune_batch": 128},
                  connsim.__version__)
    assert out["result"]["effective_compression"] == res.measurement.effective_compression


@pytest.mark.kernel_heavy
@pytest.mark.parametrize("kind", ["train", "imp"])
def test_training_kinds_run_and_keep_their_history(kind):
    import connsim
    from connsim.studytasks import KINDS

    config = dict(KINDS[kind].inputs)
    config.update(arch="mlp:16-8-4", iterations=20, batch_size=32, levels=1)
    if kind == "train":
        config.update(method="random", compression=4, rule="igq")
    config = {k: v for k, v in config.items() if k in KINDS[kind].inputs}
    out = execute(kind, config, connsim.__version__)
    assert out["status"] == "done", out["error"]
    r = out["result"]
    assert 0 <= r["test_accuracy"] <= 1 and r["direct_compression"] > 1
    name = "history.json" if kind == "train" else "levels.json"
    assert json.loads(r["_artifacts"][name])


# ---------------------------------------------------------------------- the database


@pytest.mark.kernel_heavy
def test_a_failing_task_is_recorded_and_the_study_goes_on(tmp_path):
    outcome = execute("predict", {"arch": "lenet-300-100", "rule": "uniform+",
                                  "compression": 1e5, "seed": 0}, "0.1.0")
    assert outcome["status"] == "failed" and "uniform+ keeps layer 'fc1' dense" in outcome["error"]
    assert execute("predict", {}, "9.9")["error"].startswith(
        "RuntimeError: this worker runs connsim 0.1.0, the driver 9.9")
    text = """kind = "predict"
[axes]
rule = ["uniform+", "uniform"]
compression = [1.1, 100000]
[settings]
arch = "lenet-300-100"
"""
    study = load_study(write(tmp_path, text))
    summary = run_study(study, workers=1)
    assert (summary.done, summary.failed) == (3, 1)
    with ResultsDB(study.database, create=False) as db:
        p = progress(study, db)
        assert (p.done, p.failed, p.pending) == (3, 1, 0)
        (bad,) = [r for r in db.rows() if r["status"] == "failed"]
        assert bad["rule"] == "uniform+" and bad["compression"] == 1e5
        assert "InfeasibleQuota" in bad["error"] and "direct_compression" not in bad
    again = run_study(study, workers=1)  # retries only the failed task
    assert (again.skipped, again.done, again.failed) == (3, 0, 1)
    assert len(rows_without_timing(study.database)) == 4


def test_unwritable_or_foreign_database_is_refused_before_any_work(tmp_path):
    study = load_study(write(tmp_path, SMALL), database=os.path.join(tmp_path, "no", "s.db"))
    with pytest.raises(ValueError, match="results database .* does not exist; create it first"):
        run_study(study)
    foreign = os.path.join(tmp_path, "foreign.db")
    with open(foreign, "wb") as f:
        f.write(b"not a database at all" * 100)
    with pytest.raises(DatabaseError, match="is not a connsim results database"):
        ResultsDB(foreign)
    other = os.path.join(tmp_path, "other.db")
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(DatabaseError, match="no connsim task table"):
        ResultsDB(other)
    with open(foreign, "rb") as f:
        assert f.read(21) == b"not a database at all"  # untouched
    with pytest.raises(DatabaseError, match="does not exist; run the study first"):
        ResultsDB(os.path.join(tmp_path, "missing.db"), create=False)


def test_truncated_database_is_refused(tmp_path):
    path = os.path.join(tmp_path, "s.db")
    db = ResultsDB(path)
    db.record("h", "predict", {"arch": "lenet-5"}, {"status": "done", "result": {"x": 1.0}},
              "0.1.0")
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    with open(path, "r+b") as f:
        f.truncate(512)
    with pytest.raises(DatabaseError, match="not a connsim results database"):
        ResultsDB(path).rows()


def test_a_second_run_on_the_same_database_is_refused(tmp_path):
    study = load_study(write(tmp_path, SMALL))
    with ResultsDB(study.database) as db, db.lock(), \
            pytest.raises(ValueError, match="in use by another 'connsim study run'"):
        run_study(study)


def test_artifacts_are_content_addressed(tmp_path):
    db = ResultsDB(os.path.join(tmp_path, "s.db"))
    outcome = {"status": "done", "result": {"x": 1, "_artifacts": {"masks.npz": b"abc"}}}
    db.record("h1", "measure", {"arch": "a"}, outcome, "0.1.0")
    db.record("h2", "measure", {"arch": "b"}, outcome, "0.1.0")
    rows = db.rows()
    paths = {db.artifact_path(r, "masks.npz") for r in rows}
    assert len(paths) == 1
    with open(paths.pop(), "rb") as f:
        assert f.read() == b"abc"
    with pytest.raises(KeyError, match="has no artifact 'w'; it has masks.npz"):
        db.artifact_path(rows[0], "w")


# ------------------------------------------------------------- running on Dask clusters


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The small study run once, uninterrupted, on the default local cluster."""
    folder = tmp_path_factory.mktemp("reference")
    study = load_study(write(folder, SMALL))
    summary = run_study(study, workers=2)
    assert (summary.done, summary.failed) == (12, 0)
    return rows_without_timing(study.database)


@pytest.mark.kernel_heavy
def test_rerun_skips_done_tasks_and_results_read_back(tmp_path, reference):
    study = load_study(write(tmp_path, SMALL))
    run_study(study, workers=1)
    again = run_study(study, workers=1)
    assert (again.skipped, again.done) == (12, 0)
    assert rows_without_timing(study.database) == reference
    with ResultsDB(study.database, create=False) as db:
        rows = results(study, db)
        export(study, db, os.path.join(tmp_path, "s.csv"))
    assert all(math.isfinite(r["z"]) for r in rows if r["mc_stderr"] > 0)
    (uniform, igq) = sorted(curves(study, rows, study.figures["agreement"]),
                            key=lambda c: c.label)[::-1]
    assert uniform.label == "uniform" and list(uniform.n) == [2, 2, 2]
    assert uniform.theory[0] == pytest.approx(uniform.y[0], rel=0.05)
    with open(os.path.join(tmp_path, "s.csv")) as f:
        header = f.readline().strip().split(",")
        assert len(f.readlines()) == 12
    assert header[:4] == ["hash", "status", "rule", "compression"] and "z" in header
    plot_figure(study, rows, "agreement", os.path.join(tmp_path, "f.png"))
    assert os.path.getsize(os.path.join(tmp_path, "f.png")) > 1000
    with pytest.raises(ValueError, match="figure must be one of agreement, got 'x'"):
        plot_figure(study, rows, "x")


def _start_cluster(folder, workers=2):
    """A real dask.distributed scheduler and worker processes on localhost."""
    env = dict(os.environ, **dict.fromkeys(THREAD_VARIABLES, "1"))
    file = os.path.join(folder, "scheduler.json")
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler",
                               "--scheduler-file", file, "--port", "0", "--host", "127.0.0.1",
                               "--no-dashboard"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    for _ in range(50):
        if os.path.exists(file) and os.path.getsize(file):
            break
        time.sleep(0.2)
    for _ in range(workers):
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", file,
             "--nthreads", "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    with open(file) as f:
        address = json.load(f)["address"]
    from distributed import Client

    with Client(address, timeout="30s") as c:
        c.wait_for_workers(workers, timeout=60)
    return address, procs


def _stop(procs):
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


@pytest.mark.kernel_heavy
def test_a_real_cluster_gives_the_same_rows(tmp_path, reference):
    address, procs = _start_cluster(tmp_path)
    try:
        study = load_study(write(tmp_path, SMALL))
        summary = run_study(study, scheduler=address)
        assert (summary.done, summary.failed) == (12, 0)
    finally:
        _stop(procs)
    assert rows_without_timing(study.database) == reference


def test_unreachable_scheduler_is_a_clear_error(tmp_path):
    study = load_study(write(tmp_path, SMALL))
    with pytest.raises(OSError, match="cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'"):
        run_study(study, scheduler="tcp://127.0.0.1:9")


SLOW = SMALL.replace("samples = 50", "samples = 3000").replace(
    "geomspace = [10, 1000, 3]", "geomspace = [10, 1000, 4]")


@pytest.mark.slow
def test_killed_worker_has_its_task_rescheduled(tmp_path):
    address, procs = _start_cluster(tmp_path)
    study = load_study(write(tmp_path, SLOW))
    reference = load_study(write(tmp_path, SLOW, "ref.toml"))
    try:
        finished = []

        def kill_after_first(done, total, note):
            finished.append(done)
            if done == 1:
                procs[1].kill()  # a worker, most likely in the middle of a task

        summary = run_study(study, scheduler=address, progress=kill_after_first)
        assert procs[1].wait() == -signal.SIGKILL
        assert (summary.done, summary.failed) == (16, 0)
    finally:
        _stop(procs)
    run_study(reference, workers=1)
    assert rows_without_timing(study.database) == rows_without_timing(reference.database)


@pytest.mark.slow
def test_killed_driver_loses_only_tasks_in_flight(tmp_path):
    path = write(tmp_path, SLOW)
    cmd = [sys.executable, "-m", "connsim", "study", "run", path, "--workers", "1",
           "--no-progress"]
    driver = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    db_path = os.path.join(tmp_path, "s.db")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if os.path.exists(db_path) and len(ResultsDB(db_path).statuses()) >= 3:
            break
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and its local cluster
    driver.wait()
    with ResultsDB(db_path) as db:
        before = len(db.statuses())
    assert 3 <= before < 16
    study = load_study(path)
    summary = run_study(study, workers=1)
    assert summary.skipped == before and summary.done == 16 - before
    reference = load_study(write(tmp_path, SLOW, "ref.toml"))
    run_study(reference, workers=2)
    assert rows_without_timing(db_path) == rows_without_timing(reference.database)


# --------------------------------------------------------------------------- the command


@pytest.mark.kernel_heavy
def test_cli_runs_reports_exports_and_plots(tmp_path, capsys):
    text = """kind = "predict"
[axes]
rule = ["uniform", "igq"]
compression = [10, 100]
[settings]
arch = "lenet-5"
[figures.theory]
x = "direct_compression"
y = "theory_effective_compression"
curves = ["rule"]
"""
    path = write(tmp_path, text)
    assert main(["study", "run", path, "--workers", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["total"], out["done"], out["failed"]) == (4, 4, 0)
    assert main(["study", "status", path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["done"] == 4
    assert main(["study", "export", path, "--out", os.path.join(tmp_path, "t.csv")]) == 0
    assert main(["study", "plot", path]) == 0
    assert "s.theory.png" in capsys.readouterr().out
    assert main(["study", "plot", path, "--figure", "nope"]) == 2
    assert "figure must be one of theory" in capsys.readouterr().err
    assert main(["study", "status", os.path.join(tmp_path, "none.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["study", "export", path, "--format", "xls"]) == 2


@pytest.mark.kernel_heavy
def test_cli_run_exits_1_when_a_task_failed(tmp_path, capsys):
    text = ('kind = "predict"\n[axes]\ncompression = [100000]\n[settings]\narch = '
            '"lenet-300-100"\nrule = "uniform+"\n')
    path = write(tmp_path, text)
    assert main(["study", "run", path, "--workers", "1", "--no-progress"]) == 1
    assert "1 tasks failed" in capsys.readouterr().out
    assert main(["study", "status", path, "--failed"]) == 0
    assert "InfeasibleQuota" in capsys.readouterr().out


def test_two_curve_columns_share_colours_by_the_first_and_markers_by_the_second():
    import numpy as np

    from connsim.studyresults import Curve, _curve_styles

    def curve(*values):
        empty = np.zeros(0)
        return Curve((), ", ".join(values), values, empty, empty, empty, empty, None)

    pruners = [f"p{k}" for k in range(12)]  # more than tab10's colours
    data = [curve(p, t) for p in pruners for t in ("direct", "effective")]
    style = _curve_styles(data)
    colours = {p: {style[(p, t)][0] for t in ("direct", "effective")} for p in pruners}
    assert all(len(c) == 1 for c in colours.values())  # one colour per pruner
    assert len({c.pop() for c in colours.values()}) == 12  # twelve distinct colours
    assert style[("p0", "direct")][1:] != style[("p0", "effective")][1:]
    assert style[("p0", "direct")][1:] == style[("p5", "direct")][1:]

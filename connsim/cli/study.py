"""``connsim study``: run a declarative sweep on Dask into a resumable results database."""

from __future__ import annotations

import math
import os
import signal
import time

from ._common import Parser, Progress, emit, fmt, positive_int

HELP = "run a sweep (study file) on Dask; status, export and plots of its results"


def add_parser(sub):
    """Add the ``study`` command (with its ``run``, ``status``, ``export`` and ``plot``
    subcommands) to ``sub``."""
    p = sub.add_parser(
        "study", help=HELP,
        description=(
            "A study file (TOML) names axes (architectures, rules, compressions, seeds, ...), a "
            "task kind and shared settings; each grid point is one task, identified by a hash of "
            "its full configuration. 'run' executes the missing or failed tasks on a local Dask "
            "cluster (or an existing one) and files each result in an SQLite database beside the "
            "study, so an interrupted run resumes where it stopped. Docs: docs/studies.md."
        ),
        epilog=("Examples: connsim study run studies/random_effective_vs_direct.toml --variant "
                "quick; connsim study status studies/random_effective_vs_direct.toml; connsim "
                "study plot studies/random_effective_vs_direct.toml --figure position --out a.png"),
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    actions.required = True
    for name, help_ in (("run", "run the study's missing and failed tasks"),
                        ("status", "done / failed / pending counts (and errors with --failed)"),
                        ("export", "write the results as a table (csv, or parquet)"),
                        ("plot", "draw a figure the study declares")):
        a = actions.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".")
        a.add_argument("study", metavar="STUDY.toml", help="the study file")
        a.add_argument("--variant", metavar="NAME",
                       help="a [variants.NAME] table of the file (e.g. quick)")
        a.add_argument("--db", metavar="PATH",
                       help="results database (default: beside the study file, STUDY.db or "
                            "STUDY.VARIANT.db)")
        a.set_defaults(action_func=globals()[f"_{name}"])
        if name == "run":
            a.add_argument("--scheduler", metavar="ADDRESS",
                           help="address of a running Dask scheduler (tcp://host:8786); default: "
                                "a local cluster on this machine")
            a.add_argument("--workers", type=positive_int, metavar="N",
                           help="worker processes of the local cluster (default: one per core; "
                                "each single-threaded)")
            a.add_argument("--no-progress", action="store_true", help="no progress on stderr")
        if name == "status":
            a.add_argument("--failed", action="store_true",
                           help="also print each failed task's configuration and error")
        if name == "export":
            a.add_argument("--format", choices=("csv", "parquet"), default="csv",
                           help="csv (default) or parquet (needs pip install 'connsim[parquet]')")
            a.add_argument("--out", metavar="FILE",
                           help="output file (default: the database's name with .csv/.parquet)")
        if name == "plot":
            a.add_argument("--figure", metavar="NAME",
                           help="one of the study's [figures] (default: its first)")
            a.add_argument("--out", metavar="FILE",
                           help="image file .png/.pdf/.svg (default: STUDY[.VARIANT].NAME.png "
                                "beside the database)")
        if name in ("run", "status", "export"):
            a.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def run(args) -> int:
    """Dispatch to the study action; returns the exit status."""
    return args.action_func(args)


def _study(args):
    from ..study import load_study

    return load_study(args.study, args.variant, database=args.db)


def _run(args) -> int:
    from ..studyrun import run_study

    study = _study(args)
    bar = Progress(f"study {study.name}", 1, enabled=not args.no_progress and not args.json)
    start = time.monotonic()

    def report(finished, total, note):
        rate = (time.monotonic() - start) / finished
        eta = rate * (total - finished)
        bar.set(finished, total, f"ETA {_duration(eta)}" + (f", {note}" if note else ""))

    # a batch system's SIGTERM stops the run like Ctrl-C: the local cluster is shut down and
    # every finished task is already in the database
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        summary = run_study(study, scheduler=args.scheduler, workers=args.workers,
                            progress=report)
    finally:
        signal.signal(signal.SIGTERM, previous)
    bar.close()
    out = dict(summary.__dict__, database=study.database)
    text = (f"{study.name}: {summary.total} tasks; {summary.skipped} already done, "
            f"{summary.done} run now, {summary.failed} failed ({fmt(summary.seconds, 3)} s). "
            f"Results: {study.database}")
    if summary.failed:
        text += f"\n{summary.failed} tasks failed: 'connsim study status {args.study} --failed' " \
                "shows their errors; 'run' again retries them."
    emit(args, out, text)
    return 1 if summary.failed else 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


def _status(args) -> int:
    from ..studydb import ResultsDB
    from ..studyresults import progress, results

    study = _study(args)
    with ResultsDB(study.database, create=False) as db:
        p = progress(study, db)
        failed = [r for r in results(study, db) if r["status"] == "failed"] if args.failed else []
    out = p.to_dict() | {"study": study.name, "database": study.database}
    if args.failed:
        out["failures"] = [{"hash": r["hash"], "config": r["config"], "error": r.get("error")}
                           for r in failed]
    pct = 100 * p.done / p.total
    text = (f"{study.name} ({study.database}): {p.done} done, {p.failed} failed, {p.pending} "
            f"pending of {p.total} ({pct:.1f} % done; {fmt(p.task_seconds, 3)} task-seconds so "
            "far)")
    if p.other_rows:
        text += f"\n{p.other_rows} other rows in the database belong to earlier settings"
    for r in failed:
        last = (r.get("error") or "").strip().splitlines()[:1]
        text += f"\n\nfailed {r['hash'][:12]} {r['config']}\n  {last[0] if last else ''}"
    emit(args, out, text)
    return 0


def _export(args) -> int:
    from ..studydb import ResultsDB
    from ..studyresults import export

    study = _study(args)
    path = args.out or os.path.splitext(study.database)[0] + f".{args.format}"
    with ResultsDB(study.database, create=False) as db:
        n = export(study, db, path, args.format)
    emit(args, {"rows": n, "out": path}, f"wrote {n} rows to {path}")
    return 0


def _plot(args) -> int:
    from ..studydb import ResultsDB
    from ..studyresults import plot_figure, results

    study = _study(args)
    name = args.figure or next(iter(study.figures), None)
    if name is None:
        raise ValueError(f"{args.study} declares no [figures]; add one (docs/studies.md)")
    path = args.out or os.path.splitext(study.database)[0] + f".{name}.png"
    with ResultsDB(study.database, create=False) as db:
        rows = results(study, db)
    if not any(r["status"] == "done" for r in rows):
        raise ValueError(f"no finished tasks in {study.database}; run the study first")
    plot_figure(study, rows, name, path)
    print(f"wrote {path}")
    return 0

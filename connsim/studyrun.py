"""Run a study's missing tasks on Dask and file each result as it ends.

The driver (this process) expands the study, skips every task whose row says ``done``, submits
the rest to a Dask cluster and writes each outcome into the results database the moment it
arrives. Dask does the scheduling: a worker that dies mid-task has its task run again elsewhere
(up to ``distributed.scheduler.allowed-failures`` times, then the task is recorded as failed).
A task that raises is recorded as failed, with its traceback, and the study goes on; the next
``run`` retries it.

Threads: the default local cluster starts one single-threaded worker process per core (or
``workers``) with ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS`` and
``NUMBA_NUM_THREADS`` set to 1, so that NumPy's BLAS and Numba never oversubscribe the cores. On
an existing cluster (``scheduler``) start the workers the same way (see ``docs/studies.md``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from .study import Study
from .studydb import ResultsDB
from .studytasks import execute

__all__ = [
    "RunSummary", "run_study",
]


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS")


@dataclass(frozen=True)
class RunSummary:
    """What one :func:`run_study` call did.

    Attributes
    ----------
    total : int
        Tasks in the study.
    skipped : int
        Tasks already done before this run.
    done, failed : int
        Tasks finished and failed in this run.
    seconds : float
        Wall time of the run, the cluster's start-up included.

    See Also
    --------
    run_study : Returns it.
    connsim.studyresults.progress : The database's counts, from any process.

    Examples
    --------
    >>> RunSummary(total=3, skipped=3, done=0, failed=0, seconds=0.1).skipped
    3
    """

    total: int  # tasks in the study
    skipped: int  # already done before this run
    done: int  # finished by this run
    failed: int  # failed in this run
    seconds: float


def _client(scheduler: str | None, workers: int | None):
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ImportError("studies run on Dask: pip install 'connsim[study]' (dask and "
                          "distributed)") from None
    if scheduler is not None:
        try:
            return Client(scheduler, timeout="20s"), None
        except OSError as e:
            raise OSError(f"cannot reach the Dask scheduler at {scheduler!r}: {e}") from None
    n = workers or os.cpu_count() or 1
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                           dashboard_address=None, env=dict.fromkeys(THREAD_VARIABLES, "1"))
    return Client(cluster), cluster


def run_study(study: Study, *, scheduler: str | None = None, workers: int | None = None,
              progress=None) -> RunSummary:
    r"""Run every task of ``study`` that has no ``done`` row in its database.

    Parameters
    ----------
    study : Study
        From :func:`connsim.study.load_study`; its ``database`` is written.
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``); default: a local cluster.
    workers : int, optional
        Worker processes of the local cluster (default: one per core).
    progress : callable, optional
        Called as ``progress(finished, pending, note)`` after each task.

    Returns
    -------
    RunSummary

    Raises
    ------
    ValueError
        Another run holds the database, or it is not a connsim results database.
    OSError
        The database cannot be written or the scheduler cannot be reached.

    See Also
    --------
    connsim.study.load_study : Reads the study file.
    connsim.studyresults.results : Reads the rows back.

    Examples
    --------
    A local cluster of one worker process runs the three tasks; a second run finds them done:

    >>> import pathlib, tempfile
    >>> from connsim.study import load_study
    >>> path = pathlib.Path(tempfile.mkdtemp(), "s.toml")
    >>> _ = path.write_text('kind = "predict"\n[axes]\narch = ["lenet-5"]\n'
    ...                     'compression = {geomspace = [10, 1000, 3]}\n')
    >>> study = load_study(path)
    >>> run_study(study, workers=1).done
    3
    >>> again = run_study(study, workers=1)
    >>> again.skipped, again.done
    (3, 0)
    """
    from . import __version__

    start = time.perf_counter()
    tasks = study.tasks()
    with ResultsDB(study.database) as db, db.lock():
        statuses = db.statuses()
        todo = [t for t in tasks if statuses.get(t.hash) != "done"]
        done = failed = 0
        if todo:
            client, cluster = _client(scheduler, workers)
            try:
                done, failed = _submit(client, db, todo, __version__, progress)
            finally:
                client.close()
                if cluster is not None:
                    cluster.close()
    return RunSummary(total=len(tasks), skipped=len(tasks) - len(todo), done=done, failed=failed,
                      seconds=time.perf_counter() - start)


def _submit(client, db: ResultsDB, todo: list, version: str, progress) -> tuple[int, int]:
    from distributed import as_completed

    by_key = {}
    futures = []
    for t in todo:
        # the key is the task's hash: two submissions of one task share one computation
        f = client.submit(execute, t.kind, t.config, version, key=f"connsim-{t.hash}", pure=False,
                          retries=0)
        by_key[f.key] = t
        futures.append(f)
    done = failed = 0
    for future in as_completed(futures):
        t = by_key[future.key]
        try:
            outcome = future.result()
        except Exception as e:  # noqa: BLE001 -- e.g. KilledWorker: the task killed its workers
            outcome = {"status": "failed", "result": None, "started": None, "seconds": None,
                       "worker": None, "error": f"{type(e).__name__}: {e} (the task ended its "
                       "worker process each time it ran: out of memory, or a crash in native "
                       "code)"}
        db.record(t.hash, t.kind, t.config, outcome, version)
        done += outcome["status"] == "done"
        failed += outcome["status"] == "failed"
        future.release()
        if progress is not None:
            progress(done + failed, len(todo), f"{failed} failed" if failed else "")
    return done, failed

"""The results database of a study: one SQLite file, one row per task.

Table ``tasks`` has the fixed columns ``hash`` (the task's identity, primary key), ``kind``,
``status`` (``done`` or ``failed``; a task with no row is pending), ``error``, ``started``,
``finished``, ``seconds``, ``worker``, ``version``, ``config`` (the full configuration as JSON)
and ``artifacts`` (JSON: file name -> path in the artifact folder), then one column per
configuration input and one per result, added as they first appear. Any SQLite client reads it::

    sqlite3 study.db "SELECT arch, rule, compression, effective_compression FROM tasks"

Only the process that runs the study writes, one transaction per finished task, so a crash loses
at most the tasks in flight; a second ``run`` on the same file is refused while one holds its
lock (``study.db.lock``). Artifacts (masks, histories) are files in ``study.db.artifacts/``
named by the SHA-256 of their bytes, written atomically before the row that names them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sqlite3

from .files import atomic_write, check_writable, exclusive_lock

__all__ = [
    "DatabaseError", "ResultsDB",
]


APPLICATION_ID = 0x636E7364  # 'cnsd': marks a connsim results database
SCHEMA = 1
FIXED = ("hash", "kind", "status", "error", "started", "finished", "seconds", "worker", "version",
         "config", "artifacts")
STATUSES = ("done", "failed")


class DatabaseError(ValueError):
    """A results database that cannot be used; the message names the file and the fix.

    A subclass of :class:`ValueError`.

    See Also
    --------
    ResultsDB : Raises it.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "missing.db")
    >>> try:
    ...     ResultsDB(path, create=False)
    ... except DatabaseError:
    ...     print("refused")
    refused
    """


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class ResultsDB:
    """A study's results database (see the module docstring).

    Parameters
    ----------
    path : str
        The SQLite file; created (with its folder's writability checked first) when missing.
    create : bool
        Refuse a missing file instead of creating it (``status``, ``export``, ``plot``).

    See Also
    --------
    connsim.studyresults.results : The rows of a study.
    connsim.studyrun.run_study : Writes the rows.

    Examples
    --------
    >>> import os, tempfile
    >>> db = ResultsDB(os.path.join(tempfile.mkdtemp(), "s.db"))
    >>> db.record("ab12", "predict", {"arch": "lenet-5"},
    ...           {"status": "done", "result": {"x": 1.5}, "error": None, "started": 0.0,
    ...            "seconds": 0.1, "worker": "host:1"}, "0.1.0")
    >>> [(r["hash"], r["arch"], r["x"]) for r in db.rows()]
    [('ab12', 'lenet-5', 1.5)]
    >>> db.close()
    """

    def __init__(self, path: str | os.PathLike, *, create: bool = True):
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            if not create:
                raise DatabaseError(f"results database {self.path!r} does not exist; run the "
                                    "study first ('connsim study run')")
            check_writable(self.path, (), what="results database")
        elif os.path.isdir(self.path):
            raise DatabaseError(f"results database {self.path!r} is a directory; give a file")
        try:
            self.conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self._setup(create)
        except sqlite3.DatabaseError as e:
            raise DatabaseError(f"{self.path!r} is not a connsim results database ({e}); "
                                "give another --db or move the file away") from None

    def _setup(self, create: bool) -> None:
        c = self.conn
        app = c.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables and create:
            with self._transaction():
                c.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                c.execute(f"PRAGMA user_version = {SCHEMA}")
                c.execute("CREATE TABLE tasks (hash TEXT PRIMARY KEY, kind TEXT NOT NULL, "
                          "status TEXT NOT NULL CHECK (status IN ('done', 'failed')), "
                          "error TEXT, started REAL, finished REAL, seconds REAL, worker TEXT, "
                          "version TEXT, config TEXT NOT NULL, artifacts TEXT)")
        elif app != APPLICATION_ID or "tasks" not in tables:
            raise sqlite3.DatabaseError("it has no connsim task table")
        version = c.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA:
            raise sqlite3.DatabaseError(f"schema {version}, this connsim reads schema {SCHEMA}")
        with contextlib.suppress(sqlite3.DatabaseError):  # a read-only file keeps its journal
            c.execute("PRAGMA journal_mode = WAL")  # readers (status, plot) never block the writer

    @contextlib.contextmanager
    def _transaction(self):
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def lock(self):
        """Context manager: the exclusive right to run tasks into this database."""
        return exclusive_lock(self.path + ".lock",
                              f"results database {self.path!r} is in use by another 'connsim "
                              "study run'; wait for it to finish or give another --db")

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---------------------------------------------------------------------- reading

    def columns(self) -> list[str]:
        """Every column of the task table, fixed ones first."""
        return [r[1] for r in self.conn.execute("PRAGMA table_info(tasks)")]

    def statuses(self) -> dict[str, str]:
        """hash -> status of every row."""
        return dict(self.conn.execute("SELECT hash, status FROM tasks"))

    def rows(self, hashes=None) -> list[dict]:
        """Every row (or those of ``hashes``, in that order) as a dict of its non-null columns
        (configuration values decoded from JSON where they are lists)."""
        cur = self.conn.execute("SELECT * FROM tasks")
        names = [d[0] for d in cur.description]
        rows = {}
        for values in cur:
            row = {k: v for k, v in zip(names, values, strict=True) if v is not None}
            config = json.loads(row["config"])
            row.update({k: v for k, v in config.items() if isinstance(v, list)})
            rows[row["hash"]] = row
        if hashes is None:
            return list(rows.values())
        return [rows[h] for h in hashes if h in rows]

    # ---------------------------------------------------------------------- writing

    def _add_columns(self, names) -> None:
        have = set(self.columns())
        for name in names:
            if name not in have:
                self.conn.execute(f"ALTER TABLE tasks ADD COLUMN {_quote(name)}")

    def _artifact_dir(self) -> str:
        return self.path + ".artifacts"

    def _store(self, name: str, data: bytes) -> str:
        """Write an artifact under its content hash; returns its path relative to the folder."""
        digest = hashlib.sha256(data).hexdigest()
        ext = os.path.splitext(name)[1]
        rel = os.path.join(digest[:2], digest + ext)
        full = os.path.join(self._artifact_dir(), rel)
        if not os.path.exists(full):
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with atomic_write(full, ext) as tmp, open(tmp, "wb") as f:
                f.write(data)
        return rel

    def artifact_path(self, row: dict, name: str) -> str:
        """The file of artifact ``name`` of ``row``."""
        stored = json.loads(row.get("artifacts") or "{}")
        if name not in stored:
            raise KeyError(f"task {row['hash'][:12]} has no artifact {name!r}; it has "
                           f"{', '.join(stored) or 'none'}")
        return os.path.join(self._artifact_dir(), stored[name])

    def record(self, hash: str, kind: str, config: dict, outcome: dict, version: str) -> None:
        """Write one finished task (an :func:`connsim.studytasks.execute` outcome) in one
        transaction; replaces the task's earlier row (a failure being retried)."""
        from .studytasks import ARTIFACTS

        result = dict(outcome.get("result") or {})
        files = result.pop(ARTIFACTS, {})
        clash = set(result) & (set(config) | set(FIXED))
        if clash:
            raise DatabaseError(f"result column {sorted(clash)[0]!r} of kind {kind!r} repeats a "
                                "configuration or fixed column")
        artifacts = {name: self._store(name, data) for name, data in files.items()}
        values = {"hash": hash, "kind": kind, "status": outcome["status"],
                  "error": outcome.get("error"), "started": outcome.get("started"),
                  "finished": (outcome.get("started") or 0) + (outcome.get("seconds") or 0),
                  "seconds": outcome.get("seconds"), "worker": outcome.get("worker"),
                  "version": version, "config": json.dumps(config, sort_keys=True),
                  "artifacts": json.dumps(artifacts) if artifacts else None}
        values.update({k: _sql(v) for k, v in config.items()})
        values.update({k: _sql(v) for k, v in result.items()})
        names = list(values)
        with self._transaction():
            self._add_columns(names)
            self.conn.execute(f"INSERT OR REPLACE INTO tasks ({', '.join(map(_quote, names))}) "
                              f"VALUES ({', '.join('?' * len(names))})", list(values.values()))


def _sql(value):
    """A configuration or result value as SQLite stores it (lists as JSON text)."""
    if isinstance(value, list | tuple | dict):
        return json.dumps(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # a NumPy scalar
        return value.item()
    return value

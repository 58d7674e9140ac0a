"""Atomic file writes: a temporary file in the target folder renamed over the target, so an
interrupted write never leaves a partial file behind.

Temporary files are named ``.tmp-connsim-PID-*``. One left behind by a process that was killed
(its PID no longer runs on this machine) is removed the next time connsim writes into that folder.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile

_PREFIX = ".tmp-connsim-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # exists but belongs to someone else; an absurd pid is never ours to judge
    return True


def clean_stale_temps(folder: str | os.PathLike) -> list[str]:
    """Remove temporary files of dead connsim processes from ``folder``; returns their names."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(_PREFIX):
            continue
        pid = name[len(_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, name))
                removed.append(name)
    return removed


@contextlib.contextmanager
def exclusive_lock(path: str, busy: str):
    """Hold an exclusive lock on the file ``path`` (created if needed) for the ``with`` block;
    released when the process ends, also on a crash. Raises ``ValueError(busy)`` when another
    process holds it."""
    import fcntl

    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(busy) from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path next to ``path``; on success rename it over ``path``.

    Raises
    ------
    OSError
        If the folder cannot be written or ``path`` is a directory; the message names ``path``
        (never the temporary file).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write {path!r}: it is a directory; give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    clean_stale_temps(folder)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{_PREFIX}{os.getpid()}-", suffix=suffix, dir=folder)
    except OSError as e:
        raise type(e)(f"cannot write {path!r}: {e.strerror}") from None
    os.close(fd)
    try:
        try:
            yield tmp
        except OSError as e:
            if e.filename == tmp or tmp in str(e):
                raise type(e)(f"cannot write {path!r}: {e.strerror}") from None
            raise
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def json_safe(obj):
    """``obj`` with every non-finite float replaced by ``None``: standard JSON has no
    ``Infinity`` or ``NaN`` (the records carry flags such as ``disconnected`` instead)."""
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def dumps(obj, **kwargs) -> str:
    """Standard JSON (see :func:`json_safe`)."""
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented standard JSON, atomically, creating the folder if needed."""
    os.makedirs(os.path.dirname(os.path.abspath(os.fspath(path))), exist_ok=True)
    text = dumps(obj, indent=1)
    with atomic_write(path, ".json") as tmp, open(tmp, "w") as f:
        f.write(text)


def check_writable(path: str | os.PathLike, suffixes: tuple[str, ...] = (), *,
                   folder: bool = False, what: str = "--out") -> str:
    """Check, before any work, that ``path`` can be written.

    ``folder=False``: a file with one of ``suffixes`` whose folder exists and is writable (it is
    replaced if it exists). ``folder=True``: a run folder that exists as a folder or can be
    created (its parent is writable). Returns the path; raises ``ValueError`` naming ``what``.
    """
    path = os.fspath(path)
    if not path:
        raise ValueError(f"{what} is empty; give a path")
    if folder:
        if os.path.exists(path) and not os.path.isdir(path):
            raise ValueError(f"{what} {path!r} is an existing file; a run folder is expected")
        probe = path
        while not os.path.exists(probe):
            parent = os.path.dirname(os.path.abspath(probe))
            if parent == os.path.abspath(probe):
                break
            probe = parent
        if not os.path.isdir(probe):
            raise ValueError(f"{what} {path!r} cannot be written: {probe!r} is not a folder")
        _probe(probe, f"{what} {path!r}: folder {probe!r}")
        return path
    if os.path.isdir(path):
        raise ValueError(f"{what} {path!r} is a directory; give a file name ending in "
                         f"{' or '.join(suffixes) or 'a suffix'}")
    if suffixes and not path.endswith(suffixes):
        raise ValueError(f"{what} {path!r} must end in {' or '.join(suffixes)}")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ValueError(f"{what} {path!r}: folder {parent!r} does not exist; create it first")
    _probe(parent, f"{what} {path!r}: folder {parent!r}")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise ValueError(f"{what} {path!r} exists and is not writable")
    return path


def _probe(folder: str, what: str) -> None:
    """Create and remove a temporary file in ``folder``: the only writability test that also
    holds for root (for whom ``os.access`` always says yes) and for read-only file systems."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=folder)
    except OSError as e:
        raise ValueError(f"{what} is not writable ({e.strerror})") from None
    os.close(fd)
    os.unlink(tmp)

"""File output: atomic writes (a crash never leaves a half-written file under its final name), the
one JSON convention of every report, and the lock that keeps two runs out of one output directory.

Files are created with the permissions the user's umask gives (``0o666 & ~umask``, as ``open``
would), not the 0600 of a bare ``tempfile.mkstemp``.

Reports are strict JSON (RFC 8259): a non-finite float (NaN, ±Inf) is written as ``null``, never as
the bare ``NaN``/``Infinity`` that JSON does not have; ``json.dumps(..., allow_nan=False)`` makes
sure nothing else slips through.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

#: The lock file of an output directory (``lock_output``).
LOCK_NAME = ".lock"


def current_umask() -> int:
    """The process's umask (from /proc where it is there, so no other thread sees it change)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it over ``path``.
    The file gets the mode a plain ``open`` would give it under the current umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """``atomic_write_bytes`` of ``arrays`` in NumPy's ``.npz`` format."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return atomic_write_bytes(path, buffer.getvalue())


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def finite_or_null(obj: Any) -> Any:
    """``obj`` with every non-finite float (also numpy scalars and arrays) replaced by ``None``;
    tuples become lists, as JSON writes them."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_null(v) for v in obj]
    if isinstance(obj, (np.ndarray, np.generic)):
        return finite_or_null(obj.tolist())
    return obj


def report_json(obj: Any) -> str:
    """The report convention: strict, deterministic JSON (sorted keys, fixed indentation) with
    non-finite floats as ``null``."""
    return json.dumps(finite_or_null(obj), indent=1, sort_keys=True, allow_nan=False) + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """``report_json(obj)`` written atomically."""
    return atomic_write_text(path, report_json(obj))


# ------------------------------------------------------------------------------------------------
# One run per output directory
# ------------------------------------------------------------------------------------------------

class OutputLocked(RuntimeError):
    """Another process holds the lock of an output (its message names the lock and the holder)."""


def _holder(handle) -> str:
    try:
        handle.seek(0)
        pid = handle.read().strip()
    except OSError:
        return ""
    return f" (held by process {pid})" if pid.isdigit() else ""


@contextlib.contextmanager
def lock_output(path: str | os.PathLike, *, is_dir: bool = True):
    """Hold an exclusive ``fcntl.flock`` on ``path/.lock`` (a directory) or ``.NAME.lock`` beside
    a file for the duration of the ``with`` block; raise ``OutputLocked`` at once when another
    process holds it. The lock goes with the open file, so it is released on any exit: normal,
    an exception, Ctrl-C, or the process being killed. The empty lock file stays (removing it
    could let a third run lock a fresh file while a second still holds the old one); it never
    blocks a later run. Where locks are unsupported (no ``fcntl``, some network file systems) the
    block runs unlocked."""
    path = Path(path)
    lock = path / LOCK_NAME if is_dir else path.parent / f".{path.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks
        yield lock
        return
    handle = open(lock, "a+", encoding="ascii")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputLocked(f"{lock} is held by another entangle run{_holder(handle)}") \
                from None
        except OSError:  # flock unsupported here: run without it
            yield lock
            return
        try:  # the holder's pid, for the message of a refused run
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
        except OSError:
            pass
        yield lock
    finally:
        handle.close()  # closing the file releases the lock

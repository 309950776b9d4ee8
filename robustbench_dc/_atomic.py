"""Atomic file writes: a temporary file in the destination's folder, then ``os.replace``.

A reader (or a run resumed after ``kill -9``) sees either the old file or the complete new
one, never a partial file. Temporary names are ``.<name>.<random>.tmp``, which the
protocol runner removes when a killed run restarts.
"""

from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "storage_error"]

#: errors that say the storage, not the program, is at fault (full, too big, read-only, not ours)
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def storage_error(dest: str | Path, exc: OSError) -> Exception:
    """A one-line :class:`~robustbench_dc.errors.StorageError` for ``exc`` raised writing ``dest``, or
    ``exc`` itself when the storage is not to blame."""
    from robustbench_dc.errors import StorageError

    if exc.errno not in STORAGE_ERRNOS:
        return exc
    return StorageError(exc.errno, f"cannot write {dest}: {os.strerror(exc.errno)}; nothing already stored was "
                                   "changed (free some space, or write somewhere else with --out)")


@contextmanager
def atomic_write(dest: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file next to ``dest`` (``"wb"`` or ``"w"``); on success it is flushed,
    synced and renamed to ``dest``; on error it is deleted and ``dest`` is left as it was."""
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    except OSError as exc:
        raise storage_error(dest, exc) from exc
    try:
        binary = "b" in mode
        with os.fdopen(fd, mode, encoding=None if binary else "utf-8", newline=None if binary else "") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, dest)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise storage_error(dest, exc) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(dest: str | Path, data: bytes) -> None:
    with atomic_write(dest, "wb") as fh:
        fh.write(data)


def atomic_write_text(dest: str | Path, text: str) -> None:
    with atomic_write(dest, "w") as fh:
        fh.write(text)

"""Opening an existing SQLite file for reading without creating anything.

Commands that only read (status, verify, ...) must neither create a database nor leave files
beside it: a `-wal`/`-shm` made by another user (an auditor, a backup job) would be theirs and
could keep the service from opening its own database. SQLite's `mode=ro` still creates both
when they are missing, so:

- when the `-wal` and `-shm` exist (a writer has the database open, or stopped without
  closing), the file is opened `mode=ro` and read through them: nothing is created;
- when they do not, every change is in the file itself: it is opened `immutable=1` (no
  companion files, no locks) while this process holds SQLite's shared lock on the file, so a
  writer that starts meanwhile keeps its changes in its own WAL instead of copying them into the
  file on close. (A writer's automatic checkpoint, after about 80 MB of changes, would still
  copy them; a read that long should run beside no writer, or as the service's user.)

Standard library only: the light status reader uses it without loading SQLAlchemy.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from urllib.parse import quote

from ._errors import NoDatabase, StorageUnavailable

__all__ = ["ReadOnlyFile", "check_tables"]

# SQLite's unix locking: a SHARED lock is a read lock on these bytes of the database file
# (os_unix.c: SHARED_FIRST = PENDING_BYTE + 2, SHARED_SIZE = 510).
_SHARED_FIRST = 0x40000000 + 2
_SHARED_SIZE = 510
BUSY_TIMEOUT_S = 30.0


class ReadOnlyFile:
    """Connections to an existing SQLite database file that create nothing and write nothing."""

    def __init__(self, path: str, url: str | None = None) -> None:
        self.url = url or f"sqlite:///{path}"
        if os.path.isdir(path):
            raise NoDatabase(self.url, "it is a directory")
        if not os.path.isfile(path):
            raise NoDatabase(self.url, "no such file")
        self.path = os.path.abspath(path)
        self._lock_fd: int | None = None
        self._guard = threading.Lock()

    def connect(self) -> sqlite3.Connection:
        try:
            return sqlite3.connect(self.uri(), uri=True, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        except sqlite3.Error as err:
            raise StorageUnavailable(f"cannot open {self.path!r} for reading: {err}") from None

    def uri(self) -> str:
        """`mode=ro` through a writer's WAL when it has one, else the file alone (immutable, locked)."""
        base = "file:" + quote(self.path)
        if self._companions():
            return f"{base}?mode=ro"
        self._hold_shared_lock()
        if self._companions():  # a writer opened it before the lock was held: read through its WAL
            return f"{base}?mode=ro"
        return f"{base}?mode=ro&immutable=1"

    def close(self) -> None:
        with self._guard:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def _companions(self) -> bool:
        return os.path.exists(self.path + "-wal") and os.path.exists(self.path + "-shm")

    def _hold_shared_lock(self) -> None:
        with self._guard:
            if self._lock_fd is not None:
                return
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except OSError as err:
                raise StorageUnavailable(f"cannot open {self.path!r} for reading: {err.strerror}") from None
            try:
                # Blocks only while a writer holds the file exclusively (its close-time checkpoint).
                fcntl.lockf(fd, fcntl.LOCK_SH, _SHARED_SIZE, _SHARED_FIRST, os.SEEK_SET)
            except OSError:
                os.close(fd)
                return  # no byte-range locks here (some network file systems): read without
            self._lock_fd = fd


def check_tables(conn: sqlite3.Connection, url: str, names: tuple[str, ...]) -> None:
    """Raise NoDatabase unless every table of `names` is in the SQLite database."""
    try:
        found = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as err:  # not a database at all (a text file, say)
        raise NoDatabase(url, str(err)) from None
    missing = [name for name in names if name not in found]
    if missing:
        raise NoDatabase(url, f"no table {missing[0]}")

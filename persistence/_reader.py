"""A read-only snapshot lookup on an SQLite file through the standard library driver.

`carepath status` starts a new process for one row: loading SQLAlchemy would cost more than
everything else it does. This reads the same row with the same codec as the store.
"""

from __future__ import annotations

import os
import sqlite3

from ._errors import StorageUnavailable
from ._keys import DATA_KEY_ENV, DATA_KEY_FILE_ENV
from ._readonly import ReadOnlyFile, check_tables
from ._records import Snapshot
from ._rows import AUDIT_TABLE, PATIENTS_TABLE, RowCodec
from ._urls import sqlite_file

__all__ = ["SqliteReader", "light_reader"]

_CODEC = RowCodec("sqlite", PATIENTS_TABLE, AUDIT_TABLE)


class SqliteReader:
    """Reads snapshots from an existing carepath SQLite file (either schema layout)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def snapshots(self, patient_id: str) -> list[Snapshot]:
        """The patient's enrolments (one snapshot per pathway, by pathway); empty when there is none.

        Raises NoDatabase when the file is missing, a folder, or holds no carepath tables: it
        creates nothing (persistence/_readonly.py).
        """
        source = ReadOnlyFile(self.path)
        try:
            conn = source.connect()
            try:
                try:
                    rows = conn.execute(_CODEC.select_patient, (patient_id,)).fetchall()
                except sqlite3.OperationalError as err:
                    if "no such table" not in str(err):
                        raise
                    check_tables(conn, source.url, (PATIENTS_TABLE, AUDIT_TABLE))
                    raise
            finally:
                conn.close()
        except sqlite3.Error as err:
            raise StorageUnavailable(str(err)) from None
        finally:
            source.close()
        return [_CODEC.snapshot(row) for row in rows]


def light_reader(url: str) -> SqliteReader | None:
    """A reader for URLs it can serve (an SQLite file, contexts in clear), else None.

    With a data key configured contexts are encrypted: the store, which decrypts them, reads.
    """
    if os.environ.get(DATA_KEY_ENV) or os.environ.get(DATA_KEY_FILE_ENV):
        return None
    path = sqlite_file(url)
    return SqliteReader(path) if path is not None else None

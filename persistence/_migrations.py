"""Upgrades of databases made by earlier releases, found by inspecting their schema.

Release 0.1.0 keyed snapshots by patient id alone (one pathway per patient), numbered audit
entries per patient and kept idempotency keys per patient. Now the unit is the enrolment
(patient id and pathway): the snapshot's primary key, the audit uniqueness (patient_id,
pathway, seq), the idempotency index and the covering due index all include the pathway.

Audit rows are copied or re-keyed as they are: every row already hashes both patient_id and
pathway, so each old chain is a valid enrolment chain and nothing is re-hashed.

Release 0.1.0 had no `key_id` audit column (the audit key of a keyed chain, persistence/_chain.py):
it is added, nullable, with ALTER TABLE on both backends; old rows keep NULL (unkeyed) and their
hashes as they are.

`upgrade` runs inside the caller's schema transaction (SQLite: BEGIN IMMEDIATE; PostgreSQL:
under an advisory lock), so processes starting together upgrade once and the others find the
new layout when they get the lock. Each part is checked on its own, so a run is idempotent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Index, Table, inspect

from ._tables import DUE_INDEX, IDEMPOTENCY_INDEX, SEQ_CONSTRAINT, audit, patients

__all__ = ["upgrade"]

PATIENT_KEY = ["patient_id", "pathway"]
SEQ_KEY = ["patient_id", "pathway", "seq"]
KEY_ID = "key_id"


def upgrade(conn: Connection) -> list[str]:
    """Bring existing carepath tables to the current keys; returns what was changed (may be nothing)."""
    done: list[str] = []
    inspector = inspect(conn)
    tables = set(inspector.get_table_names())
    sqlite = conn.dialect.name == "sqlite"
    # First: the SQLite rebuild below copies every current column, key_id included.
    if audit.name in tables and KEY_ID not in {c["name"] for c in inspector.get_columns(audit.name)}:
        column = audit.c[KEY_ID]
        kind = column.type.compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE {_quote(conn, audit.name)} ADD COLUMN {_quote(conn, KEY_ID)} {kind}")
        done.append(f"{audit.name}: column {KEY_ID} (audit key id, NULL for unkeyed entries)")
    if patients.name in tables:
        key = inspector.get_pk_constraint(patients.name)
        if list(key.get("constrained_columns") or []) != PATIENT_KEY:
            if sqlite:
                _rebuild_sqlite(conn, patients)
            else:
                _replace_primary_key(conn, patients.name, key.get("name"), PATIENT_KEY)
            done.append(f"{patients.name}: primary key (patient_id, pathway)")
    if audit.name in tables:
        constraints = {c["name"]: c["column_names"] for c in inspect(conn).get_unique_constraints(audit.name)}
        if list(constraints.get(SEQ_CONSTRAINT) or []) != SEQ_KEY:
            if sqlite:
                _rebuild_sqlite(conn, audit)
            else:
                _replace_unique(conn, audit.name, SEQ_CONSTRAINT, SEQ_KEY, present=SEQ_CONSTRAINT in constraints)
            done.append(f"{audit.name}: unique (patient_id, pathway, seq)")
    for table, index_name in ((patients, DUE_INDEX), (audit, IDEMPOTENCY_INDEX)):
        if table.name in tables and _rebuild_index(conn, table, index_name):
            done.append(f"index {index_name}")
    return done


def _quote(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def _rebuild_sqlite(conn: Connection, table: Table) -> None:
    """SQLite cannot change a key in place: create the new table, copy every row, swap them."""
    old = f"{table.name}_before_enrolments"
    conn.exec_driver_sql(f"ALTER TABLE {_quote(conn, table.name)} RENAME TO {_quote(conn, old)}")
    # The renamed table keeps its indexes and their names, which the new table needs.
    names = conn.exec_driver_sql(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL", (old,)
    ).scalars()
    for name in list(names):
        conn.exec_driver_sql(f"DROP INDEX {_quote(conn, name)}")
    table.create(conn)  # with its current indexes
    columns = ", ".join(_quote(conn, column.name) for column in table.columns)
    conn.exec_driver_sql(
        f"INSERT INTO {_quote(conn, table.name)} ({columns}) SELECT {columns} FROM {_quote(conn, old)}"
    )
    conn.exec_driver_sql(f"DROP TABLE {_quote(conn, old)}")


def _replace_primary_key(conn: Connection, table: str, name: Any, columns: Sequence[str]) -> None:
    constraint = _quote(conn, str(name or f"{table}_pkey"))
    conn.exec_driver_sql(
        f"ALTER TABLE {_quote(conn, table)} DROP CONSTRAINT {constraint}, "
        f"ADD CONSTRAINT {constraint} PRIMARY KEY ({', '.join(_quote(conn, c) for c in columns)})"
    )


def _replace_unique(conn: Connection, table: str, name: str, columns: Sequence[str], *, present: bool) -> None:
    drop = f"DROP CONSTRAINT {_quote(conn, name)}, " if present else ""
    conn.exec_driver_sql(
        f"ALTER TABLE {_quote(conn, table)} {drop}"
        f"ADD CONSTRAINT {_quote(conn, name)} UNIQUE ({', '.join(_quote(conn, c) for c in columns)})"
    )


def _rebuild_index(conn: Connection, table: Table, name: str) -> bool:
    """Drop and recreate an index whose columns are not the current ones; True when it did."""
    wanted = next(index for index in table.indexes if index.name == name)
    found = {index["name"]: index["column_names"] for index in inspect(conn).get_indexes(table.name)}
    if name not in found or list(found[name]) == [column.name for column in wanted.columns]:
        return False  # missing indexes are created by `Store.migrate` itself
    index: Index = wanted
    index.drop(conn)
    index.create(conn)
    return True

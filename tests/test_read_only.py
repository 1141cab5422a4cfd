"""Commands that only read create nothing: no file, schema or table, no SQLite -wal/-shm.

Where there is no carepath database (a missing file, a folder, a database without carepath's
tables, an in-memory database) they say so and exit 5; writing commands create the schema on
first use, and refuse an in-memory database (exit 2).
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from pathway import Engine, FakeClock
from pathway.cli import main
from persistence import NoDatabase, Store
from persistence._readonly import ReadOnlyFile
from tests.conftest import NOW, T0
from tests.helpers import assess_data

AT = T0.isoformat()

READING = [
    ["status", "p1"],
    ["status", "p1", "--json"],
    ["history", "p1"],
    ["list"],
    ["due", "--at", AT],
    ["explain", "p1", "--at", AT],
    ["replay", "p1"],
    ["verify"],
    ["verify", "p1"],
    ["export-fhir", "p1"],
    ["diagram", "--patient", "p1"],
    ["timeline", "p1", "-o", "OUT/p1.png"],
    ["whatif", "--version", "1"],
    ["anchor"],
]


def _run(url: str, args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    args = [arg.replace("OUT", str(tmp_path)) for arg in args]
    code = main(["--db", url, *args])
    return code, capsys.readouterr().err


def _listing(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


@pytest.mark.parametrize("args", READING, ids=lambda args: "-".join(args[:2]))
def test_reading_a_missing_file_creates_nothing_and_exits_5(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    mistyped = tmp_path / "carepth.db"
    code, err = _run(f"sqlite:///{mistyped}", args, tmp_path, capsys)
    assert code == 5, err
    assert err.startswith("carepath: error: no carepath database at") and err.count("\n") == 1
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("args", [["status", "p1"], ["verify"], ["list"], ["history", "p1"]])
def test_a_folder_or_a_file_without_carepath_tables_is_no_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    code, err = _run(f"sqlite:///{folder}", args, tmp_path, capsys)
    assert (code, "no carepath database" in err, "directory" in err) == (5, True, True)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    conn.close()
    before = _listing(tmp_path)
    code, err = _run(f"sqlite:///{other}", args, tmp_path, capsys)
    assert (code, "no carepath database" in err) == (5, True), err
    assert _listing(tmp_path) == before
    with sqlite3.connect(other) as conn:
        assert [row[0] for row in conn.execute("SELECT name FROM sqlite_master")] == ["notes"]
    conn.close()


def test_debug_keeps_exit_status_5(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--db", f"sqlite:///{tmp_path / 'none.db'}", "--debug", "verify"])
    err = capsys.readouterr().err
    assert code == 5 and "Traceback" in err and "NoDatabase" in err
    assert _listing(tmp_path) == []


def test_writing_commands_create_the_schema_and_refuse_memory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _run("sqlite://", ["enroll", "p1", "--at", AT], tmp_path, capsys)
    assert code == 2 and "in-memory" in err
    for args in (["tick", "--at", AT], ["migrate"], ["import", str(tmp_path / "none.jsonl")]):
        assert _run("sqlite://", args, tmp_path, capsys)[0] == 2
    assert _run("sqlite://", ["verify"], tmp_path, capsys)[0] == 5
    url = f"sqlite:///{tmp_path / 'new.db'}"
    assert _run(url, ["enroll", "p1", "--at", AT], tmp_path, capsys)[0] == 0
    assert _run(url, ["verify"], tmp_path, capsys)[0] == 0


def _tables(store: Store) -> set[str]:
    from sqlalchemy import inspect

    with store.engine.connect() as conn:
        return set(inspect(conn).get_table_names())


@pytest.mark.postgres
@pytest.mark.parametrize("args", [["status", "p1"], ["verify"], ["list"], ["history", "p1"], ["export-fhir", "p1"]])
def test_postgres_without_tables_is_no_database_and_stays_empty(
    pg_schema_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    code, err = _run(pg_schema_url, args, tmp_path, capsys)
    assert code == 5 and "no carepath database" in err, err
    store = Store(pg_schema_url, create=False, audit_keys=None, data_keys=None)
    try:
        assert _tables(store) == set()
        with pytest.raises(NoDatabase):
            store.count_patients()
    finally:
        store.dispose()


@pytest.mark.postgres
def test_postgres_reading_store_cannot_write(pg_schema_url: str) -> None:
    """A reading store's transactions are READ ONLY on the server."""
    engine = Engine(pg_schema_url, FakeClock(NOW))
    engine.enroll("p1", T0)
    engine.close()
    store = Store(pg_schema_url, create=False)
    try:
        assert store.count_patients() == 1
        from persistence import StorageUnavailable

        with pytest.raises(StorageUnavailable, match="read-only"):
            store.execute_raw("DELETE FROM carepath_audit")
    finally:
        store.dispose()


def _database(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "carepath.db"
    url = f"sqlite:///{path}"
    engine = Engine(url, FakeClock(NOW))
    engine.enroll("p1", T0, version=1)
    engine.send("p1", "assess", T0, assess_data())
    engine.close()
    return path, url


def test_read_only_file_verifies_without_companion_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 0400 database (its writer closed, so no -wal/-shm) verifies and gets no -wal or -shm."""
    path, url = _database(tmp_path)
    assert _listing(tmp_path) == ["carepath.db"]
    path.chmod(stat.S_IRUSR)
    for args in (["verify"], ["status", "p1"], ["history", "p1", "--json"], ["list"], ["replay", "p1"]):
        code, err = _run(url, args, tmp_path, capsys)
        assert code == 0, (args, err)
    assert _listing(tmp_path) == ["carepath.db"]
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IRUSR


def test_reading_beside_a_writer_goes_through_its_wal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """While the service has the database open, readers use its -wal/-shm and see its last commit."""
    path, url = _database(tmp_path)
    writer = Engine(url, FakeClock(NOW))
    try:
        writer.enroll("p2", T0)  # committed to the WAL, not yet copied into the file
        assert os.path.exists(f"{path}-wal") and os.path.exists(f"{path}-shm")
        assert "mode=ro" in ReadOnlyFile(str(path)).uri() and "immutable" not in ReadOnlyFile(str(path)).uri()
        code, err = _run(url, ["status", "p2"], tmp_path, capsys)
        assert code == 0, err
        assert _run(url, ["verify"], tmp_path, capsys)[0] == 0
    finally:
        writer.close()


def test_a_file_alone_is_read_immutable_under_a_shared_lock(tmp_path: Path) -> None:
    path, _ = _database(tmp_path)
    source = ReadOnlyFile(str(path))
    try:
        assert source.uri().endswith("mode=ro&immutable=1")
        conn = source.connect()
        assert conn.execute("SELECT count(*) FROM carepath_patients").fetchone() == (1,)
        conn.close()
    finally:
        source.close()
    assert _listing(tmp_path) == ["carepath.db"]


def test_cohort_tables_show_control_characters_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An id written into the database behind carepath's back cannot drive the terminal from `list` or `due`."""
    monkeypatch.setenv("COLUMNS", "300")
    _, url = _database(tmp_path)
    store = Store(url)
    store.execute_raw("UPDATE carepath_patients SET patient_id = :pid", {"pid": "p1\x1b[2J\r\nfake"})
    store.dispose()
    for args in (["list", "--at", NOW.isoformat()], ["due", "--at", NOW.isoformat()]):
        assert main(["--db", url, *args]) == 0
        out = capsys.readouterr().out
        assert "\x1b" not in out and "\r" not in out
        assert "\\x1b" in out  # shown escaped (the cell may wrap in a narrow terminal)

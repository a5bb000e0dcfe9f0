"""Migrations: on an empty database and on an existing one; units of work are atomic."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from triaged.store.db import MIGRATIONS, Store


def _tables(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()


def test_empty_database_gets_every_migration(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.db")
    applied = [r["name"] for r in store.all("SELECT name FROM migrations ORDER BY name")]
    assert applied == [name for name, _ in MIGRATIONS]
    assert {"reports", "messages", "participants", "events", "outbox", "mailbox_state"} <= _tables(
        tmp_path / "t.db"
    )
    assert store.one("PRAGMA journal_mode")[0] == "wal"  # type: ignore[index]
    store.close()


def test_existing_database_keeps_its_data_and_gets_only_new_migrations(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = Store(path)
    with store.transaction():
        store.conn.execute(
            "INSERT INTO reports (id, title, state, created_at, updated_at)"
            " VALUES ('abcd2345', 't', 'new', 'x', 'x')"
        )
    store.close()

    def add_column(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE reports ADD COLUMN extra TEXT DEFAULT 'yes'")

    store = Store(path, [*MIGRATIONS, ("999_test", add_column)])
    row = store.one("SELECT id, extra FROM reports")
    assert row is not None and (row["id"], row["extra"]) == ("abcd2345", "yes")
    names = [r["name"] for r in store.all("SELECT name FROM migrations")]
    assert names.count("001_initial") == 1 and "999_test" in names
    # Opening again applies nothing more.
    assert (
        Store(path, [*MIGRATIONS, ("999_test", add_column)]).migrate(
            [*MIGRATIONS, ("999_test", add_column)]
        )
        == []
    )


def test_a_failing_migration_leaves_no_trace(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    Store(path).close()

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half (x)")
        conn.execute("THIS IS NOT SQL")

    with pytest.raises(sqlite3.OperationalError):
        Store(path, [*MIGRATIONS, ("002_broken", broken)])
    assert "half" not in _tables(path)
    store = Store(path)
    assert store.one("SELECT name FROM migrations WHERE name = '002_broken'") is None


def test_transaction_rolls_back_everything_on_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.db")
    with pytest.raises(RuntimeError), store.transaction():
        store.conn.execute(
            "INSERT INTO reports (id, title, state, created_at, updated_at)"
            " VALUES ('abcd2345', 't', 'new', 'x', 'x')"
        )
        store.db["events"].insert({"at": "x", "kind": "k"})
        raise RuntimeError("boom")
    assert store.one("SELECT COUNT(*) AS n FROM reports")["n"] == 0  # type: ignore[index]
    assert store.one("SELECT COUNT(*) AS n FROM events")["n"] == 0  # type: ignore[index]


def test_report_for_outgoing_prefers_the_newest_reference(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.db")
    with store.transaction():
        for rid in ("aaaa2345", "bbbb2345"):
            store.conn.execute(
                "INSERT INTO reports (id, title, state, created_at, updated_at)"
                " VALUES (?, 't', 'new', 'x', 'x')",
                (rid,),
            )
        for mid, rid in (("<1@x>", "aaaa2345"), ("<2@x>", "bbbb2345"), ("<3@x>", None)):
            store.conn.execute(
                "INSERT INTO outbox (message_id, report_id, kind, envelope_from, recipient, raw,"
                " next_attempt_at, created_at) VALUES (?, ?, 'k', '', 'r', x'00', 'x', 'x')",
                (mid, rid),
            )
    assert store.report_for_outgoing(("<1@x>", "<2@x>", "<3@x>", "<9@y>")) == "bbbb2345"
    assert store.report_for_outgoing(("<1@x>", "<9@y>")) == "aaaa2345"
    assert store.report_for_outgoing(("<3@x>",)) is None
    assert store.report_for_outgoing(()) is None

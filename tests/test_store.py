"""The store: a new database, units of work that are atomic, the reads runners share.

Migrations: tests/test_migrations.py."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from triaged.store import outbox as queue
from triaged.store.db import Store


def _tables(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()


def test_a_new_database_gets_every_table_in_wal_mode(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.db")
    assert {"reports", "messages", "participants", "events", "outbox", "mailbox_state"} <= _tables(
        tmp_path / "t.db"
    )
    assert store.one("PRAGMA journal_mode")[0] == "wal"  # type: ignore[index]
    store.close()


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
    assert queue.report_of(store, ("<1@x>", "<2@x>", "<3@x>", "<9@y>")) == "bbbb2345"
    assert queue.report_of(store, ("<1@x>", "<9@y>")) == "aaaa2345"
    assert queue.report_of(store, ("<3@x>",)) is None
    assert queue.report_of(store, ()) is None

"""The store: a new database, units of work that are atomic, the reads runners share.

Migrations: tests/test_migrations.py."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from triaged.core import events as ev
from triaged.store import events, reports
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


def test_a_waiting_pause_starts_and_ends_only_through_its_two_functions(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.db")
    at = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    with store.transaction():
        reports.create(store, "abcd2345", title="t", reporter="r@example.net", at=at)
        with pytest.raises(ValueError, match="waiting"):
            reports.set_field(store, "abcd2345", "waiting", 1, at=at, actor=None, message=None)
        assert not reports.end_waiting(store, "abcd2345", at, actor=None, message=None)
        assert reports.start_waiting(store, "abcd2345", at, actor="a@example.org", message=None)
        assert not reports.start_waiting(store, "abcd2345", at, actor="a@example.org", message=None)
        assert reports.end_waiting(store, "abcd2345", at, actor="r@example.net", message=None)
    kinds = [(e["kind"], e["actor"]) for e in events.of_report(store, "abcd2345")]
    assert kinds == [(ev.SET, "a@example.org"), (ev.WAITING_OVER, "r@example.net")]
    assert store.report("abcd2345")["waiting"] == 0  # type: ignore[index]
    assert store.participants("abcd2345") == {"r@example.net": "reporter"}
    store.close()

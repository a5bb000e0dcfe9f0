"""The events contract: one writer that knows every kind, and readers that never fail on a row."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from triaged.core import events as ev
from triaged.store import events
from triaged.store.db import Store

AT = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "t.db")
    with store.transaction():
        store.conn.execute(
            "INSERT INTO reports (id, title, state, created_at, updated_at)"
            " VALUES ('abcd2345', 't', 'new', 'x', 'x')"
        )
    return store


def test_an_event_is_stored_with_its_detail_and_read_back_in_order(store: Store) -> None:
    with store.transaction():
        events.record(store, "abcd2345", AT, ev.RECEIVED, actor="r@example.net", message=None)
        events.record(store, "abcd2345", AT, ev.STATE, old="new", new="acknowledged")
    rows = events.of_report(store, "abcd2345")
    assert [(r["kind"], r["actor"], ev.decode_detail(r["detail"])) for r in rows] == [
        (ev.RECEIVED, "r@example.net", {}),
        (ev.STATE, None, {"new": "acknowledged", "old": "new"}),
    ]
    assert events.happened(store, "abcd2345", ev.STATE)
    assert not events.happened(store, "abcd2345", ev.CREDIT_ASKED)


def test_an_unknown_kind_is_refused_and_nothing_is_written(store: Store) -> None:
    with pytest.raises(ValueError, match="unknown event kind 'acked'"), store.transaction():
        events.record(store, "abcd2345", AT, "acked")
    assert events.of_report(store, "abcd2345") == []


@pytest.mark.parametrize("raw", [None, "", "not json", "[1, 2]", "42", b"\xff"])
def test_an_odd_detail_reads_as_empty(raw: object) -> None:
    assert ev.decode_detail(raw) == {}

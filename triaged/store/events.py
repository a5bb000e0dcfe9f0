"""The `events` table: its one writer, and the reads several modules share.

What each kind means and which detail keys it carries: `triaged.core.events`.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from triaged.core import events as ev
from triaged.core.timefmt import ts
from triaged.store.db import Store


def record(
    store: Store,
    report_id: str | None,
    at: datetime,
    kind: str,
    *,
    actor: str | None = None,
    message: int | None = None,
    **detail: Any,
) -> None:
    """Records one event (inside the caller's transaction). An unknown kind is a bug: the
    readers would never see it, so it raises ValueError.

    Events move clocks: the caller recomputes the report's deadlines in the same transaction
    (`triaged.clocks.runner.refresh_deadlines`; intake and the clock runner do), so what
    `triaged deadlines` and the digest read is never behind."""
    if kind not in ev.KINDS:
        raise ValueError(f"unknown event kind {kind!r}: add it to triaged/core/events.py")
    store.conn.execute(
        "INSERT INTO events (report_id, at, actor, kind, detail, message)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (report_id, ts(at), actor, kind, ev.encode_detail(detail), message),
    )


def of_report(store: Store, report_id: str) -> list[sqlite3.Row]:
    """A report's events, oldest first: at, actor, kind, detail (JSON text), message."""
    return store.all(
        "SELECT at, actor, kind, detail, message FROM events WHERE report_id = ? ORDER BY id",
        (report_id,),
    )


def happened(store: Store, report_id: str, kind: str) -> bool:
    """Whether the report has an event of this kind."""
    row = store.one(
        "SELECT 1 FROM events WHERE report_id = ? AND kind = ? LIMIT 1", (report_id, kind)
    )
    return row is not None


def state_changes(store: Store, report_id: str) -> list[sqlite3.Row]:
    """The report's state transitions, newest first: at, detail (JSON text)."""
    return store.all(
        "SELECT at, detail FROM events WHERE report_id = ? AND kind = ? ORDER BY id DESC",
        (report_id, ev.STATE),
    )

"""The `reports` table: every change to a report, each recorded as an event."""

from __future__ import annotations

from datetime import datetime

from triaged.core import events as ev
from triaged.core.timefmt import ts
from triaged.store import events
from triaged.store.db import Store


def end_waiting(
    store: Store, report_id: str, at: datetime, *, actor: str | None, message: int | None
) -> bool:
    """Ends the report's /waiting pause, when it has one (a participant wrote): the one way a
    pause ends. True when there was one."""
    cursor = store.conn.execute(
        "UPDATE reports SET waiting = 0, updated_at = ? WHERE id = ? AND waiting != 0",
        (ts(at), report_id),
    )
    if cursor.rowcount == 0:
        return False
    events.record(store, report_id, at, ev.WAITING_OVER, actor=actor, message=message)
    return True

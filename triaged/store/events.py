"""The `events` table: its one writer, and the reads several modules share.

What each kind means and which detail keys it carries: `triaged.core.events`.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from triaged.core import events as ev
from triaged.core.timefmt import parse_ts, ts
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


# Held messages (report_id None, the report in detail.claimed) and refused commands: the mail
# from untrusted senders that the team is told about (triaged.intake.notices).
_ABOUT = f"CASE kind WHEN '{ev.HELD}' THEN json_extract(detail, '$.claimed') ELSE report_id END"


def untrusted_notified_since(store: Store, report_id: str, since: datetime) -> int:
    """How many held / refused notices about the report went out since `since` (events
    written before `notified` existed count as sent)."""
    row = store.one(
        "SELECT COUNT(*) AS n FROM events"
        " WHERE kind IN (?, ?) AND at > ?"
        f" AND {_ABOUT} = ? AND coalesce(json_extract(detail, '$.notified'), 1) != 0",
        (ev.HELD, ev.COMMANDS_REFUSED, ts(since), report_id),
    )
    return int(row["n"]) if row else 0


def untrusted_folded(store: Store, since: datetime) -> list[dict[str, Any]]:
    """The held / refused notices since `since` that were folded and are in no summary yet,
    oldest first: id, at (datetime), kind, actor, message, detail (dict), about (the report)."""
    rows = store.all(
        f"SELECT e.id, e.at, e.kind, e.actor, e.message, e.detail, {_ABOUT} AS about"
        " FROM events e WHERE kind IN (?, ?) AND at > ?"
        " AND json_extract(detail, '$.notified') = 0"
        f" AND e.id > coalesce((SELECT MAX(json_extract(s.detail, '$.through')) FROM events s"
        f" WHERE s.kind = ? AND s.report_id = {_ABOUT}), 0)"
        " ORDER BY e.id",
        (ev.HELD, ev.COMMANDS_REFUSED, ts(since), ev.NOTICES_SUMMARY),
    )
    return [
        {**dict(row), "at": parse_ts(str(row["at"])), "detail": ev.decode_detail(row["detail"])}
        for row in rows
    ]


def untrusted_counts(store: Store, report_id: str) -> dict[str, int]:
    """Held messages and refused commands about the report: how many, and how many of their
    notices were folded into summaries."""
    row = store.one(
        "SELECT coalesce(SUM(kind = ?), 0) AS held, coalesce(SUM(kind = ?), 0) AS refused,"
        " coalesce(SUM(json_extract(detail, '$.notified') = 0), 0) AS folded"
        f" FROM events WHERE kind IN (?, ?) AND {_ABOUT} = ?",
        (ev.HELD, ev.COMMANDS_REFUSED, ev.HELD, ev.COMMANDS_REFUSED, report_id),
    )
    return {k: int(row[k]) for k in ("held", "refused", "folded")} if row else {}


def last_command(
    store: Store, report_id: str, actor: str, name: str, since: datetime
) -> datetime | None:
    """When `actor` last ran the command `name` ("status") on the report with success, if
    they did since `since`."""
    row = store.one(
        "SELECT MAX(at) AS at FROM events WHERE report_id = ? AND kind = ? AND actor = ?"
        " AND at > ? AND json_extract(detail, '$.ok')"
        " AND lower(json_extract(detail, '$.command')) IN (?, ?)",
        (report_id, ev.COMMAND, actor, ts(since), f"/{name}", f"/{name} "),
    )
    return parse_ts(str(row["at"])) if row and row["at"] else None

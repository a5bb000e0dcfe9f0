"""The `reports` and `participants` tables: a report's fields and who takes part in it.

Every change to a report after it was created is recorded as an event here, in the same
statement group, so no caller can change a report and forget to say so. Whether a change is
allowed (the workflow, a command's arguments) is the caller's business; this module only
writes. Reads: `Store.report` and `Store.participants`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from triaged.core import events as ev
from triaged.core import workflow as wf
from triaged.core.timefmt import ts
from triaged.store import events
from triaged.store.db import Store

# The fields a command may set (column names: the UPDATE is built from one of these only).
# Not `waiting`: a pause starts with start_waiting and ends with end_waiting, nowhere else.
FIELDS = frozenset(
    {
        "severity",
        "cvss",
        "cvss_score",
        "handler",
        "affected",
        "fixed_in",
        "cves",
        "embargo",
        "disclosed_at",
        "credit",
        "duplicate_of",
    }
)

REPORTER = "reporter"
CC = "cc"


def create(
    store: Store,
    report_id: str,
    *,
    title: str,
    reporter: str | None,
    at: datetime,
    state: str = wf.NEW,
) -> None:
    """A new report in state "new" (or "spam", held by a spam verdict), with its reporter (when
    known) as its first participant. The caller records its first event (it knows the
    message)."""
    store.insert(
        "reports",
        {
            "id": report_id,
            "title": title,
            "state": state,
            "reporter": reporter,
            "created_at": ts(at),
            "updated_at": ts(at),
        },
    )
    if reporter:
        store.insert(
            "participants",
            {"report_id": report_id, "address": reporter, "role": REPORTER, "added_at": ts(at)},
        )


def set_field(
    store: Store,
    report_id: str,
    field: str,
    value: Any,
    *,
    at: datetime,
    actor: str | None,
    message: int | None,
) -> Any:
    """Changes one field and records a `set` event; returns the old value."""
    if field not in FIELDS:
        raise ValueError(f"not a field a command may set: {field!r}")
    row = store.one(f"SELECT {field} FROM reports WHERE id = ?", (report_id,))
    if row is None:
        raise KeyError(report_id)
    old = row[0]
    store.conn.execute(
        f"UPDATE reports SET {field} = ?, updated_at = ? WHERE id = ?", (value, ts(at), report_id)
    )
    events.record(
        store, report_id, at, ev.SET, actor=actor, message=message, field=field, old=old, new=value
    )
    return old


def change_state(
    store: Store,
    report_id: str,
    old: str,
    new: str,
    *,
    at: datetime,
    actor: str | None,
    message: int | None,
    **detail: Any,
) -> None:
    """Moves the report from `old` to `new` (the caller checked the workflow) and records a
    `state` event with `detail` (reason, of, early: see triaged/core/events.py)."""
    store.conn.execute(
        "UPDATE reports SET state = ?, previous_state = ?, updated_at = ? WHERE id = ?",
        (new, old, ts(at), report_id),
    )
    events.record(
        store, report_id, at, ev.STATE, actor=actor, message=message, old=old, new=new, **detail
    )


def reopen(
    store: Store,
    report_id: str,
    old: str,
    new: str,
    *,
    at: datetime,
    actor: str | None,
    message: int | None,
) -> None:
    """Takes an ended report back to the open state `new`; it is no duplicate any more."""
    store.conn.execute(
        "UPDATE reports SET state = ?, previous_state = ?, duplicate_of = NULL,"
        " updated_at = ? WHERE id = ?",
        (new, old, ts(at), report_id),
    )
    events.record(
        store, report_id, at, ev.STATE, actor=actor, message=message, old=old, new=new,
        reopened=True,
    )  # fmt: skip


def start_waiting(
    store: Store, report_id: str, at: datetime, *, actor: str | None, message: int | None
) -> bool:
    """Starts a /waiting pause (recorded as a `set` of `waiting` to 1); False when the report
    is waiting already."""
    cursor = store.conn.execute(
        "UPDATE reports SET waiting = 1, updated_at = ? WHERE id = ? AND waiting = 0",
        (ts(at), report_id),
    )
    if cursor.rowcount == 0:
        return False
    events.record(
        store, report_id, at, ev.SET, actor=actor, message=message, field="waiting", old=0, new=1
    )
    return True


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


def add_participant(
    store: Store,
    report_id: str,
    address: str,
    *,
    at: datetime,
    added_by: str,
    message: int | None,
) -> None:
    """Adds a participant (/cc) and records a `participant_added` event."""
    store.insert(
        "participants",
        {
            "report_id": report_id,
            "address": address,
            "role": CC,
            "added_by": added_by,
            "added_at": ts(at),
        },
    )
    events.record(
        store, report_id, at, ev.PARTICIPANT_ADDED, actor=added_by, message=message,
        address=address,
    )  # fmt: skip

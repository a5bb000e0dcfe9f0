"""The `notices` table: the keys of the notices already sent, so none goes out twice.

A report's notices (clock reminders, escalations, updates) are kept under its ID; the team's
own (the digest, the security.txt warning) under no report. In the table, "no report" is the
report_id '' (the column is part of the primary key, where NULLs would never collide); only
this module knows that.
"""

from __future__ import annotations

from datetime import datetime

from triaged.core.timefmt import ts
from triaged.store.db import Store

_TEAM = ""


def sent_keys(store: Store, report_id: str) -> set[str]:
    """The keys of the report's notices sent so far."""
    rows = store.all("SELECT key FROM notices WHERE report_id = ?", (report_id,))
    return {str(row["key"]) for row in rows}


def mark_sent(store: Store, report_id: str, key: str, at: datetime) -> None:
    """Records a report's notice as sent (in the transaction that queues its mail)."""
    store.insert("notices", {"report_id": report_id, "key": key, "sent_at": ts(at)})


def team_sent(store: Store, key: str) -> bool:
    """Whether the team's notice with this key was sent."""
    row = store.one("SELECT 1 FROM notices WHERE report_id = ? AND key = ?", (_TEAM, key))
    return row is not None


def mark_team_sent(store: Store, key: str, at: datetime) -> None:
    """Records one of the team's notices as sent (in the transaction that queues its mail)."""
    store.insert("notices", {"report_id": _TEAM, "key": key, "sent_at": ts(at)})


def last_team_key(store: Store, prefix: str) -> str | None:
    """The greatest key of the team's notices that starts with `prefix`."""
    row = store.one(
        "SELECT key FROM notices WHERE report_id = ? AND substr(key, 1, ?) = ?"
        " ORDER BY key DESC LIMIT 1",
        (_TEAM, len(prefix), prefix),
    )
    return None if row is None else str(row["key"])

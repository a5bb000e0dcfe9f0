"""The `blocked` table: senders whose mail is stored and counted, never answered nor forwarded.

A pattern is an address ("mallory@spam.example") or a whole domain ("@spam.example"), always
lowercased. `/spam` adds one, `/unblock` removes it, intake asks `blocking` for every message
and counts what a pattern stopped with `count_stopped`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from triaged.core.timefmt import ts
from triaged.store.db import Store


def domain_pattern(domain: str) -> str:
    return "@" + domain.lower().lstrip("@")


def block(store: Store, pattern: str, *, report_id: str | None, by: str, at: datetime) -> bool:
    """Blocks `pattern` (an address, or "@domain"); False when it was blocked already."""
    cursor = store.conn.execute(
        "INSERT INTO blocked (pattern, report_id, blocked_by, blocked_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (pattern) DO NOTHING",
        (pattern.lower(), report_id, by, ts(at)),
    )
    return cursor.rowcount > 0


def unblock(store: Store, pattern: str) -> bool:
    """Lifts the block of `pattern`; False when there was none."""
    cursor = store.conn.execute("DELETE FROM blocked WHERE pattern = ?", (pattern.lower(),))
    return cursor.rowcount > 0


def blocking(store: Store, address: str | None) -> str | None:
    """The pattern that blocks mail from `address` (the address itself first, then its
    domain), or None."""
    if not address or "@" not in address:
        return None
    address = address.lower()
    domain = domain_pattern(address.rpartition("@")[2])
    row = store.one(
        "SELECT pattern FROM blocked WHERE pattern IN (?, ?) ORDER BY pattern = ? DESC LIMIT 1",
        (address, domain, address),
    )
    return str(row["pattern"]) if row else None


def set_on(store: Store, report_id: str) -> list[str]:
    """The patterns blocked by a /spam on this report."""
    rows = store.all("SELECT pattern FROM blocked WHERE report_id = ?", (report_id,))
    return [str(row["pattern"]) for row in rows]


def count_stopped(store: Store, pattern: str, at: datetime) -> None:
    """One more message stopped by `pattern`."""
    store.conn.execute(
        "UPDATE blocked SET stopped = stopped + 1, last_stopped_at = ? WHERE pattern = ?",
        (ts(at), pattern),
    )


def entries(store: Store) -> list[dict[str, Any]]:
    """Every block, oldest first: pattern, report_id, blocked_by, blocked_at, stopped,
    last_stopped_at."""
    return [dict(row) for row in store.all("SELECT * FROM blocked ORDER BY blocked_at, pattern")]

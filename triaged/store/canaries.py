"""The `canaries` table: the canary's probes, sent and come back (triaged/service/canary.py)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta

from triaged.core.timefmt import parse_ts, ts
from triaged.store.db import Store


@dataclass(frozen=True)
class Probe:
    id: str
    message_id: str
    sent_at: datetime
    returned_at: datetime | None

    @property
    def round_trip(self) -> timedelta | None:
        return None if self.returned_at is None else self.returned_at - self.sent_at


def _probe(row: sqlite3.Row) -> Probe:
    returned = row["returned_at"]
    return Probe(
        id=str(row["id"]),
        message_id=str(row["message_id"]),
        sent_at=parse_ts(str(row["sent_at"])),
        returned_at=parse_ts(str(returned)) if returned else None,
    )


def record_sent(store: Store, probe_id: str, message_id: str, at: datetime) -> None:
    store.insert("canaries", {"id": probe_id, "message_id": message_id, "sent_at": ts(at)})


def forget(store: Store, probe_id: str) -> None:
    """A probe that never left (its sending failed): not one to wait for."""
    store.conn.execute("DELETE FROM canaries WHERE id = ?", (probe_id,))


def mark_returned(store: Store, probe_id: str, at: datetime) -> Probe | None:
    """Records that the probe came back; returns it, or None when it is unknown or already
    back (a copy of a probe proves nothing new)."""
    done = store.conn.execute(
        "UPDATE canaries SET returned_at = ? WHERE id = ? AND returned_at IS NULL",
        (ts(at), probe_id),
    )
    if done.rowcount != 1:
        return None
    return get(store, probe_id)


def get(store: Store, probe_id: str) -> Probe | None:
    row = store.one("SELECT * FROM canaries WHERE id = ?", (probe_id,))
    return None if row is None else _probe(row)


def last_sent(store: Store) -> Probe | None:
    row = store.one("SELECT * FROM canaries ORDER BY sent_at DESC, id LIMIT 1")
    return None if row is None else _probe(row)


def last_returned(store: Store) -> Probe | None:
    row = store.one(
        "SELECT * FROM canaries WHERE returned_at IS NOT NULL ORDER BY returned_at DESC LIMIT 1"
    )
    return None if row is None else _probe(row)


def missing_since(store: Store) -> Probe | None:
    """The oldest probe still out that was sent after the last one that came back: how long
    mail has not been arriving."""
    back = last_returned(store)
    row = store.one(
        "SELECT * FROM canaries WHERE returned_at IS NULL AND sent_at > ?"
        " ORDER BY sent_at, id LIMIT 1",
        (ts(back.sent_at) if back is not None else "",),
    )
    return None if row is None else _probe(row)


def sent_between(store: Store, start: datetime, end: datetime) -> list[Probe]:
    """The probes sent in (start, end], oldest first."""
    rows = store.all(
        "SELECT * FROM canaries WHERE sent_at > ? AND sent_at <= ? ORDER BY sent_at, id",
        (ts(start), ts(end)),
    )
    return [_probe(row) for row in rows]

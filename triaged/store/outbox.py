"""The `outbox` table: every message triaged sends, from the transaction that caused it until
the server accepted it (`sent`) or it was given up (`held`).

The queue's rules (when to retry, when to give up) are the outbox runner's
(triaged/service/outbox.py); this module only reads and writes the rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

from triaged.core.timefmt import parse_ts, ts
from triaged.store.db import Store, report_by_message_id

PENDING = "pending"
SENT = "sent"
HELD = "held"


def add(
    store: Store,
    *,
    message_id: str,
    report_id: str | None,
    kind: str,
    envelope_from: str,
    recipient: str,
    raw: bytes,
    at: datetime,
) -> None:
    """Queues one message, due at once."""
    store.insert(
        "outbox",
        {
            "message_id": message_id,
            "report_id": report_id,
            "kind": kind,
            "envelope_from": envelope_from,
            "recipient": recipient,
            "raw": raw,
            "next_attempt_at": ts(at),
            "created_at": ts(at),
        },
    )


def due(store: Store, now: datetime, limit: int) -> list[sqlite3.Row]:
    """Pending rows whose next attempt has come, the longest waiting first."""
    return store.all(
        "SELECT id, message_id, envelope_from, recipient, raw, attempts, created_at, kind,"
        " report_id, openpgp FROM outbox WHERE state = ? AND next_attempt_at <= ?"
        " ORDER BY next_attempt_at, id LIMIT ?",
        (PENDING, ts(now), limit),
    )


def sealed(
    store: Store, row_id: int, how: str, raw: bytes, sending: bool, reason: str | None
) -> None:
    """Records how a row leaves (triaged/mail/sealing.py: encrypted, clear, withheld, held):
    `raw` replaces the stored message (the sealed one), and a row not `sending` takes the
    state `how` (held or withheld) and `reason` as its last error."""
    store.conn.execute(
        "UPDATE outbox SET openpgp = ?, raw = ?, state = ?, last_error = ? WHERE id = ?",
        (how, raw, PENDING if sending else how, reason, row_id),
    )


def mark_sent(store: Store, row_id: int, at: datetime) -> None:
    store.conn.execute(
        "UPDATE outbox SET state = ?, sent_at = ?, attempts = attempts + 1, last_error = NULL"
        " WHERE id = ?",
        (SENT, ts(at), row_id),
    )


def retry_at(store: Store, row_id: int, attempts: int, at: datetime, error: str) -> None:
    store.conn.execute(
        "UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE id = ?",
        (attempts, ts(at), error, row_id),
    )


def hold(store: Store, row_id: int, attempts: int, error: str) -> None:
    store.conn.execute(
        "UPDATE outbox SET state = ?, attempts = ?, last_error = ? WHERE id = ?",
        (HELD, attempts, error, row_id),
    )


def hurry(store: Store, kind: str, now: datetime) -> None:
    """Makes the pending messages of this kind due now (those waiting for a later retry)."""
    store.conn.execute(
        "UPDATE outbox SET next_attempt_at = ? WHERE kind = ? AND state = ?"
        " AND next_attempt_at > ?",
        (ts(now), kind, PENDING, ts(now)),
    )


def next_due(store: Store) -> datetime | None:
    """When the earliest pending message is due."""
    row = store.one("SELECT MIN(next_attempt_at) AS due FROM outbox WHERE state = ?", (PENDING,))
    return None if row is None or row["due"] is None else parse_ts(str(row["due"]))


def sent_recently(store: Store, kind: str, recipient: str, since: datetime) -> int:
    """How many messages of this kind went to this address since then (rate limits)."""
    row = store.one(
        "SELECT COUNT(*) AS n FROM outbox WHERE kind = ? AND recipient = ? AND created_at > ?",
        (kind, recipient, ts(since)),
    )
    return int(row["n"]) if row else 0


def backlog(store: Store) -> int:
    """Messages waiting to be sent (pending, not held)."""
    row = store.one("SELECT COUNT(*) AS n FROM outbox WHERE state = ?", (PENDING,))
    return int(row["n"]) if row else 0


def report_of(store: Store, message_ids: Sequence[str]) -> str | None:
    """The report that one of our own sent Message-IDs belongs to (the last one given that
    has one: References list the newest last)."""
    return report_by_message_id(store, "outbox", message_ids)

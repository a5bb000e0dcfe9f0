"""The `messages` table (every message intake took, raw bytes and what it turned out to be),
`mailbox_state` (the UIDVALIDITY last seen of each mailbox) and `adoptions` (before when a
mailbox's mail is taken in silently)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from triaged.core.timefmt import parse_ts, ts
from triaged.store.db import Store, report_by_message_id

REPORT = "report"  # the kind of a report's first message


def add(
    store: Store,
    *,
    mailbox: str,
    uidvalidity: int,
    uid: str,
    sha256: str,
    size: int,
    raw: bytes | None,
    kind: str,
    received: datetime,
    message_id: str | None = None,
    from_addr: str | None = None,
    subject: str | None = None,
    reason: str | None = None,
    report_id: str | None = None,
    openpgp: dict[str, Any] | None = None,
) -> int:
    """Stores one message; returns its number (the row id events and mail refer to).
    `openpgp`: how it was protected (`OpenPGPStatus.as_json()`), None when it was not."""
    return store.insert(
        "messages",
        {
            "mailbox": mailbox,
            "uidvalidity": uidvalidity,
            "uid": uid,
            "message_id": message_id,
            "sha256": sha256,
            "size": size,
            "raw": raw,
            "from_addr": from_addr,
            "subject": subject,
            "kind": kind,
            "reason": reason,
            "report_id": report_id,
            "received_at": ts(received),
            "openpgp": json.dumps(openpgp) if openpgp is not None else None,
        },
    )


def set_reason(store: Store, number: int, reason: str) -> None:
    """Replaces the stored message's reason (why it was handled as it was)."""
    store.conn.execute("UPDATE messages SET reason = ? WHERE id = ?", (reason, number))


def known_uids(store: Store, mailbox: str, uidvalidity: int, uids: Sequence[str]) -> set[str]:
    """Which of these UIDs of the mailbox are stored already."""
    found: set[str] = set()
    for start in range(0, len(uids), 500):
        chunk = uids[start : start + 500]
        rows = store.all(
            "SELECT uid FROM messages WHERE mailbox = ? AND uidvalidity = ?"
            f" AND uid IN ({','.join('?' * len(chunk))})",
            (mailbox, uidvalidity, *chunk),
        )
        found.update(str(row["uid"]) for row in rows)
    return found


def with_sha256(store: Store, sha256: str) -> int | None:
    """The number of a stored message with exactly these bytes, if there is one."""
    row = store.one("SELECT id FROM messages WHERE sha256 = ? LIMIT 1", (sha256,))
    return None if row is None else int(row["id"])


def with_message_id(store: Store, message_id: str) -> int | None:
    """The number of a stored message with this Message-ID, if there is one."""
    row = store.one("SELECT id FROM messages WHERE message_id = ? LIMIT 1", (message_id,))
    return None if row is None else int(row["id"])


def first_message_id(store: Store, report_id: str) -> str | None:
    """The Message-ID of the report's first message (mail to the reporter answers it)."""
    row = store.one(
        "SELECT message_id FROM messages WHERE report_id = ? AND kind = ?", (report_id, REPORT)
    )
    return None if row is None or row["message_id"] is None else str(row["message_id"])


def first_of_report(store: Store, report_id: str) -> sqlite3.Row | None:
    """The report's first message: id, raw (None when it was too large to load)."""
    return store.one(
        "SELECT id, raw FROM messages WHERE report_id = ? AND kind = ? ORDER BY id LIMIT 1",
        (report_id, REPORT),
    )


def last_uidvalidity(store: Store, mailbox: str) -> int | None:
    row = store.one("SELECT uidvalidity FROM mailbox_state WHERE mailbox = ?", (mailbox,))
    return None if row is None else int(row["uidvalidity"])


def set_uidvalidity(store: Store, mailbox: str, uidvalidity: int, at: datetime) -> None:
    store.conn.execute(
        "INSERT OR REPLACE INTO mailbox_state (mailbox, uidvalidity, updated_at) VALUES (?, ?, ?)",
        (mailbox, uidvalidity, ts(at)),
    )


def report_encrypted(store: Store, report_id: str) -> bool:
    """Whether a message of the report came encrypted (read by triaged or not)."""
    row = store.one(
        "SELECT 1 FROM messages WHERE report_id = ? AND json_extract(openpgp, '$.encrypted')"
        " LIMIT 1",
        (report_id,),
    )
    return row is not None


def protected_subjects(store: Store) -> list[tuple[str, str | None]]:
    """(subject, report id or None) of each stored message whose Subject was read from inside
    its encryption (OpenPGP protected headers); a report's title is its first one's."""
    rows = store.all(
        "SELECT DISTINCT subject, report_id FROM messages"
        " WHERE openpgp IS NOT NULL AND json_extract(openpgp, '$.subject_protected')"
        " AND subject IS NOT NULL AND subject != ''"
    )
    return [(str(row["subject"]), row["report_id"]) for row in rows]


def came_encrypted(store: Store, message_id: str) -> bool:
    """Whether the stored message with this Message-ID came encrypted."""
    row = store.one(
        "SELECT 1 FROM messages WHERE message_id = ? AND json_extract(openpgp, '$.encrypted')"
        " LIMIT 1",
        (message_id,),
    )
    return row is not None


def report_of(store: Store, message_ids: Sequence[str]) -> str | None:
    """The report of a stored message with one of these Message-IDs (the last one given that
    has one: References list the newest last)."""
    return report_by_message_id(store, "messages", message_ids)


def is_empty(store: Store) -> bool:
    """True when no message was ever stored."""
    return store.one("SELECT 1 FROM messages LIMIT 1") is None


def adopt(store: Store, mailbox: str, before: datetime, at: datetime) -> None:
    """Mail of this mailbox that arrived before `before` is to be taken in silently. Recorded
    once: a later call changes nothing."""
    store.conn.execute(
        "INSERT OR IGNORE INTO adoptions (mailbox, before, recorded_at) VALUES (?, ?, ?)",
        (mailbox, ts(before), ts(at)),
    )


def adopted_before(store: Store, mailbox: str) -> datetime | None:
    """Before when this mailbox's mail is taken in silently; None: all of it is handled."""
    row = store.one("SELECT before FROM adoptions WHERE mailbox = ?", (mailbox,))
    return None if row is None else parse_ts(row["before"])

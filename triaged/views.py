"""Read-only views of the database for the CLI and for mail: plain dicts, JSON-ready, and a
report's stored messages read again (their text and attachments)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from triaged.config import LimitsConfig
from triaged.core import events as ev
from triaged.core import workflow as wf
from triaged.core.protection import OpenPGPStatus
from triaged.core.timefmt import parse_ts
from triaged.errors import UnsafeMessage
from triaged.mail.openpgp import Keyring, Reader
from triaged.mail.parse import Attachment, ParsedMessage, attachment_data, parse
from triaged.store import events
from triaged.store.db import Store


def report_list(store: Store) -> list[dict[str, Any]]:
    rows = store.all(
        "SELECT r.id, r.state, r.severity, r.handler, r.reporter, r.title, r.created_at,"
        " (SELECT COUNT(*) FROM messages m WHERE m.report_id = r.id) AS messages"
        " FROM reports r ORDER BY r.created_at DESC"
    )
    return [dict(row) for row in rows]


def report_detail(
    store: Store, report_id: str, limits: LimitsConfig, keyring: Keyring | None
) -> dict[str, Any] | None:
    """The report with everything stored about it; its messages read with `readable` (text
    and attachments decrypted with `keyring`; `unreadable` says why a message cannot be)."""
    row = store.report(report_id)
    if row is None:
        return None
    report = dict(row)
    report["imported"] = is_imported(store, report_id)
    report["cves"] = json.loads(report["cves"])
    report["credit"] = json.loads(report["credit"]) if report["credit"] else None
    report["waiting"] = bool(report["waiting"])
    # Mail from untrusted senders about the report (held apart, or its commands refused), and
    # how many of their notices went into hourly summaries instead of mail of their own.
    report["untrusted"] = events.untrusted_counts(store, report_id)
    report["participants"] = [
        dict(p)
        for p in store.all(
            "SELECT address, role, added_by, added_at FROM participants WHERE report_id = ?"
            " ORDER BY added_at",
            (report_id,),
        )
    ]
    imported = _imported_messages(store, report_id)
    report["messages"] = [
        {
            **{key: stored.row[key] for key in _MESSAGE_COLUMNS},
            "imported": stored.row["id"] in imported,
            "openpgp": json.loads(stored.row["openpgp"]) if stored.row["openpgp"] else None,
            "text": stored.parsed.text if stored.parsed else "",
            "text_from_html": stored.parsed.text_from_html if stored.parsed else False,
            "unreadable": stored.unreadable,
            "attachments": [
                {"index": item.index, **_attachment_json(item.attachment)}
                for item in stored.attachments
            ],
        }
        for stored in report_messages(store, report_id, limits, keyring=keyring)
    ]
    report["events"] = [
        {**dict(e), "detail": ev.decode_detail(e["detail"])}
        for e in events.of_report(store, report_id)
    ]
    report["outbox"] = [
        dict(o)
        for o in store.all(
            "SELECT message_id, kind, recipient, state, attempts, created_at, sent_at, last_error,"
            " openpgp FROM outbox WHERE report_id = ? ORDER BY id",
            (report_id,),
        )
    ]
    # The participants' OpenPGP keys that came with their mail (see triaged/mail/openpgp.py).
    report["keys"] = [
        {"address": e["actor"], **e["detail"]}
        for e in report["events"]
        if e["kind"] == ev.OPENPGP_KEY and e["detail"].get("imported")
    ]
    return report


def deadline_list(store: Store, now: datetime) -> list[dict[str, Any]]:
    """The running deadlines (neither met, stopped nor paused) of the open reports, by due
    time (so the overdue ones come first). Timestamps as stored (ISO 8601, UTC); `overdue`
    when the due time is not after `now`; `seconds_left` until it (negative: overdue)."""
    open_states = sorted(wf.OPEN)
    rows = store.all(
        "SELECT r.id AS report_id, r.title, r.state, r.severity, r.handler, d.clock, d.cycle,"
        " d.started_at, d.due_at"
        " FROM deadlines d JOIN reports r ON r.id = d.report_id"
        " WHERE d.met_at IS NULL AND d.stopped_at IS NULL AND d.paused = 0"
        f" AND d.due_at IS NOT NULL AND r.state IN ({','.join('?' * len(open_states))})"
        " ORDER BY d.due_at, r.id, d.clock",
        tuple(open_states),
    )
    out = []
    for row in rows:
        item = dict(row)
        left = parse_ts(row["due_at"]) - now
        item["overdue"] = left <= timedelta(0)
        item["seconds_left"] = left // timedelta(seconds=1)
        out.append(item)
    return out


# --- a report's messages, read again from their stored bytes --------------------------------

_MESSAGE_COLUMNS = (
    "id",
    "kind",
    "from_addr",
    "subject",
    "message_id",
    "size",
    "reason",
    "received_at",
)


@dataclass(frozen=True)
class ReportAttachment:
    """One attachment of a report: `index` numbers them across the report (1, 2, ... in the
    order of its messages), as `show`, `export` and `/attachments N` name them."""

    index: int
    message: int  # messages.id
    position: int  # among its message's attachments, from 0
    attachment: Attachment


@dataclass(frozen=True)
class Readable:
    """A stored message as people read it: decrypted when it came encrypted."""

    msg: ParsedMessage | None  # None when it cannot be read (then `problem` says why)
    source: bytes  # the message its attachments' bytes are read from (the decrypted one)
    problem: str | None = None


def readable(row: sqlite3.Row, limits: LimitsConfig, keyring: Keyring | None) -> Readable:
    """The readable message of a stored row (its `raw` and `openpgp` columns): the one function
    `show`, `export`, `/attachments` and the notifications' attachment numbers read stored mail
    through. The database keeps the ciphertext as received; a message that came encrypted is
    decrypted here, in memory, with `keyring` (the daemon's, or the command line's scratch
    one). One that cannot be decrypted has no text and no attachments, and `problem` says
    why; its ciphertext (an "encrypted.asc" part) is never listed as an attachment."""
    raw: bytes = row["raw"]
    try:
        parsed = parse(raw, limits)
    except UnsafeMessage as exc:
        return Readable(None, raw, f"cannot be parsed: {exc.reason}")
    status = _status(row)
    if status is None or not status.encrypted:
        return Readable(parsed, raw)
    if not status.decrypted:
        return Readable(None, raw, f"encrypted; not decrypted when it arrived: {status.problem}")
    if keyring is None:
        return Readable(None, raw, "encrypted, and no OpenPGP key is at hand here to decrypt it")
    opened = Reader(keyring, limits).reread(raw, parsed)
    if opened.status is None or not opened.status.decrypted:
        problem = opened.status.problem if opened.status else "not an encrypted message"
        return Readable(None, raw, f"encrypted; cannot be decrypted here: {problem}")
    return Readable(opened.msg, opened.source or raw)


@dataclass(frozen=True)
class StoredMessage:
    row: sqlite3.Row
    parsed: ParsedMessage | None  # decrypted; None when it cannot be read (see `unreadable`)
    attachments: tuple[ReportAttachment, ...]
    source: bytes  # what the attachments' bytes are read from (`Readable.source`)
    unreadable: str | None = None  # why it cannot be read, if it cannot

    @property
    def openpgp(self) -> OpenPGPStatus | None:
        """How it came protected (as intake recorded it), None when it was not."""
        return _status(self.row)


def report_messages(
    store: Store,
    report_id: str,
    limits: LimitsConfig,
    *,
    keyring: Keyring | None,
    before: int | None = None,
) -> list[StoredMessage]:
    """The report's stored messages in arrival order (with `before`: those stored before that
    message id), each read again (`readable`), with its attachments numbered across the
    report. `keyring` decrypts those that came encrypted (None: they are not read)."""
    rows = store.all(
        "SELECT id, kind, from_addr, subject, message_id, size, reason, received_at, raw,"
        " openpgp FROM messages WHERE report_id = ? AND raw IS NOT NULL AND id < ? ORDER BY id",
        (report_id, before if before is not None else 2**62),
    )
    out: list[StoredMessage] = []
    index = 0
    for row in rows:
        read = readable(row, limits, keyring)
        numbered = []
        for position, attachment in enumerate(read.msg.attachments if read.msg else ()):
            index += 1
            numbered.append(ReportAttachment(index, row["id"], position, attachment))
        out.append(StoredMessage(row, read.msg, tuple(numbered), read.source, read.problem))
    return out


def attachment_count(
    store: Store, report_id: str, limits: LimitsConfig, before: int, keyring: Keyring | None
) -> int:
    """How many attachments the report's messages stored before message `before` carry: the
    number of the next one is this plus one."""
    messages = report_messages(store, report_id, limits, keyring=keyring, before=before)
    return sum(len(m.attachments) for m in messages)


def attachment_bytes(
    messages: Sequence[StoredMessage], wanted: Sequence[ReportAttachment], limits: LimitsConfig
) -> dict[int, bytes]:
    """The bytes of the wanted attachments, by index (each message read once)."""
    by_message: dict[int, list[ReportAttachment]] = {}
    for item in wanted:
        by_message.setdefault(item.message, []).append(item)
    out: dict[int, bytes] = {}
    for stored in messages:
        items = by_message.get(stored.row["id"])
        if not items:
            continue
        data = attachment_data(stored.source, limits)
        for item in items:
            out[item.index] = data[item.position]
    return out


def _status(row: sqlite3.Row) -> OpenPGPStatus | None:
    return OpenPGPStatus.from_json(json.loads(row["openpgp"])) if row["openpgp"] else None


def _attachment_json(attachment: Attachment) -> dict[str, Any]:
    return {
        "filename": attachment.filename,
        "content_type": attachment.content_type,
        "size": attachment.size,
        "sha256": attachment.sha256,
    }


def is_imported(store: Store, report_id: str) -> bool:
    """True for a report made by an import (adopting a mailbox, `triaged import`): its first
    event says so."""
    row = store.one("SELECT kind FROM events WHERE report_id = ? ORDER BY id LIMIT 1", (report_id,))
    return row is not None and row["kind"] == ev.IMPORTED


def _imported_messages(store: Store, report_id: str) -> set[int]:
    rows = store.all(
        "SELECT message FROM events WHERE report_id = ? AND kind = ? AND message IS NOT NULL",
        (report_id, ev.IMPORTED),
    )
    return {int(row["message"]) for row in rows}

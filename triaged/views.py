"""Read-only views of the database for the CLI (and, later, mail): plain dicts, JSON-ready."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from triaged.core import events as ev
from triaged.core import workflow as wf
from triaged.core.timefmt import parse_ts
from triaged.store import events
from triaged.store.db import Store


def report_list(store: Store) -> list[dict[str, Any]]:
    rows = store.all(
        "SELECT r.id, r.state, r.severity, r.handler, r.reporter, r.title, r.created_at,"
        " (SELECT COUNT(*) FROM messages m WHERE m.report_id = r.id) AS messages"
        " FROM reports r ORDER BY r.created_at DESC"
    )
    return [dict(row) for row in rows]


def report_detail(store: Store, report_id: str) -> dict[str, Any] | None:
    row = store.report(report_id)
    if row is None:
        return None
    report = dict(row)
    report["cves"] = json.loads(report["cves"])
    report["credit"] = json.loads(report["credit"]) if report["credit"] else None
    report["waiting"] = bool(report["waiting"])
    report["participants"] = [
        dict(p)
        for p in store.all(
            "SELECT address, role, added_by, added_at FROM participants WHERE report_id = ?"
            " ORDER BY added_at",
            (report_id,),
        )
    ]
    report["messages"] = [
        {**dict(m), "openpgp": json.loads(m["openpgp"]) if m["openpgp"] else None}
        for m in store.all(
            "SELECT id, kind, from_addr, subject, message_id, size, reason, received_at, openpgp"
            " FROM messages WHERE report_id = ? ORDER BY id",
            (report_id,),
        )
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

"""The `report_terms` table: what each report names (see triaged/core/related.py), and the
reports that share a term with a new one."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import datetime

from triaged.core import workflow as wf
from triaged.core.timefmt import ts
from triaged.store.db import Store

# Terms asked about at once (SQLite's limit on variables is far above this).
_CHUNK = 200


def add(store: Store, report_id: str, terms: Iterable[str]) -> None:
    store.conn.executemany(
        "INSERT INTO report_terms (report_id, term) VALUES (?, ?) ON CONFLICT DO NOTHING",
        [(report_id, term) for term in terms],
    )


def sharing(
    store: Store, report_id: str, terms: list[str], recent_since: datetime
) -> list[tuple[str, str, str, str]]:
    """(report_id, title, state, term) of the other reports, open or created since
    `recent_since`, that have one of `terms`; newest report first."""
    ended = sorted(wf.TERMINAL)
    rows: list[sqlite3.Row] = []
    for start in range(0, len(terms), _CHUNK):
        chunk = terms[start : start + _CHUNK]
        rows += store.all(
            "SELECT r.id, r.title, r.state, t.term, r.created_at FROM report_terms t"
            " JOIN reports r ON r.id = t.report_id"
            f" WHERE t.term IN ({','.join('?' * len(chunk))}) AND r.id != ?"
            f" AND (r.state NOT IN ({','.join('?' * len(ended))}) OR r.created_at >= ?)",
            (*chunk, report_id, *ended, ts(recent_since)),
        )
    rows.sort(key=lambda row: (str(row["created_at"]), str(row["id"])), reverse=True)
    return [(str(r["id"]), str(r["title"]), str(r["state"]), str(r["term"])) for r in rows]

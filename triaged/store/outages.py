"""The `outages` table: a mailbox or SMTP outage in progress, kept across restarts."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from triaged.core.timefmt import ts
from triaged.store.db import Store


def get(store: Store, name: str) -> sqlite3.Row | None:
    return store.one("SELECT * FROM outages WHERE name = ?", (name,))


def every(store: Store) -> list[sqlite3.Row]:
    return store.all("SELECT * FROM outages ORDER BY name")


def begin(store: Store, name: str, at: datetime, error: str) -> None:
    store.insert(
        "outages", {"name": name, "started_at": ts(at), "last_error": error, "updated_at": ts(at)}
    )


def still_failing(store: Store, name: str, at: datetime, error: str) -> None:
    store.conn.execute(
        "UPDATE outages SET last_error = ?, updated_at = ? WHERE name = ?", (error, ts(at), name)
    )


def mark_alerted(store: Store, name: str, at: datetime) -> None:
    store.conn.execute("UPDATE outages SET alerted_at = ? WHERE name = ?", (ts(at), name))


def end(store: Store, name: str) -> None:
    store.conn.execute("DELETE FROM outages WHERE name = ?", (name,))

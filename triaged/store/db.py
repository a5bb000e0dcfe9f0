"""SQLite storage: the one source of truth. Its schema changes only through the migrations
of triaged/store/migrations.py, applied when a `Store` opens the file.

Every unit of work runs inside `Store.transaction()` (BEGIN IMMEDIATE, so two runners never
deadlock on a lock upgrade); sqlite-utils' own writes nest inside it as savepoints.

Each table is written by one module of this package (tests/test_architecture.py checks it):
`reports` (reports, participants), `messages` (messages, mailbox_state), `events`, `outbox`,
`deadlines` (deadlines, clock_state), `notices`, `outages`; the schema by `migrations`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils
from sqlite_utils.migrations import Migrations

from triaged.store.migrations import SCHEMA, upgrade


class Store:
    """One connection to the database. Not shared between threads: each runner opens its own."""

    def __init__(
        self,
        path: str | Path,
        migrations: Iterable[Migrations] = (SCHEMA,),
        *,
        shared: bool = False,
    ) -> None:
        """`shared`: the connection may be used by several threads, one at a time (the caller
        holds a lock around every use, as the scheduler does for its jobs)."""
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            str(path), timeout=30, isolation_level=None, check_same_thread=not shared
        )
        conn.row_factory = sqlite3.Row
        self.conn = conn
        self.db = sqlite_utils.Database(conn)
        _use_wal(conn)
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        upgrade(self.db, migrations)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self, durable: bool = True) -> Iterator[Store]:
        """One unit of work: everything inside commits together or not at all.

        `durable=False` skips the fsync of this commit (synchronous=NORMAL for it): the commit
        survives a crash of the process, and a power loss may undo it. Only for changes whose
        loss repeats work harmlessly, e.g. the outbox's "sent" marks (a resend keeps the
        Message-ID). Inside another transaction it changes nothing.
        """
        if self.conn.in_transaction:
            with self.db.atomic():
                yield self
            return
        if not durable:
            self.conn.execute("PRAGMA synchronous=NORMAL")
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
        finally:
            if not durable:
                self.conn.execute("PRAGMA synchronous=FULL")

    # --- small helpers -------------------------------------------------------------------

    def one(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.conn.execute(sql, params).fetchone()
        return row

    def all(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        return list(self.conn.execute(sql, params).fetchall())

    def insert(self, table: str, row: dict[str, Any]) -> int:
        """Inserts one row; returns its rowid. For the table modules of this package."""
        cursor = self.conn.execute(
            f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            tuple(row.values()),
        )
        return int(cursor.lastrowid or 0)

    # --- the reads of a report that nearly every module makes --------------------------

    def report(self, report_id: str) -> sqlite3.Row | None:
        return self.one("SELECT * FROM reports WHERE id = ?", (report_id,))

    def participants(self, report_id: str) -> dict[str, str]:
        rows = self.all("SELECT address, role FROM participants WHERE report_id = ?", (report_id,))
        return {row["address"]: row["role"] for row in rows}


def _use_wal(conn: sqlite3.Connection, patience: float = 30.0) -> None:
    """Puts the file in WAL mode (it stays so). Switching a new file needs it to itself, and
    SQLite answers "database is locked" at once, without waiting, to a connection that tries
    while another one switches it: so try again for a while (the busy timeout's length)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def report_by_message_id(store: Store, table: str, message_ids: Sequence[str]) -> str | None:
    """The report of a row of `table` ("messages" or "outbox") with one of these Message-IDs:
    the last one given that has one, since References list the newest last."""
    if not message_ids:
        return None
    rows = store.all(
        f"SELECT message_id, report_id FROM {table} WHERE report_id IS NOT NULL"
        f" AND message_id IN ({','.join('?' * len(message_ids))})",
        tuple(message_ids),
    )
    found = {row["message_id"]: row["report_id"] for row in rows}
    for message_id in reversed(message_ids):
        if message_id in found:
            return str(found[message_id])
    return None

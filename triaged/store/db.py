"""SQLite storage: the one source of truth. Schema changes only through `MIGRATIONS`.

Every unit of work runs inside `Store.transaction()` (BEGIN IMMEDIATE, so two runners never
deadlock on a lock upgrade); sqlite-utils' own writes nest inside it as savepoints.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from triaged.core.timefmt import ts

Migration = Callable[[sqlite3.Connection], None]


def _script(conn: sqlite3.Connection, sql: str) -> None:
    """Runs `;`-separated DDL inside the current transaction (executescript would commit it)."""
    for statement in sql.split(";"):
        if statement.strip():
            conn.execute(statement)


def _m001_initial(conn: sqlite3.Connection) -> None:
    _script(
        conn,
        """
        CREATE TABLE reports (
            id TEXT PRIMARY KEY,
            title TEXT NOT NULL,
            state TEXT NOT NULL,
            severity TEXT,
            cvss TEXT,
            handler TEXT,
            reporter TEXT,
            affected TEXT,
            fixed_in TEXT,
            cves TEXT NOT NULL DEFAULT '[]',
            embargo TEXT,
            disclosed_at TEXT,
            credit TEXT,
            waiting INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            mailbox TEXT NOT NULL,
            uidvalidity INTEGER NOT NULL,
            uid TEXT NOT NULL,
            message_id TEXT,
            sha256 TEXT NOT NULL,
            size INTEGER NOT NULL,
            raw BLOB,
            from_addr TEXT,
            subject TEXT,
            kind TEXT NOT NULL,
            reason TEXT,
            report_id TEXT REFERENCES reports(id),
            received_at TEXT NOT NULL,
            UNIQUE (mailbox, uidvalidity, uid)
        );
        CREATE INDEX messages_sha256 ON messages(sha256);
        CREATE INDEX messages_message_id ON messages(message_id);
        CREATE INDEX messages_report ON messages(report_id);
        CREATE TABLE participants (
            report_id TEXT NOT NULL REFERENCES reports(id),
            address TEXT NOT NULL,
            role TEXT NOT NULL,
            added_by TEXT,
            added_at TEXT NOT NULL,
            PRIMARY KEY (report_id, address)
        );
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            report_id TEXT REFERENCES reports(id),
            at TEXT NOT NULL,
            actor TEXT,
            kind TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '{}',
            message INTEGER REFERENCES messages(id)
        );
        CREATE INDEX events_report ON events(report_id, at);
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,
            message_id TEXT NOT NULL UNIQUE,
            report_id TEXT REFERENCES reports(id),
            kind TEXT NOT NULL,
            envelope_from TEXT NOT NULL,
            recipient TEXT NOT NULL,
            raw BLOB NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            last_error TEXT,
            created_at TEXT NOT NULL,
            sent_at TEXT
        );
        CREATE INDEX outbox_due ON outbox(state, next_attempt_at);
        CREATE INDEX outbox_recipient ON outbox(kind, recipient, created_at);
        CREATE TABLE mailbox_state (
            mailbox TEXT PRIMARY KEY,
            uidvalidity INTEGER NOT NULL,
            updated_at TEXT NOT NULL
        );
        """,
    )


def _m002_workflow(conn: sqlite3.Connection) -> None:
    _script(
        conn,
        """
        ALTER TABLE reports ADD COLUMN previous_state TEXT;
        ALTER TABLE reports ADD COLUMN duplicate_of TEXT;
        ALTER TABLE reports ADD COLUMN cvss_score REAL;
        CREATE INDEX reports_state ON reports(state);
        """,
    )


def _m003_clocks(conn: sqlite3.Connection) -> None:
    """The clocks' state (see triaged/clocks/runner.py) and the daemon's outages.

    deadlines:   each report's clocks as last computed (one row per clock, current cycle).
    clock_state: when each report next needs a clock pass; '' = now (set by the trigger on
                 every new event of the report), NULL = nothing scheduled.
    notices:     the keys of the notices already sent (report_id '' for the daemon's own, such
                 as the digest), so a pass never sends one twice.
    outages:     a mailbox or SMTP outage in progress, kept across restarts.
    """
    _script(
        conn,
        """
        CREATE TABLE deadlines (
            report_id TEXT NOT NULL REFERENCES reports(id),
            clock TEXT NOT NULL,
            cycle INTEGER NOT NULL DEFAULT 1,
            started_at TEXT NOT NULL,
            due_at TEXT,
            met_at TEXT,
            stopped_at TEXT,
            paused INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (report_id, clock)
        );
        CREATE INDEX deadlines_due ON deadlines(due_at);
        CREATE TABLE clock_state (
            report_id TEXT PRIMARY KEY REFERENCES reports(id),
            next_at TEXT,
            computed_at TEXT
        );
        CREATE INDEX clock_state_next ON clock_state(next_at);
        CREATE TABLE notices (
            report_id TEXT NOT NULL,
            key TEXT NOT NULL,
            sent_at TEXT NOT NULL,
            PRIMARY KEY (report_id, key)
        );
        CREATE TABLE outages (
            name TEXT PRIMARY KEY,
            started_at TEXT NOT NULL,
            last_error TEXT,
            alerted_at TEXT,
            updated_at TEXT NOT NULL
        );
        INSERT INTO clock_state (report_id, next_at) SELECT id, '' FROM reports
        """,
    )
    # One statement with `;` inside, so not through _script.
    conn.execute(
        """
        CREATE TRIGGER events_wake_clocks AFTER INSERT ON events
        WHEN NEW.report_id IS NOT NULL
        BEGIN
            INSERT INTO clock_state (report_id, next_at) VALUES (NEW.report_id, '')
            ON CONFLICT (report_id) DO UPDATE SET next_at = '';
        END
        """
    )


def _m004_openpgp(conn: sqlite3.Connection) -> None:
    """OpenPGP (triaged/mail/openpgp.py).

    messages.openpgp: how the message was protected, JSON (encrypted, decrypted, problem,
                      signature, keys); NULL for mail that was neither encrypted nor signed.
    outbox.openpgp:   how the row leaves: encrypted, clear, withheld or held; NULL until the
                      outbox runner decided (or when OpenPGP is off).
    """
    _script(
        conn,
        """
        ALTER TABLE messages ADD COLUMN openpgp TEXT;
        ALTER TABLE outbox ADD COLUMN openpgp TEXT
        """,
    )


MIGRATIONS: list[tuple[str, Migration]] = [
    ("001_initial", _m001_initial),
    ("002_workflow", _m002_workflow),
    ("003_clocks", _m003_clocks),
    ("004_openpgp", _m004_openpgp),
]


class Store:
    """One connection to the database. Not shared between threads: each runner opens its own."""

    def __init__(self, path: str | Path, migrations: list[tuple[str, Migration]] | None = None):
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        self.conn = conn
        self.db = sqlite_utils.Database(conn)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        self.migrate(MIGRATIONS if migrations is None else migrations)

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

    def migrate(self, migrations: list[tuple[str, Migration]]) -> list[str]:
        """Applies the migrations not yet applied, each in a transaction with its record."""
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS migrations"
            " (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        applied = {row[0] for row in self.conn.execute("SELECT name FROM migrations")}
        done = []
        for name, migration in migrations:
            if name in applied:
                continue
            with self.transaction():
                migration(self.conn)
                self.conn.execute(
                    "INSERT INTO migrations (name, applied_at) VALUES (?, ?)",
                    (name, ts(datetime.now(UTC))),
                )
            done.append(name)
        return done

    # --- small helpers -------------------------------------------------------------------

    def one(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.conn.execute(sql, params).fetchone()
        return row

    def all(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        return list(self.conn.execute(sql, params).fetchall())

    def insert(self, table: str, row: dict[str, Any]) -> int:
        cursor = self.conn.execute(
            f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            tuple(row.values()),
        )
        return int(cursor.lastrowid or 0)

    def event(
        self,
        report_id: str | None,
        at: datetime,
        kind: str,
        actor: str | None = None,
        message: int | None = None,
        **detail: Any,
    ) -> None:
        self.insert(
            "events",
            {
                "report_id": report_id,
                "at": ts(at),
                "actor": actor,
                "kind": kind,
                "detail": json.dumps(detail, sort_keys=True),
                "message": message,
            },
        )

    # --- reads used by several runners --------------------------------------------------

    def report(self, report_id: str) -> sqlite3.Row | None:
        return self.one("SELECT * FROM reports WHERE id = ?", (report_id,))

    def participants(self, report_id: str) -> dict[str, str]:
        rows = self.all("SELECT address, role FROM participants WHERE report_id = ?", (report_id,))
        return {row["address"]: row["role"] for row in rows}

    def sent_recently(self, kind: str, recipient: str, since: datetime) -> int:
        """How many outbox messages of this kind went to this address since then."""
        row = self.one(
            "SELECT COUNT(*) AS n FROM outbox WHERE kind = ? AND recipient = ? AND created_at > ?",
            (kind, recipient, ts(since)),
        )
        return int(row["n"]) if row else 0

    def outbox_backlog(self) -> int:
        """Messages waiting in the outbox (pending, not held)."""
        row = self.one("SELECT COUNT(*) AS n FROM outbox WHERE state = 'pending'")
        return int(row["n"]) if row else 0

    def report_for_outgoing(self, message_ids: tuple[str, ...]) -> str | None:
        """The report that one of our own sent Message-IDs belongs to (newest reference first)."""
        if not message_ids:
            return None
        rows = self.all(
            "SELECT message_id, report_id FROM outbox WHERE report_id IS NOT NULL"
            f" AND message_id IN ({','.join('?' * len(message_ids))})",
            tuple(message_ids),
        )
        found = {row["message_id"]: row["report_id"] for row in rows}
        for message_id in reversed(message_ids):
            if message_id in found:
                return str(found[message_id])
        return None

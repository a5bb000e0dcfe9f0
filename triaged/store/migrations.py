"""The schema: every change to it is a migration of the set `SCHEMA` (sqlite-utils'
`Migrations`, which records each applied one in its `_sqlite_migrations` table).

`upgrade` brings a database up to date when a `Store` opens it: in one BEGIN IMMEDIATE
transaction, so a second process opening the same file waits and then finds nothing to do;
each migration runs in a savepoint of its own together with its record, and one that fails
undoes the whole upgrade (the file stays as it was, and the next start tries again).

A database written by triaged 0.1.0 kept its own record, a table `migrations` (name,
applied_at); `upgrade` first copies those names into `_sqlite_migrations` and drops it, so the
three migrations 0.1.0 applied are not applied again (tests/test_migrations.py opens such a
database, tests/data/triaged-0.1.0.db).

A new migration: a function below, registered with `@SCHEMA(name="NNN_what")` after the last
one, never an edit of one that shipped.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

SCHEMA = Migrations("triaged")

# 0.1.0's own record of its migrations, and their names (the same in SCHEMA).
LEGACY_TABLE = "migrations"


@SCHEMA(name="001_initial")
def _initial(db: Database) -> None:
    db.executescript(
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
        """
    )


@SCHEMA(name="002_workflow")
def _workflow(db: Database) -> None:
    db.executescript(
        """
        ALTER TABLE reports ADD COLUMN previous_state TEXT;
        ALTER TABLE reports ADD COLUMN duplicate_of TEXT;
        ALTER TABLE reports ADD COLUMN cvss_score REAL;
        CREATE INDEX reports_state ON reports(state);
        """
    )


@SCHEMA(name="003_clocks")
def _clocks(db: Database) -> None:
    """The clocks' state (see triaged/clocks/runner.py) and the daemon's outages.

    deadlines:   each report's clocks as last computed (one row per clock, current cycle).
    clock_state: when each report next needs a clock pass; '' = now (set by the trigger on
                 every new event of the report), NULL = nothing scheduled.
    notices:     the keys of the notices already sent (report_id '' for the daemon's own, such
                 as the digest), so a pass never sends one twice.
    outages:     a mailbox or SMTP outage in progress, kept across restarts.
    """
    db.executescript(
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
        INSERT INTO clock_state (report_id, next_at) SELECT id, '' FROM reports;
        CREATE TRIGGER events_wake_clocks AFTER INSERT ON events
        WHEN NEW.report_id IS NOT NULL
        BEGIN
            INSERT INTO clock_state (report_id, next_at) VALUES (NEW.report_id, '')
            ON CONFLICT (report_id) DO UPDATE SET next_at = '';
        END;
        """
    )


@SCHEMA(name="004_openpgp")
def _openpgp(db: Database) -> None:
    """OpenPGP (triaged/mail/openpgp.py, triaged/mail/sealing.py).

    messages.openpgp: how the message was protected, JSON (encrypted, decrypted, problem,
                      signature, keys); NULL for mail that was neither encrypted nor signed.
    outbox.openpgp:   how the row leaves: encrypted, clear, withheld or held; NULL until the
                      outbox runner decided (or while OpenPGP is off).
    """
    db.execute("ALTER TABLE messages ADD COLUMN openpgp TEXT")
    db.execute("ALTER TABLE outbox ADD COLUMN openpgp TEXT")


@SCHEMA(name="005_triage")
def _triage(db: Database) -> None:
    """Triage at volume (issue 18).

    blocked:      senders whose mail is stored and counted, never answered nor forwarded
                  (written by triaged/store/blocklist.py): an address, or "@domain" for a
                  whole domain; who blocked it, when, on which report; how much it stopped.
    report_terms: what a report names, to find related reports (triaged/store/terms.py):
                  "sender:ADDRESS", "subject:WORDS", "cve:CVE-...", "cwe:CWE-...",
                  "path:/a/b" and "file:name.ext".
    events_kind:  the events of one kind in a time range (the notices of untrusted mail
                  counted per hour, triaged/intake/notices.py).
    """
    db.executescript(
        """
        CREATE TABLE blocked (
            pattern TEXT PRIMARY KEY,
            report_id TEXT,
            blocked_by TEXT NOT NULL,
            blocked_at TEXT NOT NULL,
            stopped INTEGER NOT NULL DEFAULT 0,
            last_stopped_at TEXT
        );
        CREATE TABLE report_terms (
            report_id TEXT NOT NULL REFERENCES reports(id),
            term TEXT NOT NULL,
            PRIMARY KEY (report_id, term)
        );
        CREATE INDEX report_terms_term ON report_terms(term);
        CREATE INDEX events_kind ON events(kind, at);
        """
    )


@SCHEMA(name="006_canaries")
def _canaries(db: Database) -> None:
    """The canary's probes (triaged/service/canary.py): each one sent, and when it came back
    through intake (NULL while it has not)."""
    db.executescript(
        """
        CREATE TABLE canaries (
            id TEXT PRIMARY KEY,
            message_id TEXT NOT NULL,
            sent_at TEXT NOT NULL,
            returned_at TEXT
        );
        CREATE INDEX canaries_sent ON canaries(sent_at);
        """
    )


@SCHEMA(name="007_adoptions")
def _adoptions(db: Database) -> None:
    """Adopting a mailbox that held mail before triaged first started (triaged/intake/).

    adoptions: per mailbox, the moment before which its mail is taken in silently (no
               receipt, no notification, no clock): the first start of a new database.
    """
    db.executescript(
        """
        CREATE TABLE adoptions (
            mailbox TEXT PRIMARY KEY,
            before TEXT NOT NULL,
            recorded_at TEXT NOT NULL
        );
        """
    )


def adopt_legacy_record(db: Database, migrations: Migrations = SCHEMA) -> list[str]:
    """Moves 0.1.0's record of applied migrations into `_sqlite_migrations` (inside the
    caller's transaction); returns the names it moved."""
    if not db.table(LEGACY_TABLE).exists():
        return []
    migrations.ensure_migrations_table(db)
    known = {m.name for m in migrations.applied(db)}
    moved = []
    for row in db.execute(f"SELECT name, applied_at FROM {LEGACY_TABLE} ORDER BY rowid"):
        name, applied_at = str(row[0]), str(row[1])
        if name not in known:
            db.table(migrations.migrations_table).insert(
                {"migration_set": migrations.name, "name": name, "applied_at": applied_at}
            )
            moved.append(name)
    db.execute(f"DROP TABLE {LEGACY_TABLE}")
    return moved


def upgrade(db: Database, sets: Iterable[Migrations] = (SCHEMA,)) -> list[str]:
    """Applies what is pending of each migration set, in one transaction (BEGIN IMMEDIATE);
    returns the names applied."""
    sets = tuple(sets)
    if not _needs_upgrade(db, sets):
        return []
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        adopt_legacy_record(db)
        applied = [m.name for s in sets for m in s.pending(db)]
        for migrations in sets:
            migrations.apply(db)
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return applied


def _needs_upgrade(db: Database, sets: tuple[Migrations, ...]) -> bool:
    """A read-only look first, so opening an up-to-date database takes no write lock."""
    return db.table(LEGACY_TABLE).exists() or any(s.pending(db) for s in sets)

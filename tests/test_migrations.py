"""Schema migrations: a database written by triaged 0.1.0 upgrades in place and keeps every
row; the migration set and sqlite-utils are what pyproject.toml says."""

from __future__ import annotations

import re
import shutil
import sqlite3
import threading
import tomllib
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from helpers import ClockDesk, mail, make_config
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from triaged.core import events as ev
from triaged.core.ids import tag
from triaged.store import events
from triaged.store.db import Store
from triaged.store.migrations import SCHEMA, upgrade

ROOT = Path(__file__).parent.parent
V010 = Path(__file__).parent / "data" / "triaged-0.1.0.db"
# The tables 0.1.0 wrote, each with a column that orders its rows.
TABLES = {
    "reports": "id",
    "messages": "id",
    "participants": "report_id, address",
    "events": "id",
    "outbox": "id",
    "mailbox_state": "mailbox",
    "deadlines": "report_id, clock",
    "clock_state": "report_id",
    "notices": "report_id, key",
    "outages": "name",
}


def _columns(path: Path, table: str) -> str:
    conn = sqlite3.connect(path)
    try:
        return ", ".join(row[1] for row in conn.execute(f"PRAGMA table_info({table})"))
    finally:
        conn.close()


def _rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every 0.1.0 table, in 0.1.0's columns (later migrations add columns)."""
    conn = sqlite3.connect(path)
    try:
        return {
            table: conn.execute(
                f"SELECT {_columns(V010, table)} FROM {table} ORDER BY {order}"
            ).fetchall()
            for table, order in TABLES.items()
        }
    finally:
        conn.close()


# Every migration of the schema, in order.
ALL = [m.name for m in SCHEMA.pending(Database(memory=True))]


def _applied(store: Store) -> list[str]:
    return [m.name for m in SCHEMA.applied(store.db)]


@pytest.fixture
def old_copy(tmp_path: Path) -> Path:
    target = tmp_path / "triaged.db"
    shutil.copyfile(V010, target)
    return target


def test_a_010_database_upgrades_in_place_and_keeps_every_row(old_copy: Path) -> None:
    before = _rows(old_copy)
    store = Store(old_copy)
    try:
        assert _applied(store) == ALL
        assert not store.db.table("migrations").exists()  # 0.1.0's record, moved over
        after = _rows(old_copy)
        assert after == before
        counts = {table: len(rows) for table, rows in after.items()}
        assert counts["reports"] == 6 and counts["events"] == 75 and counts["deadlines"] == 21
        assert counts["notices"] == 6 and counts["outages"] == 1
        outbox = store.all("SELECT state, COUNT(*) AS n FROM outbox GROUP BY state")
        assert {r["state"]: r["n"] for r in outbox} == {"sent": 45, "pending": 10}
        states = sorted(r["state"] for r in store.all("SELECT state FROM reports"))
        assert states == ["acknowledged", "confirmed", "duplicate", "fixed", "new", "rejected"]
        fixed = store.one("SELECT * FROM reports WHERE state = 'fixed'")
        assert fixed is not None
        assert (fixed["fixed_in"], fixed["cves"], fixed["embargo"]) == (
            "1.0.4",
            '["CVE-2026-1234"]',
            "2026-11-20",
        )
        assert '"name": "Max Mustermann"' in fixed["credit"]
        clocks = store.all(
            "SELECT clock, due_at FROM deadlines WHERE report_id = ? ORDER BY clock", (fixed["id"],)
        )
        assert [(c["clock"], c["due_at"]) for c in clocks][1] == (
            "embargo",
            "2026-11-20T00:00:00.000000Z",
        )
    finally:
        store.close()


def test_an_upgraded_010_database_goes_on_working(tmp_path: Path) -> None:
    config = make_config(tmp_path / "project")
    shutil.copyfile(V010, config.database)
    desk = ClockDesk(config)
    try:
        waiting = desk.store.one("SELECT id, reporter FROM reports WHERE waiting = 1")
        assert waiting is not None
        at = datetime(2026, 11, 10, 9, 30, tzinfo=UTC)
        subject = f"Re: {tag(waiting['id'])} SQL injection"
        desk.deliver(mail(sender=waiting["reporter"], subject=subject, body="The log.\n"), at)
        report = desk.store.report(waiting["id"])
        assert report is not None and report["waiting"] == 0
        assert events.of_report(desk.store, waiting["id"])[-1]["kind"] == ev.WAITING_OVER
        # The clock pass goes on from the notices 0.1.0 sent: none again, the next ones due.
        sent_before = {r["key"] for r in desk.store.all("SELECT key FROM notices")}
        desk.new_mail()
        subjects = {str(m["Subject"]).split("] ", 1)[1] for m in desk.tick(at)}
        assert subjects == {
            "Still overdue: Acknowledge was due Wednesday 04 November 2026, 09:00 UTC",
            "Missed: Detailed response was due Friday 06 November 2026, 09:00 UTC",
            "Still overdue: Detailed response was due Friday 06 November 2026, 09:00 UTC",
        }
        new_keys = {r["key"] for r in desk.store.all("SELECT key FROM notices")} - sent_before
        assert new_keys and not new_keys & sent_before
    finally:
        desk.close()


def test_opening_an_up_to_date_database_applies_nothing(old_copy: Path) -> None:
    Store(old_copy).close()
    store = Store(old_copy)
    try:
        assert upgrade(store.db) == []
        assert _applied(store) == ALL
    finally:
        store.close()


def test_a_new_migration_runs_once_and_keeps_the_data(old_copy: Path) -> None:
    extra = Migrations("test")

    @extra(name="001_extra_column")
    def _add(db: Database) -> None:
        db.execute("ALTER TABLE reports ADD COLUMN extra TEXT DEFAULT 'yes'")

    store = Store(old_copy, (SCHEMA, extra))
    try:
        rows = store.all("SELECT extra FROM reports")
        assert len(rows) == 6 and {r["extra"] for r in rows} == {"yes"}
        assert upgrade(store.db, (SCHEMA, extra)) == []
    finally:
        store.close()


def test_a_failing_migration_undoes_the_whole_upgrade(old_copy: Path) -> None:
    broken = Migrations("test")

    @broken(name="001_half")
    def _half(db: Database) -> None:
        db.execute("CREATE TABLE half (x)")
        db.execute("THIS IS NOT SQL")

    with pytest.raises(sqlite3.OperationalError):
        Store(old_copy, (SCHEMA, broken))
    conn = sqlite3.connect(old_copy)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    # As 0.1.0 left it: its own record still there, nothing of the upgrade.
    assert "half" not in tables and "migrations" in tables and "_sqlite_migrations" not in tables
    store = Store(old_copy)
    try:
        assert _applied(store) == ALL
    finally:
        store.close()


def test_processes_opening_a_new_database_at_once_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "triaged.db"
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def open_it() -> None:
        start.wait()
        try:
            Store(path).close()
        except BaseException as exc:  # collected: the assertion below names it
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    store = Store(path)
    try:
        assert _applied(store) == ALL
    finally:
        store.close()


def _version(text: str) -> tuple[int, ...]:
    parts = [int(part) for part in re.findall(r"\d+", text)[:3]]
    return tuple(parts + [0] * (3 - len(parts)))


def _floor(requirement: str) -> tuple[int, ...]:
    match = re.fullmatch(r"sqlite-utils>=([\d.]+)", requirement.replace(" ", ""))
    assert match, f"pyproject.toml should declare sqlite-utils>=X, not {requirement!r}"
    return _version(match.group(1))


def _declared() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return next(d for d in project["dependencies"] if d.startswith("sqlite-utils"))


def test_the_declared_sqlite_utils_floor_has_what_the_store_uses() -> None:
    # Database.atomic() (Store.transaction) and sqlite_utils.migrations came with 4.0.
    assert _floor(_declared()) >= (4, 0)


def test_the_installed_sqlite_utils_meets_the_declared_floor() -> None:
    assert _version(metadata.version("sqlite-utils")) >= _floor(_declared())

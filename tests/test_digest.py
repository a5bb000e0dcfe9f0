"""The weekly digest (figures on a hand-computed fixture, the mail) and `triaged deadlines`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import pytest
from helpers import base_sections, write_config

from triaged import digest
from triaged.config import Config, load
from triaged.core import events as ev
from triaged.core.timefmt import ts
from triaged.mail.compose import Composer
from triaged.store import events
from triaged.store import outbox as queue
from triaged.store.db import Store

ROOT = Path(__file__).parent.parent
# A Monday; the week is (23 Feb 09:00, now], the 90 days (2 Dec 2025 09:00, now].
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
# Sender text: must come out as written, never evaluated.
HOSTILE_TITLE = "{{ 7 * 7 }} {% if true %}overflow{% endif %} in the parser"


def parse(text: str) -> datetime:
    """ "2026-02-28 09:00" (UTC)."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def at(text: str) -> str:
    """A stored timestamp from "2026-02-28 09:00" (UTC)."""
    return ts(parse(text))


def _config(directory: Path, timezone: str = "Europe/Paris", team: str | None = None) -> Path:
    sections = base_sections(directory)
    sections["project"]["timezone"] = timezone
    if team:
        sections["maintainers"]["team"] = team
    return write_config(directory, sections)


def add_report(
    store: Store,
    report_id: str,
    state: str,
    created: str,
    severity: str | None = None,
    handler: str | None = None,
    title: str | None = None,
) -> None:
    store.insert(
        "reports",
        {
            "id": report_id,
            "title": title or f"Title of {report_id}",
            "state": state,
            "severity": severity,
            "handler": handler,
            "reporter": "reporter@outside.example",
            "created_at": created,
            "updated_at": created,
        },
    )


def add_clock(
    store: Store,
    report_id: str,
    clock: str,
    started: str,
    due: str | None,
    met: str | None = None,
    stopped: str | None = None,
    paused: bool = False,
) -> None:
    store.insert(
        "deadlines",
        {
            "report_id": report_id,
            "clock": clock,
            "started_at": started,
            "due_at": due,
            "met_at": met,
            "stopped_at": stopped,
            "paused": int(paused),
        },
    )


# The hand-computed fixture, times in UTC; the expected figures are in the tests below.
# (id, state, created, severity, handler, title)
REPORTS = [
    # Open, overdue: respond was due 28 Feb 09:00 (2 days ago).
    ("aaaa0001", "acknowledged", "2026-02-20 09:00", "high", "alice@example.org", HOSTILE_TITLE),
    # Open, came in this week, nothing overdue: next is acknowledge, 3 Mar 09:00.
    ("aaaa0002", "new", "2026-03-01 09:00", None, None, None),
    # Open, overdue: resolve was due 1 Mar 21:00 (12 hours ago); update paused.
    ("aaaa0003", "fixing", "2026-02-15 21:00", "critical", "bob@example.org", None),
    # Open, came in this week; respond paused; next is resolve, 11 Mar 09:00.
    ("aaaa0004", "confirmed", "2026-02-25 09:00", "critical", "alice@example.org", None),
    # Closed this week; acknowledged before the 90 days; fixed late within them.
    ("aaaa0005", "closed", "2025-12-01 00:00", "low", None, None),
    # Rejected the week before (not "closed this week"); met both clocks on time.
    ("aaaa0006", "rejected", "2026-02-09 09:00", None, None, None),
    # A duplicate this week, reopened since: open again, no clocks computed yet.
    ("aaaa0007", "acknowledged", "2026-01-20 09:00", "medium", None, None),
    # Spam this week, stopped before its acknowledge deadline.
    ("aaaa0008", "spam", "2026-02-28 09:00", None, None, None),
    # Spam in January, stopped after its acknowledge deadline: a miss.
    ("aaaa0009", "spam", "2026-01-05 00:00", None, None, None),
    # Created exactly as the week began: not this week's.
    ("aaaa0010", "rejected", "2026-02-23 09:00", None, None, None),
]
# (id, clock, started, due (None: paused), met, stopped)
CLOCKS = [
    ("aaaa0001", "acknowledge", "2026-02-20 09:00", "2026-02-22 09:00", "2026-02-21 09:00", None),
    ("aaaa0001", "respond", "2026-02-20 09:00", "2026-02-28 09:00", None, None),
    ("aaaa0001", "resolve", "2026-02-20 09:00", "2026-03-06 09:00", None, None),
    ("aaaa0002", "acknowledge", "2026-03-01 09:00", "2026-03-03 09:00", None, None),
    ("aaaa0002", "respond", "2026-03-01 09:00", "2026-03-05 09:00", None, None),
    ("aaaa0003", "acknowledge", "2026-02-15 21:00", "2026-02-17 21:00", "2026-02-18 21:00", None),
    ("aaaa0003", "respond", "2026-02-15 21:00", "2026-02-19 21:00", "2026-02-19 09:00", None),
    ("aaaa0003", "resolve", "2026-02-15 21:00", "2026-03-01 21:00", None, None),
    ("aaaa0003", "update", "2026-02-20 09:00", None, None, None),
    ("aaaa0004", "acknowledge", "2026-02-25 09:00", "2026-02-27 09:00", "2026-02-25 15:00", None),
    ("aaaa0004", "respond", "2026-02-25 09:00", None, None, None),
    ("aaaa0004", "resolve", "2026-02-25 09:00", "2026-03-11 09:00", None, None),
    ("aaaa0005", "acknowledge", "2025-12-01 00:00", "2025-12-03 00:00", "2025-12-01 12:00", None),
    ("aaaa0005", "resolve", "2025-12-01 00:00", "2026-01-01 00:00", "2026-02-20 00:00", None),
    ("aaaa0006", "acknowledge", "2026-02-09 09:00", "2026-02-11 09:00", "2026-02-10 15:00", None),
    ("aaaa0006", "respond", "2026-02-09 09:00", "2026-02-13 09:00", "2026-02-10 15:00", None),
    ("aaaa0008", "acknowledge", "2026-02-28 09:00", "2026-03-02 09:00", None, "2026-02-28 12:00"),
    ("aaaa0009", "acknowledge", "2026-01-05 00:00", "2026-01-07 00:00", None, "2026-01-08 00:00"),
]
# (id, at, old state, new state, reopened)
STATE_EVENTS = [
    ("aaaa0005", "2026-02-20 00:00", "fixing", "fixed", False),
    ("aaaa0005", "2026-02-27 10:00", "disclosed", "closed", False),
    ("aaaa0006", "2026-02-10 15:00", "new", "rejected", False),
    ("aaaa0007", "2026-03-01 10:00", "acknowledged", "duplicate", False),
    ("aaaa0007", "2026-03-02 08:00", "duplicate", "acknowledged", True),
    ("aaaa0008", "2026-02-28 12:00", "new", "spam", False),
    ("aaaa0009", "2026-01-08 00:00", "new", "spam", False),
]


def fixture(store: Store) -> None:
    with store.transaction():
        for report_id, state, created, severity, handler, title in REPORTS:
            add_report(store, report_id, state, at(created), severity, handler, title)
        for report_id, clock, started, due, met, stopped in CLOCKS:
            add_clock(
                store,
                report_id,
                clock,
                at(started),
                at(due) if due else None,
                met=at(met) if met else None,
                stopped=at(stopped) if stopped else None,
                paused=due is None,
            )
        for report_id, when, old, new, reopened in STATE_EVENTS:
            extra = {"reopened": True} if reopened else {}
            events.record(store, report_id, parse(when), ev.STATE, old=old, new=new, **extra)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Config, Store]:
    config = load(_config(tmp_path))
    store = Store(config.database)
    fixture(store)
    return config, store


def test_figures_on_the_hand_computed_fixture(setup: tuple[Config, Store]) -> None:
    config, store = setup
    d = digest.build(store, config, NOW)

    assert [(r.id, r.overdue, r.clock) for r in d.open] == [
        ("aaaa0001", True, "respond"),  # due 28 Feb 09:00
        ("aaaa0003", True, "resolve"),  # due 1 Mar 21:00
        ("aaaa0002", False, "acknowledge"),  # new
        ("aaaa0007", False, None),  # acknowledged, no clocks
        ("aaaa0004", False, "resolve"),  # confirmed; respond is paused
    ]
    assert d.open[4].due == datetime(2026, 3, 11, 9, 0, tzinfo=UTC)
    assert [r.id for r in d.overdue] == ["aaaa0001", "aaaa0003"]
    assert d.counts == {
        ("acknowledged", "high"): 1,
        ("acknowledged", "medium"): 1,
        ("new", None): 1,
        ("fixing", "critical"): 1,
        ("confirmed", "critical"): 1,
    }

    assert [(c.id, c.state) for c in d.came_in] == [
        ("aaaa0002", "new"),
        ("aaaa0008", "spam"),
        ("aaaa0004", "confirmed"),
    ]
    assert [(c.id, c.state, c.reopened) for c in d.closed] == [
        ("aaaa0007", "duplicate", True),
        ("aaaa0008", "spam", False),
        ("aaaa0005", "closed", False),
    ]

    figures = {c.clock: c for c in d.clocks}
    assert list(figures) == ["acknowledge", "respond", "resolve"]
    # acknowledge: met 24h (0001), 72h late (0003), 6h (0004), 30h (0006); missed (0009).
    # Not counted: 0002 (not due yet), 0005 (met before the 90 days), 0008 (stopped before due).
    ack = figures["acknowledge"]
    assert (ack.counted, ack.on_time, ack.met) == (5, 3, 4)
    assert ack.share == pytest.approx(0.6)
    assert ack.median_to_meet == timedelta(hours=27)  # (24h + 30h) / 2
    # respond: missed (0001, still running), met 84h (0003), 30h (0006); 0004 paused, 0002 not due.
    respond = figures["respond"]
    assert (respond.counted, respond.on_time, respond.met) == (3, 2, 2)
    assert respond.median_to_meet == timedelta(hours=57)
    # resolve: missed (0003, running), met 81 days late (0005); 0001 and 0004 not due yet.
    resolve = figures["resolve"]
    assert (resolve.counted, resolve.on_time, resolve.met) == (2, 0, 1)
    assert resolve.share == 0
    assert resolve.median_to_meet == timedelta(days=81)


def test_the_mail_lists_overdue_first_in_the_project_time_zone(
    setup: tuple[Config, Store],
) -> None:
    config, store = setup
    text = digest.render(config, digest.build(store, config, NOW))

    assert text.startswith("Security digest for Example, Monday 02 March 2026, 10:00 CET\n")
    assert "Open reports: 5, of which 2 overdue." in text
    overdue = text.index("OVERDUE (2)")
    first, second = text.index("aaaa0001"), text.index("aaaa0003")
    rest = text.index("Open, by state and severity")
    assert overdue < first < second < rest < text.index("aaaa0002")
    assert "respond was due Saturday 28 February 2026, 10:00 CET: overdue by 2 days" in text
    assert "resolve was due Sunday 01 March 2026, 22:00 CET: overdue by 12 hours" in text
    assert "next: acknowledge due Tuesday 03 March 2026, 10:00 CET, in 1 day" in text
    assert "handler: nobody" in text and "no deadline running" in text
    # The state x severity table.
    assert "acknowledged          0        1        1        0        0      2" in text
    # The title is shown as written, never evaluated as a template.
    assert HOSTILE_TITLE in text and "49 overflow" not in text
    assert "Came in: 3" in text and "Closed: 3" in text
    assert "duplicate (reopened since)" in text
    assert "acknowledge  met on time 3 of 5 (60%); median time to meet: 1 day 3 hours" in text
    assert "respond      met on time 2 of 3 (67%); median time to meet: 2 days 9 hours" in text
    assert "resolve      met on time 0 of 2 (0%); median time to meet: 81 days" in text


def test_an_empty_database_gives_an_empty_digest(tmp_path: Path) -> None:
    config = load(_config(tmp_path, timezone="UTC"))
    store = Store(config.database)
    text = digest.render(config, digest.build(store, config, NOW))
    assert "Open reports: 0, of which 0 overdue." in text
    assert "OVERDUE" not in text
    assert "Came in: 0" in text and "Closed: 0" in text
    assert text.count("no deadline fell due or was met") == 3


def test_the_mail_lists_at_most_the_limit_and_says_how_many_more(tmp_path: Path) -> None:
    config = load(_config(tmp_path, timezone="UTC"))
    store = Store(config.database)
    with store.transaction():
        for n in range(digest.LIST_LIMIT + 3):
            add_report(store, f"b{n:07d}", "new", at("2025-01-01 00:00"))
    text = digest.render(config, digest.build(store, config, NOW))
    assert "Open reports: 103" in text
    assert "... and 3 more open reports" in text


def test_a_report_affecting_only_unsupported_versions_is_flagged(tmp_path: Path) -> None:
    sections = base_sections(tmp_path)
    sections["package"] = {"supported": ["1.0.x"]}
    config = load(write_config(tmp_path, sections))
    store = Store(config.database)
    with store.transaction():
        add_report(store, "old0000", "acknowledged", at("2026-03-01 00:00"), title="Old one")
        add_report(store, "cur0000", "acknowledged", at("2026-03-01 00:00"), title="Current")
        store.conn.execute("UPDATE reports SET affected = '<0.9' WHERE id = 'old0000'")
        store.conn.execute("UPDATE reports SET affected = '<1.0.3' WHERE id = 'cur0000'")
    text = digest.render(config, digest.build(store, config, NOW))
    flag = "affects only unsupported versions"
    assert text.count(flag) == 1
    assert f"old0000  handler: nobody\n            {flag}" in text


def test_compose_gives_one_mail_per_notify_address(tmp_path: Path) -> None:
    config = load(_config(tmp_path, team="security-team@example.org"))
    store = Store(config.database)
    fixture(store)
    out = digest.compose(config, store, Composer(config), NOW)
    assert [(o.recipient, o.kind, o.report_id) for o in out] == [
        ("security-team@example.org", "digest", None)
    ]
    msg = message_from_bytes(out[0].raw, policy=default)
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Subject"] == (
        "Example security digest: 5 open, 2 overdue, 3 new, 3 closed this week"
    )
    body = msg.get_content()
    assert "OVERDUE (2)" in body and HOSTILE_TITLE in body


# --- the command line -------------------------------------------------------------------------


def _triaged(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "triaged", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def _live(tmp_path: Path) -> Path:
    """A config whose database has deadlines around the real clock, which the CLI uses."""
    path = _config(tmp_path, timezone="UTC")
    store = Store(load(path).database)
    now = datetime.now(UTC)

    def hours(n: float) -> str:
        return ts(now + timedelta(hours=n))

    with store.transaction():
        add_report(store, "cccc0001", "new", hours(-1), title="Soon due")
        add_clock(store, "cccc0001", "acknowledge", hours(-1), hours(5.5))
        add_report(store, "cccc0002", "acknowledged", hours(-144), "high", title="Long overdue")
        add_clock(store, "cccc0002", "respond", hours(-144), hours(-48))
        add_clock(store, "cccc0002", "acknowledge", hours(-144), hours(-96), met=hours(-120))
        add_report(store, "cccc0003", "closed", hours(-72), title="Ended")
        add_clock(store, "cccc0003", "resolve", hours(-72), hours(72))
    store.close()
    return path


def test_cli_digest_print_shows_without_sending(tmp_path: Path) -> None:
    path = _live(tmp_path)
    result = _triaged("--config", str(path), "digest", "--print")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Security digest for Example, ")
    assert "OVERDUE (1)" in result.stdout
    assert result.stdout.index("cccc0002") < result.stdout.index("cccc0001")
    store = Store(load(path).database)
    assert queue.backlog(store) == 0

    result = _triaged("--config", str(path), "digest")
    assert result.returncode == 0, result.stderr
    assert "queued in the outbox" in result.stdout
    rows = store.all("SELECT kind, recipient, report_id FROM outbox ORDER BY id")
    assert [tuple(r) for r in rows] == [
        ("digest", "alice@example.org", None),
        ("digest", "bob@example.org", None),
    ]


def test_cli_deadlines_json_overdue_first(tmp_path: Path) -> None:
    path = _live(tmp_path)
    result = _triaged("--config", str(path), "deadlines", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    # Met clocks and closed reports are left out.
    assert [(r["report_id"], r["clock"], r["overdue"]) for r in rows] == [
        ("cccc0002", "respond", True),
        ("cccc0001", "acknowledge", False),
    ]
    assert rows[0]["title"] == "Long overdue"
    assert rows[0]["seconds_left"] < -2 * 86400 + 120
    assert 5 * 3600 < rows[1]["seconds_left"] <= 5 * 3600 + 1800
    for row in rows:
        due = datetime.fromisoformat(row["due_at"])
        assert row["due_at"].endswith("Z") and due.utcoffset() == timedelta(0)

    text = _triaged("--config", str(path), "deadlines").stdout
    lines = text.splitlines()
    assert "OVERDUE by 2 days" in lines[1] and "cccc0002" in lines[1]
    assert "in 5 hours 29 minutes" in lines[2] or "in 5 hours 30 minutes" in lines[2]
    assert "UTC" in lines[2] and "Soon due" in lines[2]

"""Fresh deadlines: `triaged deadlines` and the digest show a report's clocks as soon as the
change that moved them is committed, not after the next clock pass (which still sends the
notices). Through Dovecot and the SMTP sink."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import (
    MAINTAINERS,
    ClockDesk,
    DaemonProcess,
    Harness,
    base_sections,
    count_rows,
    imap_config,
    mail,
    make_config,
    wait_until,
)
from servers import ImapAccount, SmtpSink

from triaged.cli import main
from triaged.clocks.engine import ClockPolicy, clocks, parse_happenings
from triaged.config import Config
from triaged.core.ids import tag
from triaged.core.timefmt import parse_ts, ts
from triaged.store import events

ALICE = MAINTAINERS[0]
REPORTER = "reporter@outside.example"
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def _cli(config: Config, *args: str) -> str:
    """What `triaged ARGS` prints on stdout (the SMTP sink's thread may log on stderr)."""
    result = CliRunner().invoke(main, ["--config", str(config.path), *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def _deadlines(config: Config) -> list[tuple[str, str, timedelta]]:
    """(report, clock, due - the report's arrival) of each deadline `triaged deadlines` lists."""
    rows = json.loads(_cli(config, "deadlines", "--json"))
    ids = {row["report_id"] for row in rows}
    created = {r: _read(config, "SELECT created_at FROM reports WHERE id = ?", r) for r in ids}
    return [
        (
            row["report_id"],
            row["clock"],
            parse_ts(row["due_at"]) - parse_ts(created[row["report_id"]]),
        )
        for row in rows
    ]


def _read(config: Config, sql: str, *params: Any) -> Any:
    """One value from the database, through a read-only connection of its own."""
    conn = sqlite3.connect(f"file:{config.database}?mode=ro", uri=True, timeout=30)
    try:
        row = conn.execute(sql, params).fetchone()
    finally:
        conn.close()
    return None if row is None else row[0]


@pytest.fixture
def config(tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink) -> Config:
    return imap_config(tmp_dir, imap_account, smtp_sink)


@pytest.fixture
def harness(config: Config) -> Iterator[Harness]:
    h = Harness(config)
    yield h
    h.close()


def test_deadlines_and_digest_are_current_without_a_clock_pass(
    config: Config, harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    # Only intake runs here: no scheduler, no clock pass.
    imap_account.append(mail(sender=REPORTER, subject="RCE in the importer"))
    assert harness.pump() == 1
    report_id = str(_read(config, "SELECT id FROM reports"))
    assert _deadlines(config) == [
        (report_id, "acknowledge", timedelta(hours=48)),
        (report_id, "respond", timedelta(hours=96)),
    ]
    assert "no deadline fell due or was met" in _cli(config, "digest", "--print")

    notice = next(c for c in smtp_sink.wait_for(1 + len(MAINTAINERS)) if c.rcpt_tos == [ALICE])
    ack = mail(
        sender=ALICE,
        to=str(notice.msg["Reply-To"]),
        subject=f"Re: {tag(report_id)} RCE",
        body="/ack\n",
    )
    imap_account.append(ack)
    assert harness.pump() == 1
    assert harness.show(report_id)["state"] == "acknowledged"
    # Met: no longer running, and the digest counts it.
    assert _deadlines(config) == [(report_id, "respond", timedelta(hours=96))]
    digest = _cli(config, "digest", "--print")
    assert "acknowledge  met on time 1 of 1 (100%)" in digest
    # The clock runner never looked at the report: intake kept its deadlines current.
    assert (
        _read(config, "SELECT computed_at FROM clock_state WHERE report_id = ?", report_id) is None
    )


def test_the_daemon_lists_a_new_reports_clocks_as_soon_as_it_is_stored(
    config: Config, imap_account: ImapAccount, tmp_dir: Path
) -> None:
    with DaemonProcess(config.path, tmp_dir / "daemon.log") as daemon:
        daemon.wait_for_log("waiting for new mail")
        imap_account.append(mail(sender=REPORTER, subject="Path traversal"))
        wait_until(
            lambda: count_rows(config.database, "SELECT COUNT(*) FROM reports") == 1,
            what="the report stored",
        )
        report_id = str(_read(config, "SELECT id FROM reports"))
        assert _deadlines(config) == [
            (report_id, "acknowledge", timedelta(hours=48)),
            (report_id, "respond", timedelta(hours=96)),
        ]
        assert daemon.stop() == 0


def _stored(desk: ClockDesk) -> list[tuple[Any, ...]]:
    rows = desk.store.all(
        "SELECT clock, cycle, started_at, due_at, met_at, stopped_at, paused FROM deadlines"
        " WHERE report_id = ? ORDER BY clock",
        (desk.report_id,),
    )
    return [tuple(row) for row in rows]


def _replayed(desk: ClockDesk, now: datetime) -> list[tuple[Any, ...]]:
    """The report's clocks as the clock runner would compute them from its events now."""
    policy = ClockPolicy.from_config(desk.config.policy)
    history = [dict(row) for row in events.of_report(desk.store, desk.report_id)]
    return sorted(
        (
            c.name,
            c.cycle,
            ts(c.started),
            c.due and ts(c.due),
            c.met_at and ts(c.met_at),
            c.stopped_at and ts(c.stopped_at),
            int(c.paused),
        )
        for c in clocks(parse_happenings(history), policy, now)
    )


def test_every_message_leaves_the_deadlines_as_the_events_say(tmp_path: Path) -> None:
    sections = base_sections(tmp_path)
    sections["policy"].update(update_every="1w", resolve={"high": "30d"}, disclose_after_fix="1d")
    desk = ClockDesk(make_config(tmp_path, sections=sections))
    try:
        at = T0
        desk.report(at)
        steps = [
            ("/ack\n/severity high\n", None),
            ("/waiting\n/reply\nWhich version?\n", None),
            (None, "1.2, on Debian.\n"),
            ("/confirm\n", None),
            ("/state fixed\n", None),
            ("/embargo 2026-11-20\n", None),
            ("/state fixing\n/state confirmed\n", None),
            ("/reject not ours after all\n", None),
            ("/reopen\n", None),
        ]
        assert _stored(desk) == _replayed(desk, at)
        for command, reporter_text in steps:
            at += timedelta(hours=5)
            if command is not None:
                desk.command(command, at)
            else:
                assert reporter_text is not None
                desk.reporter_writes(reporter_text, at)
            assert _stored(desk) == _replayed(desk, at), command or reporter_text
        # Every command above was done (none refused), so each moved the clocks.
        done = desk.store.all("SELECT detail FROM events WHERE kind = 'command'")
        assert all('"ok": true' in row["detail"] for row in done)
        assert desk.store.report(desk.report_id)["state"] == "confirmed"  # type: ignore[index]
    finally:
        desk.close()

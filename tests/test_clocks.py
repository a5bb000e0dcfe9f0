"""The clock runner over a real database, with an injected clock (no sleeping).

Mail comes in through the intake runner from a Maildir; what the runner sends is read from
the outbox, as the SMTP server would receive it. The pure engine has its own tests
(test_clock_engine.py); these check what maintainers and reporters receive, and when.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    MAINTAINERS,
    PROJECT,
    REPORTER,
    ClockDesk,
    base_sections,
    imap_config,
    mail,
    make_config,
    wait_until,
)
from servers import ImapAccount, SmtpSink

from triaged.clocks.runner import ClockRunner
from triaged.core.ids import find_tag
from triaged.core.timefmt import parse_ts
from triaged.mail import auth
from triaged.service.daemon import Daemon

ALICE, BOB = MAINTAINERS
ESCALATION = "cto@example.org"
# A Monday, 10:00 UTC.
T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)


class Desk(ClockDesk):
    def __init__(self, directory: Path, **policy: Any) -> None:
        sections = base_sections(directory)
        sections["policy"].update(policy)
        super().__init__(make_config(directory, sections=sections))

    def report(self, at: datetime = T0) -> str:
        return super().report(at)


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desk]:
    d = Desk(tmp_path, update_every="1w", escalate_to=ESCALATION, resolve={"critical": "14d"})
    yield d
    d.close()


def to(msgs: list[EmailMessage]) -> list[str]:
    return [str(m["To"]) for m in msgs]


def subjects(msgs: list[EmailMessage]) -> list[str]:
    return [str(m["Subject"]) for m in msgs]


def body(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def test_reminder_escalation_and_daily_overdue_reach_maintainers_once_each(desk: Desk) -> None:
    report_id = desk.report()
    assert desk.tick(T0 + 23 * H) == []

    reminders = desk.tick(T0 + 24 * H)
    assert sorted(to(reminders)) == sorted(MAINTAINERS)
    text = body(reminders[0])
    assert report_id in text and "Acknowledge" in text
    assert "Wednesday 04 November 2026, 10:00 UTC" in text  # the due time, project time zone
    assert "    /ack" in text  # the one line that meets it
    assert all(find_tag(s) == report_id for s in subjects(reminders))
    # Each maintainer can answer straight away: the Reply-To carries their token.
    assert reminders[0]["Reply-To"] == auth.reply_address(desk.key, PROJECT, report_id, ALICE)

    assert desk.tick(T0 + 24 * H) == []  # the same instant again: nothing twice
    assert desk.tick(T0 + 47 * H) == []

    escalation = desk.tick(T0 + 48 * H)
    assert sorted(to(escalation)) == sorted([*MAINTAINERS, ESCALATION])
    assert all(s.endswith("Missed: Acknowledge was due Wednesday 04 November 2026, 10:00 UTC")
               for s in subjects(escalation))  # fmt: skip
    contact = next(m for m in escalation if m["To"] == ESCALATION)
    assert contact["Reply-To"] is None and "escalation contact" in body(contact)

    assert desk.tick(T0 + 71 * H) == []
    overdue = desk.tick(T0 + 72 * H)
    # The detailed response's reminder (due at 96h) comes at the same instant.
    kinds = sorted(s.split(":")[0].split("] ")[1] for s in subjects(overdue))
    assert kinds == ["Reminder"] * 2 + ["Still overdue"] * 3
    assert desk.tick(T0 + 95 * H) == []
    assert len(desk.tick(T0 + 96 * H)) == 3 + 3  # acknowledge overdue #2, respond escalated


def test_a_met_clock_sends_nothing_more(desk: Desk) -> None:
    desk.report()
    desk.tick(T0 + 24 * H)
    desk.command("/ack", T0 + 30 * H)
    later = desk.tick(T0 + 49 * H) + desk.tick(T0 + 73 * H)
    assert later and all("Acknowledge" not in s for s in subjects(later))
    assert all("Detailed response" in s for s in subjects(later))  # only the next promise


def test_a_pass_run_twice_at_the_same_instant_sends_nothing_twice(desk: Desk) -> None:
    desk.report()
    first = desk.tick(T0 + 50 * H)
    assert first
    other = ClockRunner(desk.config, desk.store)
    other.recompute_all()  # as after a restart: every open report is looked at again
    assert desk.tick(T0 + 50 * H) == []


def test_a_daemon_down_for_3_days_catches_up_with_one_mail_per_due_item(desk: Desk) -> None:
    desk.report()
    caught_up = desk.tick(T0 + 3 * D + 5 * H)
    per_recipient: dict[str, list[str]] = {}
    for m in caught_up:
        per_recipient.setdefault(str(m["To"]), []).append(str(m["Subject"]).split("] ")[1])
    # Acknowledge: its escalation and the latest overdue repeat (the first one is superseded);
    # respond (due at 96h): its reminder. No earlier reminder of acknowledge any more.
    assert sorted(per_recipient[ALICE]) == [
        "Missed: Acknowledge was due Wednesday 04 November 2026, 10:00 UTC",
        "Reminder: Detailed response due Friday 06 November 2026, 10:00 UTC",
        "Still overdue: Acknowledge was due Wednesday 04 November 2026, 10:00 UTC",
    ]
    assert desk.tick(T0 + 3 * D + 6 * H) == []


def test_waiting_pauses_the_response_clock_and_the_reporters_reply_resumes_it(desk: Desk) -> None:
    desk.report()
    desk.command("/ack\n/waiting", T0 + 10 * H)
    # Paused at 10h with 86h left: nothing about the response while we wait.
    assert desk.tick(T0 + 5 * D) == []
    desk.reporter_writes("Here is the proof of concept.", T0 + 6 * D)
    # Resumed at 6d: due 6d + 86h = T0 + 230h; reminder 24h before.
    assert desk.tick(T0 + 205 * H) == []
    reminders = desk.tick(T0 + 206 * H)
    assert reminders and all("Detailed response" in s for s in subjects(reminders))
    due = desk.store.one(
        "SELECT due_at FROM deadlines WHERE report_id = ? AND clock = 'respond'",
        (desk.report_id,),
    )
    assert due is not None and parse_ts(due["due_at"]) == T0 + 230 * H


def test_the_weekly_update_reaches_the_reporter_and_stops_when_fixed(desk: Desk) -> None:
    desk.report()
    desk.command("/ack", T0 + H)
    desk.command("/confirm", T0 + 2 * H)  # the reporter is told: that counts as contact
    early = desk.tick(T0 + 7 * D + 2 * H - timedelta(minutes=1))
    assert [m for m in early if m["To"] == REPORTER] == []
    update = [m for m in desk.tick(T0 + 7 * D + 2 * H) if m["To"] == REPORTER]
    assert len(update) == 1
    text = body(update[0])
    assert "The report is confirmed; we are working on a fix." in text
    assert "Monday 16 November 2026, 12:00 UTC" in text  # the next one, at the latest
    # Nothing internal: no maintainer, handler or note.
    assert ALICE not in text and BOB not in text
    assert update[0]["Auto-Submitted"] == "auto-generated"

    desk.command("/state fixing", T0 + 9 * D)
    second = [m for m in desk.tick(T0 + 14 * D + 2 * H) if m["To"] == REPORTER]
    assert len(second) == 1 and "being fixed" in body(second[0])

    desk.command("/state fixed", T0 + 15 * D)
    assert [m for m in desk.tick(T0 + 30 * D) if m["To"] == REPORTER] == []
    rows = desk.store.all(
        "SELECT kind FROM events WHERE report_id = ? AND kind = 'update_sent'", (desk.report_id,)
    )
    assert len(rows) == 2


def test_the_next_look_is_scheduled_and_a_new_event_wakes_the_report(desk: Desk) -> None:
    report_id = desk.report()
    desk.tick(T0)
    state = desk.store.one("SELECT next_at FROM clock_state WHERE report_id = ?", (report_id,))
    assert state is not None and parse_ts(state["next_at"]) == T0 + 24 * H  # first reminder
    desk.command("/reject not a vulnerability", T0 + 2 * H)
    state = desk.store.one("SELECT next_at FROM clock_state WHERE report_id = ?", (report_id,))
    assert state is not None and state["next_at"] == ""  # woken by the new events
    assert [m for m in desk.tick(T0 + 30 * D) if m["To"] != REPORTER] == []
    state = desk.store.one("SELECT next_at FROM clock_state WHERE report_id = ?", (report_id,))
    assert state is not None and state["next_at"] is None  # closed: nothing scheduled


def test_a_reminder_to_the_handler_only_once_one_is_assigned(desk: Desk) -> None:
    desk.report()
    desk.command(f"/assign {BOB}", T0 + H)
    assert to(desk.tick(T0 + 24 * H)) == [BOB]


def test_a_share_of_the_clock_as_reminder_offset(tmp_path: Path) -> None:
    d = Desk(tmp_path, remind_before=["50%", "1h"])
    try:
        d.report()
        assert d.tick(T0 + 23 * H) == []
        assert len(d.tick(T0 + 24 * H)) == 2  # half of 48h
        assert d.tick(T0 + 46 * H) == []
        assert len(d.tick(T0 + 47 * H)) == 2
    finally:
        d.close()


def test_end_to_end_a_missed_acknowledgement_escalates_to_the_smtp_server(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    """Dovecot in, aiosmtpd out, the daemon with its scheduler; only the time is moved."""
    config = imap_config(tmp_dir, imap_account, smtp_sink, escalate_to=ESCALATION)
    offset = [timedelta(0)]
    start = datetime.now(UTC)
    daemon = Daemon(config, clock=lambda: datetime.now(UTC) + offset[0])
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        # Mail already there at a new database's first start is adopted silently: this
        # report arrives after it.
        wait_until(lambda: daemon.ready, 30, "the daemon to start")
        imap_account.append(mail(sender=REPORTER, subject="Token leak in the API"))
        got = smtp_sink.wait_for(1 + len(MAINTAINERS), timeout=30)
        report_id = find_tag(str(got[0].msg["Subject"]))
        assert report_id is not None

        offset[0] = timedelta(hours=48, minutes=1)
        daemon.scheduler.run_clocks_now()
        got = smtp_sink.wait_for(len(got) + len(MAINTAINERS) + 1, timeout=30)
        escalations = [c for c in got if "Missed: Acknowledge" in str(c.msg["Subject"])]
        assert sorted(r for c in escalations for r in c.rcpt_tos) == sorted(
            [*MAINTAINERS, ESCALATION]
        )
        due = (start + timedelta(hours=48)).strftime("%A %d %B %Y")
        for captured in escalations:
            assert find_tag(str(captured.msg["Subject"])) == report_id
            assert due in str(captured.msg["Subject"])
    finally:
        daemon.request_stop()
        thread.join(timeout=30)
    assert not thread.is_alive()

"""Disclosure: the embargo and the announcement rule, reminders before the embargo ends, the
reporter's credit; and each seed policy's life cycle from report to disclosure, end to end
against Dovecot and aiosmtpd, checking every mail the reporter receives.

Time is injected everywhere (no sleeping): the runners are called in-process with `now`.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from helpers import (
    MAINTAINERS,
    REPORTER,
    ClockDesk,
    base_sections,
    config_text,
    mail,
    make_config,
)
from servers import Captured, ImapAccount, SmtpSink

from triaged.clocks.engine import (
    ClockPolicy,
    Happening,
    clocks,
    next_notice_at,
    notices_due,
    parse_happenings,
)
from triaged.clocks.runner import ClockRunner
from triaged.config import Config, load
from triaged.core.durations import Calendar, parse_duration, parse_offset
from triaged.core.ids import find_tag, tag
from triaged.core.timefmt import parse_ts, ts
from triaged.disclosure.embargo import (
    change,
    check_announcement,
    embargo_end,
    first_allowed_date,
    parse_request,
    window,
)
from triaged.errors import Refused
from triaged.intake.runner import IntakeRunner
from triaged.mail import auth
from triaged.mail.mailbox import open_mailbox
from triaged.mail.transport import open_transport
from triaged.service.outbox import OutboxRunner
from triaged.store.db import Store

PRESETS = Path(__file__).resolve().parent.parent / "examples" / "policies"
PARIS = ZoneInfo("Europe/Paris")
ALICE, BOB = MAINTAINERS
ESCALATION = "cto@example.org"
T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)  # a Monday
H = timedelta(hours=1)
D = timedelta(days=1)


def body(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def subject(msg: EmailMessage) -> str:
    """The subject without the report's tag."""
    return str(msg["Subject"]).split("] ", 1)[1]


# --- the pure parts ---------------------------------------------------------------------


def test_an_embargo_is_a_date_a_date_and_time_or_a_duration_from_now(tmp_path: Path) -> None:
    config = _policy_config(tmp_path, disclose_after_fix="7d", embargo_max="14d")
    policy = config.policy
    now = datetime(2026, 11, 2, 9, 30, 20, tzinfo=UTC)
    day = parse_request("2026-11-20", now, policy)
    assert day.stored == "2026-11-20"
    assert day.end == datetime(2026, 11, 20, 0, 0, tzinfo=PARIS)
    local = parse_request("2026-11-20T14:30", now, policy)
    assert local.stored == "2026-11-20T14:30+01:00" and local.end.utcoffset() == H
    # Rounded up to the minute, stored in project time.
    relative = parse_request("+72h", now, policy)
    assert relative.end == datetime(2026, 11, 5, 9, 31, tzinfo=UTC)
    assert relative.stored == "2026-11-05T10:31+01:00"
    business = parse_request("+5bd", datetime(2026, 11, 6, 9, 0, tzinfo=UTC), policy)
    assert business.end == datetime(2026, 11, 13, 10, 0, tzinfo=PARIS)  # Friday to Friday
    for stored in ("2026-11-20", "2026-11-05T10:31+01:00"):
        assert embargo_end(stored, PARIS) == parse_request(stored, now, policy).end
    assert embargo_end("garbage", PARIS) is None and embargo_end(None, PARIS) is None
    for bad in ("tomorrow", "+3 days", "2026-13-01", "2026-11-20 14h"):
        with pytest.raises(ValueError, match="is not"):
            parse_request(bad, now, policy)


def test_the_window_the_policy_allows(tmp_path: Path) -> None:
    policy = _policy_config(tmp_path, disclose_after_fix="7d", embargo_max="14d").policy
    now = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
    fixed = datetime(2026, 11, 9, 9, 0, tzinfo=UTC)
    after_fix = window(now, fixed, policy)
    assert after_fix.earliest == fixed + 7 * D and after_fix.latest == now + 14 * D
    assert "7 days after the fix" in after_fix.why
    # Not fixed yet: the fix can come no earlier than now.
    before_fix = window(now, None, policy)
    assert before_fix.earliest == now + 7 * D and "not released yet" in before_fix.why
    # Long after the fix, now is the earliest.
    assert window(fixed + 30 * D, fixed, policy).earliest == fixed + 30 * D
    assert first_allowed_date(fixed + 7 * D, PARIS) == date(2026, 11, 17)
    assert first_allowed_date(datetime(2026, 11, 17, 0, 0, tzinfo=PARIS), PARIS) == date(
        2026, 11, 17
    )


def test_what_embargo_may_set_is_decided_by_the_policy_alone(tmp_path: Path) -> None:
    policy = _policy_config(
        tmp_path, disclose_after_fix="7d", embargo_max="14d", embargo_default="10d"
    ).policy
    now = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
    fixed = datetime(2026, 11, 9, 9, 0, tzinfo=UTC)

    def asked(request: str | None, state: str = "fixed", stored: str | None = None) -> Any:
        return change(request, state=state, stored=stored, now=now, fixed_at=fixed, policy=policy)

    assert asked("2026-11-20").stored == "2026-11-20"
    default = asked(None)
    assert default.end == now + 10 * D and "embargo_default" in default.why
    assert asked("none", stored="2026-11-20").stored is None
    refusals = {
        "none": "no embargo is set",
        "2026-11-12": "earlier than the policy allows",
        "2026-12-20": "later than the policy allows",
        "2026-11-01": "which is past",
        "soon": "is not a date",
    }
    for request, reason in refusals.items():
        with pytest.raises(Refused, match=reason):
            asked(request)
    with pytest.raises(Refused, match="already ends"):
        asked("2026-11-20", stored="2026-11-20")
    with pytest.raises(Refused, match="no longer applies"):
        asked("2026-11-20", state="disclosed")


def test_the_announcement_waits_for_the_embargo_and_the_delay_after_the_fix(
    tmp_path: Path,
) -> None:
    policy = _policy_config(tmp_path, disclose_after_fix="7d").policy
    fixed = datetime(2026, 11, 9, 9, 0, tzinfo=UTC)

    def check(now: datetime, stored: str | None = None, state: str = "fixed") -> None:
        check_announcement(state=state, stored=stored, now=now, fixed_at=fixed, policy=policy)

    with pytest.raises(Refused, match="disclose_after_fix"):
        check(fixed + 6 * D)
    check(fixed + 7 * D)
    with pytest.raises(Refused, match="the embargo ends"):
        check(fixed + 8 * D, stored="2026-11-30")
    # Only a fixed report waits: the workflow refuses the others.
    check(fixed, state="confirmed")


def test_policy_keys_are_checked_when_the_config_loads(tmp_path: Path) -> None:
    from triaged.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        _policy_config(tmp_path, disclose_after_fix="21d", embargo_max="14d")
    assert info.value.key == "policy.disclose_after_fix" and "longer than embargo_max" in str(
        info.value
    )
    with pytest.raises(ConfigError) as info:
        _policy_config(tmp_path, embargo_default="0h")
    assert info.value.key == "policy.embargo_default"
    config = _policy_config(tmp_path)
    assert config.policy.embargo_remind == (parse_duration("2d"),)
    assert config.policy.disclose_after_fix is None and config.policy.embargo_max is None


def _policy_config(directory: Path, **policy: Any) -> Config:
    sections = base_sections(directory)
    sections["project"]["timezone"] = "Europe/Paris"
    sections["policy"].update(policy)
    return make_config(directory, sections=sections)


ENGINE = ClockPolicy(
    acknowledge=None,
    respond=None,
    resolve={},
    update_every=None,
    remind_before=(parse_duration("24h"),),
    calendar=Calendar(ZoneInfo("UTC")),
    embargo_remind=(parse_offset("2d"), parse_offset("1d")),
)


def _run(history: list[Happening], until: datetime, step: timedelta = H) -> list[tuple[str, str]]:
    """The engine called every `step` like the runner: (instant, key) of each notice sent."""
    sent: set[str] = set()
    out = []
    now = history[0].at
    while now <= until:
        for notice in notices_due(clocks(history, ENGINE, now), ENGINE, now, sent):
            sent.add(notice.key)
            out.append((now.strftime("%d %H:%M"), notice.key))
        now += step
    return out


def test_the_embargo_clock_reminds_says_publish_now_and_repeats_until_disclosed() -> None:
    end = "2026-11-20T10:00+00:00"
    history = [Happening(T0, "received"), Happening(T0 + D, "embargo", end)]
    assert _run(history, datetime(2026, 11, 22, 9, 0, tzinfo=UTC)) == [
        ("18 10:00", "embargo:remind:2d"),
        ("19 10:00", "embargo:remind:1d"),
        ("20 10:00", "embargo:escalate"),
        ("21 10:00", "embargo:overdue:1"),
    ]
    disclosed = [*history, Happening(datetime(2026, 11, 20, 11, 0, tzinfo=UTC), "disclosed")]
    got = _run(disclosed, datetime(2026, 11, 25, tzinfo=UTC))
    assert got[-1] == ("20 10:00", "embargo:escalate")  # met: nothing after
    (clock,) = clocks(disclosed, ENGINE, datetime(2026, 11, 25, tzinfo=UTC))
    assert clock.name == "embargo" and clock.met_at == disclosed[-1].at


def test_moving_the_embargo_moves_its_due_time_without_sending_a_notice_twice() -> None:
    history = [
        Happening(T0, "received"),
        Happening(T0 + D, "embargo", "2026-11-20T10:00+00:00"),
        # After the 2-day reminder, the date moves three days later: the 2-day reminder is not
        # repeated, the 1-day one comes before the new date.
        Happening(datetime(2026, 11, 18, 12, 0, tzinfo=UTC), "embargo", "2026-11-23T10:00+00:00"),
    ]
    assert _run(history, datetime(2026, 11, 24, 9, 0, tzinfo=UTC)) == [
        ("18 10:00", "embargo:remind:2d"),
        ("22 10:00", "embargo:remind:1d"),
        ("23 10:00", "embargo:escalate"),
    ]
    # The runner looks again no later than the next reminder (a look that finds the key
    # already sent does nothing).
    now = datetime(2026, 11, 19, tzinfo=UTC)
    wake = next_notice_at(clocks(history, ENGINE, now), ENGINE, now)
    assert wake is not None and now < wake <= datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def test_a_date_set_after_the_embargo_ended_starts_a_new_round() -> None:
    history = [
        Happening(T0, "received"),
        Happening(T0 + D, "embargo", "2026-11-10T10:00+00:00"),
        # The team postponed the announcement once "publish now" had gone out.
        Happening(datetime(2026, 11, 10, 12, 0, tzinfo=UTC), "embargo", "2026-11-20T10:00+00:00"),
    ]
    got = _run(history, datetime(2026, 11, 20, 10, 0, tzinfo=UTC))
    assert got == [
        ("08 10:00", "embargo:remind:2d"),
        ("09 10:00", "embargo:remind:1d"),
        ("10 10:00", "embargo:escalate"),
        ("18 10:00", "embargo#2:remind:2d"),
        ("19 10:00", "embargo#2:remind:1d"),
        ("20 10:00", "embargo#2:escalate"),
    ]


def test_a_cleared_embargo_has_no_clock_and_closing_stops_it() -> None:
    set_ = Happening(T0 + D, "embargo", "2026-11-20")
    assert (
        clocks(
            [Happening(T0, "received"), set_, Happening(T0 + 2 * D, "embargo")], ENGINE, T0 + 3 * D
        )
        == []
    )
    closed = [Happening(T0, "received"), set_, Happening(T0 + 2 * D, "closed")]
    (clock,) = clocks(closed, ENGINE, T0 + 30 * D)
    assert clock.stopped_at == T0 + 2 * D and not clock.running
    # A date is the start of that day in the project's time zone.
    assert clocks([Happening(T0, "received"), set_], ENGINE, T0 + 3 * D)[0].due == datetime(
        2026, 11, 20, tzinfo=UTC
    )


def test_embargo_and_disclosure_events_become_happenings() -> None:
    rows = [
        {"at": ts(T0), "kind": "received", "detail": "{}"},
        {"at": ts(T0 + H), "kind": "set", "detail": '{"field": "embargo", "new": "2026-11-20"}'},
        {"at": ts(T0 + 2 * H), "kind": "set", "detail": '{"field": "embargo", "new": null}'},
        {"at": ts(T0 + 3 * H), "kind": "set", "detail": '{"field": "disclosed_at", "new": "x"}'},
    ]
    assert [(h.kind, h.value) for h in parse_happenings(rows)] == [
        ("received", None),
        ("embargo", "2026-11-20"),
        ("embargo", None),
        ("disclosed", None),
    ]


# --- commands and the clock runner over a Maildir, with an injected time -----------------


class Desk(ClockDesk):
    """A report in a Maildir mailbox; commands return what triaged sent because of them."""

    def __init__(self, directory: Path, timezone: str = "Europe/Paris", **policy: Any) -> None:
        sections = base_sections(directory)
        sections["project"]["timezone"] = timezone
        sections["policy"].update(policy)
        super().__init__(make_config(directory, sections=sections))

    def send(self, body: str, at: datetime, sender: str = ALICE) -> list[EmailMessage]:
        to = auth.reply_address(self.key, self.config.project.address, self.report_id, sender)
        raw = mail(sender=sender, to=to, subject=f"Re: {tag(self.report_id)} RCE", body=body)
        self.deliver(raw, at)
        return self.new_mail()

    def from_reporter(self, body: str, at: datetime) -> list[EmailMessage]:
        raw = mail(sender=REPORTER, subject=f"Re: {tag(self.report_id)} RCE", body=body)
        self.deliver(raw, at)
        return self.new_mail()

    def transcript(self, text: str, at: datetime, sender: str = ALICE) -> str:
        """The transcript of a command mail (and nothing else reached the sender)."""
        (sent,) = [m for m in self.send(text, at, sender) if m["To"] == sender]
        return body(sent)

    def fixed(self, at: datetime) -> list[EmailMessage]:
        self.send("/ack\n/confirm", at - 2 * H)
        return self.send("/fixed-in 1.0.4\n/state fixed", at)


def embargo(msgs: list[EmailMessage]) -> list[EmailMessage]:
    """The embargo clock's notices (not a transcript of /embargo)."""
    return [m for m in msgs if re.search(r"the embargo end(s|ed) ", subject(m))]


def to(msgs: list[EmailMessage], address: str = REPORTER) -> list[EmailMessage]:
    return [m for m in msgs if m["To"] == address]


@pytest.fixture
def desks() -> Iterator[list[Desk]]:
    made: list[Desk] = []
    yield made
    for desk in made:
        desk.close()


def test_an_embargo_too_early_is_refused_with_the_earliest_date(
    tmp_path: Path, desks: list[Desk]
) -> None:
    desk = Desk(tmp_path, disclose_after_fix="7d")
    desks.append(desk)
    t0 = datetime(2026, 11, 2, 10, 0, tzinfo=PARIS)
    desk.report(t0)
    # Before the fix: the earliest is 7 days from now.
    text = desk.transcript("/embargo 2026-11-05", t0 + H)
    assert "REFUSED /embargo 2026-11-05" in text
    assert "earlier than the policy allows" in text
    assert "the earliest is Monday 09 November 2026, 11:00 CET" in text
    assert "/embargo 2026-11-10 (or /embargo 2026-11-09T11:00) or later" in text
    fixed_at = datetime(2026, 11, 11, 10, 0, tzinfo=PARIS)
    mails = desk.fixed(fixed_at)
    assert "the announcement may come from Wednesday 18 November 2026, 10:00 CET" in body(
        to(mails, ALICE)[0]
    )
    for too_early in ("2026-11-18", "2026-11-18T09:59", "+6d"):
        text = desk.transcript(f"/embargo {too_early}", fixed_at + H)
        assert f"REFUSED /embargo {too_early}" in text
        assert (
            "the earliest is Wednesday 18 November 2026, 10:00 CET, 7 days after the fix of" in text
        )
        assert "/embargo 2026-11-19 (or /embargo 2026-11-18T10:00) or later" in text
    assert desk.store.report(desk.report_id)["embargo"] is None  # type: ignore[index]
    sent = desk.send("/embargo 2026-11-18T10:00", fixed_at + H)
    assert "done    /embargo 2026-11-18T10:00" in body(to(sent, ALICE)[0])
    (told,) = [m for m in to(sent) if subject(m).startswith("Planned disclosure")]
    assert subject(told) == "Planned disclosure: Wednesday 18 November 2026, 10:00 CET"
    # A past date, and a refusal of /disclose before the embargo ends.
    assert "which is past" in desk.transcript("/embargo 2026-11-01", fixed_at + 2 * H)
    text = desk.transcript("/disclose", fixed_at + 3 * H)
    assert "REFUSED /disclose" in text and "the embargo ends Wednesday 18 November" in text
    text = desk.transcript("/state disclosed", fixed_at + 3 * H)
    assert "REFUSED /state disclosed" in text and "/disclose early" in text


def test_the_cap_counts_from_when_the_embargo_is_set(tmp_path: Path, desks: list[Desk]) -> None:
    desk = Desk(tmp_path, timezone="UTC", embargo_max="14d", embargo_default="72h")
    desks.append(desk)
    desk.report(T0)
    text = desk.transcript("/embargo +15d", T0 + H)
    assert "later than the policy allows" in text
    assert "at most 14 days from when it is set (embargo_max)" in text
    assert "must end by Monday 16 November 2026, 11:00 UTC" in text
    text = desk.transcript("/embargo", T0 + H)  # embargo_default
    assert "embargo: ends Thursday 05 November 2026, 11:00 UTC (72 hours from now" in text
    assert desk.store.report(desk.report_id)["embargo"] == "2026-11-05T11:00+00:00"  # type: ignore[index]
    assert "already ends" in desk.transcript("/embargo 2026-11-05T11:00", T0 + 2 * H)


def test_embargo_reminders_on_the_right_days_then_publish_now(
    tmp_path: Path, desks: list[Desk]
) -> None:
    desk = Desk(tmp_path, embargo_remind=["2d", "1d"], escalate_to=ESCALATION)
    desks.append(desk)
    t0 = datetime(2026, 11, 2, 10, 0, tzinfo=PARIS)
    desk.report(t0)
    desk.send("/ack\n/assign bob@example.org", t0 + H)
    desk.send("/embargo 2026-11-20", t0 + 2 * H)
    end = datetime(2026, 11, 20, 0, 0, tzinfo=PARIS)
    # The policy's other clocks (respond: 96h) give their own notices: only the embargo's here.
    assert embargo(desk.tick(end - 2 * D - timedelta(minutes=1))) == []
    first = embargo(desk.tick(end - 2 * D))
    assert [(m["To"], subject(m)) for m in first] == [
        (BOB, "Reminder: the embargo ends Friday 20 November 2026, 00:00 CET")
    ]
    text = body(first[0])
    assert desk.report_id in text and "2 days left" in text and "    /disclose" in text
    assert "not fixed yet" in text  # the report is only acknowledged
    assert first[0]["Reply-To"] == auth.reply_address(
        desk.key, desk.config.project.address, desk.report_id, BOB
    )
    assert embargo(desk.tick(end - 2 * D + 3 * H)) == []
    assert [subject(m) for m in embargo(desk.tick(end - D))] == [
        "Reminder: the embargo ends Friday 20 November 2026, 00:00 CET"
    ]
    publish = embargo(desk.tick(end))
    assert sorted(m["To"] for m in publish) == sorted(MAINTAINERS)  # not the escalation contact
    assert {subject(m) for m in publish} == {
        "Publish now: the embargo ended Friday 20 November 2026, 00:00 CET"
    }
    assert "publish now" in body(publish[0])
    overdue = embargo(desk.tick(end + D))
    assert sorted(m["To"] for m in overdue) == sorted([*MAINTAINERS, ESCALATION])
    assert {subject(m) for m in overdue} == {
        "Still not disclosed: the embargo ended Friday 20 November 2026, 00:00 CET"
    }
    # The deadline is stored with the others (for `triaged deadlines` and the digest).
    row = desk.store.one(
        "SELECT due_at FROM deadlines WHERE report_id = ? AND clock = 'embargo'", (desk.report_id,)
    )
    assert row is not None and parse_ts(row["due_at"]) == end
    desk.send("/confirm\n/state fixed", end + D + H)
    desk.send("/disclose", end + D + 2 * H)
    assert embargo(desk.tick(end + 5 * D)) == []


def test_moving_the_date_moves_the_reminders_and_tells_the_reporter(
    tmp_path: Path, desks: list[Desk]
) -> None:
    desk = Desk(tmp_path, timezone="UTC", embargo_remind=["2d"])
    desks.append(desk)
    desk.report(T0)
    desk.send("/embargo 2026-11-10", T0 + H)
    assert len(embargo(desk.tick(datetime(2026, 11, 8, tzinfo=UTC)))) == 2  # remind:2d, to both
    sent = desk.send("/embargo 2026-11-12", datetime(2026, 11, 8, 9, 0, tzinfo=UTC))
    (told,) = [m for m in to(sent) if subject(m).startswith("Planned")]
    assert "Thursday 12 November 2026, 00:00 UTC" in body(told)
    assert "This replaces the date we gave you before (Tuesday 10 November 2026" in body(told)
    # The 2-day reminder was sent: moving the date does not send it again.
    assert embargo(desk.tick(datetime(2026, 11, 10, tzinfo=UTC))) == []
    assert {subject(m) for m in embargo(desk.tick(datetime(2026, 11, 12, tzinfo=UTC)))} == {
        "Publish now: the embargo ended Thursday 12 November 2026, 00:00 UTC"
    }
    sent = desk.send("/embargo none", datetime(2026, 11, 12, 8, 0, tzinfo=UTC))
    (withdrawn,) = to(sent)
    assert subject(withdrawn) == "The planned disclosure date is withdrawn"
    assert "(Thursday 12 November 2026, 00:00 UTC)" in body(withdrawn)
    assert embargo(desk.tick(datetime(2026, 11, 20, tzinfo=UTC))) == []


def test_the_credit_question_is_asked_once(tmp_path: Path, desks: list[Desk]) -> None:
    desk = Desk(tmp_path, timezone="UTC")
    desks.append(desk)
    desk.report(T0)
    mails = desk.fixed(T0 + D)
    assert [subject(m) for m in to(mails)] == [
        "Your report is fixed",
        "How would you like to be credited?",
    ]
    question = body(to(mails)[1])
    assert '/credit "Your Name"' in question and "/credit anonymous" in question
    assert '"reported privately"' in question
    assert "the reporter is asked how to credit them" in body(to(mails, ALICE)[0])
    # An embargo, a fix that was not one and a new fix: the question is not asked again.
    sent = desk.send("/embargo 2026-11-20", T0 + D + H)
    assert [subject(m) for m in to(sent)] == [
        "Planned disclosure: Friday 20 November 2026, 00:00 UTC"
    ]
    assert '"reported privately"' in body(to(sent)[0])
    desk.send("/state fixing", T0 + 2 * D)
    again = desk.send("/state fixed", T0 + 3 * D)
    assert [subject(m) for m in to(again)] == ["Your report is fixed"]
    asked = desk.store.all(
        "SELECT 1 FROM events WHERE report_id = ? AND kind = 'credit_asked'", (desk.report_id,)
    )
    assert len(asked) == 1
    # The reporter's answer is what the disclosure says.
    desk.from_reporter('/credit "J. Doe (@jdoe)"', T0 + 4 * D)
    sent = desk.send("/disclose early", T0 + 5 * D)
    (public,) = to(sent)
    assert 'We credited you as "J. Doe (@jdoe)".' in body(public)


def test_no_question_when_the_reporter_already_said_and_the_embargo_comes_first(
    tmp_path: Path, desks: list[Desk]
) -> None:
    desk = Desk(tmp_path, timezone="UTC")
    desks.append(desk)
    desk.report(T0)
    # The embargo comes before the fix (bases opens its announcement issue then): asked there.
    sent = desk.send("/embargo 2026-11-20", T0 + H)
    assert [subject(m) for m in to(sent)][1:] == ["How would you like to be credited?"]
    other = Desk(tmp_path / "other", timezone="UTC")
    desks.append(other)
    other.report(T0)
    other.from_reporter("/credit anonymous", T0 + H)
    assert [subject(m) for m in to(other.fixed(T0 + D))] == ["Your report is fixed"]
    assert [subject(m) for m in to(other.send("/embargo +10d", T0 + D))] == [
        "Planned disclosure: Friday 13 November 2026, 10:00 UTC"
    ]


def test_anonymity_is_respected_in_every_reporter_mail(tmp_path: Path, desks: list[Desk]) -> None:
    desk = Desk(tmp_path, timezone="UTC", embargo_remind=["1d"])
    desks.append(desk)
    desk.report(T0)
    desk.from_reporter('/credit "Jane Doe"', T0 + H)
    # A maintainer cannot silently undo the reporter's choice: the transcript says so.
    text = desk.transcript("/credit anonymous", T0 + 2 * H)
    assert 'note: this replaces the reporter\'s own choice ("Jane Doe")' in text
    desk.from_reporter('/credit "Jane Doe"', T0 + 3 * H)
    desk.from_reporter("/credit anonymous", T0 + 4 * H)  # the reporter changes their mind
    later: list[EmailMessage] = []
    later += desk.fixed(T0 + D)
    later += desk.send("/embargo 2026-11-10", T0 + D + H)
    later += desk.tick(datetime(2026, 11, 9, tzinfo=UTC))
    later += desk.tick(datetime(2026, 11, 10, tzinfo=UTC))
    later += desk.send("/disclose", datetime(2026, 11, 10, 9, 0, tzinfo=UTC))
    reporter = to(later)
    assert [subject(m) for m in reporter] == [
        "Your report is fixed",
        "Planned disclosure: Tuesday 10 November 2026, 00:00 UTC",
        "Your report is disclosed",
    ]
    assert "nothing we publish will name you" in body(reporter[1])
    assert "nothing we published names you" in body(reporter[2])
    notices = embargo(later)
    assert notices and all("Credit:   anonymous" in body(m) for m in notices)
    for m in later:
        assert "Jane" not in m.as_string()


def test_disclose_early_and_the_disclosure_time(tmp_path: Path, desks: list[Desk]) -> None:
    desk = Desk(tmp_path, timezone="UTC", disclose_after_fix="7d")
    desks.append(desk)
    desk.report(T0)
    desk.fixed(T0 + D)
    text = desk.transcript("/disclose", T0 + 2 * D)
    assert "REFUSED /disclose" in text
    assert "from Tuesday 10 November 2026, 10:00 UTC, 7 days after the fix" in text
    sent = desk.send("/disclose early", T0 + 2 * D + H)
    assert [subject(m) for m in to(sent)] == ["Your report is disclosed"]
    assert '"reported privately"' in body(to(sent)[0])
    row = desk.store.report(desk.report_id)
    assert row is not None and row["state"] == "disclosed"
    assert parse_ts(row["disclosed_at"]) == T0 + 2 * D + H
    assert "the report is already disclosed" in desk.transcript("/disclose", T0 + 3 * D)
    assert "no longer applies" in desk.transcript("/embargo +3d", T0 + 3 * D)


# --- each seed policy, from report to disclosure, through Dovecot and aiosmtpd -----------


class Life:
    """A preset run by the runners in-process (intake from Dovecot, the clock runner, the
    outbox to aiosmtpd), one pass per call, with an injected time."""

    def __init__(self, name: str, directory: Path, account: ImapAccount, sink: SmtpSink) -> None:
        data = tomllib.loads((PRESETS / f"{name}.toml").read_text())
        data["mailbox"] = {
            "url": account.url(),
            "password_file": str(account.password_file),
            "poll_interval": "1h",
            "connect_timeout": "10s",
        }
        data["smtp"] = {"url": sink.url, "retry_initial": "1s", "retry_max": "2s"}
        data["database"] = {"path": str(directory / "triaged.db")}
        path = directory / "config.toml"
        path.write_text(config_text(data))
        self.config = load(path)
        self.account, self.sink = account, sink
        self.store = Store(self.config.database)
        self.mailbox = open_mailbox(self.config.mailbox)
        self.mailbox.connect()
        self.intake = IntakeRunner(self.config, self.store, self.mailbox)
        self.intake.start(datetime.now(UTC))
        self.clocks = ClockRunner(self.config, self.store)
        self.transport = open_transport(self.config.smtp)
        self.outbox = OutboxRunner(self.store, self.transport, self.config.smtp)
        self.key = auth.load_or_create_key(self.config.auth.key_file)
        self.members = self.config.maintainers.members
        self.seen = 0
        self.report_id = ""
        self.reporter_mail: list[Captured] = []

    def pump(self, at: datetime) -> list[Captured]:
        """One pass of each runner at `at`; returns what reached the SMTP server."""
        self.intake.run_once(at)
        self.clocks.run_once(at)
        self.outbox.run_once(at)
        new = self.sink.messages[self.seen :]
        self.seen = len(self.sink.messages)
        self.reporter_mail += [c for c in new if c.rcpt_tos == [REPORTER]]
        return list(new)

    def report(self, at: datetime) -> list[Captured]:
        self.account.append(mail(sender=REPORTER, subject="Token leak in the importer"))
        got = self.pump(at)
        report_id = find_tag(str(got[0].msg["Subject"]))
        assert report_id is not None
        self.report_id = report_id
        return got

    def command(self, text: str, at: datetime, sender: str | None = None) -> list[Captured]:
        sender = sender or self.members[0]
        to = auth.reply_address(self.key, self.config.project.address, self.report_id, sender)
        self.account.append(
            mail(sender=sender, to=to, subject=f"Re: {tag(self.report_id)} Token", body=text)
        )
        got = self.pump(at)
        (transcript,) = [c for c in got if c.rcpt_tos == [sender]]
        assert "REFUSED" not in transcript.msg.get_content(), transcript.msg.get_content()
        return got

    def refused(self, text: str, at: datetime) -> str:
        sender = self.members[0]
        to = auth.reply_address(self.key, self.config.project.address, self.report_id, sender)
        self.account.append(
            mail(sender=sender, to=to, subject=f"Re: {tag(self.report_id)} Token", body=text)
        )
        got = self.pump(at)
        assert [c.rcpt_tos for c in got] == [[sender]]  # the transcript, nothing else
        content = str(got[0].msg.get_content())
        assert "REFUSED" in content
        return content

    def reporter_writes(self, text: str, at: datetime) -> list[Captured]:
        self.account.append(
            mail(sender=REPORTER, subject=f"Re: {tag(self.report_id)} Token", body=text)
        )
        return self.pump(at)

    def ticks(self, start: datetime, end: datetime, step: timedelta = 6 * H) -> list[Captured]:
        """Clock passes every `step` from `start` up to `end` (included)."""
        got: list[Captured] = []
        at = start
        while at <= end:
            got += self.pump(at)
            at += step
        return got

    def reporter_subjects(self) -> list[str]:
        return [str(c.msg["Subject"]).split("] ", 1)[1] for c in self.reporter_mail]

    def reporter_text(self, n: int) -> str:
        return str(self.reporter_mail[n].msg.get_content()).replace("\r\n", "\n")

    def close(self) -> None:
        self.mailbox.close()
        self.transport.close()
        self.store.close()


@pytest.fixture
def life_parts(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> Iterator[tuple[Path, ImapAccount, SmtpSink, list[Life]]]:
    lives: list[Life] = []
    yield tmp_dir, imap_account, smtp_sink, lives
    for life in lives:
        life.close()


def _life(name: str, parts: tuple[Path, ImapAccount, SmtpSink, list[Life]]) -> Life:
    directory, account, sink, lives = parts
    life = Life(name, directory, account, sink)
    lives.append(life)
    return life


def _is_embargo_notice(captured: Captured) -> bool:
    return re.search(r"the embargo end(s|ed) ", str(captured.msg["Subject"])) is not None


def _embargo_notices(got: list[Captured]) -> list[tuple[str, str]]:
    return sorted(
        (c.rcpt_tos[0], str(c.msg["Subject"]).split("] ", 1)[1])
        for c in got
        if _is_embargo_notice(c)
    )


def _common_reporter_checks(life: Life) -> None:
    for captured in life.reporter_mail:
        assert find_tag(str(captured.msg["Subject"])) == life.report_id
        raw = captured.raw.decode(errors="replace")
        for member in life.members:
            assert member not in raw  # no maintainer address, no handler name
        assert captured.msg["X-Triaged-Report"] == life.report_id


def test_marmotte_from_report_to_announcement_a_week_after_the_patch(
    life_parts: tuple[Path, ImapAccount, SmtpSink, list[Life]],
) -> None:
    life = _life("marmotte", life_parts)
    alice, bob = life.members
    t0 = datetime(2026, 11, 2, 10, 0, tzinfo=PARIS)  # Monday
    life.report(t0)
    life.command(f"/ack\n/assign {bob}", t0 + 5 * H)
    life.command("/reply\nWe reproduced it; the handler is preparing a fix.", t0 + 30 * H, bob)
    life.command("/confirm\n/severity high\n/affects >=1.0 <1.0.4", t0 + 31 * H, bob)
    life.command("/state fixing", t0 + 2 * D, bob)
    life.ticks(t0 + 2 * D, t0 + 9 * D - H)
    fixed = t0 + 9 * D  # Wednesday 11 November, 1.0.4 released
    got = life.command("/fixed-in 1.0.4\n/state fixed", fixed, bob)
    transcript = next(c for c in got if c.rcpt_tos == [bob]).msg.get_content()
    assert "the announcement may come from Wednesday 18 November 2026, 10:00 CET" in transcript
    life.reporter_writes('/credit "Jane Doe"', fixed + H)
    # "At least a week after the patch": an earlier announcement is refused, with the earliest.
    text = life.refused("/embargo 2026-11-16", fixed + 2 * H)
    assert "the earliest is Wednesday 18 November 2026, 10:00 CET" in text
    assert "/embargo 2026-11-19 (or /embargo 2026-11-18T10:00) or later" in text
    life.command("/embargo 2026-11-19", fixed + 3 * H, bob)
    end = datetime(2026, 11, 19, 0, 0, tzinfo=PARIS)
    assert _embargo_notices(life.ticks(fixed + 6 * H, end - 2 * D - H)) == []
    reminders = life.ticks(end - 2 * D, end - D)  # embargo_remind = ["2d", "1d"]: to Bob
    assert (
        _embargo_notices(reminders)
        == [(bob, "Reminder: the embargo ends Thursday 19 November 2026, 00:00 CET")] * 2
    )
    publish = life.pump(end)
    assert _embargo_notices(publish) == [
        (alice, "Publish now: the embargo ended Thursday 19 November 2026, 00:00 CET"),
        (bob, "Publish now: the embargo ended Thursday 19 November 2026, 00:00 CET"),
    ]
    life.command("/disclose", end + 9 * H, bob)
    assert _embargo_notices(life.ticks(end + 12 * H, end + 5 * D)) == []
    life.command("/close", end + 6 * D, bob)

    assert life.reporter_subjects() == [
        "Your report was received",
        "Re: your report",
        "Your report is confirmed",
        "Your report is fixed",
        "How would you like to be credited?",
        "Your commands",
        "Planned disclosure: Thursday 19 November 2026, 00:00 CET",
        "Your report is disclosed",
    ]
    receipt = life.reporter_text(0)
    assert "Wednesday 04 November 2026, 10:00 CET" in receipt  # the 48-hour promise
    assert "the handler is preparing a fix" in life.reporter_text(1)
    assert "fixed in 1.0.4" in life.reporter_text(3)
    assert "We will agree on a disclosure date with you" in life.reporter_text(3)
    assert 'done    /credit "Jane Doe"' in life.reporter_text(5)
    assert 'We will credit you as "Jane Doe"' in life.reporter_text(6)
    assert "Thursday 19 November 2026, 00:00 CET" in life.reporter_text(6)
    assert "is now public, and fixed in\n1.0.4" in life.reporter_text(7)
    assert 'We credited you as "Jane Doe".' in life.reporter_text(7)
    _common_reporter_checks(life)
    row = life.store.report(life.report_id)
    assert row is not None and row["state"] == "closed"
    assert parse_ts(row["disclosed_at"]) == end + 9 * H


def test_bases_weekly_updates_an_embargo_72_hours_ahead_and_the_release_on_the_day(
    life_parts: tuple[Path, ImapAccount, SmtpSink, list[Life]],
) -> None:
    life = _life("bases", life_parts)
    (maintainer,) = life.members
    t0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    life.report(t0)
    life.command("/ack", t0 + 2 * H)
    life.command("/reply\nConfirmed on 4.1; the fix needs a new encoder.", t0 + 20 * H)
    life.command("/confirm\n/state fixing", t0 + 21 * H)
    # The fix takes longer than a week: the weekly update.
    life.ticks(t0 + D, t0 + 10 * D - H)
    # The fixes are ready: the announcement issue is opened, with the embargo 72 hours ahead.
    opened = t0 + 10 * D
    got = life.command("/embargo", opened)
    transcript = next(c for c in got if c.rcpt_tos == [maintainer]).msg.get_content()
    assert "embargo: ends Sunday 15 November 2026, 10:00 UTC (72 hours from now" in transcript
    end = opened + 72 * H
    assert _embargo_notices(life.ticks(opened + H, end - 25 * H)) == []
    assert _embargo_notices(life.ticks(end - 24 * H, end - H)) == [
        (maintainer, "Reminder: the embargo ends Sunday 15 November 2026, 10:00 UTC")
    ]
    assert _embargo_notices(life.pump(end)) == [
        (maintainer, "Publish now: the embargo ended Sunday 15 November 2026, 10:00 UTC")
    ]
    # On the embargo date the fix is pushed and released: fixed and disclosed in one mail.
    life.command("/fixed-in 4.2.0\n/state fixed\n/disclose", end + H)
    assert life.ticks(end + 2 * H, end + 30 * D, step=D) == []

    assert life.reporter_subjects() == [
        "Your report was received",
        "Re: your report",
        "Your report is confirmed",
        "Progress update on your report",
        "Planned disclosure: Sunday 15 November 2026, 10:00 UTC",
        "How would you like to be credited?",
        "Your report is fixed",
        "Your report is disclosed",
    ]
    receipt = life.reporter_text(0)
    assert "Tuesday 03 November 2026, 10:00 UTC" in receipt  # acknowledged within 24 hours
    assert "Wednesday 04 November 2026, 10:00 UTC" in receipt  # detailed response in 48
    assert "new encoder" in life.reporter_text(1)
    update = life.reporter_text(3)
    assert "confirmed; we are working on a fix" in update or "being fixed" in update
    assert "at least every 1 week" in update
    planned = life.reporter_text(4)
    assert "Sunday 15 November 2026, 10:00 UTC" in planned
    assert '"reported privately"' in planned and '/credit "Your Name"' in planned
    assert "planned for Sunday 15 November 2026, 10:00 UTC" in life.reporter_text(5)
    assert "fixed in 4.2.0" in life.reporter_text(6)
    assert "The embargo ended Sunday 15 November 2026" in life.reporter_text(6)
    disclosed = life.reporter_text(7)
    assert "is now public" in disclosed and '"reported privately"' in disclosed
    _common_reporter_checks(life)


def test_generic_credits_with_permission_or_anonymously(
    life_parts: tuple[Path, ImapAccount, SmtpSink, list[Life]],
) -> None:
    life = _life("generic", life_parts)
    t0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    life.report(t0)
    life.reporter_writes('/credit "Jane Doe"', t0 + H)
    life.command("/ack", t0 + 3 * H)
    life.reporter_writes("/credit anonymous", t0 + D)  # on second thought
    life.command("/confirm", t0 + 2 * D)
    life.command("/reply\nA fix is ready; we will agree on a date with you.", t0 + 5 * D)
    life.command("/fixed-in 2.0.1\n/state fixed", t0 + 6 * D)
    life.command("/embargo 2026-11-20", t0 + 6 * D + H)
    end = datetime(2026, 11, 20, tzinfo=UTC)
    notices = life.ticks(t0 + 7 * D, end - H)
    assert _embargo_notices(notices) == sorted(
        (m, "Reminder: the embargo ends Friday 20 November 2026, 00:00 UTC") for m in life.members
    )
    notices += life.pump(end)
    assert _embargo_notices(notices[-len(life.members) :]) == sorted(
        (m, "Publish now: the embargo ended Friday 20 November 2026, 00:00 UTC")
        for m in life.members
    )
    assert all(
        "Credit:   anonymous" in c.msg.get_content() for c in notices if _is_embargo_notice(c)
    )
    life.command("/state disclosed", end + 10 * H)

    assert life.reporter_subjects() == [
        "Your report was received",
        "Your commands",
        "Your commands",
        "Your report is confirmed",
        "Re: your report",
        "Your report is fixed",
        "Planned disclosure: Friday 20 November 2026, 00:00 UTC",
        "Your report is disclosed",
    ]
    assert "Wednesday 04 November 2026, 10:00 UTC" in life.reporter_text(0)  # 48 hours
    assert "done    /credit anonymous" in life.reporter_text(2)
    assert "nothing we publish will name you" in life.reporter_text(6)
    assert "nothing we published names you" in life.reporter_text(7)
    # Once the reporter asked for anonymity, no mail names them.
    for captured in life.reporter_mail[3:]:
        assert "Jane" not in captured.raw.decode(errors="replace")
    _common_reporter_checks(life)


def test_pynomaly_business_days_critical_fix_and_a_credited_handle(
    life_parts: tuple[Path, ImapAccount, SmtpSink, list[Life]],
) -> None:
    life = _life("pynomaly", life_parts)
    alice, bob = life.members
    t0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)  # Monday
    life.report(t0)
    life.command("/ack\n/severity critical", t0 + 3 * H)
    life.command("/reply\nInitial assessment: critical, affects 0.4.x and 0.3.x.", t0 + D)
    life.command("/confirm\n/affects >=0.3 <0.4.2", t0 + D + H)
    life.ticks(t0 + 2 * D, t0 + 6 * D - H)
    life.command("/fixed-in 0.4.2\n/state fixed", t0 + 6 * D)  # within the 14 days
    life.reporter_writes('/credit "@jdoe"', t0 + 6 * D + 2 * H)
    life.command("/embargo +5bd", t0 + 7 * D)  # Monday 9th + 5 business days
    end = datetime(2026, 11, 16, 10, 0, tzinfo=UTC)
    before = life.ticks(t0 + 7 * D + H, end - H, step=3 * H)
    assert _embargo_notices(before) == sorted(
        (m, "Reminder: the embargo ends Monday 16 November 2026, 10:00 UTC") for m in life.members
    )
    reminder = next(c for c in before if _is_embargo_notice(c))
    assert "Credit:   @jdoe" in reminder.msg.get_content()
    assert _embargo_notices(life.pump(end)) == sorted(
        (m, "Publish now: the embargo ended Monday 16 November 2026, 10:00 UTC")
        for m in (alice, bob)
    )
    life.command("/disclose", end + H)
    assert life.ticks(end + 2 * H, end + 20 * D, step=D) == []

    assert life.reporter_subjects() == [
        "Your report was received",
        "Re: your report",
        "Your report is confirmed",
        "Your report is fixed",
        "How would you like to be credited?",
        "Your commands",
        "Planned disclosure: Monday 16 November 2026, 10:00 UTC",
        "Your report is disclosed",
    ]
    receipt = life.reporter_text(0)
    assert "Monday 09 November 2026, 10:00 UTC" in receipt  # initial assessment, 5 business days
    assert "Initial assessment: critical" in life.reporter_text(1)
    assert "fixed in 0.4.2" in life.reporter_text(3)
    assert 'We will credit you as "@jdoe"' in life.reporter_text(6)
    assert 'We credited you as "@jdoe".' in life.reporter_text(7)
    _common_reporter_checks(life)


def test_the_reporter_templates_name_the_reporter_only_when_they_chose_a_name(
    tmp_path: Path,
) -> None:
    from triaged.mail.compose import Composer

    composer = Composer(_policy_config(tmp_path))
    credits = {
        "name": {"kind": "name", "name": "Jane"},
        "anonymous": {"kind": "anonymous", "name": None},
        "none": {"kind": "none", "name": None},
    }
    for kind, credit in credits.items():
        for template in ("reporter_embargo.txt", "reporter_disclosed.txt"):
            text = composer.render(
                template,
                report_id="abcd2345",
                report={"fixed_in": "1.0.4"},
                credit=credit,
                embargo_ends="Friday 20 November 2026, 00:00 CET",
                embargo_over=False,
                previous=None,
            )
            assert ("Jane" in text) == (kind == "name")
            assert ('"reported privately"' in text) == (kind == "none")
    withdrawn = composer.render(
        "reporter_embargo.txt",
        report_id="abcd2345",
        report={},
        credit=credits["name"],
        embargo_ends=None,
        embargo_over=False,
        previous="Friday 20 November 2026, 00:00 CET",
    )
    assert "(Friday 20 November 2026, 00:00 CET)\nno longer holds" in withdrawn
    assert "Jane" not in withdrawn

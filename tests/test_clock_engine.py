"""The clock engine: clocks from a report's history, and the notices they give, with an injected
`now` (no sleeping). A small simulated runner calls the engine every few minutes the way the
clock runner does, and records when each notice went out."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from triaged.clocks.engine import (
    Clock,
    ClockPolicy,
    Happening,
    Notice,
    at_receipt,
    clocks,
    notices_due,
    parse_happenings,
)
from triaged.clocks.wording import first_deadlines, receipt_promises
from triaged.core import events as ev
from triaged.core.durations import Calendar, Duration, parse_duration
from triaged.core.timefmt import ts
from triaged.store import events
from triaged.store.db import Store

PARIS = ZoneInfo("Europe/Paris")
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # a Monday
H = timedelta(hours=1)
D = timedelta(days=1)


def policy(
    acknowledge: str | None = None,
    respond: str | None = None,
    update_every: str | None = None,
    resolve: dict[str, str] | None = None,
    remind_before: Sequence[str] = ("24h",),
    overdue_every: str = "1d",
    calendar: Calendar | None = None,
) -> ClockPolicy:
    def dur(text: str | None) -> Duration | None:
        return None if text is None else parse_duration(text)

    return ClockPolicy(
        acknowledge=dur(acknowledge),
        respond=dur(respond),
        resolve={k: parse_duration(v) for k, v in (resolve or {}).items()},
        update_every=dur(update_every),
        remind_before=tuple(parse_duration(r) for r in remind_before),
        overdue_every=parse_duration(overdue_every),
        calendar=calendar or Calendar(PARIS),
    )


def hap(at: datetime, kind: str, value: str | None = None) -> Happening:
    return Happening(at, kind, value)


def by_name(result: list[Clock]) -> dict[str, Clock]:
    return {c.name: c for c in result}


class Runner:
    """What the clock runner does each pass: derive, ask, send, remember (and record updates)."""

    def __init__(self, script: Sequence[Happening], pol: ClockPolicy) -> None:
        self.happenings = list(script)
        self.policy = pol
        self.sent: dict[str, datetime] = {}
        self.log: list[tuple[datetime, str]] = []

    def tick(self, now: datetime) -> list[Notice]:
        due = notices_due(clocks(self.happenings, self.policy, now), self.policy, now, self.sent)
        for notice in due:
            self.sent[notice.key] = now
            self.log.append((now, notice.key))
            if notice.kind == "update":
                self.happenings.append(Happening(now, "update_sent"))
        return due

    def run(self, start: datetime, end: datetime, step: timedelta = timedelta(minutes=5)) -> None:
        now = start
        while now <= end:
            self.tick(now)
            now += step


def simulate(
    script: Sequence[Happening], pol: ClockPolicy, days: float, step_minutes: int = 5
) -> list[tuple[datetime, str]]:
    runner = Runner(script, pol)
    runner.run(T0, T0 + timedelta(days=days), timedelta(minutes=step_minutes))
    return runner.log


# --- reminders, escalations, overdue repeats -------------------------------------------------


@pytest.mark.parametrize(
    ("pol", "extra"),
    [
        (policy(acknowledge="48h"), []),
        (policy(respond="48h"), []),
        (policy(resolve={"high": "48h"}), [hap(T0 + 2 * H, "severity", "high")]),
    ],
    ids=["acknowledge", "respond", "resolve"],
)
def test_reminder_escalation_and_overdue_repeats_fire_once_at_the_right_instant(
    pol: ClockPolicy, extra: list[Happening]
) -> None:
    name = next(n for n in ("acknowledge", "respond", "resolve") if pol.duration(n, "high"))
    log = simulate([hap(T0, "received"), *extra], pol, days=5, step_minutes=1)
    assert log == [
        (T0 + 24 * H, f"{name}:remind:24h"),
        (T0 + 48 * H, f"{name}:escalate"),
        (T0 + 72 * H, f"{name}:overdue:1"),
        (T0 + 96 * H, f"{name}:overdue:2"),
        (T0 + 120 * H, f"{name}:overdue:3"),
    ]


def test_every_configured_reminder_fires_and_a_reminder_before_the_start_does_not() -> None:
    pol = policy(acknowledge="24h", respond="96h", remind_before=("48h", "24h"), overdue_every="1w")
    log = simulate([hap(T0, "received"), hap(T0 + 80 * H, "confirmed")], pol, days=4)
    # acknowledge: 48h before a 24h deadline would be before the report came in; 24h before is
    # the very moment it came in: neither is a reminder.
    assert log == [
        (T0 + 24 * H, "acknowledge:escalate"),
        (T0 + 48 * H, "respond:remind:48h"),
        (T0 + 72 * H, "respond:remind:24h"),
    ]


def test_the_update_clock_sends_one_update_per_period() -> None:
    pol = policy(update_every="1w")
    log = simulate([hap(T0, "received")], pol, days=22)
    assert log == [(T0 + 7 * D, "update:1"), (T0 + 14 * D, "update:2"), (T0 + 21 * D, "update:3")]


# --- business days, time zones, DST, holidays --------------------------------------------


def test_business_days_across_a_time_zone_boundary_dst_and_a_holiday() -> None:
    cal = Calendar(PARIS, holidays=frozenset({date(2026, 11, 11)}))
    pol = policy(respond="12bd", calendar=cal)
    # Friday 22:30 UTC is already Saturday 00:30 in Paris (summer time, until the 25th): the
    # count begins on Monday the 26th at midnight, in winter time. Twelve business days, with
    # Wednesday 11 November a holiday: Thursday 12 November, midnight in Paris.
    received = datetime(2026, 10, 23, 22, 30, tzinfo=UTC)
    (clock,) = clocks([hap(received, "received")], pol, received)
    assert clock.due == datetime(2026, 11, 12, 0, 0, tzinfo=PARIS)
    assert clock.due == datetime(2026, 11, 11, 23, 0, tzinfo=UTC)
    runner = Runner([hap(received, "received")], pol)
    runner.run(clock.due - 25 * H, clock.due + H, timedelta(minutes=1))
    assert runner.log == [
        (datetime(2026, 11, 10, 23, 0, tzinfo=UTC), "respond:remind:24h"),
        (datetime(2026, 11, 11, 23, 0, tzinfo=UTC), "respond:escalate"),
    ]


def test_business_days_keep_the_wall_clock_time_over_the_dst_change() -> None:
    pol = policy(respond="5bd")
    received = datetime(2026, 10, 22, 14, 0, tzinfo=UTC)  # Thursday 16:00 in Paris (CEST)
    (clock,) = clocks([hap(received, "received")], pol, received)
    # Fri 23, Mon 26, Tue 27, Wed 28, Thu 29: 16:00 in Paris, now CET, is 15:00 UTC.
    assert clock.due == datetime(2026, 10, 29, 15, 0, tzinfo=UTC)
    assert clock.due - received == 7 * D + H


def test_business_day_reminders_and_repeats_count_business_days() -> None:
    pol = policy(respond="2bd", remind_before=("1bd",), overdue_every="1bd")
    received = datetime(2026, 11, 19, 10, 0, tzinfo=PARIS)  # Thursday
    runner = Runner([hap(received, "received")], pol)
    runner.run(received, received + 8 * D, timedelta(minutes=10))
    assert [(at.astimezone(PARIS), key) for at, key in runner.log] == [
        (datetime(2026, 11, 20, 10, 0, tzinfo=PARIS), "respond:remind:1bd"),  # Friday
        (datetime(2026, 11, 23, 10, 0, tzinfo=PARIS), "respond:escalate"),  # Monday
        (datetime(2026, 11, 24, 10, 0, tzinfo=PARIS), "respond:overdue:1"),
        (datetime(2026, 11, 25, 10, 0, tzinfo=PARIS), "respond:overdue:2"),
        (datetime(2026, 11, 26, 10, 0, tzinfo=PARIS), "respond:overdue:3"),
        (datetime(2026, 11, 27, 10, 0, tzinfo=PARIS), "respond:overdue:4"),
    ]


# --- /waiting -------------------------------------------------------------------------------


def test_waiting_pauses_respond_and_the_reporters_reply_resumes_it_later() -> None:
    pol = policy(acknowledge="48h", respond="96h")
    script = [
        hap(T0, "received"),
        hap(T0 + 10 * H, "waiting"),
        hap(T0 + 130 * H, "reporter_wrote"),  # a 120-hour pause, across the original deadline
    ]
    paused = by_name(clocks(script, pol, T0 + 100 * H))
    assert paused["respond"].paused
    assert paused["respond"].due is None
    assert paused["respond"].remaining == 86 * H
    assert not paused["acknowledge"].paused  # acknowledge never pauses
    resumed = by_name(clocks(script, pol, T0 + 131 * H))
    assert not resumed["respond"].paused
    assert resumed["respond"].due == T0 + 216 * H
    log = simulate(script, pol, days=9.5)
    assert [entry for entry in log if entry[1].startswith("respond")] == [
        (T0 + 192 * H, "respond:remind:24h"),
        (T0 + 216 * H, "respond:escalate"),
    ]
    assert (T0 + 48 * H, "acknowledge:escalate") in log


def test_waiting_after_the_deadline_silences_the_repeats_without_moving_the_deadline() -> None:
    pol = policy(respond="48h")
    script = [hap(T0, "received"), hap(T0 + 50 * H, "waiting"), hap(T0 + 5 * D, "reporter_wrote")]
    log = simulate(script, pol, days=6)
    assert log == [
        (T0 + 24 * H, "respond:remind:24h"),
        (T0 + 48 * H, "respond:escalate"),
        (T0 + 5 * D, "respond:overdue:3"),  # at once when the reporter writes: still overdue
        (T0 + 6 * D, "respond:overdue:4"),
    ]
    assert by_name(clocks(script, pol, T0 + 5 * D))["respond"].due == T0 + 48 * H


def test_waiting_shifts_a_business_day_deadline_from_the_effective_start() -> None:
    pol = policy(respond="5bd")
    received = datetime(2026, 11, 23, 10, 0, tzinfo=PARIS)  # Monday
    script = [
        hap(received, "received"),
        hap(received + D, "waiting"),
        hap(received + 3 * D, "reporter_wrote"),  # two days' pause: start as if Wednesday
    ]
    (clock,) = clocks(script, pol, received + 3 * D)
    assert clock.due == datetime(2026, 12, 2, 10, 0, tzinfo=PARIS)  # Wednesday + 5bd


def test_waiting_pauses_the_update_clock_too() -> None:
    pol = policy(update_every="1w")
    script = [hap(T0, "received"), hap(T0 + 6 * D, "waiting"), hap(T0 + 9 * D, "reporter_wrote")]
    assert clocks(script, pol, T0 + 8 * D)[0].paused
    assert simulate(script, pol, days=11) == [(T0 + 10 * D, "update:1")]


# --- met clocks, idempotence, catch-up ----------------------------------------------------


def test_a_met_clock_sends_nothing() -> None:
    pol = policy(acknowledge="48h")
    assert simulate([hap(T0, "received"), hap(T0 + 20 * H, "ack")], pol, days=6) == []
    # Met after the reminder: nothing more.
    log = simulate([hap(T0, "received"), hap(T0 + 30 * H, "ack")], pol, days=6)
    assert log == [(T0 + 24 * H, "acknowledge:remind:24h")]
    (clock,) = clocks([hap(T0, "received"), hap(T0 + 30 * H, "ack")], pol, T0 + 6 * D)
    assert clock.met_at == T0 + 30 * H
    assert notices_due([clock], pol, T0 + 6 * D, set()) == []


def test_a_clock_met_while_the_daemon_was_down_sends_nothing_when_it_is_back() -> None:
    pol = policy(acknowledge="48h", respond="96h")
    script = [hap(T0, "received"), hap(T0 + 60 * H, "ack"), hap(T0 + 90 * H, "confirmed")]
    now = T0 + 6 * D
    assert notices_due(clocks(script, pol, now), pol, now, set()) == []


def test_running_twice_at_the_same_instant_sends_nothing_twice() -> None:
    pol = policy(acknowledge="48h", respond="96h", update_every="1w")
    script = [hap(T0, "received")]
    for now in (T0 + 24 * H, T0 + 48 * H, T0 + 8 * D):
        sent: set[str] = set()
        first = notices_due(clocks(script, pol, now), pol, now, sent)
        assert first
        sent |= {n.key for n in first}
        assert len(sent) == len(first)
        assert notices_due(clocks(script, pol, now), pol, now, sent) == []


def test_a_three_day_downtime_catches_up_with_one_notice_per_due_item() -> None:
    pol = policy(acknowledge="48h", respond="96h", remind_before=("48h", "24h"))
    runner = Runner([hap(T0, "received")], pol)
    runner.run(T0, T0 + 12 * H)
    assert runner.log == []
    # Down from +12h until +5d: both reminders of each clock, acknowledge's escalation and
    # three repeats, respond's escalation and one repeat all fell due meanwhile.
    back = T0 + 5 * D
    caught_up = runner.tick(back)
    assert [(n.key, n.at) for n in caught_up] == [
        ("acknowledge:escalate", T0 + 48 * H),
        ("respond:escalate", T0 + 96 * H),
        ("acknowledge:overdue:3", T0 + 120 * H),
        ("respond:overdue:1", T0 + 120 * H),
    ]
    assert runner.tick(back + timedelta(minutes=1)) == []
    runner.run(back + timedelta(minutes=5), T0 + 6 * D + 10 * H)
    assert runner.log[4:] == [
        (T0 + 6 * D, "acknowledge:overdue:4"),
        (T0 + 6 * D, "respond:overdue:2"),
    ]


def test_a_downtime_over_several_reminders_sends_only_the_latest() -> None:
    pol = policy(respond="96h", remind_before=("72h", "48h", "24h"))
    runner = Runner([hap(T0, "received")], pol)
    runner.tick(T0 + H)
    due = runner.tick(T0 + 80 * H)
    assert [n.key for n in due] == ["respond:remind:24h"]
    runner.run(T0 + 81 * H, T0 + 95 * H)
    assert [key for _, key in runner.log] == ["respond:remind:24h"]


# --- the update clock -------------------------------------------------------------------------


def test_the_weekly_update_stops_when_the_report_is_fixed() -> None:
    pol = policy(update_every="1w")
    script = [
        hap(T0, "received"),
        hap(T0 + 3 * D, "reply"),  # a contact: the first update is due a week after it
        hap(T0 + 24 * D, "fixed"),
    ]
    log = simulate(script, pol, days=40)
    assert log == [(T0 + 10 * D, "update:1"), (T0 + 17 * D, "update:2")]
    (clock,) = clocks(script, pol, T0 + 40 * D)
    assert clock.stopped_at == T0 + 24 * D
    assert clock.updates_sent == 0  # the script itself records no update_sent


def test_updates_resume_when_a_fix_turns_out_not_to_be_one() -> None:
    pol = policy(update_every="1w")
    script = [hap(T0, "received"), hap(T0 + 2 * D, "fixed"), hap(T0 + 5 * D, "unfixed")]
    # The "fixed" mail was the last contact: the next update is a week after it.
    assert simulate(script, pol, days=10) == [(T0 + 9 * D, "update:1")]


# --- semantics --------------------------------------------------------------------------------


def test_a_first_reply_acknowledges_and_a_later_one_responds() -> None:
    pol = policy(acknowledge="48h", respond="96h")
    script = [hap(T0, "received"), hap(T0 + H, "reply")]
    clock = by_name(clocks(script, pol, T0 + 2 * H))
    assert clock["acknowledge"].met_at == T0 + H
    assert clock["respond"].met_at is None
    script.append(hap(T0 + 3 * H, "reply"))
    assert by_name(clocks(script, pol, T0 + 4 * H))["respond"].met_at == T0 + 3 * H


def test_ack_then_reply_in_one_mail_meets_both() -> None:
    pol = policy(acknowledge="48h", respond="96h")
    script = [hap(T0, "received"), hap(T0 + H, "ack"), hap(T0 + H, "reply")]
    clock = by_name(clocks(script, pol, T0 + 2 * H))
    assert clock["acknowledge"].met_at == clock["respond"].met_at == T0 + H


def test_confirming_a_new_report_meets_acknowledge_and_respond() -> None:
    pol = policy(acknowledge="48h", respond="96h")
    script = [hap(T0, "received"), hap(T0 + 5 * H, "confirmed")]
    assert all(c.met_at == T0 + 5 * H for c in clocks(script, pol, T0 + 6 * H))


def test_a_severity_change_recomputes_the_resolve_deadline() -> None:
    pol = policy(resolve={"critical": "14d", "low": "90d"})
    script = [hap(T0, "received")]
    assert clocks(script, pol, T0 + H) == []  # no severity, no resolve clock
    script.append(hap(T0 + D, "severity", "low"))
    assert clocks(script, pol, T0 + 2 * D)[0].due == T0 + 90 * D
    script.append(hap(T0 + 3 * D, "severity", "critical"))
    (clock,) = clocks(script, pol, T0 + 4 * D)
    assert clock.due == T0 + 14 * D  # still counted from the report, not from the change
    assert clock.duration == Duration(14, "d")
    script.append(hap(T0 + 5 * D, "severity", "medium"))  # not configured
    assert clocks(script, pol, T0 + 6 * D) == []


def test_a_default_resolve_duration_applies_without_a_severity() -> None:
    pol = policy(resolve={"default": "30d", "critical": "7d"})
    script = [hap(T0, "received")]
    assert clocks(script, pol, T0 + H)[0].due == T0 + 30 * D
    script.append(hap(T0 + D, "severity", "critical"))
    assert clocks(script, pol, T0 + 2 * D)[0].due == T0 + 7 * D


def test_a_terminal_state_stops_every_clock() -> None:
    pol = policy(acknowledge="48h", respond="96h", update_every="1w", resolve={"high": "30d"})
    script = [hap(T0, "received"), hap(T0 + H, "severity", "high"), hap(T0 + 2 * H, "closed")]
    result = clocks(script, pol, T0 + 60 * D)
    assert {c.name for c in result} == {"acknowledge", "respond", "resolve", "update"}
    assert all(c.stopped_at == T0 + 2 * H and c.met_at is None for c in result)
    assert simulate(script, pol, days=20) == []


def test_rejecting_meets_acknowledge_and_respond_and_stops_the_rest() -> None:
    pol = policy(acknowledge="48h", respond="96h", update_every="1w")
    script = [hap(T0, "received"), hap(T0 + H, "rejected"), hap(T0 + H, "closed")]
    clock = by_name(clocks(script, pol, T0 + 2 * H))
    assert clock["acknowledge"].met_at == clock["respond"].met_at == T0 + H
    assert clock["update"].stopped_at == T0 + H


def test_reopening_restarts_respond_resolve_and_update_under_new_keys() -> None:
    pol = policy(acknowledge="48h", respond="96h", update_every="1w", resolve={"high": "30d"})
    reopened = T0 + 10 * D
    script = [
        hap(T0, "received"),
        hap(T0 + H, "ack"),
        hap(T0 + 2 * H, "severity", "high"),
        hap(T0 + 3 * H, "reply"),
        hap(T0 + 4 * H, "closed"),
        hap(reopened, "reopened", "acknowledged"),
    ]
    clock = by_name(clocks(script, pol, reopened + H))
    assert clock["acknowledge"].cycle == 1
    assert clock["acknowledge"].met_at == T0 + H
    for name, duration in (("respond", 96 * H), ("resolve", 30 * D), ("update", 7 * D)):
        assert clock[name].cycle == 2
        assert clock[name].started == reopened
        assert clock[name].due == reopened + duration
        assert clock[name].running
    log = simulate(script, pol, days=14.5)
    assert log == [
        (reopened + 72 * H, "respond#2:remind:24h"),
        (reopened + 96 * H, "respond#2:escalate"),
    ]


def test_reopening_into_fixed_restarts_only_respond() -> None:
    pol = policy(acknowledge="48h", respond="96h", update_every="1w", resolve={"high": "30d"})
    script = [
        hap(T0, "received"),
        hap(T0 + H, "confirmed"),
        hap(T0 + 2 * H, "severity", "high"),
        hap(T0 + 2 * D, "fixed"),
        hap(T0 + 3 * D, "closed"),
        hap(T0 + 4 * D, "reopened", "fixed"),
    ]
    clock = by_name(clocks(script, pol, T0 + 5 * D))
    assert clock["resolve"].met_at == T0 + 2 * D
    assert clock["update"].stopped_at == T0 + 2 * D
    assert clock["respond"].cycle == 2 and clock["respond"].running


def test_happenings_after_now_are_not_seen() -> None:
    pol = policy(acknowledge="48h")
    script = [hap(T0, "received"), hap(T0 + 10 * H, "ack")]
    assert clocks(script, pol, T0 + 5 * H)[0].met_at is None
    assert clocks([], pol, T0) == []


# --- the four presets, on scripted reports ----------------------------------------------------
# The numbers come from the policies in ../shared/policies/.

MARMOTTE = policy(acknowledge="48h", respond="96h")
BASES = policy(acknowledge="24h", respond="48h", update_every="1w")
GENERIC = policy(acknowledge="48h")
PYNOMALY = policy(acknowledge="48h", respond="5bd", resolve={"critical": "14d"})


def test_marmotte_acknowledges_within_48_hours_and_responds_within_96() -> None:
    # Nobody does anything: the team hears about each promise before and when it is missed.
    log = simulate([hap(T0, "received")], MARMOTTE, days=4.5)
    assert log == [
        (T0 + 24 * H, "acknowledge:remind:24h"),
        (T0 + 48 * H, "acknowledge:escalate"),
        (T0 + 72 * H, "acknowledge:overdue:1"),
        (T0 + 72 * H, "respond:remind:24h"),
        (T0 + 96 * H, "acknowledge:overdue:2"),
        (T0 + 96 * H, "respond:escalate"),
    ]
    # A team that keeps the promises hears nothing.
    kept = [hap(T0, "received"), hap(T0 + 20 * H, "ack"), hap(T0 + 60 * H, "reply")]
    assert simulate(kept, MARMOTTE, days=10) == []


def test_bases_acknowledges_in_24h_responds_in_48h_and_updates_weekly() -> None:
    script = [
        hap(T0, "received"),
        hap(T0 + 3 * H, "ack"),
        hap(T0 + 30 * H, "reply"),  # the detailed response, late for the reminder
        hap(T0 + 2 * D, "confirmed"),  # the reporter is told: a contact
        hap(T0 + 2 * D, "severity", "high"),
        hap(T0 + 20 * D, "fixed"),
    ]
    log = simulate(script, BASES, days=30)
    assert log == [
        (T0 + 24 * H, "respond:remind:24h"),
        (T0 + 9 * D, "update:1"),
        (T0 + 16 * D, "update:2"),
    ]
    late = simulate([hap(T0, "received")], BASES, days=2)
    assert late == [
        (T0 + 24 * H, "acknowledge:escalate"),
        (T0 + 24 * H, "respond:remind:24h"),
        (T0 + 48 * H, "acknowledge:overdue:1"),
        (T0 + 48 * H, "respond:escalate"),
    ]


def test_generic_acknowledges_within_48_hours() -> None:
    assert [c.name for c in clocks([hap(T0, "received")], GENERIC, T0)] == ["acknowledge"]
    log = simulate([hap(T0, "received"), hap(T0 + 80 * H, "ack")], GENERIC, days=5)
    assert log == [
        (T0 + 24 * H, "acknowledge:remind:24h"),
        (T0 + 48 * H, "acknowledge:escalate"),
        (T0 + 72 * H, "acknowledge:overdue:1"),
    ]


def test_pynomaly_acknowledges_in_48h_assesses_in_5_business_days_fixes_critical_in_14d() -> None:
    received = datetime(2026, 11, 19, 15, 0, tzinfo=UTC)  # Thursday 16:00 in Paris
    script = [
        hap(received, "received"),
        hap(received + 5 * H, "ack"),
        hap(received + D, "severity", "critical"),
    ]
    clock = by_name(clocks(script, PYNOMALY, received + 2 * D))
    assert clock["acknowledge"].met_at == received + 5 * H
    # Fri 20, Mon 23, Tue 24, Wed 25, Thu 26: the weekend does not count.
    assert clock["respond"].due == datetime(2026, 11, 26, 15, 0, tzinfo=UTC)
    assert clock["resolve"].due == received + 14 * D
    runner = Runner(script, PYNOMALY)
    runner.run(received, received + 15 * D, timedelta(minutes=5))
    assert runner.log == [
        (datetime(2026, 11, 25, 15, 0, tzinfo=UTC), "respond:remind:24h"),
        (datetime(2026, 11, 26, 15, 0, tzinfo=UTC), "respond:escalate"),
        (datetime(2026, 11, 27, 15, 0, tzinfo=UTC), "respond:overdue:1"),
        (datetime(2026, 11, 28, 15, 0, tzinfo=UTC), "respond:overdue:2"),
        (datetime(2026, 11, 29, 15, 0, tzinfo=UTC), "respond:overdue:3"),
        (datetime(2026, 11, 30, 15, 0, tzinfo=UTC), "respond:overdue:4"),
        (datetime(2026, 12, 1, 15, 0, tzinfo=UTC), "respond:overdue:5"),
        (datetime(2026, 12, 2, 15, 0, tzinfo=UTC), "resolve:remind:24h"),
        (datetime(2026, 12, 2, 15, 0, tzinfo=UTC), "respond:overdue:6"),
        (datetime(2026, 12, 3, 15, 0, tzinfo=UTC), "resolve:escalate"),
        (datetime(2026, 12, 3, 15, 0, tzinfo=UTC), "respond:overdue:7"),
        (datetime(2026, 12, 4, 15, 0, tzinfo=UTC), "resolve:overdue:1"),
        (datetime(2026, 12, 4, 15, 0, tzinfo=UTC), "respond:overdue:8"),
    ]
    # The assessment and the fix in time: nothing.
    kept = [*script, hap(received + 4 * D, "confirmed"), hap(received + 10 * D, "fixed")]
    assert simulate(kept, PYNOMALY, days=20) == []


# --- events -> happenings ---------------------------------------------------------------------


def test_parse_happenings_from_the_events_table() -> None:
    store = Store(":memory:")
    at = [T0 + n * H for n in range(20)]
    with store.transaction():
        store.conn.execute(
            "INSERT INTO reports (id, title, state, created_at, updated_at)"
            " VALUES ('abcd2345', 't', 'new', ?, ?)",
            (ts(T0), ts(T0)),
        )
        rid = "abcd2345"
        events.record(store, rid, at[0], ev.RECEIVED, actor="r@example.net")
        events.record(store, rid, at[0], ev.RECEIPT, to="r@example.net")
        events.record(store, rid, at[1], ev.COMMAND, command="/ack", ok=True, result="done")
        events.record(store, rid, at[1], ev.STATE, old="new", new="acknowledged")
        events.record(store, rid, at[2], ev.SET, field="severity", old=None, new="high")
        events.record(store, rid, at[3], ev.SET, field="waiting", old=0, new=1)
        events.record(store, rid, at[4], ev.FOLLOWUP, actor="r@example.net")
        events.record(store, rid, at[4], ev.WAITING_OVER, actor="r@example.net")
        events.record(store, rid, at[5], ev.REPORTER_MAIL, template="reporter_reply.txt")
        events.record(store, rid, at[5], ev.REPLY, chars=10)
        events.record(store, rid, at[6], ev.STATE, old="acknowledged", new="confirmed")
        events.record(store, rid, at[7], ev.UPDATE_SENT)
        events.record(store, rid, at[8], ev.STATE, old="confirmed", new="fixed")
        events.record(store, rid, at[9], ev.STATE, old="fixed", new="fixing")
        events.record(store, rid, at[10], ev.STATE, old="fixing", new="fixed")
        events.record(store, rid, at[11], ev.STATE, old="fixed", new="closed")
        events.record(store, rid, at[12], ev.STATE, old="closed", new="fixed", reopened=True)
        events.record(store, rid, at[13], ev.SET, field="handler", old=None, new="a@example.org")
        events.record(store, rid, at[14], ev.STATE, old="fixed", new="disclosed")
        events.record(store, rid, at[15], ev.STATE, old="disclosed", new="closed")
        events.record(store, rid, at[16], ev.STATE, old="closed", new="acknowledged", reopened=True)
        events.record(store, rid, at[17], ev.STATE, old="acknowledged", new="rejected", reason="no")
        events.record(store, rid, at[18], ev.STATE, old="new", new="spam")
        events.record(store, rid, at[19], ev.SET, field="waiting", old=1, new=0)
    got = parse_happenings(dict(row) for row in events.of_report(store, rid))
    store.close()
    assert [(h.at, h.kind, h.value) for h in got] == [
        (at[0], "received", None),
        (at[1], "ack", None),
        (at[2], "severity", "high"),
        (at[3], "waiting", None),
        (at[4], "reporter_wrote", None),
        (at[4], "reporter_wrote", None),
        (at[5], "reply", None),
        (at[6], "confirmed", None),
        (at[7], "update_sent", None),
        (at[8], "fixed", None),
        (at[9], "unfixed", None),
        (at[10], "fixed", None),
        (at[11], "closed", None),
        (at[12], "reopened", "fixed"),
        (at[15], "closed", None),
        (at[16], "reopened", "acknowledged"),
        (at[17], "rejected", None),
        (at[17], "closed", None),
        (at[18], "closed", None),
        (at[19], "reporter_wrote", None),
    ]
    assert all(h.at.tzinfo is not None for h in got)


def test_parse_happenings_tolerates_odd_details() -> None:
    rows = [
        {"at": ts(T0), "kind": "received"},
        {"at": ts(T0), "kind": "state", "detail": "not json"},
        {"at": ts(T0), "kind": "set", "detail": "[1, 2]"},
        {"at": ts(T0), "kind": "mystery", "detail": "{}"},
    ]
    assert parse_happenings(rows) == [Happening(T0, "received")]


def test_a_receipt_promises_the_dates_the_clocks_then_run_on() -> None:
    # Friday 17:00 in Paris: two business days later is Tuesday, the same wall-clock time.
    received = datetime(2026, 11, 27, 16, 0, tzinfo=UTC)
    rules = policy(acknowledge="2bd", respond="96h", update_every="1w", resolve={"high": "14d"})
    first = at_receipt(rules, received)
    assert [c.name for c in first] == ["acknowledge", "respond", "update"]
    due = by_name(first)

    def when(moment: datetime) -> str:
        return moment.astimezone(PARIS).strftime("%a %d %b %H:%M")

    assert when(due["acknowledge"].due) == "Tue 01 Dec 17:00"  # type: ignore[arg-type]
    assert receipt_promises(first, when) == [
        "an acknowledgement from a maintainer by Tue 01 Dec 17:00",
        "a detailed response with the next steps by Tue 01 Dec 17:00",
        "an update at least every 1 week while the report is open",
    ]
    assert first_deadlines(first, when) == [
        "Acknowledge by: Tue 01 Dec 17:00",
        "Detailed response by: Tue 01 Dec 17:00",
    ]
    # The clock pass later computes the same deadlines from the stored "received" event.
    assert clocks([hap(received, "received")], rules, received + H) == first

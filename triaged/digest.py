"""The weekly digest to the team: what is open, what is due, what moved, how the clocks fare.

`build` reads the database with four queries (never one per report: the open reports through
the state index, this week's arrivals and closures, and one scan of `deadlines` aggregating
every clock's figures) and hands the rows to `figures`, a pure function that returns a
`Digest`. `render`
turns a Digest into text through the template `digest.txt`; `compose` makes one mail of it per
address in `maintainers.notify`. Of what senders wrote, only report titles reach the mail, as
template variables.

What counts
    open        reports whose state is not terminal (workflow.TERMINAL). A report's next
                deadline is the earliest `due_at` among its running clocks (met_at and
                stopped_at NULL, paused 0); it is overdue when that time is not after `now`.
                Overdue reports come first (the longest overdue first), then the others by
                state (workflow order), severity (critical first, unset last), next deadline.
    this week   the 7 days up to `now`: (now - 7 days, now].
    came in     reports created this week, but those a spam verdict still holds.
    held        reports created this week that a spam verdict of the mail server holds
                (state spam, never released): listed with their subjects, so a false
                positive is found within a week; to a maintainer, each with the address that
                releases it (/not-spam).
    blocked     messages from blocked senders stored this week (never answered).
    closed      reports with a "state" event into a terminal state this week (one line per
                report: its latest such event; a report reopened since still counts).
    clocks      acknowledge, respond and resolve over the 90 days up to `now`. A `deadlines`
                row counts when its outcome fell in the window: it was met in the window, or
                it was not met and its due time passed in the window, unless the clock was
                stopped (the report ended) before that due time. Met on time: met_at <= due_at.
                The median time to meet is over the rows met in the window, met_at - started_at
                (wall-clock time, pauses included). Rows with no due time (paused) count only
                once met. Only each clock's current cycle is kept in `deadlines`, so a cycle
                superseded by a /reopen no longer counts. The update clock is a cadence that is
                never "met" (see triaged/clocks/engine.py); a late update shows as an overdue
                deadline instead.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from triaged.clocks import engine
from triaged.config import SEVERITIES, Config
from triaged.core import events as ev
from triaged.core import workflow as wf
from triaged.core.durations import span
from triaged.core.timefmt import parse_ts, ts
from triaged.core.versions import touches_only_unsupported
from triaged.mail.auth import ReplyTokens
from triaged.mail.compose import Composer, Outgoing
from triaged.store import canaries
from triaged.store.canaries import Probe
from triaged.store.db import Store

WEEK = timedelta(days=7)
WINDOW = timedelta(days=90)
# The clocks whose share met on time is measured (the update clock is never met).
MEASURED = (engine.ACKNOWLEDGE, engine.RESPOND, engine.RESOLVE)
# How many reports the mail lists at most, per section; the counts are always complete.
LIST_LIMIT = 100
CHANGES_LIMIT = 50

_STATE_ORDER = {state: n for n, state in enumerate(wf.STATES)}
# Most severe first; unset last.
SEVERITY_ORDER: tuple[str | None, ...] = (*reversed(SEVERITIES), None)
_SEVERITY_RANK = {severity: n for n, severity in enumerate(SEVERITY_ORDER)}


class Row(Protocol):
    """A row by column name: a sqlite3.Row or a dict."""

    def __getitem__(self, key: str, /) -> Any: ...


@dataclass(frozen=True)
class OpenReport:
    id: str
    title: str
    state: str
    severity: str | None
    handler: str | None
    clock: str | None  # the clock of the next deadline
    due: datetime | None  # the next deadline: the earliest due time of its running clocks
    overdue: bool
    # Its /affects touches only version lines outside `package.supported`.
    unsupported: bool = False
    imported: bool = False  # made by an import (adopting a mailbox, `triaged import`)


@dataclass(frozen=True)
class Change:
    """A report that came in (`state`: its state now) or closed (the terminal state) this week."""

    id: str
    title: str
    state: str
    severity: str | None
    at: datetime
    reopened: bool = False  # closed this week, but open again now
    imported: bool = False  # made by an import (adopting a mailbox, `triaged import`)


@dataclass(frozen=True)
class ClockFigures:
    clock: str
    counted: int  # rows whose outcome fell in the window
    on_time: int  # of those, met by their due time
    met: int  # of those, met at all (late or not)
    median_to_meet: timedelta | None  # over the met ones

    @property
    def share(self) -> float | None:
        """The share met on time, 0..1; None when nothing counted."""
        return self.on_time / self.counted if self.counted else None


@dataclass(frozen=True)
class CanaryFigures:
    """The canary's week (triaged/service/canary.py): its probes sent, and the round trips of
    those that came back (fastest first)."""

    last_back: datetime | None  # when a probe last came back, this week or before
    sent: int
    round_trips: tuple[timedelta, ...]

    @property
    def back(self) -> int:
        return len(self.round_trips)


def canary_figures(probes: Iterable[Probe], last_back: Probe | None) -> CanaryFigures:
    """The week's probes (sent in it) and the last one back (pure)."""
    week = list(probes)
    trips = sorted(p.round_trip for p in week if p.round_trip is not None)
    return CanaryFigures(
        last_back=last_back.returned_at if last_back is not None else None,
        sent=len(week),
        round_trips=tuple(trips),
    )


@dataclass(frozen=True)
class Digest:
    now: datetime
    week_start: datetime
    window_start: datetime
    open: tuple[OpenReport, ...]  # overdue first, then by state, severity, next deadline
    counts: Mapping[tuple[str, str | None], int]  # open reports by (state, severity)
    came_in: tuple[Change, ...]  # newest first
    closed: tuple[Change, ...]  # newest first
    clocks: tuple[ClockFigures, ...]  # in MEASURED order
    held: tuple[Change, ...] = ()  # held by a spam verdict, newest first
    blocked: int = 0  # messages from blocked senders this week
    canary: CanaryFigures | None = None  # with [liveness] canary_every, or probes this week

    @property
    def overdue(self) -> tuple[OpenReport, ...]:
        return tuple(r for r in self.open if r.overdue)


# --- rows -> figures (pure) ---------------------------------------------------------------


def _open_key(report: OpenReport) -> tuple[Any, ...]:
    due = report.due.timestamp() if report.due is not None else float("inf")
    if report.overdue:
        return (0, due, report.id)
    return (
        1,
        _STATE_ORDER.get(report.state, len(_STATE_ORDER)),
        _SEVERITY_RANK.get(report.severity, len(_SEVERITY_RANK)),
        due,
        report.id,
    )


def _flag(row: Row, key: str) -> bool:
    """A 0/1 column that rows built by hand may leave out."""
    try:
        return bool(row[key])
    except (KeyError, IndexError):
        return False


def _median(values: list[int]) -> float | None:
    return statistics.median(values) if values else None


def figures(
    now: datetime,
    open_rows: Iterable[Row],
    came_in_rows: Iterable[Row],
    closed_rows: Iterable[Row],
    clock_rows: Iterable[Row],
    unsupported: Callable[[str | None], bool] = lambda _affected: False,
    held_rows: Iterable[Row] = (),
    blocked: int = 0,
) -> Digest:
    """The digest's figures from the rows `build` reads (pure: no I/O).

    open_rows:    id, title, state, severity, handler, affected, clock, due_at (the next
                  deadline or NULL) of each open report; `unsupported(affected)` flags it.
    came_in_rows: id, title, state, severity, created_at.
    closed_rows:  id, title, state (the report's now), severity, new (the terminal state), at.
    clock_rows:   clock, counted, on_time, met, seconds (how long each met one took, in
                  whole seconds, comma-separated; NULL when none was met).
    held_rows:    id, title, state, severity, created_at of the reports a spam verdict holds
                  (left out of came_in); `blocked`: messages stopped by a block.
    """
    held = [
        Change(r["id"], r["title"], r["state"], r["severity"], parse_ts(r["created_at"]))
        for r in held_rows
    ]
    held_ids = {c.id for c in held}
    opened = _open_reports(now, open_rows, unsupported)
    came_in = [
        Change(
            r["id"],
            r["title"],
            r["state"],
            r["severity"],
            parse_ts(r["created_at"]),
            imported=_flag(r, "imported"),
        )
        for r in came_in_rows
        if r["id"] not in held_ids
    ]
    closed = [
        Change(
            r["id"],
            r["title"],
            r["new"],
            r["severity"],
            parse_ts(r["at"]),
            reopened=r["state"] not in wf.TERMINAL,
        )
        for r in closed_rows
    ]
    return Digest(
        now=now,
        week_start=now - WEEK,
        window_start=now - WINDOW,
        open=tuple(opened),
        counts=dict(Counter((r.state, r.severity) for r in opened)),
        came_in=_newest_first(came_in),
        closed=_newest_first(closed),
        clocks=_clock_figures(clock_rows),
        held=_newest_first(held),
        blocked=blocked,
    )


def _open_reports(
    now: datetime, rows: Iterable[Row], unsupported: Callable[[str | None], bool]
) -> list[OpenReport]:
    """The open reports, overdue first, then by state, severity and next deadline."""
    opened = []
    for row in rows:
        due = parse_ts(row["due_at"]) if row["due_at"] else None
        opened.append(
            OpenReport(
                id=row["id"],
                title=row["title"],
                state=row["state"],
                severity=row["severity"],
                handler=row["handler"],
                clock=row["clock"] if due is not None else None,
                due=due,
                overdue=due is not None and due <= now,
                unsupported=unsupported(row["affected"]),
                imported=_flag(row, "imported"),
            )
        )
    return sorted(opened, key=_open_key)


def _newest_first(changes: Iterable[Change]) -> tuple[Change, ...]:
    return tuple(sorted(changes, key=lambda c: (c.at, c.id), reverse=True))


def _clock_figures(rows: Iterable[Row]) -> tuple[ClockFigures, ...]:
    """Each measured clock's figures, in MEASURED order (zeros for a clock with no row)."""
    by_clock = {row["clock"]: row for row in rows}
    out = []
    for name in MEASURED:
        found = by_clock.get(name)
        if found is None:
            out.append(ClockFigures(name, 0, 0, 0, None))
            continue
        seconds = found["seconds"]
        median = _median([int(n) for n in str(seconds).split(",")]) if seconds else None
        out.append(
            ClockFigures(
                clock=name,
                counted=int(found["counted"] or 0),
                on_time=int(found["on_time"] or 0),
                met=int(found["met"] or 0),
                median_to_meet=None if median is None else timedelta(seconds=round(median)),
            )
        )
    return tuple(out)


# --- the database -> rows -------------------------------------------------------------------


def _marks(values: Iterable[str]) -> tuple[str, tuple[str, ...]]:
    items = tuple(values)
    return ",".join("?" * len(items)), items


# The next deadline of each open report: one lookup by the deadlines primary key per report.
# A report made by an import has `imported` as its first event (triaged/intake/imported.py).
_IMPORTED = "(SELECT e.kind FROM events e WHERE e.report_id = r.id ORDER BY e.id LIMIT 1) = ?"

_OPEN_SQL = (
    """
SELECT r.id, r.title, r.state, r.severity, r.handler, r.affected, d.clock, d.due_at, """
    + _IMPORTED
    + """ AS imported
FROM reports r
LEFT JOIN deadlines d ON d.rowid = (
    SELECT x.rowid FROM deadlines x
    WHERE x.report_id = r.id AND x.met_at IS NULL AND x.stopped_at IS NULL
      AND x.paused = 0 AND x.due_at IS NOT NULL
    ORDER BY x.due_at, x.clock LIMIT 1)
WHERE r.state IN ({states})
"""
)

_CAME_IN_SQL = (
    "SELECT r.id, r.title, r.state, r.severity, r.created_at, "
    + _IMPORTED
    + " AS imported FROM reports r WHERE r.created_at > ? AND r.created_at <= ?"
)

_HELD_SQL = """
SELECT r.id, r.title, r.state, r.severity, r.created_at FROM reports r
WHERE r.state = ? AND r.created_at > ? AND r.created_at <= ?
  AND EXISTS (SELECT 1 FROM events e WHERE e.report_id = r.id AND e.kind = ?)
  AND NOT EXISTS (SELECT 1 FROM events e WHERE e.report_id = r.id AND e.kind = ?)
"""

_BLOCKED_SQL = "SELECT COUNT(*) AS n FROM events WHERE kind = ? AND at > ? AND at <= ?"

# Bare columns next to MAX() come from the row holding the maximum (SQLite).
_CLOSED_SQL = """
SELECT r.id, r.title, r.state, r.severity, json_extract(e.detail, '$.new') AS new, MAX(e.at) AS at
FROM events e JOIN reports r ON r.id = e.report_id
WHERE e.kind = ? AND e.at > ? AND e.at <= ?
  AND json_extract(e.detail, '$.new') IN ({states})
GROUP BY r.id
"""

# Each measured clock's figures in one scan of `deadlines` (aggregates with FILTER, no sort):
# the rows whose outcome fell in the window (see the module docstring), and the whole seconds
# each met one took, as text "3600,86400,..." for `figures` to take the median of.
_CLOCK_COLUMNS = """
    COUNT(*) FILTER (WHERE clock = :c{n}) AS counted_{n},
    TOTAL(met_at <= due_at) FILTER (WHERE clock = :c{n}) AS on_time_{n},
    COUNT(met_at) FILTER (WHERE clock = :c{n}) AS met_{n},
    group_concat(seconds) FILTER (WHERE clock = :c{n}) AS seconds_{n}"""

_CLOCKS_SQL = """
SELECT {columns}
FROM (
    SELECT clock, due_at, met_at,
        CAST(round((julianday(met_at) - julianday(started_at)) * 86400) AS INTEGER) AS seconds
    FROM deadlines
    WHERE (met_at > :since AND met_at <= :now)
       OR (met_at IS NULL AND due_at > :since AND due_at <= :now
           AND (stopped_at IS NULL OR stopped_at >= due_at))
)
"""


def build(store: Store, config: Config, now: datetime) -> Digest:
    """The digest as of `now` (aware), read from the database."""
    now_ts, week_ts, window_ts = ts(now), ts(now - WEEK), ts(now - WINDOW)
    open_marks, open_states = _marks(sorted(wf.OPEN))
    ended_marks, ended_states = _marks(sorted(wf.TERMINAL))
    open_rows = store.all(_OPEN_SQL.format(states=open_marks), (ev.IMPORTED, *open_states))
    came_in = store.all(_CAME_IN_SQL, (ev.IMPORTED, week_ts, now_ts))
    closed = store.all(
        _CLOSED_SQL.format(states=ended_marks), (ev.STATE, week_ts, now_ts, *ended_states)
    )
    held = store.all(_HELD_SQL, (wf.SPAM, week_ts, now_ts, ev.SPAM_VERDICT, ev.RECEIVED))
    blocked = store.one(_BLOCKED_SQL, (ev.BLOCKED_MAIL, week_ts, now_ts))
    columns = ",".join(_CLOCK_COLUMNS.format(n=n) for n in range(len(MEASURED)))
    params = {"since": window_ts, "now": now_ts, **{f"c{n}": c for n, c in enumerate(MEASURED)}}
    row = store.one(_CLOCKS_SQL.format(columns=columns), params)
    clock_rows = [
        {
            "clock": name,
            "counted": row[f"counted_{n}"] if row else 0,
            "on_time": row[f"on_time_{n}"] if row else 0,
            "met": row[f"met_{n}"] if row else 0,
            "seconds": row[f"seconds_{n}"] if row else None,
        }
        for n, name in enumerate(MEASURED)
    ]
    digest = figures(
        now,
        open_rows,
        came_in,
        closed,
        clock_rows,
        lambda affected: touches_only_unsupported(affected, config.package.supported),
        held_rows=held,
        blocked=int(blocked["n"]) if blocked else 0,
    )
    probes = canaries.sent_between(store, now - WEEK, now)
    if config.liveness.canary_every is None and not probes:
        return digest
    return replace(digest, canary=canary_figures(probes, canaries.last_returned(store)))


# --- rendering ------------------------------------------------------------------------------


def _severity(value: str | None) -> str:
    return value or "unset"


def context(composer: Composer, digest: Digest) -> dict[str, Any]:
    """The template's variables: display-ready strings (times in the project's time zone)."""
    listed = digest.open[:LIST_LIMIT]
    columns, table, totals = _counts_table(digest)
    return {
        "generated": composer.when(digest.now),
        "week_start": composer.when(digest.week_start),
        "window_start": composer.when(digest.window_start),
        "open_total": len(digest.open),
        "overdue_total": len(digest.overdue),
        "columns": columns,
        "table": table,
        "totals": totals,
        "overdue": [_deadline(composer, digest.now, r) for r in listed if r.overdue],
        "groups": _groups(composer, digest.now, listed),
        "unlisted": len(digest.open) - len(listed),
        "came_in": [_change(composer, c) for c in digest.came_in[:CHANGES_LIMIT]],
        "came_in_total": len(digest.came_in),
        "closed": [_change(composer, c) for c in digest.closed[:CHANGES_LIMIT]],
        "closed_total": len(digest.closed),
        "clocks": [_clock_line(figure) for figure in digest.clocks],
        "held": [_change(composer, c) for c in digest.held[:CHANGES_LIMIT]],
        "held_total": len(digest.held),
        "blocked": digest.blocked,
        "release": {},
        "canary": None if digest.canary is None else _canary_line(composer, digest.canary),
    }


def _deadline(composer: Composer, now: datetime, report: OpenReport) -> dict[str, Any]:
    """One open report's line: its next deadline and how far off (or overdue) it is."""
    due = report.due
    return {
        "id": report.id,
        "title": report.title,
        "state": report.state,
        "severity": _severity(report.severity),
        "handler": report.handler or "nobody",
        "clock": report.clock,
        "due": composer.when(due) if due is not None else None,
        "left": None if due is None else span(due - now),
        "overdue": report.overdue,
        "unsupported": report.unsupported,
        "imported": report.imported,
    }


def _groups(
    composer: Composer, now: datetime, listed: Iterable[OpenReport]
) -> list[dict[str, Any]]:
    """The reports that are not overdue, under one heading per (state, severity)."""
    groups: list[dict[str, Any]] = []
    for report in listed:
        if report.overdue:
            continue
        heading = f"{report.state}, {_severity(report.severity)}"
        if not groups or groups[-1]["heading"] != heading:
            groups.append({"heading": heading, "reports": []})
        groups[-1]["reports"].append(_deadline(composer, now, report))
    return groups


def _change(composer: Composer, item: Change) -> dict[str, Any]:
    return {
        "id": item.id,
        "title": item.title,
        "state": item.state,
        "severity": _severity(item.severity),
        "when": composer.when(item.at),
        "reopened": item.reopened,
        "imported": item.imported,
    }


def _counts_table(digest: Digest) -> tuple[list[str], list[dict[str, Any]], list[int]]:
    """Open reports by state (rows) and severity (columns): the columns, rows and totals."""
    columns = [_severity(s) for s in SEVERITY_ORDER]
    table = []
    for state in wf.STATES:
        cells = [digest.counts.get((state, s), 0) for s in SEVERITY_ORDER]
        if any(cells):
            table.append({"state": state, "cells": cells, "total": sum(cells)})
    totals = [sum(n for (_, s), n in digest.counts.items() if s == sev) for sev in SEVERITY_ORDER]
    return columns, table, totals


def _clock_line(figure: ClockFigures) -> dict[str, Any]:
    share = figure.share
    return {
        "clock": figure.clock,
        "counted": figure.counted,
        "on_time": figure.on_time,
        "met": figure.met,
        "percent": None if share is None else round(share * 100),
        "median": None if figure.median_to_meet is None else span(figure.median_to_meet),
    }


def _canary_line(composer: Composer, figures: CanaryFigures) -> dict[str, Any]:
    trips = figures.round_trips
    return {
        "last_back": composer.when(figures.last_back) if figures.last_back else None,
        "sent": figures.sent,
        "back": figures.back,
        "fastest": span(trips[0]) if trips else None,
        "median": span(trips[len(trips) // 2]) if trips else None,
        "slowest": span(trips[-1]) if trips else None,
    }


def subject(config: Config, digest: Digest) -> str:
    overdue = len(digest.overdue)
    return (
        f"{config.project.name} security digest: {len(digest.open)} open,"
        f" {overdue} overdue, {len(digest.came_in)} new, {len(digest.closed)} closed this week"
    )


def render(config: Config, digest: Digest, composer: Composer | None = None) -> str:
    """The digest's text, as the mail carries it."""
    composer = composer or Composer(config)
    return composer.render("digest.txt", report_id=None, **context(composer, digest))


def compose(
    config: Config,
    store: Store,
    composer: Composer,
    now: datetime,
    tokens: ReplyTokens | None = None,
) -> list[Outgoing]:
    """One digest mail per address in `maintainers.notify`, ready for the outbox. With
    `tokens`, a maintainer's copy gives for each report a spam verdict holds the address
    that releases it (their own reply address for that report)."""
    digest = build(store, config, now)
    variables = context(composer, digest)
    line = subject(config, digest)

    def release(address: str) -> dict[str, Any]:
        if tokens is None:
            return {}
        found = {c.id: tokens.reply_to(c.id, address) for c in digest.held[:CHANGES_LIMIT]}
        return {"release": {report: to for report, to in found.items() if to}}

    return composer.to_each(
        config.maintainers.notify,
        kind="digest",
        subject=line,
        template="digest.txt",
        context=variables,
        now=now,
        personal=release,
    )

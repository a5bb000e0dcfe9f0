"""The clocks' tables: `deadlines` (each report's clocks as last computed) and `clock_state`
(when each report next needs a clock pass). The trigger of migration 003 also writes
`clock_state`: every new event of a report sets its `next_at` to '' (look at it now)."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Protocol

from triaged.core.timefmt import ts
from triaged.store.db import Store


class ClockRow(Protocol):
    """What a stored deadline is made of (`triaged.clocks.engine.Clock` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def cycle(self) -> int: ...
    @property
    def started(self) -> datetime: ...
    @property
    def due(self) -> datetime | None: ...
    @property
    def met_at(self) -> datetime | None: ...
    @property
    def stopped_at(self) -> datetime | None: ...
    @property
    def paused(self) -> bool: ...


def replace(store: Store, report_id: str, clocks: Iterable[ClockRow]) -> None:
    """The report's deadlines become these clocks."""
    store.conn.execute("DELETE FROM deadlines WHERE report_id = ?", (report_id,))
    store.conn.executemany(
        "INSERT INTO deadlines (report_id, clock, cycle, started_at, due_at, met_at,"
        " stopped_at, paused) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                report_id,
                clock.name,
                clock.cycle,
                ts(clock.started),
                _ts(clock.due),
                _ts(clock.met_at),
                _ts(clock.stopped_at),
                int(clock.paused),
            )
            for clock in clocks
        ],
    )


def schedule(store: Store, report_id: str, at: datetime | None, now: datetime) -> None:
    """The report's next clock pass is due at `at` (None: nothing to look at)."""
    try:
        store.conn.execute(
            "INSERT INTO clock_state (report_id, next_at, computed_at) VALUES (?, ?, ?)"
            " ON CONFLICT (report_id) DO UPDATE SET next_at = excluded.next_at,"
            " computed_at = excluded.computed_at",
            (report_id, _ts(at), ts(now)),
        )
    except sqlite3.IntegrityError:
        # The report does not exist (any more): nothing to schedule.
        store.conn.execute("DELETE FROM clock_state WHERE report_id = ?", (report_id,))


def wake_all(store: Store, except_states: Collection[str]) -> None:
    """Every report not in one of these states needs a clock pass now."""
    states = tuple(except_states)
    store.conn.execute(
        "INSERT INTO clock_state (report_id, next_at) SELECT id, '' FROM reports"
        f" WHERE state NOT IN ({','.join('?' * len(states))}) AND true"
        " ON CONFLICT (report_id) DO UPDATE SET next_at = ''",
        states,
    )


def due_reports(store: Store, now: datetime, limit: int) -> list[str]:
    """The reports whose next clock pass has come, the longest waiting first."""
    rows = store.all(
        "SELECT report_id FROM clock_state WHERE next_at IS NOT NULL AND next_at <= ?"
        " ORDER BY next_at, report_id LIMIT ?",
        (ts(now), limit),
    )
    return [str(row["report_id"]) for row in rows]


def _ts(moment: datetime | None) -> str | None:
    return None if moment is None else ts(moment)

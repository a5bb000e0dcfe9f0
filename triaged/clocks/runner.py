"""The clock runner: the policy's promises kept, one pass at a time.

A pass looks only at reports whose `clock_state.next_at` has come: every new event of a report
sets it to '' (a trigger, see migration 003), and each pass sets it to the next instant at
which one of the report's clocks could give a notice (`engine.next_notice_at`). For each
such report it replays the events into clocks (triaged/clocks/engine.py), rewrites the report's
`deadlines` rows, and sends the notices due that were not sent yet: reminders, escalations and
overdue repeats to maintainers, periodic updates to the reporter. A notice's key is stored in
`notices` in the same transaction as its mail (in the outbox), so a pass run twice at the
same instant, or after a crash, sends nothing twice; a daemon that was down catches up with
one mail per due item (see the engine's docstring for which ones).

The `deadlines` rows are not only the pass's: `refresh_deadlines` rewrites a report's in the
transaction that changed it (intake does, for every message that touches a report), so what
`triaged deadlines` and the digest read is current at once; the pass still sends the notices.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from triaged.clocks import engine
from triaged.clocks.wording import (
    EMBARGO_SUBJECTS,
    MEETS,
    NOTICE_SUBJECTS,
    PUBLIC_STATES,
    label,
)
from triaged.config import Config
from triaged.core import events as ev
from triaged.core import workflow as wf
from triaged.core.durations import add, span
from triaged.core.timefmt import parse_ts
from triaged.disclosure.credit import credit_words
from triaged.mail import auth
from triaged.mail.compose import Composer, Outgoing
from triaged.service.outbox import enqueue
from triaged.store import deadlines, events, messages, notices
from triaged.store.db import Store

log = logging.getLogger(__name__)

BATCH = 200
_RETRY_AFTER_ERROR = timedelta(minutes=5)


def refresh_deadlines(
    store: Store, policy: engine.ClockPolicy, report_id: str, now: datetime
) -> list[engine.Clock]:
    """Recomputes the report's clocks from its events and stores them (inside the caller's
    transaction); sends nothing. Returns the clocks."""
    history = events.of_report(store, report_id)
    current = engine.clocks(engine.parse_happenings(dict(row) for row in history), policy, now)
    deadlines.replace(store, report_id, current)
    return current


class ClockRunner:
    """One clock pass at a time over one Store (not shared between threads)."""

    def __init__(
        self,
        config: Config,
        store: Store,
        composer: Composer | None = None,
        tokens: auth.ReplyTokens | None = None,
    ) -> None:
        """`tokens` makes the maintainers' reply addresses; without it the key is read from
        `auth.key_file` here, once (the scheduler loads it once and passes it in)."""
        self.config = config
        self.store = store
        self.composer = composer or Composer(config)
        self.policy = engine.ClockPolicy.from_config(config.policy)
        self.tokens = tokens or auth.ReplyTokens(
            auth.load_or_create_key(config.auth.key_file),
            config.project.address,
            frozenset(config.maintainers.members),
        )

    def recompute_all(self) -> None:
        """Makes the next pass look at every open report: after a start or a reload, when the
        policy may have changed."""
        terminal = tuple(wf.TERMINAL)
        with self.store.transaction():
            deadlines.wake_all(self.store, except_states=terminal)

    def run_once(self, now: datetime) -> int:
        """Looks at every report whose clocks need it; returns how many notices were sent."""
        sent = 0
        while True:
            due = deadlines.due_reports(self.store, now, BATCH)
            if not due:
                return sent
            with self.store.transaction():
                for report_id in due:
                    sent += self._guarded(report_id, now)

    def _guarded(self, report_id: str, now: datetime) -> int:
        try:
            with self.store.transaction():
                return self.report_pass(report_id, now)
        except Exception:
            # The runner boundary: one report's failure never stops the others.
            log.exception("clocks: pass over report %s failed; trying again later", report_id)
            self._schedule(report_id, now + _RETRY_AFTER_ERROR, now)
            return 0

    def report_pass(self, report_id: str, now: datetime) -> int:
        """One report: its clocks recomputed and stored, its due notices sent."""
        report = self.store.report(report_id)
        if report is None:
            self._schedule(report_id, None, now)
            return 0
        history = events.of_report(self.store, report_id)
        happenings = engine.parse_happenings(dict(row) for row in history)
        current = engine.clocks(happenings, self.policy, now)
        sent_keys = notices.sent_keys(self.store, report_id)
        due = engine.notices_due(current, self.policy, now, sent_keys)
        by_name = {clock.name: clock for clock in current}
        out: list[Outgoing] = []
        for notice in due:
            clock = by_name[notice.clock]
            if notice.kind == "update":
                mails = self._update(report, clock, history, now)
                if mails:
                    events.record(self.store, report_id, now, ev.UPDATE_SENT, key=notice.key)
                    happenings.append(engine.Happening(now, engine.UPDATE_SENT))
                else:
                    log.info("clocks: report %s has no reporter address: no update", report_id)
            else:
                if notice.clock == engine.EMBARGO:
                    mails = self._embargo_notice(report, clock, notice, now)
                else:
                    mails = self._maintainer_notice(report, clock, notice, now)
                events.record(
                    self.store, report_id, now, ev.CLOCK_NOTICE, key=notice.key,
                    clock=notice.clock, notice=notice.kind,
                )  # fmt: skip
            out += mails
            notices.mark_sent(self.store, report_id, notice.key, now)
            log.info("clocks: report %s: %s (%d mail(s))", report_id, notice.key, len(mails))
        if any(n.kind == "update" for n in due):
            current = engine.clocks(happenings, self.policy, now)
        enqueue(self.store, out, now)
        deadlines.replace(self.store, report_id, current)
        # Last: the events written above woke the report again (trigger); this says when next.
        self._schedule(report_id, engine.next_notice_at(current, self.policy, now), now)
        return len(due)

    # --- storage -------------------------------------------------------------------------

    def _schedule(self, report_id: str, at: datetime | None, now: datetime) -> None:
        deadlines.schedule(self.store, report_id, at, now)

    # --- mail ------------------------------------------------------------------------------

    def _maintainer_notice(
        self, report: sqlite3.Row, clock: engine.Clock, notice: engine.Notice, now: datetime
    ) -> list[Outgoing]:
        """A reminder goes to the handler (else every maintainer); an escalation and the
        overdue repeats go to every maintainer and to `policy.escalate_to`."""
        recipients = self._recipients(report, notice.kind, {"escalate", "overdue"})
        assert clock.due is not None
        due = self.composer.when(clock.due)
        name = label(clock, report["severity"])
        subject = NOTICE_SUBJECTS[notice.kind].format(label=name, due=due)
        command, meaning = MEETS[clock.name]
        context = {
            "notice": notice.kind,
            "label": name,
            "due": due,
            "left": span(clock.due - now),
            "started": self.composer.when(clock.started),
            "duration": clock.duration.human() if clock.duration else "",
            "title": report["title"],
            "state": report["state"],
            "severity": report["severity"],
            "handler": report["handler"],
            "command": command,
            "meaning": meaning,
            "cycle": clock.cycle,
        }
        return self._to_team(report, recipients, subject, "clock_notice.txt", context, now)

    def _embargo_notice(
        self, report: sqlite3.Row, clock: engine.Clock, notice: engine.Notice, now: datetime
    ) -> list[Outgoing]:
        """Before the embargo ends, a reminder to the handler (else every maintainer); when it
        ends, "publish now" to every maintainer; each overdue repeat also to `escalate_to`."""
        recipients = self._recipients(report, notice.kind, {"overdue"})
        assert clock.due is not None
        ends = self.composer.when(clock.due)
        subject = EMBARGO_SUBJECTS[notice.kind].format(ends=ends)
        credit = credit_words(dict(report))
        context = {
            "notice": notice.kind,
            "ends": ends,
            "left": span(clock.due - now),
            "set_at": self.composer.when(clock.started),
            "title": report["title"],
            "state": report["state"],
            "fixed_in": report["fixed_in"],
            "cves": ", ".join(json.loads(report["cves"] or "[]")),
            "handler": report["handler"],
            "credit": credit,
            "fixed": report["state"] == wf.FIXED,
        }
        return self._to_team(report, recipients, subject, "embargo_notice.txt", context, now)

    def _recipients(self, report: sqlite3.Row, notice: str, escalated: set[str]) -> list[str]:
        """A reminder goes to the report's handler, else to every maintainer; other notices
        to every maintainer, and those of the `escalated` kinds also to `escalate_to`."""
        members = self.config.maintainers.members
        if notice == "remind" and report["handler"] in members:
            return [str(report["handler"])]
        recipients = list(members)
        escalate_to = self.config.policy.escalate_to
        if notice in escalated and escalate_to and escalate_to not in recipients:
            recipients.append(escalate_to)
        return recipients

    def _to_team(
        self,
        report: sqlite3.Row,
        recipients: Sequence[str],
        subject: str,
        template: str,
        context: dict[str, Any],
        now: datetime,
    ) -> list[Outgoing]:
        """One mail per recipient; a maintainer's carries their reply token, so a reply with
        the command that meets the clock counts."""
        members = self.config.maintainers.members
        report_id = str(report["id"])
        return self.composer.to_each(
            recipients,
            kind="clock",
            subject=subject,
            template=template,
            context=context,
            now=now,
            report_id=report_id,
            reply_to=partial(self.tokens.reply_to, report_id),
            personal=lambda address: {"escalation_contact": address not in members},
        )

    def _update(
        self,
        report: sqlite3.Row,
        clock: engine.Clock,
        history: Sequence[sqlite3.Row],
        now: datetime,
    ) -> list[Outgoing]:
        """The periodic update to the reporter: the state and what changed since the last
        contact, nothing internal (no notes, handler, severity or names)."""
        reporter = report["reporter"]
        if not reporter:
            return []
        since = clock.started
        changes = []
        for event in history:
            if event["kind"] != ev.STATE or parse_ts(str(event["at"])) <= since:
                continue
            detail = ev.decode_detail(event["detail"])
            new = detail.get("new")
            if new in PUBLIC_STATES:
                changes.append(
                    f"{self.composer.when(parse_ts(str(event['at'])))}: the report was"
                    f" {PUBLIC_STATES[new]}"
                )
        every = self.policy.update_every
        first = messages.first_message_id(self.store, str(report["id"]))
        return [
            self.composer.build(
                kind="update",
                to=str(reporter),
                subject="Progress update on your report",
                template="reporter_update.txt",
                context={
                    "state": PUBLIC_STATES.get(str(report["state"]), str(report["state"])),
                    "changes": changes,
                    "since": self.composer.when(since),
                    "every": every.human() if every else "",
                    "next": self.composer.when(add(now, every, self.policy.calendar))
                    if every
                    else "",
                },
                now=now,
                report_id=str(report["id"]),
                in_reply_to=first,
                auto="auto-generated",
            )
        ]

"""Mail taken in silently: the mailbox triaged adopts at its first start, and `triaged import`.

Each message is stored and threaded as usual (by tag, by triaged's own Message-IDs, and by
References/In-Reply-To among the stored messages, so an old conversation becomes one report),
and classified by the same rules; but nothing is sent (no receipt, no notification, no
transcript), no command is run, and no clock starts: a report made this way has an `imported`
event where a new report has `received`, which the clock engine does not count. Every message
taken in gets an `imported` event naming where it came from and what it was.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from triaged.core import events as ev
from triaged.core.ids import new_report_id
from triaged.intake import classify as c
from triaged.intake.incoming import Incoming
from triaged.mail.parse import ParsedMessage
from triaged.store import events, reports
from triaged.store.db import Store

log = logging.getLogger(__name__)

Handler = Callable[[Incoming, ParsedMessage, c.Decision], str]
# Stores the message row: (incoming, parsed, kind, reason, report_id) -> its number.
SaveMessage = Callable[[Incoming, ParsedMessage | None, str, str | None, str | None], int]

# What the counts of an import are called (`counts`).
REPORTS = "reports"
THREADED = "threaded"
HELD = "held"
UNTHREADED = "unthreaded"


class SilentHandlers:
    """The per-kind handling of mail taken in silently (see the module docstring)."""

    def __init__(self, store: Store, save: SaveMessage) -> None:
        self.store = store
        self.save = save
        self.counts: Counter[str] = Counter()
        self.handlers: dict[str, Handler] = {
            c.REPORT: self._report,
            c.FOLLOWUP: self._threaded,
            c.MAINTAINER: self._threaded,
            c.AUTOMATIC: self._threaded,
            c.LOOP: self._threaded,
            c.UNVERIFIED: self._unverified,
            # Spam and blocked senders' mail of the past: kept, apart from every report.
            c.SPAM: self._apart,
            c.BLOCKED: self._apart,
        }

    def _report(self, incoming: Incoming, msg: ParsedMessage, decision: c.Decision) -> str:
        report_id = new_report_id()
        while self.store.report(report_id) is not None:
            report_id = new_report_id()
        reporter = msg.from_addr
        reports.create(
            self.store,
            report_id,
            title=msg.subject or "(no subject)",
            reporter=reporter,
            at=incoming.received,
        )
        number = self.save(incoming, msg, c.REPORT, f"imported: {decision.reason}", report_id)
        self._record(incoming, report_id, reporter, number, c.REPORT)
        self.counts[REPORTS] += 1
        return c.REPORT

    def _threaded(self, incoming: Incoming, msg: ParsedMessage, decision: c.Decision) -> str:
        # Maintainer mail of the past is a note: its commands were for then, not for now.
        report_id = decision.report_id
        number = self.save(incoming, msg, decision.kind, f"imported: {decision.reason}", report_id)
        if report_id is None:
            self.counts[UNTHREADED] += 1
            return decision.kind
        self._record(incoming, report_id, msg.from_addr, number, decision.kind)
        self.counts[THREADED] += 1
        return decision.kind

    def _unverified(self, incoming: Incoming, msg: ParsedMessage, decision: c.Decision) -> str:
        reason = f"imported: claims report {decision.report_id}: {decision.reason}"
        number = self.save(incoming, msg, c.UNVERIFIED, reason, None)
        self._record(incoming, None, msg.from_addr, number, c.UNVERIFIED)
        self.counts[HELD] += 1
        return c.UNVERIFIED

    def _apart(self, incoming: Incoming, msg: ParsedMessage, decision: c.Decision) -> str:
        number = self.save(incoming, msg, decision.kind, f"imported: {decision.reason}", None)
        self._record(incoming, None, msg.from_addr, number, decision.kind)
        self.counts[UNTHREADED] += 1
        return decision.kind

    def _record(
        self,
        incoming: Incoming,
        report_id: str | None,
        actor: str | None,
        number: int,
        kind: str,
    ) -> None:
        events.record(
            self.store,
            report_id,
            incoming.received,
            ev.IMPORTED,
            actor=actor,
            message=number,
            source=incoming.imported,
            **{"as": kind},
        )

"""What each kind of message does, once the runner has read and classified it.

`KINDS` maps each kind of `triaged.intake.classify` to its handler: a new report gets its row,
its first event, a receipt and the team's notification; a follow-up is forwarded to the team; a
maintainer's mail runs its commands; held, blocked, automatic and looping mail is stored and
counted. Each handler runs inside the message's savepoint (the runner's `ingest`), stores the
message through `save`, and returns the kind it handled. Mail taken in silently (adopted,
imported) has its own table, `triaged.intake.imported.SilentHandlers`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial

from triaged.clocks import engine, wording
from triaged.clocks.runner import refresh_deadlines
from triaged.commands.dispatch import Dispatcher
from triaged.config import Config
from triaged.core import events as ev
from triaged.core import related
from triaged.core import workflow as wf
from triaged.core.ids import new_report_id
from triaged.core.timefmt import parse_ts
from triaged.errors import CommandsRefused
from triaged.intake import classify as c
from triaged.intake import receipts
from triaged.intake.imported import SaveMessage
from triaged.intake.incoming import Incoming
from triaged.intake.notices import TeamNotices
from triaged.mail import auth
from triaged.mail.compose import Composer, Outgoing
from triaged.mail.openpgp import Keyring
from triaged.mail.parse import ParsedMessage, parse
from triaged.service.canary import Canary
from triaged.service.outbox import enqueue
from triaged.store import blocklist, events, messages, reports, terms
from triaged.store.db import Store
from triaged.views import attachment_bytes, attachment_count, report_messages

log = logging.getLogger(__name__)

TEXT_FOR_MAINTAINERS = 20_000
# How long an ended report still counts as "possibly related" to a new one.
RECENT = timedelta(days=30)

# The message as the runner reads it from stored bytes: (raw, parsed) -> decrypted, and as its
# author sent it when it came through the project's own list.
ReadMessage = Callable[[bytes, ParsedMessage], ParsedMessage]


class Handlers:
    """The per-kind rules of intake, with what they need and nothing more."""

    def __init__(
        self,
        config: Config,
        store: Store,
        composer: Composer,
        dispatcher: Dispatcher,
        notices: TeamNotices,
        *,
        key: bytes,
        keyring: Keyring | None,
        save: SaveMessage,
        read: ReadMessage,
    ) -> None:
        """`key`: the reply-token key (it signs the canary's probes); `keyring`: the daemon's
        OpenPGP keys (None: OpenPGP is off); `save` stores the message row, `read` reads a
        stored message again (both the runner's)."""
        self.config = config
        self.store = store
        self.composer = composer
        self.dispatcher = dispatcher
        self.notices = notices
        self.key = key
        self.keyring = keyring
        self.save = save
        self.read = read
        self.clock_policy = engine.ClockPolicy.from_config(config.policy)

    def handle(self, incoming: Incoming, msg: ParsedMessage, decision: c.Decision) -> str:
        """Does what a message of `decision.kind` does; returns the kind it handled."""
        return KINDS[decision.kind](self, incoming, msg, decision)

    def refresh_clocks(self, report_id: str, now: datetime) -> None:
        """The report's deadlines as of this message, in its transaction, so `triaged
        deadlines` and the digest never wait for the next clock pass. Its failure costs only
        that: the pass recomputes them within a minute."""
        try:
            with self.store.transaction():
                refresh_deadlines(self.store, self.clock_policy, report_id, now)
        except Exception:
            log.exception(
                "intake: clocks of report %s not recomputed; the clock pass will", report_id
            )

    def new_report(self, incoming: Incoming, msg: ParsedMessage, decision: c.Decision) -> str:
        now = incoming.received
        report_id, number = self._create(incoming, msg, decision, wf.NEW)
        events.record(self.store, report_id, now, ev.RECEIVED, actor=msg.from_addr, message=number)
        enqueue(self.store, self._announce(report_id, msg, arrival=now, now=now), now)
        self.refresh_clocks(report_id, now)
        log.info("intake: new report %s from %s", report_id, msg.from_addr)
        return c.REPORT

    def spam(self, incoming: Incoming, msg: ParsedMessage, decision: c.Decision) -> str:
        """A new report that our mail server judged spam: stored as a report in state spam,
        with no receipt, notification nor clock until a maintainer releases it (/not-spam)."""
        now = incoming.received
        report_id, number = self._create(incoming, msg, decision, wf.SPAM)
        events.record(
            self.store, report_id, now, ev.SPAM_VERDICT, actor=msg.from_addr, message=number,
            verdict=decision.reason,
        )  # fmt: skip
        log.info("intake: report %s from %s held as spam (%s)", report_id, msg.from_addr,
                 decision.reason)  # fmt: skip
        return c.SPAM

    def _create(
        self, incoming: Incoming, msg: ParsedMessage, decision: c.Decision, state: str
    ) -> tuple[str, int]:
        """A new report from this message, in `state`, with what it names (for related
        reports); returns its ID and the stored message's number."""
        report_id = new_report_id()
        while self.store.report(report_id) is not None:
            report_id = new_report_id()
        reports.create(
            self.store,
            report_id,
            title=msg.subject or "(no subject)",
            reporter=msg.from_addr,
            at=incoming.received,
            state=state,
        )
        number = self.save(incoming, msg, c.REPORT, decision.reason, report_id)
        # Terms are stored in clear: of a report that came encrypted, only those of what is
        # stored in clear anyway (its sender and title), never of its decrypted text.
        encrypted = msg.openpgp is not None and msg.openpgp.encrypted
        text = "" if encrypted else msg.text
        terms.add(self.store, report_id, related.terms(msg.from_addr, msg.subject, text))
        return report_id, number

    def released(self, report_id: str, now: datetime) -> list[Outgoing]:
        """The receipt and notification of a report a spam verdict held, now that a maintainer
        released it: as at its arrival (the same promised dates), built from its stored first
        message."""
        report = self.store.report(report_id)
        first = messages.first_of_report(self.store, report_id)
        if report is None or first is None or first["raw"] is None:
            return []
        msg = self.read(first["raw"], parse(first["raw"], self.config.limits))
        arrival = parse_ts(str(report["created_at"]))
        return self._announce(report_id, msg, arrival=arrival, now=now, released=True)

    def _announce(
        self,
        report_id: str,
        msg: ParsedMessage,
        *,
        arrival: datetime,
        now: datetime,
        released: bool = False,
    ) -> list[Outgoing]:
        """A new report's receipt to the reporter and notification to each maintainer, with
        the first deadlines (counted from `arrival`) and the possibly related reports."""
        reporter = msg.from_addr
        out: list[Outgoing] = []
        # The receipt and the notification name the deadlines the clocks then run on.
        first = engine.at_receipt(self.clock_policy, arrival)
        no_receipt = receipts.refusal(self.store, self.config.limits, reporter, now)
        if no_receipt is None and reporter:
            out.append(
                receipts.build(self.composer, self.keyring, report_id, reporter, msg, now, first)
            )
            events.record(self.store, report_id, now, ev.RECEIPT, to=reporter)
        else:
            log.info("intake: report %s: no receipt: %s", report_id, no_receipt)
            events.record(self.store, report_id, now, ev.RECEIPT_SUPPRESSED, reason=no_receipt)
        text, truncated = _cap(msg.text)
        forwarded = self._forwarded(report_id, msg)
        context = {
            "reporter": reporter,
            "from_text": msg.from_text,
            "received": self.composer.when(arrival),
            "subject": msg.subject,
            "due": wording.first_deadlines(first, self.composer.when),
            "receipt_sent": no_receipt is None,
            "no_receipt_reason": no_receipt,
            "attachments": _numbered(msg, 1, attached=set(forwarded)),
            "from_html": msg.text_from_html,
            "text": text,
            "truncated": truncated,
            "openpgp": msg.openpgp.describe() if msg.openpgp else None,
            "related": self._related(report_id, msg, now),
            "released": released,
        }
        out += self.composer.to_each(
            self.config.maintainers.members,
            kind="notify",
            subject=f"New report: {msg.subject or '(no subject)'}",
            template="new_report.txt",
            context=context,
            now=now,
            report_id=report_id,
            reply_to=partial(self.dispatcher.reply_to, report_id),
            attachments=list(forwarded.values()),
        )
        return out

    def _related(self, report_id: str, msg: ParsedMessage, now: datetime) -> list[related.Related]:
        """Open or recent reports that name what this one names (at most three)."""
        found = related.terms(msg.from_addr, msg.subject, msg.text)
        return related.best(terms.sharing(self.store, report_id, found, now - RECENT))

    def _forwarded(self, report_id: str, msg: ParsedMessage) -> dict[int, tuple[str, bytes]]:
        """The attachments that ride along with the notification (`intake.forward_attachments`:
        in order, each while the total stays within it), by number: (file name, bytes), read
        as `show` and `/attachments` read them (decrypted when the report came encrypted)."""
        budget = self.config.intake.forward_attachments
        if budget <= 0:
            return {}
        chosen: set[int] = set()
        for position, attachment in enumerate(msg.attachments):
            if attachment.size <= budget:
                chosen.add(position + 1)
                budget -= attachment.size
        if not chosen:
            return {}
        stored = report_messages(self.store, report_id, self.config.limits, keyring=self.keyring)
        wanted = [item for m in stored[:1] for item in m.attachments if item.index in chosen]
        data = attachment_bytes(stored[:1], wanted, self.config.limits)
        return {
            item.index: (
                f"{item.index}-{item.attachment.filename or 'attachment'}",
                data[item.index],
            )
            for item in wanted
        }

    def followup(self, incoming: Incoming, msg: ParsedMessage, decision: c.Decision) -> str:
        report_id = decision.report_id
        assert report_id is not None
        now = incoming.received
        number = self.save(incoming, msg, c.FOLLOWUP, decision.reason, report_id)
        events.record(self.store, report_id, now, ev.FOLLOWUP, actor=msg.from_addr, message=number)
        report = self.store.report(report_id)
        text, truncated = _cap(msg.text)
        earlier = attachment_count(self.store, report_id, self.config.limits, number, self.keyring)
        context = {
            "sender": msg.from_addr,
            "title": report["title"] if report else "",
            "attachments": _numbered(msg, earlier + 1),
            "from_html": msg.text_from_html,
            "text": text,
            "truncated": truncated,
            "openpgp": msg.openpgp.describe() if msg.openpgp else None,
        }
        out = self.composer.to_each(
            self.config.maintainers.members,
            kind="forward",
            subject=f"Follow-up from {msg.from_addr}",
            template="followup.txt",
            context=context,
            now=now,
            report_id=report_id,
            reply_to=partial(self.dispatcher.reply_to, report_id),
        )
        reports.end_waiting(self.store, report_id, now, actor=msg.from_addr, message=number)
        role = self.store.participants(report_id).get(msg.from_addr or "")
        out += self.dispatcher.reporter(msg, report_id, number, now, role == "reporter")
        enqueue(self.store, out, now)
        self.refresh_clocks(report_id, now)
        return c.FOLLOWUP

    def maintainer(self, incoming: Incoming, msg: ParsedMessage, decision: c.Decision) -> str:
        number = self.save(incoming, msg, c.MAINTAINER, decision.reason, decision.report_id)
        if decision.report_id is None:
            log.info("intake: maintainer mail from %s about no report stored", msg.from_addr)
            return c.MAINTAINER
        now = incoming.received
        try:
            out = self.dispatcher.maintainer(msg, decision.report_id, number, now)
        except CommandsRefused as refusal:
            out = self.notices.refused(msg, decision.report_id, number, now, refusal.reason)
        enqueue(self.store, out, now)
        self.refresh_clocks(decision.report_id, now)
        return c.MAINTAINER

    def automatic(self, incoming: Incoming, msg: ParsedMessage, decision: c.Decision) -> str:
        number = self.save(incoming, msg, c.AUTOMATIC, decision.reason, decision.report_id)
        if decision.report_id is not None:
            events.record(
                self.store,
                decision.report_id,
                incoming.received,
                ev.AUTOMATIC,
                actor=msg.from_addr,
                message=number,
                reason=decision.reason,
            )
        log.info("intake: automatic mail from %s stored: %s", msg.from_addr, decision.reason)
        return c.AUTOMATIC

    def unverified(self, incoming: Incoming, msg: ParsedMessage, decision: c.Decision) -> str:
        claimed = decision.report_id
        assert claimed is not None
        # Held apart: the message is not linked to the report it claims.
        reason = f"claims report {claimed}: {decision.reason}"
        number = self.save(incoming, msg, c.UNVERIFIED, reason, None)
        out = self.notices.held(msg, claimed, number, incoming.received)
        enqueue(self.store, out, incoming.received)
        log.warning("intake: held message from %s: %s", msg.from_addr, reason)
        return c.UNVERIFIED

    def canary(self, incoming: Incoming, msg: ParsedMessage, decision: c.Decision) -> str:
        """A probe of the canary came back: stored and counted, nothing else."""
        self.save(incoming, msg, c.CANARY, decision.reason, None)
        probe = auth.canary_probe(self.key, msg.canary)
        assert probe is not None  # the rule that classified it checked it
        Canary(self.config, self.store, self.key, self.composer).returned(probe, incoming.received)
        return c.CANARY

    def blocked(self, incoming: Incoming, msg: ParsedMessage, decision: c.Decision) -> str:
        """Mail from a blocked sender: stored and counted, never answered nor forwarded."""
        now = incoming.received
        number = self.save(incoming, msg, c.BLOCKED, decision.reason, decision.report_id)
        pattern = decision.reason.removeprefix("blocked: ")
        blocklist.count_stopped(self.store, pattern, now)
        events.record(
            self.store, decision.report_id, now, ev.BLOCKED_MAIL, actor=msg.from_addr,
            message=number, pattern=pattern,
        )  # fmt: skip
        log.info("intake: mail from %s stored, not answered (blocked: %s)", msg.from_addr, pattern)
        return c.BLOCKED

    def loop(self, incoming: Incoming, msg: ParsedMessage, decision: c.Decision) -> str:
        self.save(incoming, msg, c.LOOP, decision.reason, decision.report_id)
        log.warning("intake: mail from our own address stored and ignored (loop protection)")
        return c.LOOP


Handler = Callable[[Handlers, Incoming, ParsedMessage, c.Decision], str]
# What each kind of message does: one row per kind of `classify` (add a kind of mail: a rule
# in classify.RULES, a handler above, a row here, and one in imported.SilentHandlers).
KINDS: dict[str, Handler] = {
    c.REPORT: Handlers.new_report,
    c.FOLLOWUP: Handlers.followup,
    c.MAINTAINER: Handlers.maintainer,
    c.AUTOMATIC: Handlers.automatic,
    c.UNVERIFIED: Handlers.unverified,
    c.LOOP: Handlers.loop,
    c.SPAM: Handlers.spam,
    c.BLOCKED: Handlers.blocked,
    c.CANARY: Handlers.canary,
}


def _numbered(
    msg: ParsedMessage, first: int, attached: set[int] | None = None
) -> list[dict[str, object]]:
    """A message's attachments as the notifications list them, numbered across the report
    (`first` is the number of this message's first one); `attached`: the numbers that ride
    along with the mail."""
    return [
        {
            "index": first + n,
            "filename": a.filename,
            "content_type": a.content_type,
            "size": a.size,
            "sha256": a.sha256,
            "attached": first + n in (attached or ()),
        }
        for n, a in enumerate(msg.attachments)
    ]


def _cap(text: str) -> tuple[str, bool]:
    if len(text) <= TEXT_FOR_MAINTAINERS:
        return text, False
    return text[:TEXT_FOR_MAINTAINERS], True

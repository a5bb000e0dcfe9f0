"""The intake runner: mailbox -> stored, classified, threaded, answered.

A message's effects (its row, the report, events, outbox rows) commit together, in the one
transaction of its batch (each message in a savepoint of its own); only then is it moved out of
the mailbox. A crash in between leaves it in the mailbox, and the next pass recognises it (same
UID, or same content) and only moves it: nothing lost, nothing twice.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from triaged.clocks import engine, wording
from triaged.clocks.runner import refresh_deadlines
from triaged.commands.dispatch import Dispatcher
from triaged.config import Config
from triaged.core import events as ev
from triaged.core import related
from triaged.core import workflow as wf
from triaged.core.ids import find_tag, new_report_id, tag
from triaged.core.timefmt import parse_ts
from triaged.errors import CommandsRefused, UnsafeMessage
from triaged.intake import classify as c
from triaged.intake.imported import SilentHandlers
from triaged.intake.incoming import DUPLICATE, KNOWN, QUARANTINED, Incoming
from triaged.intake.lists import through_own_list
from triaged.intake.notices import TeamNotices
from triaged.mail import auth
from triaged.mail.compose import Composer, Outgoing
from triaged.mail.mailbox.base import Envelope, Mailbox
from triaged.mail.openpgp import Keyring, Reader
from triaged.mail.parse import ParsedMessage, parse
from triaged.service.canary import Canary
from triaged.service.outbox import enqueue
from triaged.store import blocklist, events, messages, reports, terms
from triaged.store import outbox as queue
from triaged.store.db import Store
from triaged.views import attachment_bytes, attachment_count, report_messages

log = logging.getLogger(__name__)

TEXT_FOR_MAINTAINERS = 20_000
_RETRY_FAILED_AFTER = 600.0
# Committed messages are moved out of the folder this many at a time (and at the end of each
# pass): every UID MOVE costs the server an update of the folder's index, so one per batch made
# moving a tenth of the time of a large intake (bench/).
MOVE_CHUNK = 500
# How long an ended report still counts as "possibly related" to a new one.
RECENT = timedelta(days=30)


@dataclass
class _Done:
    """UIDs of a pass whose effects are committed, not yet moved out of the folder."""

    processed: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.processed) + len(self.quarantined)


class IntakeRunner:
    def __init__(
        self,
        config: Config,
        store: Store,
        mailbox: Mailbox,
        composer: Composer | None = None,
        stop: threading.Event | None = None,
        keyring: Keyring | None = None,
        imported: str | None = None,
    ) -> None:
        """`imported`: take every message in silently, naming this source (`triaged import`)."""
        self.config = config
        self.store = store
        self.mailbox = mailbox
        self.composer = composer or Composer(config)
        # Set on SIGTERM: finish the message in hand, commit, and return.
        self.stop = stop or threading.Event()
        # Decrypts and verifies before anything reads the message (None: OpenPGP is off).
        self.reader = Reader(keyring, config.limits) if keyring is not None else None
        self.key = key = auth.load_or_create_key(config.auth.key_file)
        members = frozenset(config.maintainers.members)
        self.dispatcher = Dispatcher(
            config, store, self.composer, key, keyring, announce=self._released
        )
        self.notices = TeamNotices(
            config, store, self.composer, auth.ReplyTokens(key, config.project.address, members)
        )
        self.clock_policy = engine.ClockPolicy.from_config(config.policy)
        self.context = c.Context(
            config.project.address,
            members,
            spam_verdicts=config.intake.spam_verdicts,
            blocking=partial(blocklist.blocking, store),
            key=key,
        )
        self.uidvalidity = 0
        # UIDs whose handling failed: left in the mailbox, retried after a while, not every pass.
        self.failed: dict[str, float] = {}
        self.handlers: dict[str, Callable[[Incoming, ParsedMessage, c.Decision], str]] = {
            c.REPORT: self._new_report,
            c.FOLLOWUP: self._followup,
            c.MAINTAINER: self._maintainer,
            c.AUTOMATIC: self._automatic,
            c.UNVERIFIED: self._unverified,
            c.LOOP: self._loop,
            c.SPAM: self._spam,
            c.BLOCKED: self._blocked,
            c.CANARY: self._canary,
        }
        # Messages fetched and committed together (one transaction, one fsync).
        self.batch_size = config.mailbox.batch_size
        # False: the batches' commits are not fsynced (only for an archive: a power loss
        # undoes the last ones, and running the import again takes them in).
        self.durable = True
        self.silent = SilentHandlers(store, self._store)
        # What the messages of this runner's passes turned out to be (kinds, QUARANTINED,
        # DUPLICATE, KNOWN): `triaged import` sums them up.
        self.outcomes: Counter[str] = Counter()
        self.imported = imported
        # Mail that arrived before this moment is taken in silently (adopting a mailbox).
        self.adopt_before: datetime | None = None

    # --- the pass ---------------------------------------------------------------------------

    def start(self, now: datetime) -> None:
        """After (re)connecting: compare UIDVALIDITY with what we last saw, and see whether
        this mailbox is being adopted.

        Adopting: when a database that never stored a message first reads a mailbox, the mail
        already there (arrived before this second) is taken in silently, so that years of an
        existing security mailbox do not each get a receipt and a notification, and no clock
        escalates for the past. The moment is kept in the database: a restart in the middle
        of a large mailbox goes on taking the old mail in silently.
        """
        self.uidvalidity = self.mailbox.uidvalidity()
        name = self.mailbox.name
        last = messages.last_uidvalidity(self.store, name)
        if last is None and self.imported is None and messages.is_empty(self.store):
            before = now.replace(microsecond=0)
            with self.store.transaction():
                messages.adopt(self.store, name, before, now)
            log.info(
                "new database: mail that reached %s before %s is taken in silently"
                " (stored and threaded; no receipt, no notification, no clock)",
                name,
                before.isoformat(),
            )
        self.adopt_before = messages.adopted_before(self.store, name)
        if last is not None and last != self.uidvalidity:
            log.error(
                "UIDVALIDITY of %s changed from %s to %s: the server renumbered its messages; "
                "reconciling by Message-ID and content hash, nothing is ingested twice",
                name,
                last,
                self.uidvalidity,
            )
        if last != self.uidvalidity:
            with self.store.transaction():
                messages.set_uidvalidity(self.store, name, self.uidvalidity, now)

    def run_once(self, now: datetime) -> int:
        """Handles everything waiting in the mailbox; returns how many messages were handled.

        Looks again after a pass that handled anything: mail that arrived during the pass may
        have been announced in the answer to one of its commands (FETCH, MOVE), and IDLE only
        reports what is new after that, so it would wait for the next new message.
        """
        handled = 0
        while not self.stop.is_set():
            done = self._pass(now)
            if not done:
                break
            handled += done
        return handled

    def _pass(self, now: datetime, on_batch: Callable[[int], None] | None = None) -> int:
        """One look at the mailbox: everything pending handled, batch by batch (`on_batch`
        gets each batch's count of messages handled)."""
        monotonic = time.monotonic()
        pending = [
            env
            for env in self.mailbox.pending()
            if monotonic - self.failed.get(env.uid, -_RETRY_FAILED_AFTER) >= _RETRY_FAILED_AFTER
        ]
        if not pending:
            return 0
        known = self._known([env.uid for env in pending])
        if known:
            # Committed by an earlier pass that stopped before moving them.
            log.info("%d message(s) already stored; setting them aside", len(known))
            self.mailbox.mark_processed(sorted(known, key=_uid_order))
            self.outcomes[KNOWN] += len(known)
            if on_batch is not None:
                on_batch(len(known))
        todo = [env for env in pending if env.uid not in known]
        limit = self.config.limits.max_message_size
        oversized = [env for env in todo if env.size > limit]
        for env in oversized:
            self._oversized(env, now)
        if oversized:
            self.mailbox.quarantine([env.uid for env in oversized])
            self.outcomes[QUARANTINED] += len(oversized)
            if on_batch is not None:
                on_batch(len(oversized))
        small = [env for env in todo if env.size <= limit]
        handled = len(oversized)
        size = self.batch_size
        done = _Done()
        for start in range(0, len(small), size):
            if self.stop.is_set():
                break
            count = self._batch(small[start : start + size], now, done)
            handled += count
            if on_batch is not None:
                on_batch(count)
            if len(done) >= MOVE_CHUNK:
                self._set_aside(done)
        self._set_aside(done)
        return handled

    def _batch(self, batch: Sequence[Envelope], now: datetime, done: _Done) -> int:
        """Handles one batch in one transaction; adds the committed UIDs to `done`."""
        raws = self.mailbox.fetch([env.uid for env in batch])
        processed: list[str] = []
        quarantined: list[str] = []
        # One transaction for the batch, so one fsync instead of one per message (the largest
        # cost of intake after composing, bench/); ingest() puts each message in a savepoint of
        # its own, so a failure undoes that message only.
        with self.store.transaction(durable=self.durable):
            for env in batch:
                if self.stop.is_set():
                    break
                raw = raws.get(env.uid)
                if raw is None:
                    continue
                incoming = self._incoming(env, raw, now)
                outcome: str | None
                try:
                    outcome = self.ingest(incoming)
                except Exception:
                    # The runner boundary: one bad message never stops the daemon.
                    log.exception("intake: handling message uid %s failed; storing it", env.uid)
                    outcome = self._store_failed(incoming)
                if outcome is not None:
                    self.outcomes[outcome] += 1
                if outcome is None:
                    self.failed[env.uid] = time.monotonic()
                elif outcome == QUARANTINED:
                    quarantined.append(env.uid)
                else:
                    processed.append(env.uid)
        # Committed: only now may the messages leave the folder.
        done.processed += processed
        done.quarantined += quarantined
        return len(processed) + len(quarantined)

    def take_all(self, now: datetime, on_batch: Callable[[int], None] | None = None) -> int:
        """One pass over everything pending (for an archive, which does not change)."""
        return self._pass(now, on_batch)

    def _incoming(self, env: Envelope, raw: bytes, now: datetime) -> Incoming:
        source = self.imported
        before = self.adopt_before
        if source is None and before is not None and env.received and env.received < before:
            source = "adopted"
        received = env.received if source is not None and env.received is not None else now
        return Incoming(env.uid, raw, hashlib.sha256(raw).hexdigest(), received, source)

    def _set_aside(self, done: _Done) -> None:
        """Moves committed messages out of the folder (if this fails, the next pass finds them
        stored and only moves them)."""
        if done.processed:
            self.mailbox.mark_processed(done.processed)
            done.processed = []
        if done.quarantined:
            self.mailbox.quarantine(done.quarantined)
            done.quarantined = []

    def _known(self, uids: list[str]) -> set[str]:
        return messages.known_uids(self.store, self.mailbox.name, self.uidvalidity, uids)

    # --- one message ------------------------------------------------------------------------

    def ingest(self, incoming: Incoming) -> str:
        """Stores one message with all its effects; returns what it turned out to be."""
        same = messages.with_sha256(self.store, incoming.sha256)
        if same is not None:
            log.info(
                "uid %s is a copy of stored message %s (same content); not ingested again",
                incoming.uid,
                same,
            )
            return DUPLICATE
        try:
            msg = parse(incoming.raw, self.config.limits)
        except UnsafeMessage as exc:
            log.warning("intake: quarantined uid %s: %s", incoming.uid, exc.reason)
            with self.store.transaction():
                number = self._store(incoming, None, QUARANTINED, exc.reason, None)
                events.record(self.store, None, incoming.received, ev.QUARANTINED, message=number)
            return QUARANTINED
        if msg.message_id is not None:
            earlier = messages.with_message_id(self.store, msg.message_id)
            if earlier is not None:
                reason = f"same Message-ID as stored message {earlier}"
                log.warning("intake: uid %s replays %s; stored, no effect", incoming.uid, reason)
                with self.store.transaction():
                    self._store(incoming, msg, DUPLICATE, reason, None)
                return DUPLICATE
        msg = self._as_read(incoming.raw, msg)
        silent = incoming.imported is not None
        decision = c.classify(msg, self._thread(msg, silent), self.context)
        with self.store.transaction():
            if silent:
                return self.silent.handlers[decision.kind](incoming, msg, decision)
            kind = self.handlers[decision.kind](incoming, msg, decision)
            if kind in (c.FOLLOWUP, c.MAINTAINER) and decision.report_id is not None:
                self._refresh_clocks(decision.report_id, incoming.received)
            return kind

    def _as_read(self, raw: bytes, msg: ParsedMessage) -> ParsedMessage:
        """The message as classification, threading and commands read it: decrypted (the raw
        bytes stored stay the ciphertext as received), and as its author sent it when it came
        through the project's own list."""
        if self.reader is not None:
            msg = self.reader.open(raw, msg).msg
        return through_own_list(msg, self.config.mailbox.own_lists, self.config.project.address)

    def _refresh_clocks(self, report_id: str, now: datetime) -> None:
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

    def _thread(self, msg: ParsedMessage, silent: bool = False) -> c.Thread | None:
        """The report a message belongs to: by its tag, else by one of our own Message-IDs
        it answers; mail taken in silently also by the Message-IDs of stored messages (an old
        conversation is one report)."""
        report_id, by = find_tag(msg.subject), "tag"
        if report_id is not None and self.store.report(report_id) is None:
            report_id = None
        answered = msg.in_reply_to + msg.references
        if report_id is None:
            report_id, by = queue.report_of(self.store, answered + msg.about), "references"
        if report_id is None and silent:
            report_id, by = messages.report_of(self.store, answered), "references"
        if report_id is None:
            return None
        return c.Thread(report_id, self.store.participants(report_id), by)

    def _store(
        self,
        incoming: Incoming,
        msg: ParsedMessage | None,
        kind: str,
        reason: str | None,
        report_id: str | None,
    ) -> int:
        number = messages.add(
            self.store,
            mailbox=self.mailbox.name,
            uidvalidity=self.uidvalidity,
            uid=incoming.uid,
            message_id=msg.message_id if msg else None,
            sha256=incoming.sha256,
            size=len(incoming.raw),
            raw=incoming.raw,
            from_addr=msg.from_addr if msg else None,
            subject=msg.subject if msg else None,
            kind=kind,
            reason=reason,
            report_id=report_id,
            received=incoming.received,
            openpgp=msg.openpgp.as_json() if msg and msg.openpgp else None,
        )
        if msg is not None and msg.openpgp is not None:
            for key in msg.openpgp.keys:
                events.record(
                    self.store,
                    report_id,
                    incoming.received,
                    ev.OPENPGP_KEY,
                    actor=key.address,
                    message=number,
                    fingerprint=key.fingerprint,
                    source=key.source,
                    imported=key.imported,
                    reason=key.reason,
                )
        return number

    def _store_failed(self, incoming: Incoming) -> str | None:
        try:
            with self.store.transaction():
                number = self._store(
                    incoming, None, QUARANTINED, "internal error; see the log", None
                )
                events.record(self.store, None, incoming.received, ev.QUARANTINED, message=number)
        except Exception:
            log.exception("intake: cannot store uid %s; it stays in the mailbox", incoming.uid)
            return None
        return QUARANTINED

    def _oversized(self, env: Envelope, now: datetime) -> None:
        reason = f"too large: {env.size} bytes (limit {self.config.limits.max_message_size})"
        log.warning("intake: quarantined uid %s without loading it: %s", env.uid, reason)
        with self.store.transaction():
            number = messages.add(
                self.store,
                mailbox=self.mailbox.name,
                uidvalidity=self.uidvalidity,
                uid=env.uid,
                sha256=f"unloaded:{self.mailbox.name}:{self.uidvalidity}:{env.uid}",
                size=env.size,
                raw=None,
                kind=QUARANTINED,
                reason=reason + f"; left in {self._quarantine_place()}",
                received=now,
            )
            events.record(self.store, None, now, ev.QUARANTINED, message=number)

    def _quarantine_place(self) -> str:
        if self.imported is not None:
            return "the archive"
        return f"folder {self.config.mailbox.quarantine_folder}"

    # --- what each kind of message does -----------------------------------------------------

    def _new_report(self, incoming: Incoming, msg: ParsedMessage, decision: c.Decision) -> str:
        now = incoming.received
        report_id, number = self._create(incoming, msg, decision, wf.NEW)
        events.record(self.store, report_id, now, ev.RECEIVED, actor=msg.from_addr, message=number)
        enqueue(self.store, self._announce(report_id, msg, arrival=now, now=now), now)
        self._refresh_clocks(report_id, now)
        log.info("intake: new report %s from %s", report_id, msg.from_addr)
        return c.REPORT

    def _spam(self, incoming: Incoming, msg: ParsedMessage, decision: c.Decision) -> str:
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
        number = self._store(incoming, msg, c.REPORT, decision.reason, report_id)
        # Terms are stored in clear: of a report that came encrypted, only those of what is
        # stored in clear anyway (its sender and title), never of its decrypted text.
        encrypted = msg.openpgp is not None and msg.openpgp.encrypted
        text = "" if encrypted else msg.text
        terms.add(self.store, report_id, related.terms(msg.from_addr, msg.subject, text))
        return report_id, number

    def _released(self, report_id: str, now: datetime) -> list[Outgoing]:
        """The receipt and notification of a report a spam verdict held, now that a maintainer
        released it: as at its arrival (the same promised dates), built from its stored first
        message."""
        report = self.store.report(report_id)
        first = messages.first_of_report(self.store, report_id)
        if report is None or first is None or first["raw"] is None:
            return []
        msg = self._as_read(first["raw"], parse(first["raw"], self.config.limits))
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
        no_receipt = self._receipt_refusal(reporter, now)
        if no_receipt is None and reporter:
            out.append(self._receipt(report_id, reporter, msg, now, first))
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
        keyring = self.reader.keyring if self.reader is not None else None
        stored = report_messages(self.store, report_id, self.config.limits, keyring=keyring)
        wanted = [item for m in stored[:1] for item in m.attachments if item.index in chosen]
        data = attachment_bytes(stored[:1], wanted, self.config.limits)
        return {
            item.index: (
                f"{item.index}-{item.attachment.filename or 'attachment'}",
                data[item.index],
            )
            for item in wanted
        }

    def _receipt_refusal(self, reporter: str | None, now: datetime) -> str | None:
        """Why no receipt may go to this address now, or None when one may."""
        if not reporter:
            return "no usable From address"
        sent = queue.sent_recently(self.store, "receipt", reporter, now - timedelta(days=1))
        if sent >= self.config.limits.receipts_per_sender_per_day:
            return "this address already got a receipt in the last 24 hours"
        return None

    def _receipt(
        self,
        report_id: str,
        reporter: str,
        msg: ParsedMessage,
        now: datetime,
        clocks: Sequence[engine.Clock],
    ) -> Outgoing:
        promises = wording.receipt_promises(clocks, self.composer.when)
        # The receipt never quotes the sender's text (not even the subject): a forged From must
        # not turn triaged into a relay of someone else's words.
        return self.composer.build(
            kind="receipt",
            to=reporter,
            subject="Your report was received",
            template="receipt.txt",
            context={"tag": tag(report_id), "promises": promises, **self._receipt_openpgp(msg)},
            now=now,
            report_id=report_id,
            in_reply_to=msg.message_id,
            references=msg.references,
            auto="auto-replied",
        )

    def _receipt_openpgp(self, msg: ParsedMessage) -> dict[str, object]:
        """What the receipt says of encryption: the message could not be read (and which key
        to use), or it was read but no key of the reporter is known to answer encrypted."""
        status = msg.openpgp
        if self.reader is None or status is None or not status.encrypted:
            return {}
        keyring = self.reader.keyring
        if not status.decrypted:
            return {"unreadable": True, "project_key": keyring.project_fingerprint}
        return {"keyless": keyring.key_for(msg.from_addr) is None}

    def _followup(self, incoming: Incoming, msg: ParsedMessage, decision: c.Decision) -> str:
        report_id = decision.report_id
        assert report_id is not None
        now = incoming.received
        number = self._store(incoming, msg, c.FOLLOWUP, decision.reason, report_id)
        events.record(self.store, report_id, now, ev.FOLLOWUP, actor=msg.from_addr, message=number)
        report = self.store.report(report_id)
        text, truncated = _cap(msg.text)
        keyring = self.reader.keyring if self.reader is not None else None
        earlier = attachment_count(self.store, report_id, self.config.limits, number, keyring)
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
        return c.FOLLOWUP

    def _maintainer(self, incoming: Incoming, msg: ParsedMessage, decision: c.Decision) -> str:
        number = self._store(incoming, msg, c.MAINTAINER, decision.reason, decision.report_id)
        if decision.report_id is None:
            log.info("intake: maintainer mail from %s about no report stored", msg.from_addr)
            return c.MAINTAINER
        now = incoming.received
        try:
            out = self.dispatcher.maintainer(msg, decision.report_id, number, now)
        except CommandsRefused as refusal:
            out = self.notices.refused(msg, decision.report_id, number, now, refusal.reason)
        enqueue(self.store, out, now)
        return c.MAINTAINER

    def _automatic(self, incoming: Incoming, msg: ParsedMessage, decision: c.Decision) -> str:
        number = self._store(incoming, msg, c.AUTOMATIC, decision.reason, decision.report_id)
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

    def _unverified(self, incoming: Incoming, msg: ParsedMessage, decision: c.Decision) -> str:
        claimed = decision.report_id
        assert claimed is not None
        # Held apart: the message is not linked to the report it claims.
        reason = f"claims report {claimed}: {decision.reason}"
        number = self._store(incoming, msg, c.UNVERIFIED, reason, None)
        out = self.notices.held(msg, claimed, number, incoming.received)
        enqueue(self.store, out, incoming.received)
        log.warning("intake: held message from %s: %s", msg.from_addr, reason)
        return c.UNVERIFIED

    def _canary(self, incoming: Incoming, msg: ParsedMessage, decision: c.Decision) -> str:
        """A probe of the canary came back: stored and counted, nothing else."""
        self._store(incoming, msg, c.CANARY, decision.reason, None)
        probe = auth.canary_probe(self.key, msg.canary)
        assert probe is not None  # the rule that classified it checked it
        Canary(self.config, self.store, self.key, self.composer).returned(probe, incoming.received)
        return c.CANARY

    def _blocked(self, incoming: Incoming, msg: ParsedMessage, decision: c.Decision) -> str:
        """Mail from a blocked sender: stored and counted, never answered nor forwarded."""
        now = incoming.received
        number = self._store(incoming, msg, c.BLOCKED, decision.reason, decision.report_id)
        pattern = decision.reason.removeprefix("blocked: ")
        blocklist.count_stopped(self.store, pattern, now)
        events.record(
            self.store, decision.report_id, now, ev.BLOCKED_MAIL, actor=msg.from_addr,
            message=number, pattern=pattern,
        )  # fmt: skip
        log.info("intake: mail from %s stored, not answered (blocked: %s)", msg.from_addr, pattern)
        return c.BLOCKED

    def _loop(self, incoming: Incoming, msg: ParsedMessage, decision: c.Decision) -> str:
        self._store(incoming, msg, c.LOOP, decision.reason, decision.report_id)
        log.warning("intake: mail from our own address stored and ignored (loop protection)")
        return c.LOOP


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


def _uid_order(uid: str) -> tuple[int, str]:
    return (int(uid), "") if uid.isdigit() else (0, uid)

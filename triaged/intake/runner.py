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
from datetime import datetime
from functools import partial

from triaged.commands.dispatch import Dispatcher
from triaged.config import Config
from triaged.core import events as ev
from triaged.core.ids import find_tag
from triaged.errors import UnsafeMessage
from triaged.intake import classify as c
from triaged.intake.handlers import Handlers
from triaged.intake.imported import SilentHandlers
from triaged.intake.incoming import DUPLICATE, KNOWN, QUARANTINED, Incoming
from triaged.intake.lists import through_own_list
from triaged.intake.notices import TeamNotices
from triaged.mail import auth
from triaged.mail.compose import Composer
from triaged.mail.mailbox.base import Envelope, Mailbox
from triaged.mail.openpgp import Keyring, Reader
from triaged.mail.parse import ParsedMessage, parse
from triaged.store import blocklist, events, messages
from triaged.store import outbox as queue
from triaged.store.db import Store

log = logging.getLogger(__name__)

_RETRY_FAILED_AFTER = 600.0
# Committed messages are moved out of the folder this many at a time (and at the end of each
# pass): every UID MOVE costs the server an update of the folder's index, so one per batch made
# moving a tenth of the time of a large intake (bench/).
MOVE_CHUNK = 500


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
        self.dispatcher = Dispatcher(config, store, self.composer, key, keyring)
        self.notices = TeamNotices(
            config, store, self.composer, auth.ReplyTokens(key, config.project.address, members)
        )
        # What each kind of message does (intake/handlers.py).
        self.handlers = Handlers(
            config,
            store,
            self.composer,
            self.dispatcher,
            self.notices,
            key=key,
            keyring=keyring,
            save=self._store,
            read=self._as_read,
        )
        # A command that releases a report held as spam sends what its arrival would have.
        self.dispatcher.announce = self.handlers.released
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

    def run_once(
        self,
        now: datetime,
        clock: Callable[[], datetime] | None = None,
        after_pass: Callable[[], None] | None = None,
    ) -> int:
        """Handles everything waiting in the mailbox; returns how many messages were handled.

        Looks again after a pass that handled anything: mail that arrived during the pass may
        have been announced in the answer to one of its commands (FETCH, MOVE), and IDLE only
        reports what is new after that, so it would wait for the next new message. While mail
        keeps coming (an MTA delivering over LMTP), that goes on: each later pass takes its
        time from `clock` (default: `now` for all), and `after_pass` is told of each one (the
        daemon's watchdog counts it as progress).
        """
        handled = 0
        while not self.stop.is_set():
            done = self._pass(now)
            if after_pass is not None:
                after_pass()
            if not done:
                break
            handled += done
            if clock is not None:
                now = clock()
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
            return self.handlers.handle(incoming, msg, decision)

    def _as_read(self, raw: bytes, msg: ParsedMessage) -> ParsedMessage:
        """The message as classification, threading and commands read it: decrypted (the raw
        bytes stored stay the ciphertext as received), and as its author sent it when it came
        through the project's own list."""
        if self.reader is not None:
            msg = self.reader.open(raw, msg).msg
        return through_own_list(msg, self.config.mailbox.own_lists, self.config.project.address)

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


def _uid_order(uid: str) -> tuple[int, str]:
    return (int(uid), "") if uid.isdigit() else (0, uid)

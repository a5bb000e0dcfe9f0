"""The outbox runner: delivers outbox rows over the transport, with retries.

A row keeps its Message-ID for its whole life: a retry after a crash or an outage resends the same
message, never a new one. A row is marked sent only after the server accepted it, so a crash in
between means one resend with the same Message-ID (receivers deduplicate on it), never a loss.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import datetime, timedelta

from triaged.config import SmtpConfig
from triaged.core.timefmt import parse_ts
from triaged.errors import ConnectionFailure, PermanentFailure, TemporaryFailure
from triaged.mail.compose import Outgoing
from triaged.mail.sealing import CLEAR, ENCRYPTED, Sealer
from triaged.mail.transport import Transport
from triaged.store import outbox as queue
from triaged.store.db import Store

log = logging.getLogger(__name__)


class OutboxRunner:
    def __init__(
        self,
        store: Store,
        transport: Transport,
        config: SmtpConfig,
        sealer: Sealer | None = None,
    ) -> None:
        self.store = store
        self.transport = transport
        self.config = config
        # With OpenPGP on: decides once per row whether it leaves encrypted (see sealing.py).
        self.sealer = sealer
        self.blocked_until: datetime | None = None
        self.outage_failures = 0
        # The last temporary failure (4xx or connection trouble) of the latest pass, if any.
        self.error: str | None = None

    def retry_delay(self, attempts: int) -> timedelta:
        delay = self.config.retry_initial.seconds * 2 ** max(attempts - 1, 0)
        return timedelta(seconds=min(delay, self.config.retry_max.seconds))

    def run_once(self, now: datetime, limit: int = 500) -> int:
        """Sends the rows that are due; returns how many were accepted by the server."""
        self.error = None
        if self.blocked_until is not None and now < self.blocked_until:
            return 0
        rows = queue.due(self.store, now, limit)
        sent = 0
        for row in rows:
            raw = row["raw"]
            if self.sealer is not None and row["openpgp"] is None:
                sealed = self._seal(row, now)
                if sealed is None:
                    continue
                raw = sealed
            try:
                self.transport.send(row["envelope_from"], row["recipient"], raw)
            except ConnectionFailure as exc:
                self.error = str(exc)
                self._temporary(row, now, str(exc))
                self._outage(now, str(exc))
                break
            except TemporaryFailure as exc:
                self.error = str(exc)
                self._temporary(row, now, str(exc))
                continue
            except PermanentFailure as exc:
                self._hold(row["id"], row["attempts"] + 1, str(exc))
                log.error(
                    "outbox: %s to %s refused for good, held: %s",
                    row["message_id"],
                    row["recipient"],
                    exc,
                )
                continue
            # Not fsynced (a quarter of the time per message, bench/): a power loss may undo
            # the mark, and the message then goes out again with its Message-ID, as after a
            # crash between the server's OK and this update; a crash of the process does not.
            with self.store.transaction(durable=False):
                queue.mark_sent(self.store, row["id"], now)
            sent += 1
            if self.outage_failures:
                log.info("outbox: SMTP works again after %d failed tries", self.outage_failures)
                self.outage_failures = 0
                self.blocked_until = None
        return sent

    def _seal(self, row: sqlite3.Row, now: datetime) -> bytes | None:
        """Decides how the row leaves, once; records it (the sealed message replaces the clear
        one in the row, so a retry resends the same bytes) with any notice to the team.
        Returns what to send, or None when the row is held or withheld."""
        assert self.sealer is not None
        decision = self.sealer.decide(self.store, row, now)
        sending = decision.action in (ENCRYPTED, CLEAR)
        with self.store.transaction():
            queue.sealed(
                self.store,
                row["id"],
                decision.action,
                decision.raw,
                sending,
                decision.reason or None,
            )
            enqueue(self.store, decision.notices, now)
        return decision.raw if sending else None

    def _outage(self, now: datetime, error: str) -> None:
        self.outage_failures += 1
        self.blocked_until = now + self.retry_delay(self.outage_failures)
        # One line per outage, not one per retry.
        if self.outage_failures == 1:
            log.warning("outbox: cannot deliver, will retry with backoff: %s", error)

    def _temporary(self, row: sqlite3.Row, now: datetime, error: str) -> None:
        attempts = row["attempts"] + 1
        age = now - parse_ts(row["created_at"])
        if age > timedelta(seconds=self.config.give_up_after.seconds):
            self._hold(row["id"], attempts, f"gave up after {attempts} tries: {error}")
            log.error("outbox: %s held after %d tries: %s", row["message_id"], attempts, error)
            return
        with self.store.transaction():
            queue.retry_at(self.store, row["id"], attempts, now + self.retry_delay(attempts), error)

    def _hold(self, row_id: int, attempts: int, error: str) -> None:
        with self.store.transaction():
            queue.hold(self.store, row_id, attempts, error)

    def next_due(self) -> datetime | None:
        due = queue.next_due(self.store)
        if due is None:
            return None
        if self.blocked_until is not None and self.blocked_until > due:
            return self.blocked_until
        return due


def enqueue(store: Store, outgoing: list[Outgoing], now: datetime) -> None:
    """Writes messages to the outbox; call inside the transaction of the change causing them."""
    for out in outgoing:
        queue.add(
            store,
            message_id=out.message_id,
            report_id=out.report_id,
            kind=out.kind,
            envelope_from=out.envelope_from,
            recipient=out.recipient,
            raw=out.raw,
            at=now,
        )

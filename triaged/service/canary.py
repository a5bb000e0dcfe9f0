"""The canary: proof that mail sent to the project's address still reaches triaged.

Reports go missing upstream of triaged (a spam filter, a full quota, an alias someone removed, a
moderation queue) and nothing in triaged would notice. With `[liveness] canary_every` set, the
scheduler sends a probe that often: a mail from the project's address to itself, through the
outbox and the configured SMTP server, like any other. Its `X-Triaged-Canary` header carries a
random probe ID and an HMAC of it under the reply-token key (triaged.mail.auth.canary_token), so
nobody can forge one to hide that mail stopped arriving. Intake recognises a genuine probe
before any other rule (triaged.intake.classify), stores it, and consumes it silently: never a
report, never forwarded, only counted here.

A probe not back within `canary_alert_after` is an outage of its own (liveness, name "canary",
started when that probe was sent): one alert to the team, STATUS= says so, and the first probe
that comes back ends it with one "Recovered" mail. While the mailbox itself cannot be read, its
own outage speaks for it and the canary stays quiet. A probe that comes back twice (a copy, or a
replay) counts once.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

from triaged.config import Config
from triaged.mail import auth
from triaged.mail.compose import Composer, Outgoing
from triaged.service.liveness import CANARY, MAILBOX, Liveness, Outage
from triaged.service.outbox import enqueue
from triaged.store import canaries
from triaged.store.canaries import Probe
from triaged.store.db import Store

log = logging.getLogger(__name__)

SUBJECT = "triaged canary: delivery check"


def check_every(config: Config) -> timedelta | None:
    """How often the scheduler looks (sends a probe when one is due, alerts a missing one):
    often enough for both durations, at least once a minute."""
    liveness = config.liveness
    if liveness.canary_every is None:
        return None
    shortest = min(liveness.canary_every.seconds, liveness.canary_alert_after.seconds, 60)
    return timedelta(seconds=max(shortest, 1))


class Canary:
    """Sends probes and takes them back, over one Store (inside its caller's transactions)."""

    def __init__(
        self,
        config: Config,
        store: Store,
        key: bytes,
        composer: Composer | None = None,
        on_queued: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.key = key
        self.composer = composer or Composer(config)
        self.liveness = Liveness(config, store, self.composer, on_queued)

    # --- sending ------------------------------------------------------------------------------

    def probe(self, now: datetime) -> tuple[str, Outgoing]:
        """A new probe (its ID and its mail), recorded as sent at `now`; the caller sends the
        mail (through the outbox, or at once for `triaged check --canary`) in the same
        transaction."""
        probe_id = secrets.token_hex(16)
        address = self.config.project.address
        mail = self.composer.build(
            kind="canary",
            to=address,
            subject=SUBJECT,
            template="canary.txt",
            context={},
            now=now,
            auto="auto-generated",
            headers={auth.CANARY_HEADER: auth.canary_token(self.key, probe_id)},
        )
        canaries.record_sent(self.store, probe_id, mail.message_id, now)
        return probe_id, mail

    def run_once(self, now: datetime) -> list[Outgoing]:
        """The scheduler's look: alerts a probe missing too long, and sends a probe when one is
        due (`canary_every` after the last); returns the mail queued."""
        every = self.config.liveness.canary_every
        if every is None:
            return []
        self.check(now)
        last = canaries.last_sent(self.store)
        if last is not None and now - last.sent_at < timedelta(seconds=every.seconds):
            return []
        with self.store.transaction():
            probe_id, mail = self.probe(now)
            enqueue(self.store, [mail], now)
        log.debug("canary: probe %s sent", probe_id)
        return [mail]

    def check(self, now: datetime) -> Outage | None:
        """Starts (or goes on with) the canary outage while a probe is missing too long."""
        missing = canaries.missing_since(self.store)
        wait = timedelta(seconds=self.config.liveness.canary_alert_after.seconds)
        if missing is None or now - missing.sent_at < wait:
            return self.liveness.outage(CANARY)
        if self.liveness.outage(MAILBOX) is not None:
            # The mailbox cannot be read: its own outage says so, and the probe waits there.
            return self.liveness.outage(CANARY)
        error = (
            f"a probe sent {missing.sent_at.strftime('%Y-%m-%d %H:%M:%S')} UTC to"
            f" {self.config.project.address} has not come back through the mailbox"
        )
        return self.liveness.failed(CANARY, now, error, since=missing.sent_at)

    # --- taking back ---------------------------------------------------------------------------

    def returned(self, probe_id: str, now: datetime) -> Probe | None:
        """A genuine probe came back through intake (inside its transaction): counted, and an
        outage, if any, is over. None when it was back already (or is unknown)."""
        probe = canaries.mark_returned(self.store, probe_id, now)
        if probe is None:
            log.info("canary: probe %s came back again (or is unknown); counted once", probe_id)
            return None
        log.info(
            "canary: probe %s back after %.1fs", probe_id, (now - probe.sent_at).total_seconds()
        )
        self.liveness.succeeded(CANARY, now)
        return probe

"""Liveness: outages of the mailbox, of SMTP and of the whole path of mail (the canary), told
to the team once each.

The daemon's loops report how their tries went: `failed(name, now, error)` when the mailbox
could not be read or the SMTP server did not take mail, `succeeded(name, now)` when it worked;
the canary (triaged/service/canary.py) reports a probe missing too long, and one come back.
The first failure starts an outage. Its start is kept in the `outages` table, so a restart
during an outage (the watchdog's, say) neither moves the start nor tells the team again.

Once an outage has lasted `[liveness] mailbox_alert_after` / `smtp_alert_after` /
`canary_alert_after` (counted from when the missing probe was sent), the team
(`maintainers.notify`) gets one mail through the outbox; during an SMTP outage it waits there
with everything else and goes out when the server takes mail again. When an outage that was
told ends, one more short mail says so. Server error text goes into the body, never a header.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from triaged.config import Config
from triaged.core.durations import span
from triaged.core.text import CONTROL_CHARS
from triaged.core.timefmt import parse_ts
from triaged.mail.compose import Composer, Outgoing
from triaged.service.outbox import enqueue
from triaged.store import outages
from triaged.store import outbox as queue
from triaged.store.db import Store

log = logging.getLogger(__name__)

MAILBOX = "mailbox"
SMTP = "smtp"
# Mail to the project's address does not come back (triaged/service/canary.py).
CANARY = "canary"
NAMES = (MAILBOX, SMTP, CANARY)
OUTAGE = "outage"
OUTAGE_OVER = "outage_over"

_SUBJECTS = {
    (OUTAGE, MAILBOX): "Alert: the security mailbox cannot be read",
    (OUTAGE, SMTP): "Alert: mail cannot be sent",
    (OUTAGE_OVER, MAILBOX): "Recovered: the security mailbox can be read again",
    (OUTAGE_OVER, SMTP): "Recovered: mail can be sent again",
    (OUTAGE, CANARY): "Alert: mail to the security address is not arriving",
    (OUTAGE_OVER, CANARY): "Recovered: mail to the security address arrives again",
}
_WHAT = {MAILBOX: "mailbox", SMTP: "SMTP", CANARY: "canary"}
MAX_ERROR = 1000
_CONTROL = re.compile(f"[{CONTROL_CHARS}]+")


@dataclass(frozen=True)
class Outage:
    name: str
    started_at: datetime
    last_error: str
    alerted_at: datetime | None

    def summary(self) -> str:
        """For STATUS=: "since 2026-05-04 09:12:03 UTC, maintainers alerted"."""
        text = f"since {self.started_at.strftime('%Y-%m-%d %H:%M:%S')} UTC"
        return text + (", maintainers alerted" if self.alerted_at is not None else "")


def clean_error(error: str) -> str:
    """One line, of bounded length: the error as stored, shown in STATUS= and in the mail."""
    text = _CONTROL.sub(" ", error).strip() or "unknown error"
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 3] + "..."


class Liveness:
    """Records outages in `store` and queues the team's mail about them in its outbox.

    `on_queued` is called after mail was queued (the daemon wakes its outbox worker with it).
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        composer: Composer | None = None,
        on_queued: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.composer = composer or Composer(config)
        self.on_queued = on_queued

    def alert_after(self, name: str) -> timedelta:
        settings = self.config.liveness
        duration = {
            MAILBOX: settings.mailbox_alert_after,
            SMTP: settings.smtp_alert_after,
            CANARY: settings.canary_alert_after,
        }[name]
        return timedelta(seconds=duration.seconds)

    # --- reads ---------------------------------------------------------------------------

    def outage(self, name: str) -> Outage | None:
        row = outages.get(self.store, name)
        return None if row is None else _outage(row)

    def outages(self) -> list[Outage]:
        return [_outage(row) for row in outages.every(self.store)]

    # --- what the loops report -----------------------------------------------------------

    def failed(self, name: str, now: datetime, error: str, since: datetime | None = None) -> Outage:
        """A try failed: starts the outage (or goes on with it); alerts once it is due. A new
        outage starts at `since` when the failure began before it was seen (the canary's)."""
        _check_name(name)
        error = clean_error(error)
        with self.store.transaction():
            if self.outage(name) is None:
                outages.begin(self.store, name, since or now, error)
            outages.still_failing(self.store, name, now, error)
            outage = self.outage(name)
            assert outage is not None
            outage, queued = self._alert_if_due(outage, now)
        self._queued(queued)
        return outage

    def succeeded(self, name: str, now: datetime) -> Outage | None:
        """A try worked: ends the outage, if there was one, and returns it."""
        _check_name(name)
        if self.outage(name) is None:  # the usual case: a read, no write lock
            return None
        with self.store.transaction():
            outage = self.outage(name)
            if outage is None:
                return None
            outages.end(self.store, name)
            mail = []
            if outage.alerted_at is not None:
                if name == SMTP:
                    # An alert still waiting (retried with backoff) goes out before the all-clear.
                    queue.hurry(self.store, OUTAGE, now)
                mail = self._mail(OUTAGE_OVER, outage, now)
                enqueue(self.store, mail, now)
        lasted = span(now - outage.started_at)
        told = "telling the maintainers" if mail else "no alert had been sent"
        log.info("%s outage over after %s; %s", _WHAT[name], lasted, told)
        self._queued(bool(mail))
        return outage

    def check(self, now: datetime) -> int:
        """Alerts every outage that has now lasted long enough; returns how many."""
        alerted = 0
        for outage in self.outages():
            if outage.alerted_at is not None or not self._due(outage, now):
                continue
            with self.store.transaction():
                # Read again inside the transaction: the other loop may have ended it, or
                # alerted it, in the meantime.
                current = self.outage(outage.name)
                queued = current is not None and self._alert_if_due(current, now)[1]
            alerted += queued
            self._queued(queued)
        return alerted

    # --- inside ----------------------------------------------------------------------------

    def _alert_if_due(self, outage: Outage, now: datetime) -> tuple[Outage, bool]:
        """Inside a transaction, with `outage` read in it (so two loops never both alert):
        queues the alert when it is due."""
        name = outage.name
        if outage.alerted_at is not None or not self._due(outage, now):
            return outage, False
        enqueue(self.store, self._mail(OUTAGE, outage, now), now)
        outages.mark_alerted(self.store, name, now)
        log.warning(
            "%s outage since %s UTC: telling the maintainers (%s)",
            _WHAT[name],
            outage.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            ", ".join(self.config.maintainers.notify),
        )
        return Outage(name, outage.started_at, outage.last_error, now), True

    def _due(self, outage: Outage, now: datetime) -> bool:
        return now - outage.started_at >= self.alert_after(outage.name)

    def _mail(self, kind: str, outage: Outage, now: datetime) -> list[Outgoing]:
        endpoint = {
            MAILBOX: self.config.mailbox.endpoint.display(),
            SMTP: self.config.smtp.endpoint.display(),
            CANARY: self.config.project.address,
        }[outage.name]
        context = {
            "name": outage.name,
            "endpoint": endpoint,
            "since": self.composer.when(outage.started_at),
            "until": self.composer.when(now),
            "written": self.composer.when(now),
            "lasted": span(now - outage.started_at),
            "alert_after": span(self.alert_after(outage.name)),
            "error": outage.last_error,
            "waiting": queue.backlog(self.store),
        }
        return self.composer.to_each(
            self.config.maintainers.notify,
            kind=kind,
            subject=_SUBJECTS[kind, outage.name],
            template=f"{kind}.txt",
            context=context,
            now=now,
        )

    def _queued(self, queued: bool) -> None:
        if queued and self.on_queued is not None:
            self.on_queued()


def _check_name(name: str) -> None:
    if name not in NAMES:
        raise ValueError(f"unknown outage {name!r} (one of {', '.join(NAMES)})")


def _outage(row: sqlite3.Row) -> Outage:
    return Outage(
        name=row["name"],
        started_at=parse_ts(row["started_at"]),
        last_error=row["last_error"] or "",
        alerted_at=parse_ts(row["alerted_at"]) if row["alerted_at"] else None,
    )

"""Notices to the team about untrusted mail, with a limit: forged mail must not flood the team.

Two kinds of mail tell the maintainers about a sender triaged does not trust: a held message (a
non-participant used a report's tag) and refused commands (the sender could not prove to be a
maintainer). Anyone who knows a report's tag can send either. So, per report, at most
`[limits] notices_per_report_per_hour` of them go out in any hour; the others are folded:
recorded (the message is stored, its event says `notified: false`) and listed in one summary
per report, sent by `summaries` once the oldest folded one is an hour old. Nothing is lost:
`triaged show` counts every held and refused message of a report.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from triaged.config import Config
from triaged.core import events as ev
from triaged.mail.auth import ReplyTokens
from triaged.mail.compose import Composer, Outgoing
from triaged.mail.parse import ParsedMessage
from triaged.store import events
from triaged.store.db import Store

log = logging.getLogger(__name__)

WINDOW = timedelta(hours=1)
# Lines of one summary; the rest are counted ("and 12 more").
SUMMARY_LINES = 100


class TeamNotices:
    """Held-message and refused-command notices for one intake runner."""

    def __init__(self, config: Config, store: Store, composer: Composer, tokens: ReplyTokens):
        self.config = config
        self.store = store
        self.composer = composer
        self.tokens = tokens

    def held(self, msg: ParsedMessage, claimed: str, number: int, now: datetime) -> list[Outgoing]:
        """A non-participant wrote with the tag of report `claimed` (the message is stored
        apart as `number`)."""
        notify = self._may_notify(claimed, now)
        events.record(
            self.store, None, now, ev.HELD, actor=msg.from_addr, message=number,
            claimed=claimed, notified=notify,
        )  # fmt: skip
        if not notify:
            log.info("report %s: held-message notice folded into the next summary", claimed)
            return []
        return self.composer.to_each(
            self.config.maintainers.members,
            kind="held",
            subject=f"Held: a non-participant wrote about report {claimed}",
            template="held.txt",
            context={
                "sender": msg.from_addr,
                "from_text": msg.from_text,
                "subject": msg.subject,
                "message_number": number,
            },
            now=now,
            report_id=claimed,
            reply_to=partial(self.tokens.reply_to, claimed),
        )

    def refused(
        self, msg: ParsedMessage, report_id: str, number: int, now: datetime, reason: str
    ) -> list[Outgoing]:
        """Commands of message `number` about `report_id` were refused: the sender proved
        nothing. The notice goes to the maintainers on record, never to the sender."""
        notify = self._may_notify(report_id, now)
        events.record(
            self.store, report_id, now, ev.COMMANDS_REFUSED, actor=msg.from_addr,
            message=number, reason=reason, notified=notify,
        )  # fmt: skip
        if not notify:
            log.info("report %s: refused-commands notice folded into the next summary", report_id)
            return []
        auth = self.config.auth
        return self.composer.to_each(
            self.config.maintainers.notify,
            kind="refused",
            subject="Refused commands",
            template="refused.txt",
            context={
                "sender": msg.from_addr,
                "subject": msg.subject,
                "message_number": number,
                "reason": reason,
                "dmarc": auth.authserv_id if "dmarc" in auth.proofs else None,
            },
            now=now,
            report_id=report_id,
            reply_to=partial(self.tokens.reply_to, report_id),
        )

    def _may_notify(self, report_id: str, now: datetime) -> bool:
        sent = events.untrusted_notified_since(self.store, report_id, now - WINDOW)
        return sent < self.config.limits.notices_per_report_per_hour


def summaries(
    config: Config, store: Store, composer: Composer, now: datetime, tokens: ReplyTokens
) -> list[Outgoing]:
    """The summary of each report whose oldest folded notice is an hour old: one mail to each
    maintainer listing every folded notice of the report so far."""
    out: list[Outgoing] = []
    pending = events.untrusted_folded(store, since=now - timedelta(days=7))
    by_report: dict[str, list[dict[str, Any]]] = {}
    for row in pending:
        by_report.setdefault(str(row["about"]), []).append(row)
    for report_id, rows in sorted(by_report.items()):
        if now - rows[0]["at"] < WINDOW or store.report(report_id) is None:
            continue
        lines = [_line(row, composer) for row in rows[:SUMMARY_LINES]]
        out += composer.to_each(
            config.maintainers.members,
            kind="notices_summary",
            subject=f"{len(rows)} more notice(s) about untrusted mail",
            template="notices_summary.txt",
            context={
                "lines": lines,
                "more": max(0, len(rows) - SUMMARY_LINES),
                "count": len(rows),
                "limit": config.limits.notices_per_report_per_hour,
            },
            now=now,
            report_id=report_id,
            reply_to=partial(tokens.reply_to, report_id),
        )
        events.record(
            store, report_id, now, ev.NOTICES_SUMMARY, through=rows[-1]["id"], count=len(rows)
        )
        log.info("report %s: summary of %d folded notice(s) queued", report_id, len(rows))
    return out


def _line(row: dict[str, Any], composer: Composer) -> dict[str, Any]:
    what = "held message" if row["kind"] == ev.HELD else "refused commands"
    return {
        "at": composer.when(row["at"]),
        "what": what,
        "sender": row["actor"],
        "message_number": row["message"],
        "reason": row["detail"].get("reason"),
    }

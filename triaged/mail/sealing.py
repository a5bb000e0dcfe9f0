"""How each outgoing mail leaves when OpenPGP is on: encrypted, in clear, withheld, or held.

The outbox runner asks once per row, before its first delivery attempt (`Sealer.decide`):

- to anyone with a key triaged holds for their address (a maintainer's configured key, a
  reporter's key from their mail): encrypted to that key and the project key, signed by the
  project key (PGP/MIME, `openpgp.seal`); the stored copy is replaced by the sealed one;
- to a reporter or participant who wrote encrypted about the report, without a key: held, and
  the team told; only the receipt (which by design quotes nothing) goes in clear;
- to a maintainer without a key, with `encrypted_to_maintainers = "require"`: the mails that
  carry a sender's text (`CONTENT_KINDS`) about a report that holds encrypted mail are
  withheld, and the maintainer gets a notice in their place;
- anything that must be encrypted and cannot be (gpg fails, the key expired): held, and the
  team told. Never sent in clear by accident.

The notices this module writes carry no text of any report, so they are never held or
withheld themselves (if they cannot be encrypted, they go in clear).
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime

from triaged.config import Config
from triaged.core.ids import tag
from triaged.mail.compose import Composer, Outgoing
from triaged.mail.openpgp import Keyring, OpenPGPError, seal
from triaged.store.db import Store

log = logging.getLogger(__name__)

ENCRYPTED = "encrypted"
CLEAR = "clear"
WITHHELD = "withheld"
HELD = "held"

# Mail that carries text a sender wrote: the report's notification and forwarded follow-ups.
CONTENT_KINDS = frozenset(("notify", "forward"))
HELD_NOTICE = "openpgp_held"
WITHHELD_NOTICE = "openpgp_withheld"
_NOTICES = frozenset((HELD_NOTICE, WITHHELD_NOTICE))
# Mail to a reporter that needs no encryption even when they wrote encrypted: it never
# quotes anything (see the intake runner's receipt).
_CONTENT_FREE = frozenset(("receipt",))
_WHAT = {"notify": "notification of the report", "forward": "forwarded follow-up"}


@dataclass
class Decision:
    action: str  # ENCRYPTED, CLEAR, WITHHELD or HELD
    raw: bytes  # what to send (the sealed message when ENCRYPTED)
    reason: str = ""
    notices: list[Outgoing] = field(default_factory=list)


class Sealer:
    def __init__(self, config: Config, keyring: Keyring, composer: Composer | None = None) -> None:
        assert config.openpgp is not None
        self.config = config
        self.keyring = keyring
        self.composer = composer or Composer(config)
        maintainers = config.maintainers
        team = {*maintainers.members, *maintainers.notify}
        if config.policy.escalate_to:
            team.add(config.policy.escalate_to)
        self.maintainers = frozenset(team)

    def decide(self, store: Store, row: sqlite3.Row, now: datetime) -> Decision:
        """What to do with an outbox row (id, message_id, kind, recipient, report_id, raw)."""
        recipient: str = row["recipient"]
        report_id: str | None = row["report_id"]
        kind: str = row["kind"]
        fingerprint = self.keyring.key_for(recipient)
        if fingerprint is not None:
            subject = f"{tag(report_id)} ..." if report_id else "..."
            try:
                return Decision(ENCRYPTED, seal(row["raw"], self.keyring, [fingerprint], subject))
            except OpenPGPError as exc:
                if kind in _NOTICES:
                    log.warning("openpgp: notice %s goes in clear: %s", row["message_id"], exc)
                    return Decision(CLEAR, row["raw"], str(exc))
                return self._hold(row, now, f"encrypting to {fingerprint} failed: {exc}", False)
        if kind in _NOTICES:
            return Decision(CLEAR, row["raw"])
        if recipient in self.maintainers:
            if (
                self.config.openpgp is not None
                and self.config.openpgp.require
                and report_id
                and kind in CONTENT_KINDS
                and _report_encrypted(store, report_id)
            ):
                return self._withhold(row, now)
            return Decision(CLEAR, row["raw"])
        if (
            report_id
            and kind not in _CONTENT_FREE
            and _wrote_encrypted(store, report_id, recipient)
        ):
            return self._hold(
                row, now, f"{recipient} wrote encrypted; no OpenPGP key for them", True
            )
        return Decision(CLEAR, row["raw"])

    def _hold(self, row: sqlite3.Row, now: datetime, reason: str, keyless: bool) -> Decision:
        log.error("openpgp: %s to %s held: %s", row["message_id"], row["recipient"], reason)
        notices = [
            self.composer.build(
                kind=HELD_NOTICE,
                to=address,
                subject=f"Held: mail to {row['recipient']} must be encrypted",
                template="openpgp_held.txt",
                context={
                    "recipient": row["recipient"],
                    "kind": row["kind"],
                    "message_id": row["message_id"],
                    "reason": reason,
                    "keyless": keyless,
                },
                now=now,
                report_id=row["report_id"],
                auto="auto-generated",
            )
            for address in self.config.maintainers.notify
        ]
        return Decision(HELD, row["raw"], reason, notices)

    def _withhold(self, row: sqlite3.Row, now: datetime) -> Decision:
        recipient = row["recipient"]
        reason = f'no OpenPGP key for {recipient} and encrypted_to_maintainers = "require"'
        log.info("openpgp: %s to %s withheld: %s", row["message_id"], recipient, reason)
        notice = self.composer.build(
            kind=WITHHELD_NOTICE,
            to=recipient,
            subject="Encrypted report: mail withheld",
            template="openpgp_withheld.txt",
            context={"recipient": recipient, "what": _WHAT.get(row["kind"], "message")},
            now=now,
            report_id=row["report_id"],
            auto="auto-generated",
        )
        return Decision(WITHHELD, row["raw"], reason, [notice])


def _report_encrypted(store: Store, report_id: str) -> bool:
    return (
        store.one(
            "SELECT 1 FROM messages WHERE report_id = ?"
            " AND json_extract(openpgp, '$.encrypted') LIMIT 1",
            (report_id,),
        )
        is not None
    )


def _wrote_encrypted(store: Store, report_id: str, address: str) -> bool:
    return (
        store.one(
            "SELECT 1 FROM messages WHERE report_id = ? AND from_addr = ?"
            " AND json_extract(openpgp, '$.encrypted') LIMIT 1",
            (report_id, address),
        )
        is not None
    )

"""How each outgoing mail leaves when OpenPGP is on: encrypted, in clear, withheld, or held.

The outbox runner asks once per row, before its first delivery attempt (`Sealer.decide`):

- to anyone with a key triaged holds for their address (a maintainer's configured key, a
  reporter's key from their mail): encrypted to that key and the project key, signed by the
  project key (PGP/MIME, `openpgp.seal`); the stored copy is replaced by the sealed one;
- to a reporter or participant who wrote encrypted about the report, without a key: held, and
  the team told; only the receipt (which by design quotes nothing) goes in clear;
- to a maintainer without a key, with `encrypted_to_maintainers = "require"`: nothing a
  sender wrote inside an encryption (`Sealer._keyless_maintainer`, the one place of that
  rule). Mail about a report that holds encrypted mail goes only when it merely names the
  report (`NAMING_KINDS`: reminders, escalations, transcripts); any other kind about such a
  report (the notification, forwarded follow-ups, attachments, held and refused notices,
  advisory drafts, and any kind added later) is withheld, and the maintainer gets a notice in
  its place; so is mail that answers a message that came encrypted (the transcript of
  commands the maintainer encrypted). In what goes (those, and mail about no report: the
  digest), every Subject that was read from inside an encryption (protected headers; a
  report's title is its first message's) is replaced by "encrypted report #ID"
  (`hide_protected`);
- anything that must be encrypted and cannot be (gpg fails, the key expired): held, and the
  team told. Never sent in clear by accident.

The notices this module writes carry no text of any report, so they are never held or
withheld themselves (if they cannot be encrypted, they go in clear).
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.parser import BytesHeaderParser
from email.policy import default

from triaged.config import Config
from triaged.core.ids import tag
from triaged.mail.compose import Composer, Outgoing, rewrite_text
from triaged.mail.openpgp import Keyring, OpenPGPError, seal
from triaged.store import messages
from triaged.store.db import Store

log = logging.getLogger(__name__)

ENCRYPTED = "encrypted"
CLEAR = "clear"
WITHHELD = "withheld"
HELD = "held"

# What a maintainer without a key gets, under "require", about a report that holds encrypted
# mail: mail that names the report and carries nothing a sender wrote once the protected
# subjects (its title) are replaced. Everything else about it is withheld: deny by default,
# so a kind added later cannot leak a report's text to them by accident.
NAMING_KINDS = frozenset(("clock", "transcript"))
HELD_NOTICE = "openpgp_held"
WITHHELD_NOTICE = "openpgp_withheld"
_NOTICES = frozenset((HELD_NOTICE, WITHHELD_NOTICE))
# Mail to a reporter that needs no encryption even when they wrote encrypted: it never
# quotes anything (see the intake runner's receipt).
_CONTENT_FREE = frozenset(("receipt",))
_WHAT = {
    "notify": "notification of the report",
    "forward": "forwarded follow-up",
    "attachments": "mail with its attachments",
    "advisory": "advisory draft",
    "held": "notice of a held message",
    "refused": "notice of refused commands",
    "notices_summary": "summary of held and refused mail",
    "transcript": "transcript of your encrypted commands",
}


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
            if self.config.openpgp is not None and self.config.openpgp.require:
                return self._keyless_maintainer(store, row, now)
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

    def _keyless_maintainer(self, store: Store, row: sqlite3.Row, now: datetime) -> Decision:
        """Under "require": what a maintainer without a key may get (the module's docstring)."""
        report_id: str | None = row["report_id"]
        if (
            report_id
            and row["kind"] not in NAMING_KINDS
            and messages.report_encrypted(store, report_id)
        ):
            return self._withhold(row, now)
        answered = _in_reply_to(row["raw"])
        if answered is not None and messages.came_encrypted(store, answered):
            # A transcript echoes the commands of the message it answers: this maintainer
            # encrypted them.
            return self._withhold(row, now)
        raw = hide_protected(row["raw"], messages.protected_subjects(store))
        if raw != row["raw"]:
            log.info(
                "openpgp: %s to %s: encrypted subjects replaced",
                row["message_id"],
                row["recipient"],
            )
        return Decision(CLEAR, raw)

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


def hide_protected(raw: bytes, protected: Sequence[tuple[str, str | None]]) -> bytes:
    """`raw` (mail triaged composed) with each protected subject (subject, report id) replaced
    by "encrypted report #ID" wherever it stands whole in its Subject or text; the same bytes
    when none does. Replaced in one pass, so a replacement is never matched again."""
    if not protected:
        return raw
    names: dict[str, str] = {}
    for subject, report_id in protected:
        # A subject that several reports share names none of them.
        seen = names.setdefault(subject, _placeholder(report_id))
        if seen != _placeholder(report_id):
            names[subject] = _placeholder(None)
    pattern = re.compile(
        r"(?<!\w)(?:"
        + "|".join(re.escape(subject) for subject in sorted(names, key=len, reverse=True))
        + r")(?!\w)"
    )
    return rewrite_text(raw, lambda text: pattern.sub(lambda m: names[m.group(0)], text))


def _in_reply_to(raw: bytes) -> str | None:
    value = BytesHeaderParser(policy=default).parsebytes(raw).get("In-Reply-To")
    if value is None:
        return None
    return str(value).strip() or None


def _placeholder(report_id: str | None) -> str:
    return f"encrypted report #{report_id}" if report_id else "encrypted subject"


def _wrote_encrypted(store: Store, report_id: str, address: str) -> bool:
    return (
        store.one(
            "SELECT 1 FROM messages WHERE report_id = ? AND from_addr = ?"
            " AND json_extract(openpgp, '$.encrypted') LIMIT 1",
            (report_id, address),
        )
        is not None
    )

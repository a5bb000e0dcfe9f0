"""How a message was protected with OpenPGP: what intake records and the rest reads. Pure.

`triaged.mail.openpgp` fills these in when it opens a message; `ParsedMessage.openpgp` carries
them to classification, commands (`[auth] proofs = ["openpgp"]`) and the notifications;
`messages.openpgp` stores them (`as_json`, `from_json`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# What a signature check can say. Expired or revoked signing keys count as bad: the signature
# proves nothing about the sender today.
GOOD = "good"
BAD = "bad"
UNKNOWN_KEY = "unknown key"


@dataclass(frozen=True)
class Signature:
    status: str  # GOOD, BAD or UNKNOWN_KEY
    # The signing key's primary fingerprint when GOOD; else the key ID or fingerprint the
    # signature names, if any.
    fingerprint: str | None
    # True when the signature covers the whole text commands are read from, with nothing
    # unsigned around it.
    whole: bool
    # True when GOOD and made by the key triaged holds for the From address.
    by_sender: bool = False
    detail: str = ""

    def describe(self) -> str:
        if self.status == GOOD:
            whose = "the sender's key" if self.by_sender else "not a key of the sender"
            text = f"good, by {self.fingerprint} ({whose})"
        elif self.status == BAD:
            text = "BAD" + (f": {self.detail}" if self.detail else "")
        else:
            text = "by an unknown key" + (f" ({self.fingerprint})" if self.fingerprint else "")
        if not self.whole:
            text += "; it covers only part of the message"
        return text


@dataclass(frozen=True)
class KeyOutcome:
    """What became of a key a message carried, for the sender's address."""

    address: str
    source: str  # "attachment" or "autocrypt"
    fingerprint: str | None
    imported: bool
    reason: str  # why not, or "new" / "replaced" / "already known"


@dataclass(frozen=True)
class OpenPGPStatus:
    encrypted: bool  # the message, or its text, was encrypted
    decrypted: bool  # ... and triaged could read it
    problem: str | None  # why an encrypted message could not be read
    signature: Signature | None
    keys: tuple[KeyOutcome, ...] = ()  # the keys it carried for its sender, and their fate
    # The Subject triaged read (and stored) came from inside the encryption (protected
    # headers), not from the header the message travelled with.
    subject_protected: bool = False

    def describe(self) -> str:
        parts = []
        if self.encrypted:
            parts.append("decrypted" if self.decrypted else f"NOT decrypted: {self.problem}")
        if self.signature is not None:
            parts.append(f"signature {self.signature.describe()}")
        elif self.encrypted:
            parts.append("not signed")
        for key in self.keys:
            if key.imported:
                parts.append(f"key {key.fingerprint} ({key.source}) taken for {key.address}")
            elif key.reason != "already known":
                parts.append(f"key ({key.source}) not taken: {key.reason}")
        return "; ".join(parts)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OpenPGPStatus:
        """The status as `as_json` stored it (in messages.openpgp)."""
        sig = data.get("signature")
        return cls(
            encrypted=bool(data.get("encrypted")),
            decrypted=bool(data.get("decrypted")),
            problem=data.get("problem"),
            signature=Signature(
                sig["status"], sig["fingerprint"], sig["whole"], sig["by_sender"], sig["detail"]
            )
            if sig
            else None,
            keys=tuple(KeyOutcome(**key) for key in data.get("keys", [])),
            subject_protected=bool(data.get("subject_protected")),
        )

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "encrypted": self.encrypted,
            "decrypted": self.decrypted,
            "problem": self.problem,
            "signature": None,
            "subject_protected": self.subject_protected,
        }
        if self.signature is not None:
            sig = self.signature
            data["signature"] = {
                "status": sig.status,
                "fingerprint": sig.fingerprint,
                "whole": sig.whole,
                "by_sender": sig.by_sender,
                "detail": sig.detail,
            }
        data["keys"] = [
            {
                "address": k.address,
                "source": k.source,
                "fingerprint": k.fingerprint,
                "imported": k.imported,
                "reason": k.reason,
            }
            for k in self.keys
        ]
        return data

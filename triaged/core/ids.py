"""Report IDs, the subject tag, and Message-IDs. Pure."""

from __future__ import annotations

import re
import secrets
import time

# No 0/o, 1/l/i: an ID is read aloud and typed by people.
ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
ID_LENGTH = 8
_TAG = re.compile(r"\[security report #([0-9a-z]{4,16})\]", re.IGNORECASE)


def new_report_id() -> str:
    """A random ID: 31^8 (about 8.5e11) values, so it reveals no count and cannot be guessed."""
    return "".join(secrets.choice(ALPHABET) for _ in range(ID_LENGTH))


def tag(report_id: str) -> str:
    return f"[security report #{report_id}]"


def find_tag(subject: str) -> str | None:
    """The report ID in the first tag of a subject, lowercased, or None."""
    match = _TAG.search(subject)
    return match.group(1).lower() if match else None


def new_message_id(domain: str) -> str:
    return f"<{int(time.time())}.{secrets.token_hex(10)}@{domain}>"

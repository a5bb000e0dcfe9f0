"""One message as intake takes it: its key in the mailbox, its bytes, and how it is taken."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

# What a message turned out to be besides the kinds of triaged.intake.classify.
QUARANTINED = "quarantined"
DUPLICATE = "duplicate"
KNOWN = "known"  # stored by an earlier pass (same key in the same mailbox): only set aside


@dataclass(frozen=True)
class Incoming:
    uid: str
    raw: bytes
    sha256: str
    received: datetime
    # Where it was taken in silently from ("adopted", "import /path"), or None: handled as
    # usual. Silent: stored and threaded, but no receipt, no notification, no command run,
    # no clock started (triaged.intake.imported).
    imported: str | None = None

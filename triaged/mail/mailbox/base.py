"""Where mail comes from: the `Mailbox` interface every backend implements.

The intake runner only sees this protocol, so the embedded default (Maildir) and production
(IMAP) share every other code path.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class Envelope:
    """A message waiting in the mailbox: its stable key, its size in bytes, and when it
    arrived (IMAP INTERNALDATE, a Maildir file's time; aware, UTC), if known."""

    uid: str
    size: int
    received: datetime | None = None


class Mailbox(Protocol):
    """The source of incoming mail. Every method may raise MailboxError."""

    @property
    def name(self) -> str:
        """A stable name for this mailbox (kept with its UIDVALIDITY in the database)."""
        ...

    def connect(self) -> None:
        """Opens (logs in, selects the folder, creates processed/quarantine folders)."""

    def uidvalidity(self) -> int:
        """The folder's UIDVALIDITY (constant for a Maildir)."""
        ...

    def pending(self) -> list[Envelope]:
        """Messages still waiting in the folder (not yet processed), oldest first."""
        ...

    def fetch(self, uids: Sequence[str]) -> dict[str, bytes]:
        """The raw bytes of these messages, without marking them seen; gone ones are absent."""
        ...

    def mark_processed(self, uids: Sequence[str]) -> None:
        """Moves handled messages out of the way (only after their effects are committed)."""

    def quarantine(self, uids: Sequence[str]) -> None:
        """Moves messages that could not be handled safely to the quarantine folder."""

    def wait(self, timeout: float, stop: threading.Event) -> None:
        """Blocks until new mail may have arrived (IMAP IDLE), `timeout` passed, or `stop` set."""

    def close(self) -> None:
        """Logs out; never raises."""

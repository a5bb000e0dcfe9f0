"""Where mail comes from: one interface, an IMAP and a Maildir implementation.

`open_mailbox(config)` picks the implementation from the URL; the intake runner only sees the
`Mailbox` protocol, so the embedded default and production share every other code path.
"""

from __future__ import annotations

import logging
import mailbox as std_mailbox
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from triaged.config import MailboxConfig
from triaged.errors import MailboxError
from triaged.mail.oauth2 import TokenManager

log = logging.getLogger("triaged.mailbox")


@dataclass(frozen=True)
class Envelope:
    """A message waiting in the mailbox: its stable key and its size in bytes."""

    uid: str
    size: int


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


class MaildirMailbox:
    """A local Maildir: new mail in new/ and cur/, handled mail in Maildir++ subfolders."""

    def __init__(self, config: MailboxConfig) -> None:
        self.config = config
        self.path = Path(config.endpoint.path)
        self._box: std_mailbox.Maildir | None = None

    @property
    def name(self) -> str:
        return f"maildir:{self.path}"

    def connect(self) -> None:
        try:
            self._box = std_mailbox.Maildir(self.path, factory=None, create=True)
            for folder in (self.config.processed_folder, self.config.quarantine_folder):
                if folder not in self._box.list_folders():
                    self._box.add_folder(folder)
        except OSError as exc:
            raise MailboxError(f"cannot open Maildir {self.path}: {exc}") from exc

    @property
    def box(self) -> std_mailbox.Maildir:
        if self._box is None:
            raise MailboxError("mailbox is not connected")
        return self._box

    def uidvalidity(self) -> int:
        return 1

    def pending(self) -> list[Envelope]:
        box = self.box
        box._refresh()  # type: ignore[attr-defined]  # the stdlib caches the listing for 2 s
        found = []
        for key in box.iterkeys():
            try:
                info = (self.path / box._lookup(key)).stat()  # type: ignore[attr-defined]
                found.append((info.st_mtime, key, info.st_size))
            except (KeyError, OSError):
                continue
        found.sort()
        return [Envelope(key, size) for _, key, size in found]

    def fetch(self, uids: Sequence[str]) -> dict[str, bytes]:
        out = {}
        for uid in uids:
            try:
                out[uid] = self.box.get_bytes(uid)
            except (KeyError, OSError):
                continue
        return out

    def _move(self, uids: Sequence[str], folder: str) -> None:
        target = self.box.get_folder(folder)
        for uid in uids:
            try:
                src = self.path / self.box._lookup(uid)  # type: ignore[attr-defined]
            except KeyError:
                continue
            # A rename keeps the bytes exactly and is atomic within one file system.
            os.replace(src, Path(target._path) / "cur" / src.name)

    def mark_processed(self, uids: Sequence[str]) -> None:
        self._move(uids, self.config.processed_folder)

    def quarantine(self, uids: Sequence[str]) -> None:
        self._move(uids, self.config.quarantine_folder)

    def wait(self, timeout: float, stop: threading.Event) -> None:
        # A local directory has no push notification; poll it once a second.
        stop.wait(min(timeout, 1.0))

    def close(self) -> None:
        self._box = None


def open_mailbox(config: MailboxConfig, tokens: TokenManager | None = None) -> Mailbox:
    """`tokens` logs in with OAuth2 (mailbox.auth = "oauth2"; see triaged.mail.oauth2)."""
    if config.endpoint.is_maildir:
        return MaildirMailbox(config)
    from triaged.imap import ImapMailbox

    return ImapMailbox(config, tokens)

"""The Maildir mailbox: the embedded default, and the twin of IMAP in tests."""

from __future__ import annotations

import mailbox as std_mailbox
import os
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from triaged.config import MailboxConfig
from triaged.errors import MailboxError
from triaged.mail.mailbox.base import Envelope


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
        if self._box is None:
            raise MailboxError("mailbox is not connected")
        # A new listing every time. The stdlib lists new/ and cur/ again only when their mtime
        # has grown since its last look, and where mtimes count whole seconds (ext3, NFS; FAT
        # counts two) mail delivered in the second of that look was not listed until the next
        # delivery changed the mtime.
        try:
            box = self._box = std_mailbox.Maildir(self.path, factory=None, create=False)
        except (OSError, std_mailbox.Error) as exc:
            raise MailboxError(f"cannot open Maildir {self.path}: {exc}") from exc
        found = []
        for key in box.iterkeys():
            try:
                info = (self.path / box._lookup(key)).stat()  # type: ignore[attr-defined]
                found.append((info.st_mtime, key, info.st_size))
            except (KeyError, OSError):
                continue
        found.sort()
        return [
            Envelope(key, size, datetime.fromtimestamp(mtime, UTC)) for mtime, key, size in found
        ]

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

"""An archive for `triaged import`: an mbox file or a Maildir, read as a mailbox that never
changes.

Each message's key is the SHA-256 of its bytes, so an import run twice finds everything
stored already, and an archive that grew since is taken where it differs. Nothing is written
to the archive: "processed" and "quarantined" messages stay where they are. An mbox file is
read in one pass, line by line (memory holds one message at a time), as mboxrd: a line
">From " inside a message loses one ">" (what `triaged export` writes reads back byte for
byte). When a message arrived: the date of its mbox "From " line, or a Maildir file's time,
else its Date header, else unknown (the import's time is used).
"""

from __future__ import annotations

import hashlib
import mailbox as std_mailbox
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

from triaged.config import Config
from triaged.errors import MailboxError
from triaged.intake.imported import HELD, REPORTS, THREADED, UNTHREADED
from triaged.intake.incoming import DUPLICATE, KNOWN, QUARANTINED
from triaged.intake.runner import IntakeRunner
from triaged.mail.mailbox.base import Envelope
from triaged.mail.openpgp import Keyring
from triaged.store.db import Store

_FROM_QUOTED = re.compile(rb"^>(>*From )", re.MULTILINE)
_DATE_HEADER = re.compile(rb"^Date:[ \t]*([^\r\n]{1,200})", re.MULTILINE | re.IGNORECASE)
_HEADER_END = re.compile(rb"\r?\n\r?\n")


_BLOCK = 1 << 20
_NEXT_MESSAGE_TEXT = b"\n\r\nFrom "
_NEXT_MESSAGE = re.compile(rb"\n\r?\nFrom ")


@dataclass
class _Collecting:
    """The message being read from an mbox: where it starts, its pieces so far (until it
    passes the size cap: then it is only measured)."""

    start: int
    received: datetime | None
    max_size: int
    end: int = 0
    size: int = 0
    pieces: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.end = self.start

    def add(self, data: bytes) -> None:
        self.size += len(data)
        self.end += len(data)
        if self.size <= self.max_size + 2:
            self.pieces.append(data)
        else:
            self.pieces = []


@dataclass(frozen=True)
class _Where:
    """Where a message is in the archive: an mbox byte range, or a Maildir key."""

    start: int = 0
    end: int = 0
    key: str = ""


def _moment(text: str) -> datetime | None:
    try:
        value = parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        # OverflowError: a year of ten digits ("From x Sat Nov 3 1:2:3 3964255961").
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _from_line_date(line: bytes) -> datetime | None:
    """The date of an mbox "From sender date" line (ctime form, as mail tools write it)."""
    parts = line.decode("ascii", "replace").split(None, 2)
    if len(parts) < 3:
        return None
    text = parts[2].strip()
    quick = _ctime(text)
    if quick is not None:
        return quick
    try:
        return datetime.strptime(" ".join(text.split()[:5]), "%a %b %d %H:%M:%S %Y").replace(
            tzinfo=UTC
        )
    except ValueError:
        return _moment(text)


_CTIME = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
    r" +(\d{1,2}) (\d{2}):(\d{2}):(\d{2}) (\d{4})(?:\s|$)"
)
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}


def _ctime(text: str) -> datetime | None:
    """The usual form of that date ("Sat Nov 21 10:00:00 2026", UTC) read without strptime,
    which took a quarter of the scan of a large mbox (bench/); None for any other form."""
    match = _CTIME.match(text)
    if match is None:
        return None
    month, day, hour, minute, second, year = match.groups()
    try:
        return datetime(
            int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second), tzinfo=UTC
        )
    except ValueError:
        return None


def _header_date(raw: bytes) -> datetime | None:
    end = _HEADER_END.search(raw, 0, 65536)
    match = _DATE_HEADER.search(raw, 0, end.start() if end else min(len(raw), 65536))
    return _moment(match.group(1).decode("ascii", "replace")) if match else None


def _mbox_message(data: bytes) -> bytes:
    """One message's bytes as stored in an mbox: the empty line that separates it from the
    next one off, ">From " lines back to "From "."""
    if data.endswith(b"\r\n\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n\n"):
        data = data[:-1]
    return _FROM_QUOTED.sub(rb"\1", data) if b">From " in data else data


class ArchiveMailbox:
    """An mbox file or a Maildir, read-only, behind the `Mailbox` interface."""

    def __init__(self, path: Path, max_size: int) -> None:
        self.path = path.resolve()
        self.max_size = max_size
        self._where: dict[str, _Where] = {}
        self._maildir: std_mailbox.Maildir | None = None
        self._pending: list[Envelope] | None = None

    @property
    def name(self) -> str:
        return f"import:{self.path}"

    @property
    def is_maildir(self) -> bool:
        return self.path.is_dir()

    def connect(self) -> None:
        if self.is_maildir:
            if not ((self.path / "cur").is_dir() or (self.path / "new").is_dir()):
                raise MailboxError(f"{self.path} is a directory but not a Maildir (no cur/, new/)")
            self._maildir = std_mailbox.Maildir(self.path, factory=None, create=False)
        elif not self.path.is_file():
            raise MailboxError(f"{self.path}: no such mbox file or Maildir")

    def uidvalidity(self) -> int:
        return 1

    def pending(self) -> list[Envelope]:
        """Every message of the archive, in its order (an mbox's; a Maildir's by file time).
        Read once: an archive does not change while it is imported."""
        if self._pending is not None:
            return self._pending
        self._where = {}
        found: list[Envelope] = []
        items = self._scan_maildir() if self.is_maildir else self._scan_mbox()
        for envelope, where in items:
            if envelope.uid not in self._where:
                self._where[envelope.uid] = where
                found.append(envelope)
        self._pending = found
        return found

    def _envelope(self, data: bytes, received: datetime | None) -> Envelope:
        uid = hashlib.sha256(data).hexdigest()
        return Envelope(uid, len(data), received or _header_date(data))

    def _scan_mbox(self) -> Iterator[tuple[Envelope, _Where]]:
        """The messages of the mbox file, found a block at a time: a message ends where a
        "From " line follows an empty line (mboxrd quotes any other "From " line)."""
        try:
            handle = self.path.open("rb")
        except OSError as exc:
            raise MailboxError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        with handle:
            first = handle.readline()
            if not first.startswith(b"From "):
                raise MailboxError(f"{self.path} is not an mbox file (no 'From ' line first)")
            message = _Collecting(len(first), _from_line_date(first), self.max_size)
            buffer = handle.read(_BLOCK)
            # Where the unread part of `buffer` starts: the buffer is cut only when a block is
            # added, not after each message (that copied the block's rest once per message).
            pos = 0
            while True:
                found = _NEXT_MESSAGE.search(buffer, pos)
                if found is None:
                    more = handle.read(_BLOCK)
                    if not more:
                        message.add(buffer[pos:])
                        yield self._mbox_entry(message)
                        return
                    # Keep what could be the start of a separator cut by the block's end.
                    keep = max(pos, len(buffer) - len(_NEXT_MESSAGE_TEXT))
                    message.add(buffer[pos:keep])
                    buffer, pos = buffer[keep:] + more, 0
                    continue
                from_line = found.end() - len(b"From ")
                message.add(buffer[pos:from_line])
                yield self._mbox_entry(message)
                line_end = buffer.find(b"\n", from_line)
                while line_end < 0:
                    more = handle.read(_BLOCK)
                    if not more:
                        line_end = len(buffer) - 1
                        break
                    buffer += more
                    line_end = buffer.find(b"\n", from_line)
                line = buffer[from_line : line_end + 1]
                message = _Collecting(message.end + len(line), _from_line_date(line), self.max_size)
                pos = line_end + 1

    def _mbox_entry(self, message: _Collecting) -> tuple[Envelope, _Where]:
        where = _Where(start=message.start, end=message.end)
        if message.size > self.max_size:
            return Envelope(f"large-{message.start}", message.size, message.received), where
        data = _mbox_message(b"".join(message.pieces))
        return self._envelope(data, message.received), where

    def _scan_maildir(self) -> Iterator[tuple[Envelope, _Where]]:
        box = self._maildir
        if box is None:
            raise MailboxError("the archive is not open")
        entries = []
        for key in box.iterkeys():
            try:
                info = (self.path / box._lookup(key)).stat()  # type: ignore[attr-defined]
            except (KeyError, OSError):
                continue
            entries.append((info.st_mtime, key, info.st_size))
        entries.sort()
        for mtime, key, size in entries:
            received = datetime.fromtimestamp(mtime, UTC)
            where = _Where(key=key)
            if size > self.max_size:
                yield Envelope(f"large-{key}", size, received), where
                continue
            try:
                data = box.get_bytes(key)
            except (KeyError, OSError):
                continue
            yield self._envelope(data, received), where

    def fetch(self, uids: Sequence[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        wanted = [(uid, self._where[uid]) for uid in uids if uid in self._where]
        if self._maildir is not None:
            for uid, where in wanted:
                try:
                    out[uid] = self._maildir.get_bytes(where.key)
                except (KeyError, OSError):
                    continue
            return out
        try:
            with self.path.open("rb") as handle:
                for uid, where in wanted:
                    handle.seek(where.start)
                    out[uid] = _mbox_message(handle.read(where.end - where.start))
        except OSError as exc:
            raise MailboxError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        return out

    def mark_processed(self, uids: Sequence[str]) -> None:
        """An archive is never changed."""

    def quarantine(self, uids: Sequence[str]) -> None:
        """An archive is never changed."""

    def wait(self, timeout: float, stop: threading.Event) -> None:
        """An archive gets no new mail."""

    def close(self) -> None:
        self._maildir = None


# --- `triaged import` -----------------------------------------------------------------------


IMPORT_BATCH = 500


@dataclass(frozen=True)
class ImportSummary:
    read: int  # messages in the archive
    reports: int  # reports made
    threaded: int  # joined to a report (an earlier one of the archive, or one stored before)
    quarantined: int
    already: int  # stored before (same bytes or same Message-ID): nothing done
    other: int  # stored apart: automatic mail, held mail, mail about no report

    def line(self) -> str:
        return (
            f"{self.read} messages read: {self.reports} reports made, {self.threaded} threaded,"
            f" {self.quarantined} quarantined, {self.already} already stored,"
            f" {self.other} stored apart (automatic, held or about no report)"
        )


def import_archive(
    config: Config,
    store: Store,
    path: Path,
    now: datetime,
    on_start: Callable[[int], None] = lambda total: None,
    on_progress: Callable[[int], None] = lambda count: None,
    keyring: Keyring | None = None,
) -> ImportSummary:
    """Takes the archive at `path` in silently (see triaged.intake.imported); `on_start`
    gets the number of messages, `on_progress` each batch's count as it is done; `keyring`
    decrypts the encrypted ones to classify and thread them (they are stored as they are)."""
    archive = ArchiveMailbox(path, config.limits.max_message_size)
    archive.connect()
    runner = IntakeRunner(
        config, store, archive, keyring=keyring, imported=f"import {archive.path}"
    )
    # Larger transactions than a live mailbox's: one fsync per IMPORT_BATCH messages (nothing
    # waits on an archive's answer), still a few MB of mail in memory at a time.
    runner.batch_size = IMPORT_BATCH
    # Nothing is answered and a second run takes in what a power loss undid: the batches need
    # not wait for the disk (the migrations and the mailbox record still do).
    runner.durable = False
    runner.start(now)
    total = len(archive.pending())
    on_start(total)
    runner.take_all(now, on_progress)
    archive.close()
    counts, outcomes = runner.silent.counts, runner.outcomes
    return ImportSummary(
        read=total,
        reports=counts[REPORTS],
        threaded=counts[THREADED],
        quarantined=outcomes[QUARANTINED],
        already=outcomes[DUPLICATE] + outcomes[KNOWN],
        other=counts[HELD] + counts[UNTHREADED],
    )

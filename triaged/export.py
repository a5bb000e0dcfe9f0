"""`triaged export`: a report's raw messages as one mbox file, and each attachment as a file.

Everything written is new (an existing file is never replaced: a taken name gets "-2", "-3"),
mode 0600, inside the target directory: attachment names are made from the sender's file name
by `core.files.safe_name`, which leaves no path separator, control character or leading dot,
and files are created relative to the directory's descriptor without following links. The
bytes are the stored ones: attachments as they were sent (archives are never unpacked), the
messages as received, in mboxrd form ("From " lines inside a message get one more ">").

A message that came encrypted is in the mbox as it came (ciphertext: the database keeps
nothing else), and its attachments are written decrypted (`views.readable`), numbered as
`show` and `/attachments` number them. One that cannot be decrypted is named, with why, in
`Exported.unreadable`.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from triaged.config import LimitsConfig
from triaged.core.files import safe_name, write_new
from triaged.core.timefmt import parse_ts
from triaged.mail.openpgp import Keyring
from triaged.mail.parse import attachment_data
from triaged.store.db import Store
from triaged.views import StoredMessage, report_messages

_FROM_LINE = re.compile(rb"^(>*From )", re.MULTILINE)


@dataclass(frozen=True)
class Written:
    path: Path
    size: int
    sha256: str
    what: str  # "messages", or "attachment N"


def mbox(messages: list[StoredMessage]) -> bytes:
    """The messages as one mboxrd file, oldest first."""
    out = []
    for stored in messages:
        row = stored.row
        when = time.asctime(parse_ts(row["received_at"]).utctimetuple())
        out.append(f"From {row['from_addr'] or 'MAILER-DAEMON'} {when}\n".encode())
        raw: bytes = _FROM_LINE.sub(rb">\1", row["raw"])
        out.append(raw if raw.endswith(b"\n") else raw + b"\n")
        out.append(b"\n")
    return b"".join(out)


@dataclass(frozen=True)
class Exported:
    written: list[Written]  # the mbox first, then the attachments
    encrypted: int  # how many messages of the mbox are ciphertext (came encrypted)
    unreadable: list[tuple[int, str]]  # (message number, why) of those that cannot be read


def export(
    store: Store, report_id: str, limits: LimitsConfig, directory: Path, keyring: Keyring | None
) -> Exported:
    """Writes the report's messages and attachments into `directory` (created 0700 when
    missing); `keyring` decrypts the attachments of encrypted messages."""
    messages = report_messages(store, report_id, limits, keyring=keyring)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    written: list[Written] = []

    def write(name: str, data: bytes, what: str) -> None:
        actual = write_new(fd, name, data)
        digest = hashlib.sha256(data).hexdigest()
        written.append(Written(directory / actual, len(data), digest, what))

    try:
        write(f"report-{safe_name(report_id, 'report')}.mbox", mbox(messages), "messages")
        for stored in messages:
            if not stored.attachments:
                continue
            data = attachment_data(stored.source, limits)
            for item in stored.attachments:
                name = safe_name(item.attachment.filename, "attachment")
                write(f"{item.index}-{name}", data[item.position], f"attachment {item.index}")
    finally:
        os.close(fd)
    encrypted = sum(1 for stored in messages if stored.openpgp and stored.openpgp.encrypted)
    unreadable = [(int(m.row["id"]), m.unreadable) for m in messages if m.unreadable]
    return Exported(written, encrypted, unreadable)

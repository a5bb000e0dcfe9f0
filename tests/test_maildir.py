"""The Maildir mailbox (the embedded default) on a real directory."""

from __future__ import annotations

import mailbox
import os
import time
from pathlib import Path

from helpers import mail, make_config

from triaged.mail.mailbox import open_mailbox


def test_mail_delivered_in_the_second_of_the_last_look_is_listed(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    box = open_mailbox(config.mailbox)
    box.connect()
    inbox = mailbox.Maildir(config.mailbox.endpoint.path)
    first = inbox.add(mail(sender="first@outside.example"))
    assert [env.uid for env in box.pending()] == [first]
    # More than 2 s after its last full listing, the stdlib only compares the mtimes of new/
    # and cur/ with those it saw at its last look.
    time.sleep(2.2)
    assert [env.uid for env in box.pending()] == [first]
    new = Path(config.mailbox.endpoint.path) / "new"
    seen = new.stat().st_mtime_ns
    second = inbox.add(mail(sender="second@outside.example"))
    # A file system whose mtimes count whole seconds (ext3, NFS; FAT counts two): a delivery
    # in the same second as that look leaves the directory's mtime as it was.
    os.utime(new, ns=(new.stat().st_atime_ns, seen))
    assert sorted(env.uid for env in box.pending()) == sorted([first, second])
    box.close()

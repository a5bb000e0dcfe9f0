"""Where mail comes from: one interface (`base`), a Maildir and an IMAP implementation.

`open_mailbox(config)` picks the implementation from the URL.
"""

from __future__ import annotations

from triaged.config import MailboxConfig
from triaged.mail.mailbox.base import Mailbox
from triaged.mail.mailbox.imap import ImapMailbox
from triaged.mail.mailbox.maildir import MaildirMailbox


def open_mailbox(config: MailboxConfig) -> Mailbox:
    if config.endpoint.is_maildir:
        return MaildirMailbox(config)
    return ImapMailbox(config)

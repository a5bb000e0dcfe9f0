"""Where mail comes from: one interface (`base`), a Maildir and an IMAP implementation.

`open_mailbox(config)` picks the implementation from the URL.
"""

from __future__ import annotations

from triaged.config import MailboxConfig
from triaged.mail.mailbox.base import Mailbox
from triaged.mail.mailbox.imap import ImapMailbox
from triaged.mail.mailbox.maildir import MaildirMailbox
from triaged.mail.oauth2 import TokenManager


def open_mailbox(config: MailboxConfig, tokens: TokenManager | None = None) -> Mailbox:
    """`tokens` logs in with OAuth2 (mailbox.auth = "oauth2"; see triaged.mail.oauth2)."""
    if config.endpoint.is_maildir:
        return MaildirMailbox(config)
    return ImapMailbox(config, tokens)

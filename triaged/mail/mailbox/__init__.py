"""Where mail comes from: one interface (`base`); a Maildir, an IMAP folder, or triaged's own
LMTP server the MTA delivers to.

`open_mailbox(config)` picks the implementation from the URL.
"""

from __future__ import annotations

from triaged.config import MailboxConfig
from triaged.mail.mailbox.base import Mailbox
from triaged.mail.mailbox.imap import ImapMailbox
from triaged.mail.mailbox.lmtp import LmtpMailbox
from triaged.mail.mailbox.maildir import MaildirMailbox
from triaged.mail.oauth2 import TokenManager


def open_mailbox(
    config: MailboxConfig,
    tokens: TokenManager | None = None,
    *,
    project_address: str = "",
    max_message_size: int = 0,
) -> Mailbox:
    """`tokens` logs in with OAuth2 (mailbox.auth = "oauth2"; see triaged.mail.oauth2). The LMTP
    server takes mail for `project_address` (and its plus-addresses) up to `max_message_size`."""
    if config.endpoint.is_maildir:
        return MaildirMailbox(config)
    if config.endpoint.is_lmtp:
        if not project_address or max_message_size <= 0:
            raise ValueError("an LMTP mailbox needs the project address and the size limit")
        return LmtpMailbox(config, project_address, max_message_size)
    return ImapMailbox(config, tokens)

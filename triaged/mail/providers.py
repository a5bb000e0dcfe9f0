"""What `[oauth2] provider` fills in: the token endpoints, the scopes and the mail servers.

Pure data, read by the configuration loader; the README's "Microsoft 365" and "Google
Workspace" sections say where each value comes from.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Provider:
    name: str
    token_url: str
    # Delegated access to one mailbox (a refresh token): what `scope` defaults to.
    scope: tuple[str, ...]
    # App-only access (the client credentials grant): its scope; None when the provider has
    # no such grant for mail.
    app_scope: tuple[str, ...] | None
    # Whether app-only access needs the tenant's own token URL (the default one will not do).
    app_needs_token_url: bool
    # The mail servers; "{user}" is the mailbox's address, percent-encoded.
    imap_url: str
    smtp_url: str
    # Why `triaged oauth2 login` cannot work with this provider, when it cannot.
    no_device_flow: str = ""

    def device_url(self, token_url: str) -> str | None:
        """The device authorization endpoint (RFC 8628) next to this token endpoint."""
        if self.no_device_flow:
            return None
        # Microsoft: .../{tenant}/oauth2/v2.0/token -> .../{tenant}/oauth2/v2.0/devicecode
        return token_url.rsplit("/", 1)[0] + "/devicecode"


MICROSOFT = Provider(
    name="microsoft",
    # "organizations": any work or school account; a tenant ID or domain narrows it.
    token_url="https://login.microsoftonline.com/organizations/oauth2/v2.0/token",  # noqa: S106 (a URL)
    scope=(
        "https://outlook.office.com/IMAP.AccessAsUser.All",
        "https://outlook.office.com/SMTP.Send",
        "offline_access",
    ),
    app_scope=("https://outlook.office365.com/.default",),
    app_needs_token_url=True,
    imap_url="imaps://{user}@outlook.office365.com:993/INBOX",
    smtp_url="smtp://{user}@smtp.office365.com:587",
)

GOOGLE = Provider(
    name="google",
    token_url="https://oauth2.googleapis.com/token",  # noqa: S106 (a URL)
    scope=("https://mail.google.com/",),
    # Google's app-only access to Gmail is a service account with domain-wide delegation (a
    # signed JWT), not the client credentials grant.
    app_scope=None,
    app_needs_token_url=False,
    imap_url="imaps://{user}@imap.gmail.com:993/INBOX",
    smtp_url="smtp://{user}@smtp.gmail.com:587",
    no_device_flow=(
        "Google's device flow does not grant the Gmail scope (https://mail.google.com/); get "
        'the first refresh token as the README\'s "Google Workspace" section says'
    ),
)

PROVIDERS = {p.name: p for p in (MICROSOFT, GOOGLE)}

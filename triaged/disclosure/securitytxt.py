"""security.txt (RFC 9116) from `[security_txt]`, and the warning before the published one expires.

`render` writes the file: Contact (mailto: the project's address, then `contact`), Expires
(`expires`, else now + `expires_after`), Encryption, Acknowledgments, Policy,
Preferred-Languages, Canonical. Signing it (OpenPGP cleartext) is left to the publisher.

`expiry_notices` is the daemon's daily look at `published_expires` (else `expires`): once it
is less than `warn_before` away, the team is told, once per published date (the key is kept
in `notices` with report_id ''). Call it inside the transaction that enqueues its mail.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from triaged.config import Config
from triaged.disclosure.advisory import rfc3339
from triaged.mail.compose import Composer, Outgoing
from triaged.store import notices
from triaged.store.db import Store

_YEAR = timedelta(days=366)


def expires_at(config: Config, now: datetime) -> datetime:
    st = config.security_txt
    if st.expires is not None:
        return st.expires
    return (now + timedelta(seconds=st.expires_after.seconds)).replace(microsecond=0)


def render(config: Config, now: datetime, fingerprint: str | None = None) -> str:
    """The file; `fingerprint` (the project's OpenPGP key) gives the Encryption line when
    `encryption` is empty."""
    st = config.security_txt
    fields = [("Contact", f"mailto:{config.project.address}")]
    fields += [("Contact", value) for value in st.contact]
    fields.append(("Expires", rfc3339(expires_at(config, now))))
    encryption = st.encryption or ((f"openpgp4fpr:{fingerprint.lower()}",) if fingerprint else ())
    fields += [("Encryption", value) for value in encryption]
    fields += [("Acknowledgments", value) for value in st.acknowledgments]
    fields += [("Policy", value) for value in st.policy]
    if st.preferred_languages:
        fields.append(("Preferred-Languages", ", ".join(st.preferred_languages)))
    fields += [("Canonical", value) for value in st.canonical]
    return "".join(f"{name}: {value}\n" for name, value in fields)


def notes(config: Config, now: datetime) -> list[str]:
    """What the publisher should know about the file `render` gives now."""
    expires = expires_at(config, now)
    out = []
    if expires <= now:
        out.append(f"Expires {rfc3339(expires)} is already past: set security_txt.expires")
    elif expires - now > _YEAR:
        out.append("Expires is more than a year ahead; RFC 9116 recommends less than a year")
    if _published(config) != expires:
        out.append(
            f"once this file is online, set security_txt.published_expires ="
            f" {rfc3339(expires)} so that triaged warns the team before it expires"
        )
    return out


def _published(config: Config) -> datetime | None:
    st = config.security_txt
    return st.published_expires or st.expires


def expiry_notices(
    config: Config, store: Store, composer: Composer, now: datetime
) -> list[Outgoing]:
    """The team's warning that the published security.txt expires soon (or has), once."""
    published = _published(config)
    if published is None:
        return []
    if published - now > timedelta(seconds=config.security_txt.warn_before.seconds):
        return []
    key = f"security_txt_expires:{rfc3339(published)}"
    if notices.team_sent(store, key):
        return []
    notices.mark_team_sent(store, key, now)
    expired = published <= now
    day = published.date().isoformat()
    subject = f"security.txt expired on {day}" if expired else f"security.txt expires on {day}"
    return composer.to_each(
        config.maintainers.notify,
        kind="security_txt",
        subject=subject,
        template="security_txt_expiry.txt",
        context={
            "expires": rfc3339(published),
            "expired": expired,
            "days": max(0, (published - now).days),
        },
        now=now,
    )

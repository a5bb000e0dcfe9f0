"""The configuration: one TOML file, loaded and validated once into a frozen object.

Every error names the file and the key (`ConfigError`). Relative paths in the file are taken
relative to the directory of the file itself.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import SplitResult, quote, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from triaged.core.durations import Calendar, Duration, Share, parse_duration, parse_offset
from triaged.core.text import parse_address
from triaged.core.versions import check_line
from triaged.errors import ConfigError
from triaged.mail.providers import PROVIDERS, Provider

DEFAULT_PATH = "/etc/triaged/config.toml"
SEVERITIES = ("low", "medium", "high", "critical")
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

AUTHS = ("password", "oauth2")
T = TypeVar("T")


class Secret:
    """A password read from a file; never shown by repr or str."""

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Endpoint:
    """A parsed mailbox or SMTP URL."""

    scheme: str
    host: str = ""
    port: int = 0
    username: str = ""
    path: str = ""  # IMAP folder, the Maildir directory, or the LMTP server's Unix socket

    @property
    def is_maildir(self) -> bool:
        return self.scheme == "maildir"

    @property
    def is_lmtp(self) -> bool:
        """triaged is the server: the MTA delivers to it (lmtp://host:port, lmtp+unix://path)."""
        return self.scheme in ("lmtp", "lmtp+unix")

    @property
    def has_login(self) -> bool:
        """Whether triaged logs in to it (not a Maildir, not its own LMTP server)."""
        return not self.is_maildir and not self.is_lmtp

    @property
    def tls(self) -> str:
        """ "implicit", "starttls", or "none"."""
        if self.scheme in ("imaps", "smtps"):
            return "implicit"
        if self.scheme in ("imap", "smtp"):
            return "starttls"
        return "none"

    def display(self) -> str:
        if self.is_maildir:
            return f"maildir:{self.path}"
        if self.scheme == "lmtp+unix":
            return f"lmtp+unix://{self.path}"
        user = f"{self.username}@" if self.username else ""
        folder = f"/{self.path}" if self.path else ""
        return f"{self.scheme}://{user}{self.host}:{self.port}{folder}"


@dataclass(frozen=True)
class ProjectConfig:
    name: str
    address: str
    timezone: ZoneInfo


@dataclass(frozen=True)
class MailboxConfig:
    endpoint: Endpoint
    password: Secret | None
    ca_file: Path | None
    processed_folder: str
    quarantine_folder: str
    poll_interval: Duration
    idle_renew: Duration
    connect_timeout: Duration
    batch_size: int
    auth: str = "password"  # or "oauth2": SASL XOAUTH2 with a token from [oauth2]
    # The List-Ids of the project's own list(s) in front of the mailbox (triaged/intake/lists.py).
    own_lists: frozenset[str] = frozenset()


@dataclass(frozen=True)
class SmtpConfig:
    endpoint: Endpoint
    password: Secret | None
    ca_file: Path | None
    timeout: Duration
    retry_initial: Duration
    retry_max: Duration
    give_up_after: Duration
    auth: str = "password"


@dataclass(frozen=True)
class OAuth2Config:
    """Where the access tokens for XOAUTH2 come from (triaged/mail/oauth2.py)."""

    token_url: str
    client_id: str
    client_secret: Secret | None
    scope: tuple[str, ...]
    # Delegated access: the refresh token's file (written back when the server rotates it).
    # None: the client credentials grant (app-only access).
    refresh_token_file: Path | None
    device_authorization_url: str | None = None
    provider: str | None = None

    @property
    def grant(self) -> str:
        return "refresh token" if self.refresh_token_file else "client credentials"


@dataclass(frozen=True)
class MaintainersConfig:
    members: tuple[str, ...]
    team: str | None

    @property
    def notify(self) -> tuple[str, ...]:
        """Where notices about the mailbox itself go: the team list, else every member."""
        return (self.team,) if self.team else self.members


@dataclass(frozen=True)
class PolicyConfig:
    acknowledge: Duration | None
    respond: Duration | None
    update_every: Duration | None
    resolve: dict[str, Duration]
    calendar: Calendar
    # Reminders before each deadline, the overdue repeat, and who else hears of a missed one.
    remind_before: tuple[Duration | Share, ...] = ()
    overdue_every: Duration = field(default_factory=lambda: Duration(1, "d"))
    escalate_to: str | None = None
    # Disclosure: the announcement's minimum delay after the fix, the embargo a bare /embargo
    # sets, the longest embargo (from when it is set), reminders before the embargo ends.
    disclose_after_fix: Duration | None = None
    embargo_default: Duration | None = None
    embargo_max: Duration | None = None
    embargo_remind: tuple[Duration | Share, ...] = (Duration(2, "d"),)


@dataclass(frozen=True)
class DigestConfig:
    enabled: bool
    schedule: str  # crontab (minute hour day month weekday), in the project's time zone


@dataclass(frozen=True)
class LivenessConfig:
    """How long the mailbox may be unreadable, or SMTP keep failing, before the team is told;
    how often the canary probes the whole path of mail, and how long one may take to come back.
    """

    mailbox_alert_after: Duration = field(default_factory=lambda: Duration(15, "m"))
    smtp_alert_after: Duration = field(default_factory=lambda: Duration(15, "m"))
    canary_every: Duration | None = None  # None: no canary
    canary_alert_after: Duration = field(default_factory=lambda: Duration(1, "h"))


@dataclass(frozen=True)
class AuthConfig:
    key_file: Path
    proofs: frozenset[str]
    authserv_id: str | None


@dataclass(frozen=True)
class LimitsConfig:
    max_message_size: int
    max_header_bytes: int
    max_headers: int
    max_mime_depth: int
    max_parts: int
    max_text_chars: int
    receipts_per_sender_per_day: int
    # Notices to the team about untrusted mail (held messages, refused commands) per report in
    # any hour; the rest wait for one summary.
    notices_per_report_per_hour: int = 3
    # The most one /attachments mail carries (bytes); larger files are named with the CLI.
    max_attachments_mail: int = 10 * 1024 * 1024


@dataclass(frozen=True)
class SpamVerdict:
    """A header your own mail server adds when it judges a message spam: the field's name and
    a pattern for its value (`*` and `?` as in file names, any case)."""

    header: str
    pattern: str

    def matches(self, value: str) -> bool:
        return fnmatch.fnmatchcase(value.strip().lower(), self.pattern.lower())

    def __str__(self) -> str:
        return f"{self.header}: {self.pattern}"


@dataclass(frozen=True)
class IntakeConfig:
    spam_verdicts: tuple[SpamVerdict, ...] = ()
    # Attachments up to this total size (bytes) ride along with the new-report notification;
    # 0 = none (they are listed, and /attachments or `triaged export` gets them).
    forward_attachments: int = 0


@dataclass(frozen=True)
class PackageConfig:
    """The software the reports are about, as advisories name it (OSV `affected[].package`)."""

    name: str = ""  # "" = the project's name
    ecosystem: str | None = None  # an OSV ecosystem: PyPI, npm, crates.io, Go, Maven...
    repository: str | None = None
    # The version lines that get security fixes: "1.0.x", "2.x", ">=2.0" (see core/versions.py).
    supported: tuple[str, ...] = ()


@dataclass(frozen=True)
class AdvisoryConfig:
    id_prefix: str | None = None  # None = the project's name, upper-cased
    url: str | None = None  # where an advisory is published; "{id}" is its ID


@dataclass(frozen=True)
class SecurityTxtConfig:
    """RFC 9116: what `triaged security-txt` writes, and when the published file expires."""

    contact: tuple[str, ...] = ()  # after mailto:<project.address>
    expires_after: Duration = field(default_factory=lambda: Duration(180, "d"))
    expires: datetime | None = None  # a fixed Expires instead of now + expires_after
    published_expires: datetime | None = None  # the Expires of the file now online
    warn_before: Duration = field(default_factory=lambda: Duration(30, "d"))
    encryption: tuple[str, ...] = ()
    acknowledgments: tuple[str, ...] = ()
    policy: tuple[str, ...] = ()
    preferred_languages: tuple[str, ...] = ()
    canonical: tuple[str, ...] = ()


@dataclass(frozen=True)
class OpenPGPConfig:
    """`[openpgp]`: the project's key and the maintainers' keys (see triaged/mail/openpgp.py)."""

    home: Path  # triaged's own GnuPG home directory (0700)
    secret_key_file: Path  # the project's armoured secret key
    public_keys: tuple[str, ...] = ()  # files or globs of armoured public keys, absolute
    encrypted_to_maintainers: str = "prefer"  # or "require"

    @property
    def require(self) -> bool:
        return self.encrypted_to_maintainers == "require"


@dataclass(frozen=True)
class Config:
    path: Path
    project: ProjectConfig
    mailbox: MailboxConfig
    smtp: SmtpConfig
    database: Path
    maintainers: MaintainersConfig
    policy: PolicyConfig
    limits: LimitsConfig
    auth: AuthConfig
    templates_dir: Path | None
    digest: DigestConfig = field(default_factory=lambda: DigestConfig(True, "0 9 * * mon"))
    liveness: LivenessConfig = field(default_factory=LivenessConfig)
    package: PackageConfig = field(default_factory=PackageConfig)
    advisory: AdvisoryConfig = field(default_factory=AdvisoryConfig)
    security_txt: SecurityTxtConfig = field(default_factory=SecurityTxtConfig)
    oauth2: OAuth2Config | None = None
    openpgp: OpenPGPConfig | None = None  # None: no [openpgp] section, OpenPGP is off
    intake: IntakeConfig = field(default_factory=IntakeConfig)


_REQUIRED: Any = object()


class _Section:
    """Reads one table of the file, remembering which keys were used."""

    def __init__(self, loader: _Loader, name: str, data: Any, required: bool = True) -> None:
        self.loader = loader
        self.name = name
        if data is None:
            if required:
                raise loader.error(name, "missing section")
            data = {}
        if not isinstance(data, dict):
            raise loader.error(name, "must be a table")
        self.data: dict[str, Any] = data
        self.used: set[str] = set()

    def key(self, key: str) -> str:
        return f"{self.name}.{key}"

    def get(self, key: str, kind: type[T], default: Any = _REQUIRED) -> T:
        self.used.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                raise self.loader.error(self.key(key), "missing key")
            return default  # type: ignore[no-any-return]
        value = self.data[key]
        # A TOML integer is not a bool and a bool is not an integer.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.loader.error(
                self.key(key), f"must be a {kind.__name__}, not {type(value).__name__}"
            )
        return value

    def convert(
        self, key: str, kind: type[T], fn: Callable[[T], Any], default: Any = _REQUIRED
    ) -> Any:
        value = self.get(key, kind, default)
        if value is None:
            return None
        try:
            return fn(value)
        except ValueError as exc:
            raise self.loader.error(self.key(key), str(exc)) from None

    def strings(self, key: str, default: Any = _REQUIRED) -> list[str]:
        values = self.get(key, list, default)
        for value in values:
            if not isinstance(value, str):
                raise self.loader.error(self.key(key), "must be a list of strings")
        return values

    def sub(self, key: str) -> _Section:
        self.used.add(key)
        return _Section(self.loader, self.key(key), self.data.get(key), required=False)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.loader.error(self.key(unknown[0]), "unknown key")


class _Loader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.base = path.parent

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(str(self.path), key, message)

    def file(self, section: _Section, key: str) -> Path | None:
        value = section.get(key, str, None)
        if not value:
            return None
        return self.resolve(value)

    def resolve(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.base / path

    def secret(self, section: _Section, key: str, required: bool) -> Secret | None:
        value = section.get(key, str, _REQUIRED if required else None)
        if not value:
            return None
        path = self.credential_path(value)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise self.error(section.key(key), f"cannot read {path}: {reason}") from None
        secret = text.strip("\r\n")
        if not secret:
            raise self.error(section.key(key), f"{path} is empty")
        return Secret(secret)

    def credential_path(self, value: str) -> Path:
        # A bare name is a systemd credential when the service was given one (LoadCredential=).
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        if creds and "/" not in value and (Path(creds) / value).exists():
            return Path(creds) / value
        return self.resolve(value)

    def endpoint(
        self, section: _Section, key: str, kind: str, default: Any = _REQUIRED
    ) -> Endpoint:
        url = section.get(key, str, default)
        try:
            return parse_url(url, kind, self.base)
        except ValueError as exc:
            raise self.error(section.key(key), str(exc)) from None


def _address(value: str) -> str:
    address = parse_address(value)
    if address is None:
        raise ValueError(f"{value!r} is not a plain e-mail address (local@domain)")
    return address


def _timezone(value: str) -> ZoneInfo:
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r} (use an IANA name such as 'Europe/Paris')"
        ) from None


def _positive(value: int) -> int:
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_SCHEMES = {
    "mailbox": {
        "imaps": 993,
        "imap": 143,
        "imap+plain": 143,
        "maildir": 0,
        # No port is assigned to LMTP; 8024 is what GNU Mailman uses.
        "lmtp": 8024,
        "lmtp+unix": 0,
    },
    "smtp": {"smtps": 465, "smtp": 587, "smtp+plain": 25, "maildir": 0},
}


def parse_url(url: str, kind: str, base: Path) -> Endpoint:
    """Parses a mailbox ("mailbox") or SMTP ("smtp") URL; raises ValueError with the reason."""
    schemes = _SCHEMES[kind]
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in schemes:
        raise ValueError(f"{url!r}: the scheme must be one of {', '.join(schemes)}")
    if scheme in ("maildir", "lmtp+unix"):
        raw_path = unquote((parts.netloc or "") + parts.path)
        if not raw_path:
            example = "maildir:///var/lib/x" if scheme == "maildir" else "lmtp+unix:///run/x.sock"
            raise ValueError(f"{url!r}: a {scheme} URL needs a path ({example})")
        path = Path(raw_path)
        return Endpoint(scheme, path=str(path if path.is_absolute() else base / path))
    if scheme == "lmtp":
        return _lmtp_endpoint(url, parts)
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host")
    try:
        port = parts.port or schemes[scheme]
    except ValueError:
        raise ValueError(f"{url!r}: bad port") from None
    host = parts.hostname
    if scheme.endswith("+plain") and not is_loopback(host):
        raise ValueError(
            f"{url!r}: {scheme} sends the password in clear and is only allowed for a loopback "
            f"host; use {scheme.split('+')[0]}s:// or {scheme.split('+')[0]}://"
        )
    username = unquote(parts.username or "")
    folder = unquote(parts.path.lstrip("/"))
    if kind == "mailbox":
        if not username:
            raise ValueError(f"{url!r}: no user name (imaps://user@host/INBOX)")
        folder = folder or "INBOX"
    elif folder:
        raise ValueError(f"{url!r}: an SMTP URL has no path")
    return Endpoint(scheme, host=host, port=port, username=username, path=folder)


def _lmtp_endpoint(url: str, parts: SplitResult) -> Endpoint:
    """lmtp://HOST:PORT, where triaged listens: like the other plaintext schemes, only on a
    loopback address (an MTA elsewhere reaches it through a Unix socket or a local relay)."""
    host = parts.hostname or ""
    if not host:
        raise ValueError(f"{url!r}: no host (lmtp://127.0.0.1:8024)")
    if not is_loopback(host):
        raise ValueError(
            f"{url!r}: LMTP has no authentication or TLS, so triaged listens only on a loopback"
            " address or a Unix socket (lmtp+unix:///run/triaged/lmtp.sock)"
        )
    try:
        port = parts.port or 8024
    except ValueError:
        raise ValueError(f"{url!r}: bad port") from None
    if parts.username or parts.path.strip("/"):
        raise ValueError(f"{url!r}: an LMTP URL has a host and a port only")
    return Endpoint("lmtp", host=host, port=port)


def _holiday(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def load(path: str | os.PathLike[str]) -> Config:
    """Loads and validates the file at `path`; raises ConfigError naming the file and the key."""
    path = Path(path)
    loader = _Loader(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise loader.error("(file)", f"cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise loader.error("(syntax)", str(exc)) from None
    return _build(loader, data)


def _build(loader: _Loader, data: dict[str, Any]) -> Config:
    """Builds the Config, one builder per section; every key of the file must be used."""
    top = _Section(loader, "", data)
    sections: list[_Section] = []

    def section(name: str, required: bool = True) -> _Section:
        top.used.add(name)
        sec = _Section(loader, name, data.get(name), required)
        sections.append(sec)
        return sec

    project = _project(section("project"))
    database = loader.resolve(section("database").get("path", str, "/var/lib/triaged/triaged.db"))
    policy_section = section("policy", required=False)
    resolve_section = policy_section.sub("resolve")
    sections.append(resolve_section)
    oauth2_section = section("oauth2", required=False)
    oauth2 = _oauth2(oauth2_section) if oauth2_section.data else None
    config = Config(
        path=loader.path,
        project=project,
        mailbox=_mailbox(section("mailbox"), oauth2, project),
        smtp=_smtp(section("smtp"), oauth2, project),
        database=database,
        maintainers=_maintainers(section("maintainers")),
        policy=_policy(policy_section, resolve_section, project),
        limits=_limits(section("limits", required=False)),
        auth=_auth(section("auth", required=False), database),
        templates_dir=_templates_dir(section("templates", required=False)),
        intake=_intake(section("intake", required=False)),
        digest=_digest(section("digest", required=False)),
        liveness=_liveness(section("liveness", required=False)),
        package=_package(section("package", required=False), project),
        advisory=_advisory(section("advisory", required=False)),
        security_txt=_security_txt(section("security_txt", required=False)),
        oauth2=oauth2,
        openpgp=_openpgp(section("openpgp", required=False), database),
    )
    if "openpgp" in config.auth.proofs and config.openpgp is None:
        raise loader.error("auth.proofs", 'the "openpgp" proof needs an [openpgp] section')
    for sec in sections:
        sec.done()
    top.done()
    return config


def _project(s: _Section) -> ProjectConfig:
    return ProjectConfig(
        name=s.get("name", str),
        address=s.convert("address", str, _address),
        timezone=s.convert("timezone", str, _timezone, "UTC"),
    )


def _mailbox(s: _Section, oauth2: OAuth2Config | None, project: ProjectConfig) -> MailboxConfig:
    auth = s.convert("auth", str, _login_kind, "password")
    default = _server_default(oauth2, auth, "imap", project)
    endpoint = s.loader.endpoint(s, "url", "mailbox", default)
    _check_login(s, auth, endpoint, oauth2)
    return MailboxConfig(
        endpoint=endpoint,
        password=s.loader.secret(
            s, "password_file", required=endpoint.has_login and auth == "password"
        ),
        ca_file=s.loader.file(s, "ca_file"),
        processed_folder=s.get("processed_folder", str, "triaged-processed"),
        quarantine_folder=s.get("quarantine_folder", str, "triaged-quarantine"),
        poll_interval=_dur(s, "poll_interval", "60s"),
        idle_renew=_dur(s, "idle_renew", "25m"),
        connect_timeout=_dur(s, "connect_timeout", "30s"),
        batch_size=s.convert("batch_size", int, _positive, 50),
        auth=auth,
        own_lists=s.convert("own_lists", list, _list_ids, []),
    )


_LIST_ID = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)+$")


def _list_ids(values: list[Any]) -> frozenset[str]:
    """List-Ids as RFC 2919 writes them inside the angle brackets: "security.example.org"."""
    ids = set()
    for value in values:
        if not isinstance(value, str):
            raise ValueError("must be a list of strings")
        list_id = value.strip().removeprefix("<").removesuffix(">").lower()
        if not _LIST_ID.match(list_id):
            raise ValueError(
                f"{value!r} is not a List-Id (the part in angle brackets of a List-Id header,"
                ' e.g. "security.example.org")'
            )
        ids.add(list_id)
    return frozenset(ids)


def _smtp(s: _Section, oauth2: OAuth2Config | None, project: ProjectConfig) -> SmtpConfig:
    auth = s.convert("auth", str, _login_kind, "password")
    endpoint = s.loader.endpoint(s, "url", "smtp", _server_default(oauth2, auth, "smtp", project))
    _check_login(s, auth, endpoint, oauth2)
    smtp = SmtpConfig(
        endpoint=endpoint,
        password=s.loader.secret(s, "password_file", required=False),
        ca_file=s.loader.file(s, "ca_file"),
        timeout=_dur(s, "timeout", "30s"),
        retry_initial=_dur(s, "retry_initial", "30s"),
        retry_max=_dur(s, "retry_max", "1h"),
        give_up_after=_dur(s, "give_up_after", "3d"),
        auth=auth,
    )
    if smtp.password and not smtp.endpoint.username and not smtp.endpoint.is_maildir:
        raise s.loader.error("smtp.url", "a password_file is set but the URL has no user name")
    return smtp


def _maintainers(s: _Section) -> MaintainersConfig:
    members = tuple(s.convert("members", list, lambda v: [_address(x) for x in v]))
    if not members:
        raise s.loader.error("maintainers.members", "list at least one maintainer")
    return MaintainersConfig(members, s.convert("team", str, _address, None))


def _policy(s: _Section, resolve_section: _Section, project: ProjectConfig) -> PolicyConfig:
    resolve = {}
    for severity in SEVERITIES:
        value = _dur(resolve_section, severity, None)
        if value is not None:
            resolve[severity] = value
    workdays = s.convert("workdays", list, _workdays, ["mon", "tue", "wed", "thu", "fri"])
    holidays = s.convert("holidays", list, lambda v: frozenset(_holiday(x) for x in v), [])
    policy = PolicyConfig(
        acknowledge=_dur(s, "acknowledge", None),
        respond=_dur(s, "respond", None),
        update_every=_dur(s, "update_every", None),
        resolve=resolve,
        calendar=Calendar(project.timezone, workdays, holidays),
        remind_before=tuple(s.convert("remind_before", list, _offsets, ["24h"])),
        overdue_every=_dur(s, "overdue_every", "1d"),
        escalate_to=s.convert("escalate_to", str, _address, None),
    )
    if policy.overdue_every.seconds <= 0:
        raise s.loader.error("policy.overdue_every", "must be a positive duration")
    return _disclosure_policy(s, policy)


def _digest(s: _Section) -> DigestConfig:
    return DigestConfig(
        enabled=s.get("enabled", bool, True),
        schedule=s.convert("schedule", str, _crontab, "0 9 * * mon"),
    )


def _liveness(s: _Section) -> LivenessConfig:
    return LivenessConfig(
        mailbox_alert_after=_wall_time(s, "mailbox_alert_after", "15m"),
        smtp_alert_after=_wall_time(s, "smtp_alert_after", "15m"),
        canary_every=_wall_time(s, "canary_every", "1h") if "canary_every" in s.data else None,
        canary_alert_after=_wall_time(s, "canary_alert_after", "1h"),
    )


def _limits(s: _Section) -> LimitsConfig:
    return LimitsConfig(
        max_message_size=s.convert("max_message_size", int, _positive, 25 * 1024 * 1024),
        max_header_bytes=s.convert("max_header_bytes", int, _positive, 256 * 1024),
        max_headers=s.convert("max_headers", int, _positive, 1000),
        max_mime_depth=s.convert("max_mime_depth", int, _positive, 20),
        max_parts=s.convert("max_parts", int, _positive, 500),
        max_text_chars=s.convert("max_text_chars", int, _positive, 1_000_000),
        receipts_per_sender_per_day=s.convert("receipts_per_sender_per_day", int, _positive, 1),
        notices_per_report_per_hour=s.convert("notices_per_report_per_hour", int, _positive, 3),
        max_attachments_mail=_size(s, "max_attachments_mail", "10MB", positive=True),
    )


def _intake(s: _Section) -> IntakeConfig:
    return IntakeConfig(
        spam_verdicts=tuple(s.convert("spam_verdicts", list, _spam_verdicts, [])),
        forward_attachments=_size(s, "forward_attachments", "0"),
    )


# A header field's name (RFC 5322: printable ASCII but the colon).
_FIELD_NAME = re.compile(r"^[!-9;-~]+$")


def _spam_verdicts(values: list[Any]) -> list[SpamVerdict]:
    verdicts = []
    for value in values:
        if not isinstance(value, str):
            raise ValueError("must be a list of strings")
        name, colon, pattern = value.partition(":")
        if not colon or not _FIELD_NAME.match(name.strip()) or not pattern.strip():
            raise ValueError(f"{value!r}: must be 'Header-Name: value pattern'")
        verdicts.append(SpamVerdict(name.strip(), pattern.strip()))
    return verdicts


_SIZE = re.compile(r"^(\d+)\s*([kmg]i?b?|b)?$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(value: object) -> int:
    """A size in bytes: a whole number, or one with a unit: B, KB, MB, GB (1024-based; KiB,
    MiB, GiB and K, M, G say the same)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    match = _SIZE.match(str(value).strip())
    if match is None:
        raise ValueError(f"{value!r} is not a size (a number of bytes, or e.g. '512KB', '10MB')")
    unit = (match.group(2) or "").lower()[:1]
    return int(match.group(1)) * _SIZE_UNITS[unit]


def _size(s: _Section, key: str, default: str, positive: bool = False) -> int:
    size: int = s.convert(key, object, parse_size, default)
    if positive and size <= 0:
        raise s.loader.error(s.key(key), "must be greater than zero")
    return size


def _auth(s: _Section, database: Path) -> AuthConfig:
    proofs = s.convert("proofs", list, _proofs, ["token"])
    auth = AuthConfig(
        key_file=s.loader.file(s, "key_file") or database.with_name("triaged.key"),
        proofs=proofs,
        authserv_id=s.get("authserv_id", str, None) or None,
    )
    if "dmarc" in proofs and auth.authserv_id is None:
        raise s.loader.error(
            "auth.authserv_id", "the dmarc proof needs the authserv-id of your own mail server"
        )
    return auth


def _package(s: _Section, project: ProjectConfig) -> PackageConfig:
    return PackageConfig(
        name=s.convert("name", str, _nonempty, project.name),
        ecosystem=s.convert("ecosystem", str, _nonempty, None),
        repository=s.convert("repository", str, _web_url, None),
        supported=tuple(s.convert("supported", list, _supported, [])),
    )


def _advisory(s: _Section) -> AdvisoryConfig:
    return AdvisoryConfig(
        id_prefix=s.convert("id_prefix", str, _id_prefix, None),
        url=s.convert("url", str, _web_url, None),
    )


def _security_txt(s: _Section) -> SecurityTxtConfig:
    if "expires" in s.data and "expires_after" in s.data:
        raise s.loader.error("security_txt.expires", "set expires or expires_after, not both")
    expires_after = _dur(s, "expires_after", "180d")
    warn_before = _dur(s, "warn_before", "30d")
    for name, value in (("expires_after", expires_after), ("warn_before", warn_before)):
        if value.business_days or value.seconds <= 0:
            raise s.loader.error(
                f"security_txt.{name}", "must be a positive duration in s, m, h, d or w"
            )
    return SecurityTxtConfig(
        contact=tuple(s.convert("contact", list, _contacts, [])),
        expires_after=expires_after,
        expires=s.convert("expires", object, _moment, None),
        published_expires=s.convert("published_expires", object, _moment, None),
        warn_before=warn_before,
        encryption=tuple(s.convert("encryption", list, _encryption, [])),
        acknowledgments=tuple(s.convert("acknowledgments", list, _https_list, [])),
        policy=tuple(s.convert("policy", list, _https_list, [])),
        preferred_languages=tuple(s.convert("preferred_languages", list, _languages, [])),
        canonical=tuple(s.convert("canonical", list, _https_list, [])),
    )


def _templates_dir(s: _Section) -> Path | None:
    templates_dir = s.loader.file(s, "directory")
    if templates_dir is not None and not templates_dir.is_dir():
        raise s.loader.error("templates.directory", f"{templates_dir} is not a directory")
    return templates_dir


def _openpgp(s: _Section, database: Path) -> OpenPGPConfig | None:
    """`[openpgp]`; None when the section is absent. The key files are read at start (and by
    `triaged check`), so that `triaged key generate` can write the one this names."""
    if not s.data:
        return None
    loader = s.loader
    secret = s.get("secret_key_file", str)
    if not secret:
        raise loader.error(s.key("secret_key_file"), "name the project's secret key file")
    home = loader.file(s, "home") or database.parent / "gnupg"
    patterns = s.strings("public_keys", [])
    mode = s.get("encrypted_to_maintainers", str, "prefer")
    if mode not in ("prefer", "require"):
        raise loader.error(
            s.key("encrypted_to_maintainers"), f'{mode!r}: use "prefer" or "require"'
        )
    return OpenPGPConfig(
        home=home,
        secret_key_file=loader.credential_path(secret),
        public_keys=tuple(str(loader.resolve(p)) for p in patterns),
        encrypted_to_maintainers=mode,
    )


def _dur(section: _Section, key: str, default: str | None) -> Any:
    value = section.get(key, str, default)
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise section.loader.error(section.key(key), str(exc)) from None


def _wall_time(section: _Section, key: str, default: str) -> Duration:
    """A positive duration in plain time (s, m, h, d, w): outages are not counted in workdays."""
    value: Duration = _dur(section, key, default)
    if value.business_days:
        raise section.loader.error(
            section.key(key), f"'{value}': use s, m, h, d or w here, not business days"
        )
    if value.seconds <= 0:
        raise section.loader.error(section.key(key), "must be a positive duration")
    return value


def _offsets(values: list[Any]) -> list[Duration | Share]:
    return [parse_offset(str(value)) for value in values]


def _crontab(value: str) -> str:
    # Imported here: the scheduler is only needed to check this one key.
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(value)
    except ValueError as exc:
        raise ValueError(
            f"{value!r} is not a crontab schedule (minute hour day month weekday,"
            f" e.g. '0 9 * * mon'): {exc}"
        ) from None
    return value


def _proofs(values: list[str]) -> frozenset[str]:
    proofs = frozenset(str(v) for v in values)
    unknown = proofs - {"token", "dmarc", "openpgp"}
    if unknown or not proofs:
        raise ValueError('list one or more of the proofs "token", "dmarc" and "openpgp"')
    return proofs


def _workdays(values: list[str]) -> frozenset[int]:
    days = set()
    for value in values:
        name = value.strip().lower()[:3]
        if name not in _WEEKDAYS:
            raise ValueError(f"{value!r} is not a weekday (mon, tue, ... sun)")
        days.add(_WEEKDAYS.index(name))
    return frozenset(days)


def config_path(option: str | None) -> Path:
    """--config, else $TRIAGED_CONFIG, else /etc/triaged/config.toml."""
    return Path(option or os.environ.get("TRIAGED_CONFIG") or DEFAULT_PATH)


# --- disclosure: [package], [advisory], [security_txt] -----------------------------------

_ID_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,31}$")
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")


def _nonempty(value: str) -> str:
    if not value.strip() or value != " ".join(value.split()):
        raise ValueError(f"{value!r}: must be one line of text without surrounding spaces")
    return value


def _id_prefix(value: str) -> str:
    if not _ID_PREFIX.match(value):
        raise ValueError(f"{value!r}: letters, digits and '-', starting with a letter (PYSEC)")
    return value


def _uri(value: Any, schemes: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a list of strings")
    if not value.startswith(schemes) or len(value.split()) != 1 or value.strip() != value:
        raise ValueError(f"{value!r} is not a URI starting with {' or '.join(schemes)}")
    return value


def _web_url(value: str) -> str:
    return _uri(value, ("https://", "http://"))


def _https_list(values: list[Any]) -> list[str]:
    # RFC 9116 2.5: a web URI in security.txt must begin with https://.
    return [_uri(value, ("https://",)) for value in values]


def _contacts(values: list[Any]) -> list[str]:
    contacts = []
    for value in values:
        if isinstance(value, str) and parse_address(value) is not None:
            value = f"mailto:{value}"
        contacts.append(_uri(value, ("mailto:", "https://", "tel:")))
    return contacts


def _encryption(values: list[Any]) -> list[str]:
    return [_uri(value, ("https://", "openpgp4fpr:", "dns:")) for value in values]


def _languages(values: list[Any]) -> list[str]:
    for value in values:
        if not isinstance(value, str) or not _LANGUAGE.match(value):
            raise ValueError(f"{value!r} is not a language tag (en, fr, pt-BR)")
    return values


def _supported(values: list[Any]) -> list[str]:
    if not all(isinstance(value, str) for value in values):
        raise ValueError("must be a list of strings")
    return [check_line(value) for value in values]


def _moment(value: Any) -> datetime:
    """A TOML date or date-time, or such a string; a date, or no offset, is taken in UTC."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a date (2027-06-01) or a date-time") from None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    raise ValueError(f"{value!r} is not a date (2027-06-01) or a date-time")


# --- disclosure: [policy] embargo and announcement keys ----------------------------------


def _disclosure_policy(section: _Section, policy: PolicyConfig) -> PolicyConfig:
    """Adds disclose_after_fix, embargo_default, embargo_max and embargo_remind."""
    values: dict[str, Duration | None] = {}
    for key in ("disclose_after_fix", "embargo_default", "embargo_max"):
        value: Duration | None = _dur(section, key, None)
        if value is not None and value.seconds <= 0:
            raise section.loader.error(section.key(key), "must be a positive duration")
        values[key] = value
    cap = values["embargo_max"]
    for key in ("disclose_after_fix", "embargo_default"):
        value = values[key]
        # Business days have no fixed length: those are checked when an embargo is set.
        if (
            cap is not None
            and value is not None
            and not (cap.business_days or value.business_days)
            and value.seconds > cap.seconds
        ):
            raise section.loader.error(
                section.key(key), f"'{value}' is longer than embargo_max ('{cap}')"
            )
    return replace(
        policy,
        disclose_after_fix=values["disclose_after_fix"],
        embargo_default=values["embargo_default"],
        embargo_max=cap,
        embargo_remind=tuple(section.convert("embargo_remind", list, _offsets, ["2d"])),
    )


# --- [oauth2] and the auth keys of [mailbox] and [smtp] ------------------------------------


def _login_kind(value: str) -> str:
    if value not in AUTHS:
        raise ValueError(f'{value!r}: must be "password" or "oauth2"')
    return value


def _server_default(
    oauth2: OAuth2Config | None, auth: str, kind: str, project: ProjectConfig
) -> Any:
    """With auth = "oauth2" and a provider, the provider's server, logged in to as the project's
    address; otherwise the URL is required."""
    provider = PROVIDERS.get(oauth2.provider or "") if oauth2 else None
    if auth != "oauth2" or provider is None:
        return _REQUIRED
    url = provider.imap_url if kind == "imap" else provider.smtp_url
    return url.format(user=quote(project.address, safe=""))


def _check_login(
    section: _Section, auth: str, endpoint: Endpoint, oauth2: OAuth2Config | None
) -> None:
    if auth != "oauth2":
        return
    error = section.loader.error
    if not endpoint.has_login:
        raise error(
            section.key("auth"), '"oauth2" needs a server to log in to: a Maildir or LMTP has none'
        )
    if oauth2 is None:
        raise error(section.key("auth"), '"oauth2" needs an [oauth2] section')
    if "password_file" in section.data:
        raise error(section.key("password_file"), 'not used with auth = "oauth2": remove it')
    if not endpoint.username:
        raise error(
            section.key("url"),
            "XOAUTH2 logs in as the URL's user: add it (smtp://security%40example.org@host)",
        )


def _oauth2(s: _Section) -> OAuth2Config:
    loader = s.loader
    provider: Provider | None = s.convert("provider", str, _provider, None)
    # Not a credential: triaged writes a rotated refresh token back to this file.
    refresh_token_file = loader.file(s, "refresh_token_file")
    app_only = refresh_token_file is None
    if provider is not None and app_only and provider.app_scope is None:
        raise loader.error(
            s.key("refresh_token_file"),
            f"provider {provider.name} has no client credentials grant for mail: set it",
        )
    if (
        provider is not None
        and app_only
        and provider.app_needs_token_url
        and "token_url" not in s.data
    ):
        raise loader.error(
            s.key("token_url"),
            "app-only access (no refresh_token_file) needs your tenant's token URL, "
            "https://login.microsoftonline.com/TENANT-ID/oauth2/v2.0/token",
        )
    token_url = s.convert(
        "token_url", str, _oauth_url, provider.token_url if provider else _REQUIRED
    )
    scopes = provider.app_scope if provider and app_only else provider.scope if provider else ()
    client_secret = loader.secret(s, "client_secret_file", required=False)
    if app_only and client_secret is None:
        raise loader.error(
            s.key("client_secret_file"),
            "the client credentials grant (no refresh_token_file) needs the client secret",
        )
    device_default = provider.device_url(token_url) if provider else None
    return OAuth2Config(
        token_url=token_url,
        client_id=s.convert("client_id", str, _nonempty),
        client_secret=client_secret,
        scope=s.convert("scope", object, _scope, list(scopes or ())),
        refresh_token_file=refresh_token_file,
        device_authorization_url=s.convert(
            "device_authorization_url", str, _oauth_url, device_default
        ),
        provider=provider.name if provider else None,
    )


def _provider(value: str) -> Provider:
    if value not in PROVIDERS:
        raise ValueError(f"{value!r}: must be one of {', '.join(sorted(PROVIDERS))}")
    return PROVIDERS[value]


def _oauth_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme == "https" and parts.hostname:
        return value
    if parts.scheme == "http" and parts.hostname and is_loopback(parts.hostname):
        return value
    raise ValueError(f"{value!r}: must be an https:// URL (http:// only for a loopback host)")


def _scope(value: Any) -> tuple[str, ...]:
    """A space-separated string, as OAuth2 spells it, or a list of strings."""
    items = value.split() if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) and i.strip() for i in items):
        raise ValueError("must be a string of space-separated scopes, or a list of strings")
    return tuple(i.strip() for i in items)

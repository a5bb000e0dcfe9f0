"""OAuth2 for the mailbox and SMTP: access tokens for SASL XOAUTH2, kept fresh without a person.

One `TokenManager` per process serves both sides: they share one grant, and with a refresh
token that the server rotates, two refreshers would race and one would use a spent token. It
keeps the access token in memory only, refreshes it ahead of expiry, and fetches a new one when
a server refuses it (`refused()`; the mailbox and SMTP code then try once more). The refresh
token is read from `refresh_token_file` at every refresh, so a file that `triaged oauth2 login`
(or a person) replaced is used at the next try; a rotated one is written back atomically, mode
0600. Without `refresh_token_file`, the client credentials grant is used (app-only access).

No token, secret or device code ever goes into a log line or an error message.

oauthlib builds the grant requests and reads the answers, with RFC 6749's and RFC 8628's error
codes; the one HTTP POST each needs is urllib's.
"""

from __future__ import annotations

import json
import logging
import os
import re
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from oauthlib.oauth2 import (
    BackendApplicationClient,
    DeviceClient,
    OAuth2Error,
    WebApplicationClient,
)

from triaged.config import Config, OAuth2Config, Secret
from triaged.core.files import fsync_path
from triaged.core.text import CONTROL_CHARS
from triaged.errors import TokenError
from triaged.mail.providers import PROVIDERS

log = logging.getLogger(__name__)

# A token is refreshed when less than this is left of it, or less than half its lifetime when
# that is shorter: a login must never race the expiry.
REFRESH_AHEAD = 300.0
DEFAULT_LIFETIME = 3600  # when the server says nothing (RFC 6749 5.1 makes expires_in optional)
TIMEOUT = 30.0
MAX_RESPONSE = 64 * 1024
# Answers of the token endpoint after which trying again alone cannot help.
_LASTING = {"invalid_grant", "invalid_client", "unauthorized_client", "invalid_scope"}
_CONTROL = re.compile(f"[{CONTROL_CHARS}]+")

Clock = Callable[[], float]


def xoauth2(user: str, token: str) -> str:
    """The SASL XOAUTH2 initial response, before base64 (Google's and Microsoft's spelling)."""
    return f"user={user}\x01auth=Bearer {token}\x01\x01"


def login_command(config_path: Path) -> str:
    return f"triaged --config {config_path} oauth2 login"


@dataclass(frozen=True)
class AccessToken:
    value: Secret
    expires_at: float  # on `clock`
    lifetime: float

    def due(self, now: float) -> bool:
        return self.expires_at - now <= min(REFRESH_AHEAD, self.lifetime / 2)


class TokenManager:
    """Access tokens for one [oauth2] section; safe to share between threads."""

    def __init__(self, config: OAuth2Config, config_path: Path, clock: Clock = time.time) -> None:
        self.config = config
        self.config_path = config_path
        self.clock = clock
        self._lock = threading.Lock()
        self._token: AccessToken | None = None
        # The refresh token ("" for client credentials) the server refused for good, and why:
        # it is not sent again, so a retry loop does not hammer the endpoint.
        self._refused: tuple[str, TokenError] | None = None
        # A rotated refresh token that could not be written back yet: the server has spent
        # the one in the file, so this one is used (and written) at the next refresh.
        self._unsaved: str | None = None

    @property
    def fix(self) -> str:
        return login_command(self.config_path)

    def token(self) -> str:
        """A valid access token, fetched when there is none or it is about to expire.

        Raises TokenError (lasting: a revoked grant, a wrong secret, no refresh token).
        """
        with self._lock:
            now = self.clock()
            if self._token is None or self._token.due(now):
                self._token = self._fetch(now)
            return self._token.value.reveal()

    def refused(self, token: str) -> None:
        """A server refused `token`: the next `token()` fetches a new one."""
        with self._lock:
            if self._token is not None and self._token.value.reveal() == token:
                self._token = None

    def expires_in(self) -> float | None:
        """Seconds left on the token in memory, if there is one."""
        token = self._token
        return None if token is None else token.expires_at - self.clock()

    def _fetch(self, now: float) -> AccessToken:
        config = self.config
        secret = config.client_secret.reveal() if config.client_secret else None
        if config.refresh_token_file is None:
            refresh = ""
        else:
            refresh = self._unsaved or self._read_refresh_token()
        if self._refused is not None and self._refused[0] == refresh:
            raise self._refused[1]
        if refresh:
            body = WebApplicationClient(config.client_id).prepare_refresh_body(
                refresh_token=refresh,
                scope=list(config.scope) or None,
                client_id=config.client_id,
                client_secret=secret,
            )
        else:
            body = BackendApplicationClient(config.client_id).prepare_request_body(
                scope=list(config.scope) or None, include_client_id=True, client_secret=secret
            )
        try:
            params = _token_request(config.token_url, body)
        except OAuth2Error as exc:
            error = self._refusal(exc)
            if error.lasting:
                self._refused = (refresh, error)
                if refresh == self._unsaved:
                    self._unsaved = None  # the file is the way back (`oauth2 login`)
            raise error from None
        self._refused = None
        lifetime = _lifetime(params.get("expires_in"))
        log.debug(
            "new access token from %s (%s grant), valid for %d s",
            config.token_url,
            config.grant,
            lifetime,
        )
        rotated = params.get("refresh_token")
        if refresh and isinstance(rotated, str) and rotated and rotated != refresh:
            self._save(rotated)
        return AccessToken(Secret(str(params["access_token"])), now + lifetime, lifetime)

    def _save(self, rotated: str) -> None:
        path = self.config.refresh_token_file
        assert path is not None
        try:
            write_refresh_token(path, rotated)
        except OSError as exc:
            self._unsaved = rotated
            log.error(
                "cannot write the rotated refresh token to %s (%s): it is kept in memory and "
                "written at the next refresh; a restart before then needs `%s`",
                path,
                exc.strerror or exc,
                self.fix,
            )
            return
        self._unsaved = None
        log.info("the token endpoint rotated the refresh token; the new one is in %s", path)

    def _read_refresh_token(self) -> str:
        path = self.config.refresh_token_file
        assert path is not None
        try:
            text = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise TokenError(
                f"OAuth2: no refresh token yet ({path} does not exist)", self.fix, lasting=True
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise TokenError(
                f"OAuth2: cannot read the refresh token file {path}: {reason}",
                "make it readable by the user triaged runs as",
                lasting=True,
            ) from None
        if not text:
            raise TokenError(f"OAuth2: the refresh token file {path} is empty", self.fix, True)
        return text

    def _refusal(self, exc: OAuth2Error) -> TokenError:
        """What the token endpoint's refusal means, and what fixes it."""
        code = str(exc.error or "error")
        said = f"{code}: {_clean(exc.description)}" if exc.description else code
        url = self.config.token_url
        lasting = code in _LASTING
        if code == "invalid_grant" and self.config.refresh_token_file is not None:
            what = (
                f"OAuth2: {url} refused the refresh token in {self.config.refresh_token_file} "
                f"({said}): the grant was revoked or has expired"
            )
            return TokenError(what, self.fix, lasting)
        if code in ("invalid_client", "unauthorized_client"):
            what = (
                f"OAuth2: {url} refused the client {self.config.client_id} ({said}): a wrong "
                "client ID or secret, or the secret has expired"
            )
            fix = (
                "write the client's current secret into [oauth2] client_secret_file, then "
                "systemctl reload triaged"
            )
            return TokenError(what, fix, lasting)
        if code == "invalid_scope":
            return TokenError(
                f"OAuth2: {url} refused the scope {' '.join(self.config.scope)!r} ({said})",
                "correct [oauth2] scope, then systemctl reload triaged",
                lasting,
            )
        return TokenError(f"OAuth2: {url} gave no access token ({said})", "", lasting)


def tokens_for(config: Config) -> TokenManager | None:
    """The token manager when the mailbox or SMTP logs in with OAuth2, else None."""
    if config.oauth2 is None or "oauth2" not in (config.mailbox.auth, config.smtp.auth):
        return None
    return TokenManager(config.oauth2, config.path)


def write_refresh_token(path: Path, token: str) -> None:
    """Replaces `path` with `token` atomically, mode 0600.

    The new file keeps the owner of the old one (or of its directory): `triaged oauth2 login`
    run as root must leave a file the service's own user can read and rewrite.
    """
    directory = path.parent
    try:
        owner = path.stat()
    except FileNotFoundError:
        owner = directory.stat()
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o600)
            if os.geteuid() == 0:
                os.fchown(fh.fileno(), owner.st_uid, owner.st_gid)
            fh.write(token + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(directory)


# --- the device authorization grant (RFC 8628): `triaged oauth2 login` -------------------


@dataclass(frozen=True)
class DeviceCode:
    """What the person at the terminal needs, and what the polling sends back."""

    device_code: Secret
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float
    interval: float


def device_authorization(config: OAuth2Config) -> DeviceCode:
    """Asks the device authorization endpoint for a user code (RFC 8628 3.1)."""
    url = config.device_authorization_url
    if url is None:
        provider = PROVIDERS.get(config.provider or "")
        reason = provider.no_device_flow if provider else ""
        raise TokenError(reason or "OAuth2: [oauth2] device_authorization_url is not set")
    fields = {"client_id": config.client_id}
    if config.scope:
        fields["scope"] = " ".join(config.scope)
    if config.client_secret is not None:
        fields["client_secret"] = config.client_secret.reveal()
    status, raw = _post(url, urlencode(fields))
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise TokenError(f"OAuth2: {url} answered HTTP {status} without JSON")
    if "error" in answer:
        said = f"{answer['error']}: {_clean(answer.get('error_description'))}"
        raise TokenError(f"OAuth2: {url} refused the device authorization request ({said})")
    # Google spells it verification_url.
    verification = answer.get("verification_uri") or answer.get("verification_url")
    device_code, user_code = answer.get("device_code"), answer.get("user_code")
    if not all(isinstance(v, str) and v for v in (verification, device_code, user_code)):
        raise TokenError(f"OAuth2: {url} answered without a device code, user code or URL")
    complete = answer.get("verification_uri_complete")
    return DeviceCode(
        device_code=Secret(str(device_code)),
        user_code=str(user_code),
        verification_uri=str(verification),
        verification_uri_complete=complete if isinstance(complete, str) else None,
        expires_in=_number(answer.get("expires_in"), 900),
        interval=_number(answer.get("interval"), 5),
    )


def poll_device_token(
    config: OAuth2Config,
    code: DeviceCode,
    sleep: Callable[[float], None] = time.sleep,
    clock: Clock = time.monotonic,
) -> str:
    """Polls the token endpoint until the person signed in (RFC 8628 3.4, 3.5); returns the
    refresh token. Raises TokenError when they declined, or the code expired."""
    secret = config.client_secret.reveal() if config.client_secret else None
    client = DeviceClient(config.client_id)
    interval = code.interval
    deadline = clock() + code.expires_in
    while True:
        sleep(interval)
        if clock() > deadline:
            raise TokenError("OAuth2: the code expired before the sign-in was done; run again")
        body = client.prepare_request_body(
            code.device_code.reveal(), include_client_id=True, client_secret=secret
        )
        try:
            params = _token_request(config.token_url, body)
        except OAuth2Error as exc:
            if exc.error == "authorization_pending":
                continue
            if exc.error == "slow_down":
                interval += 5  # RFC 8628 3.5: for this and every later request
                continue
            if exc.error == "access_denied":
                raise TokenError("OAuth2: the sign-in was declined") from None
            if exc.error == "expired_token":
                raise TokenError("OAuth2: the code expired before the sign-in; run again") from None
            said = f"{exc.error}: {_clean(exc.description)}" if exc.description else exc.error
            raise TokenError(f"OAuth2: {config.token_url} refused the sign-in ({said})") from None
        refresh = params.get("refresh_token")
        if not isinstance(refresh, str) or not refresh:
            raise TokenError(
                "OAuth2: the sign-in worked but the server issued no refresh token (Microsoft "
                "needs offline_access in [oauth2] scope)"
            )
        return refresh


# --- HTTP ----------------------------------------------------------------------------------


def _token_request(url: str, body: str) -> dict[str, Any]:
    """POSTs a grant to the token endpoint; its answer, or OAuth2Error (the server's error
    code), or TokenError (no usable answer at all)."""
    status, raw = _post(url, body)
    if status >= 500:
        raise TokenError(f"OAuth2: {url} answered HTTP {status}; triaged retries by itself")
    try:
        text = raw.decode("utf-8")
        # The client's own scope is not passed: providers answer with fewer or more scopes
        # than were asked for (Microsoft leaves out offline_access), which is no error here.
        params = WebApplicationClient(None).parse_request_body_response(text)
    except OAuth2Error:
        raise
    except (ValueError, UnicodeDecodeError):
        raise TokenError(f"OAuth2: {url} answered HTTP {status} with no token") from None
    return dict(params)


def _post(url: str, body: str) -> tuple[int, bytes]:
    request = urllib.request.Request(  # noqa: S310 (the config allows https, and http to loopback)
        url,
        data=body.encode("ascii"),
        method="POST",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        },
    )
    context = ssl.create_default_context()
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT, context=context) as response:  # noqa: S310
            return int(response.status), response.read(MAX_RESPONSE)
    except urllib.error.HTTPError as exc:
        # An OAuth2 error answer is a 400 or 401 with a JSON body.
        with exc:
            return exc.code, exc.read(MAX_RESPONSE)
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise TokenError(
            f"OAuth2: cannot reach the token endpoint {url}: {reason}; triaged retries by itself"
        ) from None


def _lifetime(value: Any) -> float:
    return _number(value, DEFAULT_LIFETIME)


def _number(value: Any, default: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return float(default)
    return number if number >= 0 else float(default)


def _clean(text: Any) -> str:
    """A server's error description: one line, bounded."""
    line = _CONTROL.sub(" ", str(text or "")).strip()
    return line if len(line) <= 300 else line[:297] + "..."

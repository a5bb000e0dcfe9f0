"""Where mail goes: one interface, an SMTP and a Maildir implementation."""

from __future__ import annotations

import logging
import mailbox as std_mailbox
import smtplib
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from triaged.config import SmtpConfig
from triaged.errors import ConnectionFailure, PermanentFailure, TemporaryFailure, TokenError
from triaged.mail.oauth2 import TokenManager, xoauth2

log = logging.getLogger(__name__)


class Transport(Protocol):
    def send(self, envelope_from: str, recipient: str, raw: bytes) -> None:
        """Hands one message over; raises TemporaryFailure or PermanentFailure."""

    def check(self) -> str:
        """Connects and greets the server; returns what it said, raises TemporaryFailure."""
        ...

    def close(self) -> None:
        """Closes any open connection; never raises."""


def _tls_context(ca_file: Path | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


class SmtpTransport:
    """SMTP with one connection reused across messages; TLS verified unless smtp+plain."""

    def __init__(
        self,
        config: SmtpConfig,
        local_hostname: str | None = None,
        tokens: TokenManager | None = None,
    ) -> None:
        if config.auth == "oauth2" and tokens is None:
            raise ValueError("smtp.auth is oauth2: SmtpTransport needs a TokenManager")
        self.config = config
        self.local_hostname = local_hostname
        self.tokens = tokens
        self._smtp: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        ep = self.config.endpoint
        timeout = self.config.timeout.seconds
        try:
            smtp: smtplib.SMTP
            if ep.tls == "implicit":
                smtp = smtplib.SMTP_SSL(
                    ep.host,
                    ep.port,
                    local_hostname=self.local_hostname,
                    timeout=timeout,
                    context=_tls_context(self.config.ca_file),
                )
            else:
                smtp = smtplib.SMTP(
                    ep.host, ep.port, local_hostname=self.local_hostname, timeout=timeout
                )
            smtp.ehlo()
            if ep.tls == "starttls":
                if not smtp.has_extn("starttls"):
                    smtp.close()
                    raise ConnectionFailure(
                        f"{ep.display()} does not offer STARTTLS; refusing to send in clear"
                    )
                smtp.starttls(context=_tls_context(self.config.ca_file))
                smtp.ehlo()
            if self.tokens is not None and self.config.auth == "oauth2":
                try:
                    self._xoauth2(smtp, self.tokens)
                except BaseException:
                    smtp.close()
                    raise
            elif self.config.password is not None:
                smtp.login(ep.username, self.config.password.reveal())
        except ConnectionFailure:
            raise
        except smtplib.SMTPAuthenticationError as exc:
            raise ConnectionFailure(f"{ep.display()}: login refused ({exc.smtp_code})") from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise ConnectionFailure(f"{ep.display()}: {exc}") from exc
        return smtp

    def _xoauth2(self, smtp: smtplib.SMTP, tokens: TokenManager) -> None:
        """AUTH XOAUTH2; a refused token is replaced by a new one, once."""
        ep = self.config.endpoint
        if "XOAUTH2" not in smtp.esmtp_features.get("auth", "").upper().split():
            raise ConnectionFailure(f"{ep.display()} does not offer AUTH XOAUTH2")
        for attempt in (1, 2):
            try:
                token = tokens.token()
            except TokenError as exc:
                raise ConnectionFailure(f"{ep.display()}: {exc}") from exc
            try:
                smtp.auth("XOAUTH2", _xoauth2_answers(ep.username, token))
                return
            except smtplib.SMTPAuthenticationError as exc:
                tokens.refused(token)
                said = f"{exc.smtp_code} {_text(exc.smtp_error)}"
                if attempt == 1:
                    # Expired or revoked early: expected now and then, not worth a warning.
                    log.info(
                        "%s refused the access token (%s); trying once more with a new one",
                        ep.display(),
                        said,
                    )
                    continue
                raise ConnectionFailure(
                    f"{ep.display()}: XOAUTH2 login as {ep.username!r} failed with a new token "
                    f"too: {said} (may the app send as this user?)"
                ) from exc

    def check(self) -> str:
        smtp = self._connect()
        try:
            code, _ = smtp.noop()
            return f"{self.config.endpoint.display()} answered {code}"
        except (smtplib.SMTPException, OSError) as exc:
            raise ConnectionFailure(f"{self.config.endpoint.display()}: {exc}") from exc
        finally:
            _quit(smtp)

    def send(self, envelope_from: str, recipient: str, raw: bytes) -> None:
        if self._smtp is None:
            self._smtp = self._connect()
        try:
            refused = self._smtp.sendmail(envelope_from, [recipient], raw)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()), (0, b""))
            self._fail(code, text)
        except smtplib.SMTPResponseException as exc:
            self._fail(exc.smtp_code, exc.smtp_error)
        except (smtplib.SMTPException, OSError) as exc:
            self.close()
            raise ConnectionFailure(f"{self.config.endpoint.display()}: {exc}") from exc
        if refused:
            code, text = next(iter(refused.values()))
            self._fail(code, text)

    def _fail(self, code: int, text: bytes | str) -> None:
        reason = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        if 500 <= code < 600:
            self._reset()
            raise PermanentFailure(f"{code} {reason}")
        self._reset()
        raise TemporaryFailure(f"{code} {reason}")

    def _reset(self) -> None:
        # After a refused transaction the session must be reset before the next MAIL FROM.
        if self._smtp is not None:
            try:
                self._smtp.rset()
            except (smtplib.SMTPException, OSError):
                self.close()

    def close(self) -> None:
        if self._smtp is not None:
            _quit(self._smtp)
            self._smtp = None


def _xoauth2_answers(user: str, token: str) -> Callable[..., str]:
    """smtplib's authobject: the XOAUTH2 string first; to the server's error challenge (a JSON
    status), the empty answer that ends the exchange with the refusal."""
    sent = False

    def answer(challenge: bytes | None = None) -> str:
        nonlocal sent
        if sent:
            return ""
        sent = True
        return xoauth2(user, token)

    return answer


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _quit(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


class MaildirTransport:
    """The embedded outbox: each message delivered as a file in a local Maildir."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def send(self, envelope_from: str, recipient: str, raw: bytes) -> None:
        # What a delivering MTA would add: the envelope, so the file says who it was for.
        envelope = f"Return-Path: <{envelope_from}>\r\nDelivered-To: {recipient}\r\n".encode()
        try:
            std_mailbox.Maildir(self.path, create=True).add(envelope + raw)
        except OSError as exc:
            raise ConnectionFailure(f"cannot write to Maildir {self.path}: {exc}") from exc

    def check(self) -> str:
        try:
            std_mailbox.Maildir(self.path, create=True)
        except OSError as exc:
            raise ConnectionFailure(f"cannot open Maildir {self.path}: {exc}") from exc
        return f"maildir:{self.path} is writable"

    def close(self) -> None:
        return None


def open_transport(config: SmtpConfig, tokens: TokenManager | None = None) -> Transport:
    """`tokens` logs in with OAuth2 (smtp.auth = "oauth2"; see triaged.mail.oauth2)."""
    if config.endpoint.is_maildir:
        return MaildirTransport(config.endpoint.path)
    return SmtpTransport(config, tokens=tokens)

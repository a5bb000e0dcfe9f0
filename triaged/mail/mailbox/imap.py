"""The IMAP mailbox: imapclient over implicit TLS, STARTTLS, or (loopback only) plain text.

Messages are read with BODY.PEEK[] so nothing is marked \\Seen, and leave the folder only when
the caller says their effects are committed: UID MOVE to the processed or quarantine folder,
or, on a server without MOVE, a keyword that `pending()` skips.
"""

from __future__ import annotations

import imaplib
import logging
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any, TypeVar

from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from triaged.config import MailboxConfig
from triaged.errors import MailboxError, TokenError
from triaged.mail.mailbox.base import Envelope
from triaged.mail.oauth2 import TokenManager

log = logging.getLogger(__name__)

PROCESSED_KEYWORD = "$TriagedProcessed"
QUARANTINE_KEYWORD = "$TriagedQuarantine"
FETCH_CHUNK = 2000  # UIDs per FETCH command (imapclient wants a list; lines stay < 16 KB)
IDLE_SLICE = 1.0  # seconds between checks of `stop` while idling
# The untagged responses that announce new mail, as imaplib files them.
_NEW_MAIL = ("EXISTS", "RECENT")

T = TypeVar("T")

# What a dead or misbehaving connection raises: imaplib's error and abort (imapclient's
# exceptions derive from them), socket and TLS errors (OSError), and a few parse errors.
_FAILURES: tuple[type[BaseException], ...] = (imaplib.IMAP4.error, OSError, EOFError, ValueError)
# Of those, the ones after which the connection cannot be trusted any more (all but a plain
# NO or BAD answer).
_FATAL: tuple[type[BaseException], ...] = (imaplib.IMAP4.abort, OSError, EOFError, ValueError)


def _message_set(uids: Sequence[int]) -> str:
    """An IMAP sequence set for sorted UIDs, with ranges: [1, 2, 3, 7] -> "1:3,7"."""
    parts: list[str] = []
    start = prev = -1
    for uid in sorted(set(uids)):
        if uid == prev + 1:
            prev = uid
            continue
        if start >= 0:
            parts.append(f"{start}:{prev}" if prev > start else str(start))
        start = prev = uid
    if start >= 0:
        parts.append(f"{start}:{prev}" if prev > start else str(start))
    return ",".join(parts)


def _chunks(uids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(uids), FETCH_CHUNK):
        yield uids[start : start + FETCH_CHUNK]


def _uids(uids: Sequence[str]) -> list[int]:
    """The decimal UIDs among `uids`; anything else cannot be in an IMAP folder."""
    return [int(uid) for uid in uids if uid.isascii() and uid.isdigit() and int(uid) > 0]


class ImapMailbox:
    """A folder on an IMAP server (see the module docstring)."""

    def __init__(self, config: MailboxConfig, tokens: TokenManager | None = None) -> None:
        if config.endpoint.is_maildir:
            raise MailboxError("ImapMailbox needs an imap, imaps or imap+plain URL")
        if config.auth == "oauth2" and tokens is None:
            raise MailboxError("mailbox.auth is oauth2: ImapMailbox needs a TokenManager")
        self.config = config
        self.tokens = tokens
        self.endpoint = config.endpoint
        self._client: Any = None
        self._uidvalidity: int | None = None
        self._has_move = False
        self._has_idle = False
        # New mail announced (EXISTS) in the answer to a command since the folder was last
        # listed: IDLE would not announce it again.
        self._announced = False
        # The highest UID listed so far, and its value when an announcement last cut a wait
        # short (see wait()).
        self._highest_uid = 0
        self._woken_at: int | None = None

    @property
    def name(self) -> str:
        return self.endpoint.display()

    # -- errors --

    def _scrub(self, text: str) -> str:
        password = self.config.password.reveal() if self.config.password else ""
        if password:
            text = text.replace(password, "***")
        return text

    def _error(self, action: str, exc: BaseException) -> MailboxError:
        if isinstance(exc, ssl.SSLCertVerificationError):
            detail = f"TLS certificate verification failed: {exc.verify_message or exc}"
            if self.config.ca_file is None:
                detail += " (set mailbox.ca_file for a private CA)"
        elif isinstance(exc, TimeoutError):
            detail = f"timed out ({exc})" if str(exc) else "timed out"
        else:
            detail = str(exc) or type(exc).__name__
        return MailboxError(self._scrub(f"{self.name}: {action}: {detail}"))

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        """Turns every client, socket and TLS error into MailboxError (the cause chained)."""
        try:
            yield
        except MailboxError:
            raise
        except _FAILURES as exc:
            if isinstance(exc, _FATAL):
                self._drop()
            raise self._error(action, exc) from exc

    def _call(self, action: str, fn: Callable[[], T]) -> T:
        with self._guard(action):
            return fn()

    @property
    def client(self) -> Any:
        if self._client is None:
            raise MailboxError(f"{self.name}: not connected")
        return self._client

    # -- connection --

    def connect(self) -> None:
        self.close()
        endpoint = self.endpoint
        timeout = float(self.config.connect_timeout.seconds) or None
        client: Any = None
        try:
            with self._guard("connect"):
                ctx = ssl.create_default_context(
                    cafile=str(self.config.ca_file) if self.config.ca_file else None
                )
                if endpoint.tls == "implicit":
                    client = IMAPClient(
                        endpoint.host, endpoint.port, ssl=True, ssl_context=ctx, timeout=timeout
                    )
                else:
                    client = IMAPClient(endpoint.host, endpoint.port, ssl=False, timeout=timeout)
                    if endpoint.tls == "starttls":
                        if not client.has_capability("STARTTLS"):
                            raise MailboxError(
                                f"{self.name}: the server does not offer STARTTLS; refusing to "
                                "log in without TLS (use imaps:// if it speaks implicit TLS)"
                            )
                        client.starttls(ctx)
            self._login(client)
            with self._guard("open the folder"):
                caps = set(client.capabilities())
                self._has_move = b"MOVE" in caps
                self._has_idle = b"IDLE" in caps
                for folder in (self.config.processed_folder, self.config.quarantine_folder):
                    if not client.folder_exists(folder):
                        self._create_folder(client, folder)
                selected = client.select_folder(endpoint.path)
                uidvalidity = selected.get(b"UIDVALIDITY")
                if uidvalidity is None:
                    raise MailboxError(f"{self.name}: the server sent no UIDVALIDITY")
                self._uidvalidity = int(uidvalidity)
                # SELECT's EXISTS is the folder's size, not news: the first listing covers it.
                _forget_untagged(client)
        except BaseException:
            if client is not None:
                _shutdown(client)
            raise
        self._client = client
        self._announced = False
        self._highest_uid = 0
        self._woken_at = None
        log.debug(
            "connected to %s (move=%s, idle=%s, uidvalidity=%s)",
            self.name,
            self._has_move,
            self._has_idle,
            self._uidvalidity,
        )

    def _login(self, client: Any) -> None:
        if self.tokens is not None and self.config.auth == "oauth2":
            self._oauth2_login(client, self.tokens)
            return
        password = self.config.password.reveal() if self.config.password else ""
        try:
            client.login(self.endpoint.username, password)
        except LoginError as exc:
            # The server's words only (never the password), e.g. "[AUTHENTICATIONFAILED] ...".
            reason = _reason(exc)
            raise MailboxError(
                self._scrub(f"{self.name}: login as {self.endpoint.username!r} failed: {reason}")
            ) from exc
        except _FAILURES as exc:
            raise self._error("login", exc) from exc

    def _oauth2_login(self, client: Any, tokens: TokenManager) -> None:
        """AUTHENTICATE XOAUTH2; a refused token is replaced by a new one, once."""
        user = self.endpoint.username
        with self._guard("login"):
            if not client.has_capability("AUTH=XOAUTH2"):
                raise MailboxError(f"{self.name}: the server does not offer AUTH=XOAUTH2")
        for attempt in (1, 2):
            try:
                token = tokens.token()
            except TokenError as exc:
                raise MailboxError(f"{self.name}: {exc}") from exc
            try:
                client.oauth2_login(user, token)
                return
            except LoginError as exc:
                tokens.refused(token)
                if attempt == 1:
                    # Expired or revoked early: expected now and then, not worth a warning.
                    log.info(
                        "%s refused the access token (%s); trying once more with a new one",
                        self.name,
                        _reason(exc),
                    )
                    continue
                raise MailboxError(
                    f"{self.name}: XOAUTH2 login as {user!r} failed with a new token too: "
                    f"{_reason(exc)} (does the app have access to this mailbox?)"
                ) from exc
            except _FAILURES as exc:
                raise self._error("login", exc) from exc

    def _create_folder(self, client: Any, folder: str) -> None:
        try:
            client.create_folder(folder)
        except imaplib.IMAP4.error as exc:
            if isinstance(exc, imaplib.IMAP4.abort) or not client.folder_exists(folder):
                raise
            # Someone else created it in the meantime.
        log.info("created folder %r on %s", folder, self.name)

    def uidvalidity(self) -> int:
        if self._uidvalidity is None or self._client is None:
            raise MailboxError(f"{self.name}: not connected")
        return self._uidvalidity

    def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.logout()
        except Exception:
            _shutdown(client)

    def _drop(self) -> None:
        """Forgets a connection that failed (no LOGOUT: it would only wait for a dead peer)."""
        client, self._client = self._client, None
        if client is not None:
            _shutdown(client)

    # -- messages --

    def pending(self) -> list[Envelope]:
        client = self.client
        if self._has_move:
            criteria: list[str] = ["ALL"]
        else:
            criteria = ["UNKEYWORD", PROCESSED_KEYWORD, "UNKEYWORD", QUARANTINE_KEYWORD]
        found = []
        with self._guard("list the folder"):
            # A selected session only sees messages the server has announced (EXISTS); NOOP
            # lets it announce what arrived since the last command, and the SEARCH below
            # covers all of it. What is announced from here on is noted by wait().
            client.noop()
            _forget_untagged(client)
            self._announced = False
            uids = sorted(int(uid) for uid in client.search(criteria))
            if uids and uids[-1] > self._highest_uid:
                self._highest_uid = uids[-1]
            wanted = set(uids)
            # One FETCH unless the folder is huge (imapclient takes the UIDs as a list).
            for chunk in _chunks(uids):
                for uid, item in client.fetch(chunk, ["RFC822.SIZE", "INTERNALDATE"]).items():
                    size = item.get(b"RFC822.SIZE")
                    if uid in wanted and isinstance(size, int):
                        found.append(Envelope(str(uid), size, _aware(item.get(b"INTERNALDATE"))))
        found.sort(key=lambda env: int(env.uid))
        return found

    def fetch(self, uids: Sequence[str]) -> dict[str, bytes]:
        client = self.client
        wanted = sorted(set(_uids(uids)))
        out: dict[str, bytes] = {}
        with self._guard("fetch messages"):
            for chunk in _chunks(wanted):
                for uid, item in client.fetch(chunk, ["BODY.PEEK[]"]).items():
                    body = item.get(b"BODY[]")
                    if uid in chunk and isinstance(body, bytes | bytearray):
                        out[str(uid)] = bytes(body)
        return out

    def mark_processed(self, uids: Sequence[str]) -> None:
        self._set_aside(uids, self.config.processed_folder, PROCESSED_KEYWORD)

    def quarantine(self, uids: Sequence[str]) -> None:
        self._set_aside(uids, self.config.quarantine_folder, QUARANTINE_KEYWORD)

    def _set_aside(self, uids: Sequence[str], folder: str, keyword: str) -> None:
        client = self.client
        numbers = _uids(uids)
        if not numbers:
            return
        if self._has_move:
            self._call(
                f"move messages to {folder!r}", lambda: client.move(_message_set(numbers), folder)
            )
        else:
            self._call(
                f"flag messages {keyword}",
                lambda: client.add_flags(_message_set(numbers), [keyword], silent=True),
            )
        self._note_announcements(client)

    # -- waiting --

    def _note_announcements(self, client: Any) -> None:
        """Notes whether the answers read so far announced new mail, and forgets them.

        imaplib keeps every untagged response until the next SELECT (one EXPUNGE per moved
        message: over a long connection they grew with every message handled, bench/).
        """
        responses = client._imap.untagged_responses
        if any(name in responses for name in _NEW_MAIL):
            self._announced = True
        responses.clear()

    def wait(self, timeout: float, stop: threading.Event) -> None:
        client = self.client
        if stop.is_set() or timeout <= 0:
            return
        self._note_announcements(client)
        if self._announced:
            self._announced = False
            # Announced in an answer already read (to the listing's SEARCH, a FETCH, a MOVE):
            # the server will not announce it again, so look now. Unless the last look caused
            # by an announcement found no new message: a server may repeat EXISTS in every
            # answer, and believing it each time would never wait at all.
            if self._woken_at != self._highest_uid:
                self._woken_at = self._highest_uid
                log.debug("new mail was announced before the wait; looking again")
                return
        if not self._has_idle:
            stop.wait(min(timeout, float(self.config.poll_interval.seconds)))
            if not stop.is_set():
                self._call("NOOP", client.noop)
            return
        with self._guard("IDLE"):
            self._idle(client, timeout, stop)

    def _idle(self, client: Any, timeout: float, stop: threading.Event) -> None:
        deadline = time.monotonic() + timeout
        imap = client._imap
        client.idle()
        try:
            while not stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                _read_arrived(imap, min(IDLE_SLICE, remaining))
                if "BYE" in imap.untagged_responses:
                    raise imaplib.IMAP4.abort("the server closed the connection (BYE)")
                if any(name in imap.untagged_responses for name in _NEW_MAIL):
                    break
        except BaseException:
            # The connection is in an unknown state (still idling, or dead): drop it.
            self._drop()
            raise
        client.idle_done()
        self._note_announcements(client)


def _reason(exc: LoginError) -> str:
    return re.sub(r"^login error:\s*", "", str(exc), flags=re.IGNORECASE)


def _read_arrived(imap: Any, timeout: float) -> None:
    """Reads the responses that have arrived, waiting up to `timeout` for the first one.

    imaplib files them under `untagged_responses`. Lines that came with an earlier answer (an
    EXISTS in the packet of IDLE's "+ idling") are already in imaplib's buffer, where the
    socket never becomes readable for them: complete lines in the buffer are read first, and
    the socket is waited on only when there are none.
    """
    arrived = _peek(imap)
    if not arrived or b"\n" not in arrived:
        if not _readable(imap.sock, timeout):
            return
        arrived = _peek(imap)
        if arrived is None:
            return  # TLS records that carry no data (a session ticket, a key update)
        if not arrived:
            raise imaplib.IMAP4.abort("socket error: EOF")
    # A line has arrived, or the start of one whose rest is on its way.
    imap._get_response()
    while b"\n" in (_peek(imap) or b""):
        imap._get_response()


def _aware(value: object) -> datetime | None:
    """An INTERNALDATE as imapclient gives it (naive local time) -> aware UTC."""
    if not isinstance(value, datetime):
        return None
    return value.astimezone(UTC)


def _is_new_mail(response: object) -> bool:
    return isinstance(response, tuple) and len(response) >= 2 and response[1] in _NEW_MAIL


def _peek(imap: Any) -> bytes | None:
    """What imaplib has received and not read yet, without ever waiting.

    With nothing buffered, BufferedReader.peek reads the socket once, non-blocking here: what
    has already arrived, b"" when nothing has (or at end of file), None when TLS records
    arrived that carry no data.
    """
    sock: socket.socket = imap.sock
    timeout = sock.gettimeout()
    sock.settimeout(0.0)
    try:
        data: bytes = imap.file.peek()
        return data
    except (BlockingIOError, ssl.SSLWantReadError):
        return None
    finally:
        sock.settimeout(timeout)


def _readable(sock: socket.socket, timeout: float) -> bool:
    """Whether the socket has data (or end of file) within `timeout` seconds."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(timeout * 1000))


def _forget_untagged(client: Any) -> None:
    """Drops the untagged responses imaplib kept (it forgets them only on SELECT)."""
    client._imap.untagged_responses.clear()


def _shutdown(client: Any) -> None:
    with suppress(Exception):  # closing a socket that may already be gone
        client.shutdown()

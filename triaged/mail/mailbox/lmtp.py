"""The LMTP mailbox: the MTA delivers straight to triaged, as it does to GNU Mailman 3.

`connect` starts an LMTP server (aiosmtpd) on a loopback port or a Unix socket. A message the
MTA delivers waits, with its connection, until the intake runner has handled it: to the runner
this is a mailbox whose messages are the deliveries waiting for an answer (`pending`, `fetch`).
Only when the runner has committed a message and its effects does it call `mark_processed` (or
`quarantine`), and only then does the MTA get its `250` for every recipient. So the rules of
the IMAP path hold unchanged: a crash before the commit leaves the MTA without an answer, and it
delivers again; a message already stored (same content) is not acted on twice.

Answers the MTA gets:
    550  a recipient that is not the project's address nor one of its plus-addresses;
    552  a message over `limits.max_message_size`: at MAIL FROM when its SIZE says so, else once
         the data passes the limit (aiosmtpd then stops keeping it: it is never held whole);
    250  stored (a message the parser cannot handle is stored and quarantined: also 250);
    451  anything else: the database unavailable, a failure while handling it, the daemon
         stopping, no answer within ANSWER_TIMEOUT. The MTA keeps it and tries again.

Like final delivery anywhere (RFC 5321, 4.4), the stored message starts with `Return-Path`
(the envelope sender; `<>` for a bounce, so it is recognised as automatic mail) and a
`Delivered-To` per recipient, as Dovecot's LMTP writes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import smtplib
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AnyStr

from aiosmtpd.controller import Controller, UnixSocketController
from aiosmtpd.lmtp import LMTP

from triaged.config import MailboxConfig
from triaged.errors import MailboxError
from triaged.mail.mailbox.base import Envelope

log = logging.getLogger(__name__)
# aiosmtpd logs every command and address at INFO: per message, lines that say nothing to an
# operator and fill the journal with reporters' addresses.
logging.getLogger("mail.log").setLevel(logging.WARNING)

# How long a delivery waits for the intake runner before the MTA is told to try again later.
ANSWER_TIMEOUT = 300.0
STORED = "250 2.0.0 Ok: stored"
QUARANTINED = "250 2.0.0 Ok: stored in quarantine"
TRY_LATER = "451 4.3.0 Not stored: try again later"
NO_SUCH_USER = "550 5.1.1 No such mailbox here"
# Only these characters reach the headers triaged adds (the address is checked first anyway).
_SAFE_ADDRESS = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+$")


def is_project_address(address: str, project_address: str) -> bool:
    """The project's address, or one of its plus-addresses (reply tokens), in any case."""
    if not _SAFE_ADDRESS.match(address):
        return False
    local, _, domain = address.lower().rpartition("@")
    plocal, _, pdomain = project_address.lower().rpartition("@")
    return domain == pdomain and (local == plocal or local.startswith(plocal + "+"))


@dataclass
class _Delivery:
    """One message waiting for its answer; `answer` lives in the server's event loop."""

    uid: str
    raw: bytes
    loop: asyncio.AbstractEventLoop
    answer: asyncio.Future[str]
    listed: bool = False

    def settle(self, status: str) -> None:
        """Gives the answer (from any thread); the first one given counts."""

        def give() -> None:
            if not self.answer.done():
                self.answer.set_result(status)

        # A closed loop means the connection is gone: the MTA tries again.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(give)


class _Lmtp(LMTP):
    """aiosmtpd's LMTP, with one answer per recipient also when the data was too long."""

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._recipients = 0

    async def smtp_DATA(self, arg: str) -> None:
        self._recipients = len(self.envelope.rcpt_tos) if self.envelope is not None else 0
        try:
            await super().smtp_DATA(arg)
        finally:
            self._recipients = 0

    async def push(self, status: AnyStr) -> None:
        # aiosmtpd answers an oversized message once; LMTP needs one line per recipient.
        if self._recipients > 1 and isinstance(status, str) and status.startswith(("552", "500")):
            await super().push("\r\n".join([status] * self._recipients))
            return
        await super().push(status)


class _Handler:
    def __init__(self, mailbox: LmtpMailbox) -> None:
        self.mailbox = mailbox

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if not is_project_address(address, self.mailbox.project_address):
            log.info("lmtp: refused recipient %r: not the project's address", address)
            return NO_SUCH_USER
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        # aiosmtpd reads commands in order from the stream, as RFC 2920 asks, so clients (the
        # MTA's LMTP client) may send MAIL, RCPT and DATA at once.
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        recipients = list(envelope.rcpt_tos)
        try:
            content = envelope.original_content or envelope.content or b""
            if isinstance(content, str):
                content = content.encode("utf-8", "surrogateescape")
            raw = _trace_headers(str(envelope.mail_from or ""), recipients) + content
            status = await self.mailbox.deliver(raw)
        except Exception:
            log.exception("lmtp: a delivery failed; the MTA will try again")
            status = TRY_LATER
        return "\r\n".join([status] * max(len(recipients), 1))


def _trace_headers(mail_from: str, recipients: Sequence[str]) -> bytes:
    lines = []
    if mail_from == "" or _SAFE_ADDRESS.match(mail_from):
        lines.append(f"Return-Path: <{mail_from}>")
    for address in dict.fromkeys(r.lower() for r in recipients):
        lines.append(f"Delivered-To: {address}")
    return "".join(f"{line}\r\n" for line in lines).encode("ascii")


@dataclass
class _Waiting:
    """The deliveries in hand, under one lock (the server's thread adds, intake's settles)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    deliveries: dict[str, _Delivery] = field(default_factory=dict)
    waker: threading.Event | None = None
    open: bool = False


class LmtpMailbox:
    """An LMTP server as the intake runner's mailbox (see the module docstring)."""

    def __init__(self, config: MailboxConfig, project_address: str, max_size: int) -> None:
        if not config.endpoint.is_lmtp:
            raise MailboxError("LmtpMailbox needs an lmtp or lmtp+unix URL")
        self.config = config
        self.endpoint = config.endpoint
        self.project_address = project_address
        self.max_size = max_size
        self._controller: Controller | UnixSocketController | None = None
        self._waiting = _Waiting()

    @property
    def name(self) -> str:
        return self.endpoint.display()

    # --- the server ------------------------------------------------------------------------

    def connect(self) -> None:
        kwargs: dict[str, Any] = {"server_hostname": "triaged", "ready_timeout": 10.0}
        controller: Controller | UnixSocketController
        if self.endpoint.scheme == "lmtp+unix":
            controller = _UnixController(_Handler(self), unix_socket=self.endpoint.path, **kwargs)
        else:
            controller = _InetController(
                _Handler(self), hostname=self.endpoint.host, port=self.endpoint.port, **kwargs
            )
        controller.max_size = self.max_size
        try:
            controller.start()
        except Exception as exc:
            controller.stop(no_assert=True)
            raise MailboxError(f"cannot listen on {self.name}: {exc}") from exc
        if self.endpoint.scheme == "lmtp+unix":
            # Who may deliver is decided by the directory the socket is in (systemd/README.md):
            # the MTA runs as another user.
            os.chmod(self.endpoint.path, 0o666)  # noqa: S103
        self._controller = controller
        with self._waiting.lock:
            self._waiting.open = True

    def close(self) -> None:
        with self._waiting.lock:
            self._waiting.open = False
            left = list(self._waiting.deliveries.values())
            self._waiting.deliveries.clear()
        for delivery in left:
            delivery.settle(TRY_LATER)
        if left:
            # A moment for those answers to go out before the connections are cut.
            time.sleep(0.2)
        controller, self._controller = self._controller, None
        if controller is not None:
            try:
                controller.stop()
            except Exception:
                log.debug("lmtp: stopping the server failed", exc_info=True)
            if self.endpoint.scheme == "lmtp+unix":
                Path(self.endpoint.path).unlink(missing_ok=True)

    async def deliver(self, raw: bytes) -> str:
        """In the server's loop: hands `raw` to the intake runner and waits for its answer."""
        loop = asyncio.get_running_loop()
        delivery = _Delivery(uuid.uuid4().hex, raw, loop, loop.create_future())
        waiting = self._waiting
        with waiting.lock:
            if not waiting.open:
                return TRY_LATER
            waiting.deliveries[delivery.uid] = delivery
            waker = waiting.waker
        if waker is not None:
            waker.set()
        try:
            return await asyncio.wait_for(asyncio.shield(delivery.answer), ANSWER_TIMEOUT)
        except TimeoutError:
            log.warning("lmtp: no answer from intake within %.0fs: 451", ANSWER_TIMEOUT)
            with waiting.lock:
                if not delivery.listed:
                    waiting.deliveries.pop(delivery.uid, None)
            return TRY_LATER

    # --- the Mailbox protocol ------------------------------------------------------------------

    def uidvalidity(self) -> int:
        # Every delivery gets a random UID, never reused: one UIDVALIDITY forever.
        return 1

    def pending(self) -> list[Envelope]:
        """The deliveries waiting; any listed before and not answered since failed: 451."""
        self.pending_failed()
        with self._waiting.lock:
            fresh = list(self._waiting.deliveries.values())
            for delivery in fresh:
                delivery.listed = True
        return [Envelope(d.uid, len(d.raw)) for d in fresh]

    def fetch(self, uids: Sequence[str]) -> dict[str, bytes]:
        with self._waiting.lock:
            found = {uid: self._waiting.deliveries.get(uid) for uid in uids}
        return {uid: d.raw for uid, d in found.items() if d is not None}

    def mark_processed(self, uids: Sequence[str]) -> None:
        self._answer(uids, STORED)

    def quarantine(self, uids: Sequence[str]) -> None:
        self._answer(uids, QUARANTINED)

    def _answer(self, uids: Sequence[str], status: str) -> None:
        with self._waiting.lock:
            done = [self._waiting.deliveries.pop(uid, None) for uid in uids]
        for delivery in done:
            if delivery is not None:
                delivery.settle(status)

    def wait(self, timeout: float, stop: threading.Event) -> None:
        """Until a delivery arrives, `timeout` passed, or `stop` is set. The runner is done
        with what it was given: whatever it left unanswered gets 451 now."""
        self.pending_failed()
        with self._waiting.lock:
            if self._waiting.deliveries:
                return
            self._waiting.waker = stop
        try:
            stop.wait(timeout)
        finally:
            with self._waiting.lock:
                self._waiting.waker = None

    def pending_failed(self) -> None:
        """Answers 451 to the deliveries the runner was given and did not answer."""
        with self._waiting.lock:
            stale = [d for d in self._waiting.deliveries.values() if d.listed]
            for delivery in stale:
                del self._waiting.deliveries[delivery.uid]
        for delivery in stale:
            delivery.settle(TRY_LATER)


class _InetController(Controller):
    max_size = 0

    def factory(self) -> _Lmtp:
        return _Lmtp(self.handler, data_size_limit=self.max_size, **self.SMTP_kwargs)


class _UnixController(UnixSocketController):
    max_size = 0

    def factory(self) -> _Lmtp:
        return _Lmtp(self.handler, data_size_limit=self.max_size, **self.SMTP_kwargs)


# --- `triaged check` ---------------------------------------------------------------------------

# A recipient the server must refuse (.invalid never exists: RFC 2606).
_FOREIGN = "nobody@triaged-check.invalid"


def check(config: MailboxConfig, project_address: str, max_size: int) -> str:
    """Speaks LMTP to the configured endpoint: to the daemon's server when it runs, else to a
    server of its own started there for the check (which proves triaged can listen there).
    Nothing is delivered: a recipient the project's address must be taken, another refused.
    Returns what answered; raises MailboxError when anything is not as it should be."""
    endpoint = config.endpoint
    try:
        return "the daemon answers; " + _converse(config, project_address)
    except (ConnectionRefusedError, FileNotFoundError):
        pass
    except (OSError, smtplib.SMTPException) as exc:
        raise MailboxError(f"{endpoint.display()}: {exc}") from exc
    own = LmtpMailbox(config, project_address, max_size)
    own.connect()
    try:
        return "no daemon listens, a server of this check's own answers; " + _converse(
            config, project_address
        )
    except (OSError, smtplib.SMTPException) as exc:
        raise MailboxError(f"{endpoint.display()}: {exc}") from exc
    finally:
        own.close()


def _converse(config: MailboxConfig, project_address: str) -> str:
    endpoint = config.endpoint
    timeout = float(config.connect_timeout.seconds)
    if endpoint.scheme == "lmtp+unix":
        client = smtplib.LMTP(endpoint.path, timeout=timeout)
    else:
        client = smtplib.LMTP(endpoint.host, endpoint.port, timeout=timeout)
    try:
        code, _ = client.ehlo()  # smtplib's LMTP sends LHLO
        if code != 250:
            raise MailboxError(f"{endpoint.display()}: LHLO answered {code}")
        client.mail("")
        taken, _ = client.rcpt(project_address)
        refused, _ = client.rcpt(_FOREIGN)
        client.rset()
    finally:
        with contextlib.suppress(OSError, smtplib.SMTPException):
            client.quit()
    if taken != 250 or refused != 550:
        raise MailboxError(
            f"{endpoint.display()}: RCPT {project_address} answered {taken} (not 250),"
            f" or RCPT {_FOREIGN} answered {refused} (not 550)"
        )
    return f"mail for {project_address} taken, for other addresses refused"

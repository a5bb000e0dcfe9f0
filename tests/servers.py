"""Real servers for the test suite: a private Dovecot (IMAP) and an aiosmtpd sink (SMTP).

Everything listens on 127.0.0.1 only. Dovecot gets its own configuration, runtime directory,
state and log in a temporary directory; nothing of a system instance is read or touched.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import grp
import json
import os
import pwd
import re
import secrets
import select
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, AuthResult
from imapclient import IMAPClient

from triaged.config import MailboxConfig, Secret, parse_url
from triaged.core.durations import parse_duration

DOVECOT = os.environ.get("TRIAGED_TEST_DOVECOT", "/usr/sbin/dovecot")
LOOPBACK = "127.0.0.1"
MAIL_UID = 24000  # the mail user's uid when the tests run as root (Dovecot refuses uid 0)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def private_dir(prefix: str) -> Path:
    """A fresh directory under /tmp that other users may traverse (0755).

    pytest's own temporary directories are 0700, which Dovecot's unprivileged processes (and
    the mail user, when the tests run as root) cannot enter.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def dovecot_version() -> tuple[int, int]:
    """(major, minor) of the installed Dovecot, e.g. (2, 3)."""
    out = subprocess.run(
        [DOVECOT, "--version"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    match = re.match(r"\s*(\d+)\.(\d+)", out)
    if match is None:
        raise RuntimeError(f"cannot read the Dovecot version from {out!r}")
    return int(match.group(1)), int(match.group(2))


# -- certificates -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CertFiles:
    """A private test CA and a server certificate it signed (SAN IP:127.0.0.1, DNS:localhost)."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def make_certs(directory: Path) -> CertFiles:
    """Generates a CA and a server certificate with the `openssl` command-line tool.

    Debian's dovecot-core depends on the openssl package, so the tool is there wherever Dovecot
    is. A separate CA (rather than one self-signed leaf) keeps strict X.509 verification happy.
    """
    if shutil.which("openssl") is None:
        raise RuntimeError("the openssl command is needed to make test certificates")
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "server.ext"
    ext.write_text(
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = serverAuth\n"
        "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid:always\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    run(
        "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca_cert), "-days", "7",
        "-subj", "/CN=triaged test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    run("req", "-new", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost")
    run(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
        "-set_serial", str(secrets.randbits(63)), "-days", "7", "-sha256",
        "-extfile", str(ext), "-out", str(cert),
    )  # fmt: skip
    for path in (ca_cert, cert):
        path.chmod(0o644)
    for path in (ca_key, key):
        path.chmod(0o600)
    return CertFiles(ca_cert, cert, key)


def client_context(ca_file: Path | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


# -- Dovecot ----------------------------------------------------------------------------------


@dataclass
class ImapAccount:
    """One mail user on a test Dovecot, with helpers to set up and inspect its folders."""

    host: str
    port: int
    user: str
    password: str
    password_file: Path
    imaps_port: int | None = None
    ca_file: Path | None = None  # set when the server requires TLS: client() uses STARTTLS

    def url(self, folder: str = "INBOX", scheme: str = "imap+plain") -> str:
        port = self.imaps_port if scheme == "imaps" and self.imaps_port else self.port
        return f"{scheme}://{quote(self.user, safe='')}@{self.host}:{port}/{quote(folder)}"

    def client(self) -> IMAPClient:
        """A logged-in IMAPClient (STARTTLS first when the server requires TLS)."""
        client = IMAPClient(self.host, self.port, ssl=False, timeout=15)
        try:
            if self.ca_file is not None:
                client.starttls(client_context(self.ca_file))
            client.login(self.user, self.password)
        except BaseException:
            client.shutdown()
            raise
        return client

    @contextmanager
    def session(self) -> Iterator[IMAPClient]:
        client = self.client()
        try:
            yield client
        finally:
            with suppress(Exception):
                client.logout()

    def append(self, raw: bytes, folder: str = "INBOX", flags: tuple[str, ...] = ()) -> int:
        """APPENDs a message; returns its UID (from the APPENDUID response code)."""
        with self.session() as client:
            response = client.append(folder, raw, flags=flags)
        match = re.search(rb"APPENDUID \d+ (\d+)", bytes(response))
        if match is None:
            raise AssertionError(f"no APPENDUID in {response!r}")
        return int(match.group(1))

    def fetch_all(self, folder: str = "INBOX") -> list[bytes]:
        """Every message in the folder, oldest UID first, without setting \\Seen."""
        return [raw for _, raw in sorted(self.messages(folder).items())]

    def messages(self, folder: str = "INBOX") -> dict[int, bytes]:
        with self.session() as client:
            client.select_folder(folder, readonly=True)
            uids = client.search("ALL")
            if not uids:
                return {}
            data = client.fetch(uids, [b"BODY.PEEK[]"])
        return {uid: bytes(item[b"BODY[]"]) for uid, item in data.items()}

    def flags(self, folder: str = "INBOX") -> dict[int, set[str]]:
        """The flags and keywords of every message in the folder, by UID."""
        with self.session() as client:
            client.select_folder(folder, readonly=True)
            uids = client.search("ALL")
            if not uids:
                return {}
            data = client.fetch(uids, [b"FLAGS"])
        return {
            uid: {f.decode() if isinstance(f, bytes) else str(f) for f in item[b"FLAGS"]}
            for uid, item in data.items()
        }

    def folders(self) -> list[str]:
        with self.session() as client:
            return sorted(str(name) for _, _, name in client.list_folders())


class DovecotServer:
    """A private Dovecot on 127.0.0.1, configured and run from a temporary directory.

    ssl: "no" (plaintext IMAP, STARTTLS not offered), "yes" (STARTTLS offered) or "required"
    (no login without TLS). With TLS, `imaps_port` is an implicit-TLS listener as well and
    `ca_file` verifies the server certificate (SAN IP:127.0.0.1 and DNS:localhost).
    capabilities: replaces the post-login CAPABILITY list (`imap_capability`), e.g. to hide
    MOVE and IDLE.
    oauth2_introspection_url: also accept XOAUTH2 and OAUTHBEARER, checking each bearer token
    with this RFC 7662 endpoint (Dovecot's oauth2 passdb, before the password one).
    """

    def __init__(
        self,
        ssl: str = "no",
        capabilities: str | None = None,
        certs: CertFiles | None = None,
        oauth2_introspection_url: str | None = None,
    ) -> None:
        if ssl not in ("no", "yes", "required"):
            raise ValueError(f"ssl must be no, yes or required, not {ssl!r}")
        self.ssl = ssl
        self.capabilities = capabilities
        self.oauth2_introspection_url = oauth2_introspection_url
        self.host = LOOPBACK
        self.base = private_dir("triaged-dovecot-")
        self.conf = self.base / "dovecot.conf"
        self.log_file = self.base / "dovecot.log"
        self.output_file = self.base / "dovecot.out"
        self.users_dir = self.base / "users"
        self.users_dir.mkdir(mode=0o755)
        (self.base / "home").mkdir(mode=0o755)
        self.secrets_dir = self.base / "secrets"
        self.secrets_dir.mkdir(mode=0o700)
        self.version = dovecot_version()
        self.certs: CertFiles | None = None
        if ssl != "no":
            self.certs = certs or make_certs(self.base / "certs")
        self.port = free_port()
        self.imaps_port: int | None = free_port() if ssl != "no" else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_once = False
        self._lock = threading.Lock()
        self._users = 0
        self._finalizer = weakref.finalize(self, _kill_and_remove, [None], self.base)
        if os.getuid() == 0:
            self.mail_uid, self.mail_gid = MAIL_UID, MAIL_UID
        else:
            self.mail_uid, self.mail_gid = os.getuid(), os.getgid()

    @property
    def ca_file(self) -> Path | None:
        return self.certs.ca_file if self.certs else None

    # -- lifecycle --

    def start(self) -> DovecotServer:
        last_error = ""
        for _ in range(5):
            self._write_config()
            with self.output_file.open("ab") as out:
                self._proc = subprocess.Popen(
                    [DOVECOT, "-F", "-c", str(self.conf)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self._finalizer.detach()
            self._finalizer = weakref.finalize(self, _kill_and_remove, [self._proc], self.base)
            ok, last_error = self._wait_ready(timeout=20)
            if ok:
                self._started_once = True
                return self
            self._terminate()
            if "in use" not in last_error:
                break
            # Someone took a port between free_port() and bind(): pick new ones, unless a
            # restart must keep them; then just wait for the old sockets to go.
            if not self._started_once:
                self.port = free_port()
                self.imaps_port = free_port() if self.ssl != "no" else None
            time.sleep(0.3)
        raise RuntimeError(f"Dovecot did not start:\n{last_error}")

    def stop(self) -> None:
        self._terminate()

    def restart(self) -> None:
        """Stops and starts again on the same ports (clients see their connections drop)."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stops the server and removes its directory."""
        self._finalizer()

    def __enter__(self) -> DovecotServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        _terminate(proc)

    def _wait_ready(self, timeout: float) -> tuple[bool, str]:
        """Waits until the IMAP port sends its greeting; (ok, what went wrong)."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False, self.diagnostics()
            try:
                with socket.create_connection((self.host, self.port), timeout=2) as sock:
                    greeted = sock.recv(200).startswith(b"* OK")
                if greeted and (self.imaps_port is None or self._port_open(self.imaps_port)):
                    return True, ""
            except OSError:
                pass
            time.sleep(0.05)
        return False, "timed out waiting for the IMAP greeting\n" + self.diagnostics()

    def _port_open(self, port: int) -> bool:
        try:
            with socket.create_connection((self.host, port), timeout=2):
                return True
        except OSError:
            return False

    def diagnostics(self) -> str:
        """The server's output and log, for failure messages."""
        parts = []
        for path in (self.output_file, self.log_file):
            if path.exists():
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-20000:]}")
        return "\n".join(parts)

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    # -- configuration --

    def _write_config(self) -> None:
        text = self._config_24() if self.version >= (2, 4) else self._config_23()
        self.conf.write_text(text)
        self.conf.chmod(0o644)
        if self.oauth2_introspection_url is not None:
            self._oauth2_file.write_text(
                "introspection_mode = post\n"
                f"introspection_url = {self.oauth2_introspection_url}\n"
                "username_attribute = username\n"
                "active_attribute = active\n"
                "active_value = true\n"
            )
            self._oauth2_file.chmod(0o644)

    @property
    def _oauth2_file(self) -> Path:
        return self.base / "oauth2.conf.ext"

    def _common(self) -> dict[str, str]:
        if os.getuid() == 0:
            # The Debian package creates these users.
            internal_user, login_user, internal_group = "dovecot", "dovenull", "dovecot"
        else:
            internal_user = pwd.getpwuid(os.getuid()).pw_name
            login_user = internal_user
            internal_group = grp.getgrgid(os.getgid()).gr_name
        return {
            "base_dir": str(self.base / "run"),
            "state_dir": str(self.base / "state"),
            "instance_name": "triaged-test",
            "log_path": str(self.log_file),
            "protocols": "imap",
            "listen": LOOPBACK,
            "ssl": self.ssl,
            "default_internal_user": internal_user,
            "default_internal_group": internal_group,
            "default_login_user": login_user,
            "first_valid_uid": str(self.mail_uid),
            "last_valid_uid": "0",
            "first_valid_gid": str(min(self.mail_gid, 1)),
            "mail_max_userip_connections": "1000",
            "auth_mechanisms": "plain login"
            + (" xoauth2 oauthbearer" if self.oauth2_introspection_url else ""),
            "auth_verbose": "yes",
            "login_greeting": "triaged test Dovecot ready.",
        }

    def _services(self, imaps_port: int) -> str:
        auth_worker = (
            ""
            if os.getuid() == 0
            else "service auth-worker {\n  user = $default_internal_user\n}\n"
        )
        return (
            "service imap-login {\n"
            "  chroot =\n"
            f"  inet_listener imap {{\n    port = {self.port}\n  }}\n"
            f"  inet_listener imaps {{\n    port = {imaps_port}\n    ssl = yes\n  }}\n"
            "}\n"
            "service anvil {\n  chroot =\n}\n"
            f"{auth_worker}"
        )

    def _config_23(self) -> str:
        settings = self._common()
        settings["disable_plaintext_auth"] = "no"
        settings["mail_location"] = "maildir:~/Maildir"
        if self.certs is not None:
            settings["ssl_cert"] = f"<{self.certs.cert_file}"
            settings["ssl_key"] = f"<{self.certs.key_file}"
        if self.capabilities is not None:
            settings["imap_capability"] = self.capabilities
        lines = ["# Generated by tests/servers.py (Dovecot 2.3 syntax)"]
        lines += [f"{key} = {value}" for key, value in settings.items()]
        lines += [
            "namespace inbox {\n  inbox = yes\n}",
            (
                "passdb {\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
                f"  args = {self._oauth2_file}\n}}"
                if self.oauth2_introspection_url
                else ""
            ),
            "passdb {\n  driver = passwd-file\n"
            f"  args = scheme=PLAIN username_format=%u {self.users_dir}/%u.passwd\n}}",
            "userdb {\n  driver = passwd-file\n"
            f"  args = username_format=%u {self.users_dir}/%u.passwd\n}}",
            self._services(self.imaps_port or 0),
        ]
        return "\n".join(lines) + "\n"

    def _config_24(self) -> str:
        # Untested here (the machines have 2.3); follows the 2.3 -> 2.4 upgrade notes.
        settings = self._common()
        settings["auth_allow_cleartext"] = "yes"
        settings["mail_driver"] = "maildir"
        settings["mail_path"] = "~/Maildir"
        if self.certs is not None:
            settings["ssl_server_cert_file"] = str(self.certs.cert_file)
            settings["ssl_server_key_file"] = str(self.certs.key_file)
        if self.capabilities is not None:
            settings["imap_capability"] = self.capabilities
        lines = [
            "dovecot_config_version = 2.4.0",
            "# Generated by tests/servers.py (Dovecot 2.4 syntax)",
            "dovecot_storage_version = 2.4.0",
        ]
        lines += [f"{key} = {value}" for key, value in settings.items()]
        lines += [
            "namespace inbox {\n  inbox = yes\n}",
            (
                "passdb oauth2 {\n  mechanisms_filter = xoauth2 oauthbearer\n"
                f"  oauth2 {{\n    introspection_mode = post\n"
                f"    introspection_url = {self.oauth2_introspection_url}\n"
                "    username_attribute = username\n    active_attribute = active\n"
                "    active_value = true\n  }\n}"
                if self.oauth2_introspection_url
                else ""
            ),
            f"passdb passwd-file {{\n  passwd_file_path = {self.users_dir}/%{{user}}.passwd\n}}",
            f"userdb passwd-file {{\n  passwd_file_path = {self.users_dir}/%{{user}}.passwd\n}}",
            self._services(self.imaps_port or 0),
        ]
        return "\n".join(lines) + "\n"

    # -- users --

    def add_user(self, user: str | None = None, password: str | None = None) -> ImapAccount:
        """A new mail user with an empty INBOX (a fresh home directory)."""
        with self._lock:
            self._users += 1
            user = user or f"user{self._users}-{secrets.token_hex(3)}"
            password = password or secrets.token_urlsafe(12)
            if ":" in user or ":" in password or "\n" in user + password:
                raise ValueError("user and password must not contain ':' or newlines")
            home = self.base / "home" / user
            home.mkdir(mode=0o700)
            if os.getuid() == 0:
                os.chown(home, self.mail_uid, self.mail_gid)
            line = f"{user}:{{PLAIN}}{password}:{self.mail_uid}:{self.mail_gid}::{home}::\n"
            # One passwd-file per user: Dovecot re-reads a changed file at most once a second,
            # but opens a file it has not seen yet at once.
            tmp = self.users_dir / f".{user}.tmp"
            tmp.write_text(line)
            tmp.chmod(0o644)
            tmp.replace(self.users_dir / f"{user}.passwd")
            password_file = self.secrets_dir / f"{user}.password"
            password_file.write_text(password + "\n")
            password_file.chmod(0o600)
        return ImapAccount(
            host=self.host,
            port=self.port,
            user=user,
            password=password,
            password_file=password_file,
            imaps_port=self.imaps_port,
            ca_file=self.ca_file if self.ssl == "required" else None,
        )


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """Stops Dovecot and everything it started, as systemd's control-group kill would.

    Alone, the master waits a second for its children and leaves running imap processes (and
    their clients) alive; they all share its process group (it was started in a session of its
    own), so the whole group is signalled.
    """
    pgid = proc.pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            continue
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _group_alive(pgid):
            time.sleep(0.02)
        if not _group_alive(pgid):
            return
    proc.kill()
    proc.wait(timeout=10)


def _group_alive(pgid: int) -> bool:
    """Whether a process of this group still runs (zombies, not yet reaped, do not count)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


def _kill_and_remove(procs: list[subprocess.Popen[bytes] | None], base: Path) -> None:
    for proc in procs:
        if proc is not None:
            _terminate(proc)
    shutil.rmtree(base, ignore_errors=True)


# -- SMTP sink --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Captured:
    """One message the sink accepted."""

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    msg: EmailMessage
    login: str | None = None  # the user the client authenticated as, if it did


class _SinkHandler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        failure = self.sink.fail_with
        if failure is not None and self.sink.fail_at == "RCPT":
            return f"{failure[0]} {failure[1]}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        failure = self.sink.fail_with
        if failure is not None and self.sink.fail_at == "DATA":
            return f"{failure[0]} {failure[1]}"
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        login = session.auth_data if isinstance(session.auth_data, str) else None
        captured = Captured(str(envelope.mail_from), list(envelope.rcpt_tos), raw, msg, login)
        if self.sink.relay is not None:
            self.sink.relay(captured)
        self.sink._add(captured)
        return "250 OK: queued"


class _OAuth2SinkHandler(_SinkHandler):
    """Adds AUTH XOAUTH2 (aiosmtpd finds `auth_<MECHANISM>` methods on the handler)."""

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> AuthResult:
        if len(args) == 2:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                return AuthResult(
                    success=False, handled=False, message="501 5.5.2 Can't decode base64"
                )
        else:
            answer = await server.challenge_auth("")
            if answer is MISSING:
                return AuthResult(success=False, handled=True)
            blob = answer
        fields = dict(
            part.split("=", 1)
            for part in blob.decode("utf-8", "replace").split("\x01")
            if "=" in part
        )
        user, bearer = fields.get("user", ""), fields.get("auth", "")
        token = bearer[7:] if bearer.lower().startswith("bearer ") else ""
        check = self.sink.oauth2
        if check is not None and check(user, token):
            self.sink.logins.append(user)
            return AuthResult(success=True, auth_data=user)
        self.sink.refusals += 1
        # As Google and Microsoft do: a 334 with a JSON status, the client's empty answer, 535.
        status = {"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"}
        if await server.challenge_auth(json.dumps(status)) is MISSING:
            return AuthResult(success=False, handled=True)  # aiosmtpd answered already
        return AuthResult(success=False, handled=False)  # 535


@dataclass
class SmtpSink:
    """An aiosmtpd server on 127.0.0.1 that keeps every message it accepts.

    fail_with: answer (code, text) instead of accepting, at DATA (default) or at RCPT
    (`fail_at = "RCPT"`). stop()/start() take the server down and back on the same port.
    relay: called with each message accepted, before it is kept (to deliver it onwards, as a
    real MTA would deliver mail for the project's address into its mailbox).
    With `certs`, STARTTLS is offered (not required) with that certificate.
    With `oauth2`, a login is required and only AUTH XOAUTH2 is offered (also without TLS, on
    loopback): `oauth2(user, token)` says whether a bearer token is good for that user.
    `logins` lists the users logged in, `refusals` counts refused tokens.
    """

    certs: CertFiles | None = None
    host: str = LOOPBACK
    port: int = field(default_factory=free_port)
    fail_with: tuple[int, str] | None = None
    fail_at: str = "DATA"
    messages: list[Captured] = field(default_factory=list)
    oauth2: Callable[[str, str], bool] | None = None
    logins: list[str] = field(default_factory=list)
    refusals: int = 0
    relay: Callable[[Captured], None] | None = None

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        scheme = "smtp" if self.certs else "smtp+plain"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def ca_file(self) -> Path | None:
        return self.certs.ca_file if self.certs else None

    def start(self) -> SmtpSink:
        if self._controller is not None:
            return self
        kwargs: dict[str, Any] = {}
        if self.certs is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(self.certs.cert_file), str(self.certs.key_file))
            kwargs.update(tls_context=ctx, require_starttls=False)
        handler = _SinkHandler(self)
        if self.oauth2 is not None:
            handler = _OAuth2SinkHandler(self)
            kwargs.update(
                auth_required=True,
                auth_require_tls=False,
                auth_exclude_mechanism=["LOGIN", "PLAIN"],
            )
        last: Exception | None = None
        for _ in range(50):  # on a restart the old socket may linger for a moment
            controller = Controller(
                handler,
                hostname=self.host,
                port=self.port,
                ready_timeout=10,
                server_hostname="sink.test",
                enable_SMTPUTF8=True,
                **kwargs,
            )
            try:
                controller.start()
            except Exception as exc:
                last = exc
                time.sleep(0.1)
                continue
            self._controller = controller
            return self
        raise RuntimeError(f"the SMTP sink could not start on port {self.port}: {last}")

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def _add(self, captured: Captured) -> None:
        with self._cond:
            self.messages.append(captured)
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 10) -> list[Captured]:
        """Waits until at least `count` messages arrived; returns them all."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    got = [(c.mail_from, c.rcpt_tos, c.msg["Subject"]) for c in self.messages]
                    raise AssertionError(
                        f"expected {count} message(s) within {timeout}s, got {len(got)}: {got}"
                    )
                self._cond.wait(remaining)
            return list(self.messages)


# -- configuration for the code under test ----------------------------------------------------


def mailbox_config(
    account: ImapAccount,
    *,
    scheme: str = "imap+plain",
    folder: str = "INBOX",
    ca_file: Path | None = None,
    password: str | None = None,
    processed_folder: str = "triaged-processed",
    quarantine_folder: str = "triaged-quarantine",
    poll_interval: str = "60s",
    idle_renew: str = "25m",
    connect_timeout: str = "10s",
    batch_size: int = 50,
) -> MailboxConfig:
    """A MailboxConfig for this account, built the way triaged.config.load builds one."""
    endpoint = parse_url(account.url(folder, scheme), "mailbox", account.password_file.parent)
    secret = password if password is not None else account.password_file.read_text().strip()
    return MailboxConfig(
        endpoint=endpoint,
        password=Secret(secret),
        ca_file=ca_file,
        processed_folder=processed_folder,
        quarantine_folder=quarantine_folder,
        poll_interval=parse_duration(poll_interval),
        idle_renew=parse_duration(idle_renew),
        connect_timeout=parse_duration(connect_timeout),
        batch_size=batch_size,
    )


# -- a TCP proxy that can hang --------------------------------------------------------------


class BlackHoleProxy:
    """A TCP proxy on 127.0.0.1 in front of a server (Dovecot), that can hang or go away.

    Forwarding (the default), bytes flow both ways. `black_hole()`: from then on no byte is
    forwarded in either direction, but every socket stays open and new connections are still
    accepted, as with a hung server or a network that drops everything; `forward()` lets bytes
    flow again. `stop()` closes the listener and every connection (connection refused);
    `start()` listens again on the same port.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.host = LOOPBACK
        self.port = free_port()
        self._holding = threading.Event()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def __enter__(self) -> BlackHoleProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> BlackHoleProxy:
        if self._listener is not None:
            return self
        self._stopping.clear()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 10
        while True:  # on a restart the old socket may linger for a moment
            try:
                listener.bind((self.host, self.port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    listener.close()
                    raise
                time.sleep(0.1)
        listener.listen(16)
        listener.settimeout(0.1)
        self._listener = listener
        self._spawn(self._accept, listener)
        return self

    def stop(self) -> None:
        """Closes the listener and every connection; waits for the proxy's threads."""
        self._stopping.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
            threads, self._threads = self._threads, []
        for sock in sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in threads:
            thread.join(timeout=5)

    def black_hole(self) -> None:
        self._holding.set()

    def forward(self) -> None:
        self._holding.clear()

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            self._spawn(self._pump, client, upstream)
            self._spawn(self._pump, upstream, client)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while not self._stopping.is_set():
            if self._holding.is_set():
                # Nothing is read, so nothing is forwarded; the bytes wait in the kernel.
                time.sleep(0.05)
                continue
            try:
                readable, _, _ = select.select([source], [], [], 0.1)
                if not readable or self._holding.is_set():
                    continue
                data = source.recv(65536)
            except (OSError, ValueError):
                break
            if not data:
                break
            try:
                sink.sendall(data)
            except OSError:
                break
        for sock in (source, sink):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

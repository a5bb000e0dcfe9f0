"""A real MTA for the tests: a private Postfix instance on 127.0.0.1 that relays one domain to an
LMTP server (triaged's), as a project's own mail server would.

Postfix comes from Debian's packages (scripts/test installs it). Its instance has a config
directory, queue and data directory of its own under /tmp; the smtpd listens on a loopback port
without chroot. `postfix -c DIR` only accepts a directory that the default /etc/postfix/main.cf
lists in `alternate_config_directories`, so the instance adds its directory to that list while
it runs (under a lock, for parallel test sessions) and takes it out when it stops.
"""

from __future__ import annotations

import fcntl
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from servers import LOOPBACK, free_port, private_dir

POSTFIX = "/usr/sbin/postfix"
DEFAULT_MAIN_CF = Path("/etc/postfix/main.cf")
_LOCK = Path("/etc/postfix/.triaged-tests.lock")
_KEY = "alternate_config_directories"


def available() -> str | None:
    """Why Postfix cannot run here, or None when it can."""
    if not Path(POSTFIX).exists():
        return f"{POSTFIX} is missing (scripts/test installs the postfix package)"
    if not Path("/etc/postfix/master.cf").exists():
        return "/etc/postfix/master.cf is missing"
    return None


@contextmanager
def _main_cf_locked() -> Iterator[None]:
    with _LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _alternate_directories(change: str, directory: Path) -> None:
    """Adds ("add") or removes ("remove") `directory` in the default main.cf's list."""
    with _main_cf_locked():
        lines = DEFAULT_MAIN_CF.read_text().splitlines() if DEFAULT_MAIN_CF.exists() else []
        listed: list[str] = []
        others = []
        for line in lines:
            name, _, value = line.partition("=")
            if name.strip() == _KEY:
                listed += value.split()
            else:
                others.append(line)
        if change == "add":
            listed.append(str(directory))
        else:
            listed = [d for d in listed if d != str(directory)]
        if listed:
            others.append(f"{_KEY} = {' '.join(dict.fromkeys(listed))}")
        DEFAULT_MAIN_CF.write_text("".join(f"{line}\n" for line in others))


class PostfixServer:
    """Postfix accepting SMTP on `port` (127.0.0.1) and relaying `domain` over LMTP to
    127.0.0.1:`lmtp_port`."""

    def __init__(self, domain: str, lmtp_port: int) -> None:
        self.domain = domain
        self.lmtp_port = lmtp_port
        self.port = free_port()
        self.base = private_dir("triaged-postfix-")
        self.config_dir = self.base / "etc"
        self.maillog = self.config_dir / "maillog"

    def start(self) -> PostfixServer:
        config, queue, data = self.config_dir, self.base / "queue", self.base / "data"
        for directory in (config, queue, data):
            directory.mkdir()
        shutil.chown(data, "postfix")
        main_cf = {
            "compatibility_level": "3.6",
            "myhostname": "mta.triaged.test",
            "queue_directory": str(queue),
            "data_directory": str(data),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "inet_interfaces": LOOPBACK,
            "inet_protocols": "ipv4",
            "mydestination": "",
            "relay_domains": self.domain,
            "transport_maps": f"inline:{{ {self.domain}=lmtp:inet:{LOOPBACK}:{self.lmtp_port} }}",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "shlib_directory": "/usr/lib/postfix",
            "daemon_directory": "/usr/lib/postfix/sbin",
            "meta_directory": "/etc/postfix",
            "maillog_file": str(self.maillog),
            # Without it Postfix refuses the log file and dies without a word.
            "maillog_file_prefixes": "/tmp",
            # A deferred message is tried again soon (the default waits minutes).
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
        }
        (config / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in main_cf.items()))
        master = Path("/etc/postfix/master.cf").read_text().splitlines()
        smtp_line = f"{LOOPBACK}:{self.port} inet n - n - - smtpd"
        master = [smtp_line if line.startswith("smtp      inet") else line for line in master]
        (config / "master.cf").write_text("\n".join(master) + "\n")
        _alternate_directories("add", config)
        self._postfix("set-permissions", "create-missing")
        self._postfix("start")
        self._wait_listening()
        return self

    def stop(self) -> None:
        try:
            subprocess.run(
                [POSTFIX, "-c", str(self.config_dir), "stop"], capture_output=True, timeout=60
            )
        finally:
            _alternate_directories("remove", self.config_dir)
            shutil.rmtree(self.base, ignore_errors=True)

    def log(self) -> str:
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else ""

    def wait_for_log(self, needle: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            if needle in text:
                return text
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not in Postfix's log within {timeout}s:\n{self.log()}")

    def _postfix(self, *args: str) -> None:
        result = subprocess.run(
            [POSTFIX, "-c", str(self.config_dir), *args], capture_output=True, text=True, timeout=60
        )
        if result.returncode != 0:
            raise RuntimeError(f"postfix {' '.join(args)} failed: {result.stderr}\n{self.log()}")

    def _wait_listening(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=1) as sock:
                    if sock.recv(100).startswith(b"220"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"Postfix does not answer on port {self.port}:\n{self.log()}")

"""What the benchmarks stand on: the mail they use, the servers, the daemon process, RSS.

Dovecot is tests/servers.py's DovecotServer (a private instance on 127.0.0.1); the config files
are built with tests/helpers.py. Nothing here talks to anything but 127.0.0.0/8.
"""

from __future__ import annotations

import base64
import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers import MAINTAINERS, DaemonProcess, base_sections, config_text
from tests.servers import DovecotServer, ImapAccount, free_port

ROOT = Path(__file__).resolve().parent.parent
STAGING = "bench-staging"

# --- the mail ---------------------------------------------------------------------------------

_WORDS = [
    "the",
    "parser",
    "overflows",
    "when",
    "a",
    "header",
    "line",
    "is",
    "longer",
    "than",
    "the",
    "buffer",
    "it",
    "was",
    "given",
    "and",
    "the",
    "length",
    "check",
    "happens",
    "after",
    "the",
    "copy",
    "so",
    "an",
    "attacker",
    "who",
    "controls",
    "the",
    "input",
    "can",
    "write",
    "past",
    "the",
    "end",
    "of",
    "the",
    "heap",
    "block",
    "version",
    "affected",
    "release",
    "tested",
    "build",
    "crash",
    "reproduce",
    "steps",
    "input",
    "file",
    "attached",
    "memory",
    "sanitizer",
    "report",
    "shows",
    "a",
    "write",
    "of",
    "size",
    "bytes",
    "at",
    "offset",
]


def _wrap(rng: random.Random, chars: int, width: int = 72) -> str:
    lines: list[str] = []
    line: list[str] = []
    size = length = 0
    while size < chars:
        word = rng.choice(_WORDS)
        if length + len(word) + 1 > width:
            lines.append(" ".join(line))
            size += length + 1
            line, length = [], 0
        line.append(word)
        length += len(word) + 1
    if line:
        lines.append(" ".join(line))
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Report:
    """One incoming report, as the bytes a mail server would store (LF line ends)."""

    index: int
    message_id: str
    sender: str
    raw: bytes


def make_report(index: int, large: bool, seed: int = 8, tag: str = "bench") -> Report:
    """~2 KB of text, or ~50 KB with a binary attachment; a distinct sender for each index."""
    rng = random.Random(seed * 1_000_003 + index)
    sender = f"reporter{index:05d}@outside{index % 97}.example"
    message_id = f"<{tag}-{index}-{rng.getrandbits(48):012x}@outside.example>"
    # One in ten has a non-ASCII display name and body, as real reports do.
    accented = index % 10 == 3
    name = "=?utf-8?q?Ren=C3=A9e_L=C3=B6ffler?=" if accented else f"Reporter {index}"
    subject = f"Heap overflow in the parser of module {index % 37} (report {index})"
    head = (
        f"From: {name} <{sender}>\n"
        "To: security@example.org\n"
        f"Subject: {subject}\n"
        f"Date: Sat, 21 Nov 2026 {index // 3600 % 24:02d}:{index // 60 % 60:02d}:"
        f"{index % 60:02d} +0000\n"
        f"Message-ID: {message_id}\n"
        "MIME-Version: 1.0\n"
    )
    text = _wrap(rng, 1500 if large else 1650)
    if accented:
        text = "Bonjour, voilà le problème décrit ci-dessous.\n\n" + text
    text_headers = (
        "Content-Type: text/plain; charset=utf-8\n"
        f"Content-Transfer-Encoding: {'8bit' if accented else '7bit'}\n"
    )
    if not large:
        body = (head + text_headers + "\n" + text).encode()
    else:
        boundary = f"=-=bench-{index}-{rng.getrandbits(32):08x}=-="
        blob = base64.encodebytes(rng.randbytes(35_000)).decode()
        body = (
            head + f'Content-Type: multipart/mixed; boundary="{boundary}"\n\n'
            f"--{boundary}\n{text_headers}\n{text}\n"
            f"--{boundary}\n"
            'Content-Type: application/octet-stream; name="poc.bin"\n'
            'Content-Disposition: attachment; filename="poc.bin"\n'
            "Content-Transfer-Encoding: base64\n\n"
            f"{blob}\n--{boundary}--\n"
        ).encode()
    return Report(index, message_id, sender, body)


def corpus(
    count: int, large_every: int = 5, tag: str = "bench", start: int = 0
) -> Iterator[Report]:
    """`count` reports, one in `large_every` with an attachment (8,000 + 2,000 of 10,000)."""
    for index in range(start, start + count):
        yield make_report(index, index % large_every == large_every - 1, tag=tag)


def crlf(raw: bytes) -> bytes:
    return raw.replace(b"\n", b"\r\n")


# --- Dovecot ----------------------------------------------------------------------------------


def maildir_of(server: DovecotServer, account: ImapAccount) -> Path:
    return server.base / "home" / account.user / "Maildir"


def seed_folder(
    server: DovecotServer, account: ImapAccount, folder: str, reports: Iterator[Report]
) -> tuple[int, int]:
    """Writes the messages straight into the folder's Maildir and lets Dovecot index them.

    APPENDing 10,000 messages one by one to a growing Maildir takes minutes; files with the
    sizes in their names (S= bytes stored, W= RFC822.SIZE) are what Dovecot itself writes.
    Returns (messages, bytes).
    """
    with account.session() as client:
        if not client.folder_exists(folder):
            client.create_folder(folder)
    cur = maildir_of(server, account) / f".{folder}" / "cur"
    if not cur.is_dir():
        raise RuntimeError(f"Dovecot did not create {cur}")
    root = os.getuid() == 0
    stamp = int(time.time()) - 86_400
    count = total = 0
    for report in reports:
        size = len(report.raw)
        vsize = size + report.raw.count(b"\n")
        name = f"{stamp + report.index}.M{report.index}P{os.getpid()}.bench,S={size},W={vsize}:2,"
        path = cur / name
        path.write_bytes(report.raw)
        if root:
            os.chown(path, server.mail_uid, server.mail_gid)
        count += 1
        total += size
    # The first SELECT makes Dovecot scan the directory and build its index.
    with account.session() as client:
        exists = client.select_folder(folder, readonly=True)[b"EXISTS"]
    if exists != count:
        raise RuntimeError(f"Dovecot sees {exists} messages in {folder}, {count} were written")
    return count, total


# --- configuration ----------------------------------------------------------------------------


def write_config(directory: Path, account: ImapAccount, smtp_url: str, **smtp: str) -> Path:
    """A triaged config reading the account's INBOX and sending to `smtp_url` (defaults
    otherwise, as in production: batch_size 50, synchronous SQLite, two maintainers)."""
    sections = base_sections(
        directory,
        mailbox_url=account.url("INBOX"),
        smtp_url=smtp_url,
        password_file=str(account.password_file),
    )
    sections["mailbox"].update(poll_interval="1h", connect_timeout="10s")
    sections["smtp"].update(smtp)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.toml"
    path.write_text(config_text(sections))
    return path


def closed_port_url() -> str:
    """An SMTP URL on loopback where nothing listens: the outbox stays paused (backoff)."""
    return f"smtp+plain://127.0.0.1:{free_port()}"


MESSAGES_PER_REPORT = 1 + len(MAINTAINERS)  # the receipt and one notification per maintainer


# --- the daemon -------------------------------------------------------------------------------


# The daemon as a child process, as the tests run it, at the production log level.
def Daemon(config: Path, log_path: Path) -> DaemonProcess:
    return DaemonProcess(config, log_path, verbose=False)


# --- memory -----------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile, ... of a process in KiB, from /proc/PID/status."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.startswith(("Vm", "Rss")) and value.strip().endswith("kB"):
            out[key] = int(value.split()[0])
    return out


@dataclass
class RssSampler:
    """Samples a process's VmRSS every `interval` seconds in a thread; keeps the maximum."""

    pid: int
    interval: float = 0.05
    peak_kib: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = proc_status(self.pid).get("VmRSS", 0)
            except OSError:
                return
            self.peak_kib = max(self.peak_kib, rss)
            self.samples += 1
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0-100), linear between the closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def machine() -> dict[str, Any]:
    """What ran the benchmark."""
    info: dict[str, Any] = {"cores": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                info["os"] = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    info["kernel"] = os.uname().release
    return info

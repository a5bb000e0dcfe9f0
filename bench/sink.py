"""A light SMTP sink for the benchmarks: aiosmtpd in a process of its own.

tests/servers.py's SmtpSink parses every message fully and keeps it, in the process of the code
it measures; at 10,000 messages that would make the sink, not the client, the figure. This one
reads only the header block, keeps nothing, and runs in a child process (its own GIL). Each
accepted message is reported to the parent as one JSON line on the child's stdout, read back as
a `Received` with the moment it was accepted on the shared CLOCK_MONOTONIC (time.monotonic() is
the same clock in every process on Linux).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import Any

from tests.servers import LOOPBACK, free_port

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic() in the sink process when DATA was accepted
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message_id: str
    in_reply_to: str
    auto_submitted: str
    size: int


class _Handler:
    def __init__(self, out: Any) -> None:
        self.out = out
        self.parser = BytesHeaderParser(policy=compat32)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        at = time.monotonic()
        end = raw.find(b"\r\n\r\n")
        headers = self.parser.parsebytes(raw[: end + 4] if end >= 0 else raw)
        record = [
            at,
            str(envelope.mail_from),
            list(envelope.rcpt_tos),
            str(headers.get("Message-ID", "")),
            str(headers.get("In-Reply-To", "")),
            str(headers.get("Auto-Submitted", "")),
            len(raw),
        ]
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()
        return "250 OK: queued"


def serve(port: int) -> None:
    """The child: serves until its stdin closes; one JSON line on stdout per message."""
    from aiosmtpd.controller import Controller

    controller = Controller(
        _Handler(sys.stdout),
        hostname=LOOPBACK,
        port=port,
        ready_timeout=20,
        server_hostname="sink.bench",  # no getfqdn(): nothing but loopback is asked
    )
    controller.start()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    try:
        sys.stdin.read()
    finally:
        controller.stop()


class BenchSink:
    """Start with `with BenchSink() as sink:`; `sink.url` is an smtp+plain URL for triaged."""

    def __init__(self) -> None:
        self.host = LOOPBACK
        self.port = free_port()
        self._proc: subprocess.Popen[str] | None = None
        self._cond = threading.Condition()
        self.count = 0
        self.listeners: list[Callable[[Received], None]] = []
        self._drain_thread = threading.Thread(target=self._drain, name="sink-drain", daemon=True)

    @property
    def url(self) -> str:
        return f"smtp+plain://{self.host}:{self.port}"

    def start(self) -> BenchSink:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench.sink", str(self.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        assert self._proc.stdout is not None
        if self._proc.stdout.readline().strip() != "ready":
            self.close()
            raise RuntimeError("the benchmark SMTP sink did not start")
        self._drain_thread.start()
        return self

    def _drain(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            at, mail_from, rcpts, message_id, in_reply_to, auto, size = json.loads(line)
            item = Received(at, mail_from, tuple(rcpts), message_id, in_reply_to, auto, size)
            for listener in list(self.listeners):
                listener(item)
            with self._cond:
                self.count += 1
                self._cond.notify_all()

    def wait_count(self, count: int, timeout: float) -> int:
        """Waits until `count` messages arrived in all; returns how many did."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.count < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return self.count

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if self._drain_thread.is_alive():
            self._drain_thread.join(5)

    def __enter__(self) -> BenchSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    serve(int(sys.argv[1]))

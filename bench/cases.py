"""The benchmarks. Each returns a dict of figures for bench/__main__.py to print and record."""

from __future__ import annotations

import email
import email.policy
import random
import shutil
import smtplib
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.rig import (
    MESSAGES_PER_REPORT,
    STAGING,
    Daemon,
    Report,
    RssSampler,
    closed_port_url,
    corpus,
    crlf,
    make_report,
    percentile,
    proc_status,
    seed_folder,
    write_config,
)
from bench.sink import BenchSink, Received
from tests.helpers import DaemonProcess, base_sections, config_text, count_rows, read_before
from tests.servers import DovecotServer, free_port, private_dir
from triaged.config import load


@dataclass(frozen=True)
class Sizes:
    ingest: int
    delivery: int
    latency: int
    clocks: int  # reports in the clock-pass database, a tenth of them open
    openpgp: int  # PGP/MIME reports, and the same in clear
    lmtp: int  # reports delivered one at a time over LMTP (and 50 times as many in parallel)
    import_: int  # messages in the archive `triaged import` reads


FULL = Sizes(
    ingest=10_000,
    delivery=10_000,
    latency=200,
    clocks=100_000,
    openpgp=1_000,
    lmtp=200,
    import_=10_000,
)
SMOKE = Sizes(ingest=200, delivery=300, latency=10, clocks=2_000, openpgp=10, lmtp=10, import_=300)


def _log(text: str) -> None:
    print(f"bench: {text}", flush=True)


# --- 1 + 4: ingest, with the daemon's memory ------------------------------------------------


def baseline_ingest(account: Any, folder: str) -> tuple[int, float]:
    """The naive loop: UID FETCH BODY.PEEK[] in batches of 100, message_from_bytes each."""
    client = account.client()
    try:
        client.select_folder(folder, readonly=True)
        started = time.perf_counter()
        uids = client.search("ALL")
        parsed = 0
        for start in range(0, len(uids), 100):
            for item in client.fetch(uids[start : start + 100], ["BODY.PEEK[]"]).values():
                email.message_from_bytes(item[b"BODY[]"], policy=email.policy.default)
                parsed += 1
        elapsed = time.perf_counter() - started
    finally:
        client.logout()
    return parsed, elapsed


def ingest(server: DovecotServer, work: Path, n: int) -> dict[str, Any]:
    """Seeds n reports, times the naive loop on them, then the real daemon ingesting them.

    Both read the same folder contents: the baseline reads the staging folder (without
    changing it), then one UID MOVE puts every message in the INBOX of a running, idle daemon
    whose outbox is paused (its SMTP URL is a closed loopback port: this measures intake only).
    """
    account = server.add_user()
    second = max(n // 10, 20)
    started = time.perf_counter()
    seeded, seeded_bytes = seed_folder(server, account, STAGING, corpus(n))
    seed_s = time.perf_counter() - started
    _log(f"ingest: seeded {seeded} messages ({seeded_bytes / 1e6:.1f} MB) in {seed_s:.1f}s")

    directory = work / "ingest"
    config = write_config(directory, account, closed_port_url(), retry_initial="1h")
    # The messages are moved in after the start but keep their arrival time (a day ago): as
    # new mail of a mailbox read before, not a mailbox adopted at a new database's first start.
    read_before(load(config))
    db = directory / "triaged.db"
    with Daemon(config, directory / "daemon.log") as daemon:
        daemon.wait_for_log("reading imap", timeout=30)
        time.sleep(1.5)  # settled: connected, idle in IDLE
        before = proc_status(daemon.pid)

        parsed, base_s = baseline_ingest(account, STAGING)
        _log(f"ingest: baseline parsed {parsed} in {base_s:.2f}s ({parsed / base_s:.0f}/s)")
        if parsed != n:
            raise RuntimeError(f"the baseline read {parsed} of {n} messages")

        sampler = RssSampler(daemon.pid).start()
        with account.session() as client:
            client.select_folder(STAGING)
            moved_at = time.time()
            client.move("1:*", "INBOX")
            move_s = time.time() - moved_at
        done_at = _wait_stored(db, n, daemon)
        time.sleep(2.0)  # back in IDLE
        after = proc_status(daemon.pid)
        first = _first_received(db)

        # A second, smaller burst: growth that comes back with every burst is a leak; what the
        # first one left (caches filled, the allocator's high-water mark) does not grow again.
        seed_folder(server, account, STAGING, corpus(second, start=n))
        with account.session() as client:
            client.select_folder(STAGING)
            client.move("1:*", "INBOX")
        _wait_stored(db, n + second, daemon)
        time.sleep(2.0)
        sampler.stop()
        again = proc_status(daemon.pid)
        hwm = again.get("VmHWM", 0)
        exit_code = daemon.stop(timeout=60)
    triaged_s = done_at - first
    _log(f"ingest: triaged stored {n} in {triaged_s:.2f}s ({n / triaged_s:.0f}/s)")
    checks = {
        "messages stored": count_rows(db, "SELECT COUNT(*) FROM messages"),
        "new reports": count_rows(db, "SELECT COUNT(*) FROM reports"),
        "classified as report": count_rows(
            db, "SELECT COUNT(*) FROM messages WHERE kind = 'report'"
        ),
        "receipts in the outbox": count_rows(
            db, "SELECT COUNT(*) FROM outbox WHERE kind = 'receipt' AND state = 'pending'"
        ),
        "outbox rows": count_rows(db, "SELECT COUNT(*) FROM outbox"),
        "left in INBOX": len(account.fetch_all("INBOX")) if n <= 1000 else _exists(account),
    }
    total = n + second
    expected = {
        "messages stored": total,
        "new reports": total,
        "classified as report": total,
        "receipts in the outbox": total,
        "outbox rows": total * MESSAGES_PER_REPORT,
        "left in INBOX": 0,
    }
    bad = {k: v for k, v in checks.items() if v != expected[k]}
    if bad or exit_code != 0:
        raise RuntimeError(f"ingest did not finish as expected: {bad}, exit {exit_code}")
    return {
        "n": n,
        "bytes": seeded_bytes,
        "seed_s": seed_s,
        "baseline_s": base_s,
        "baseline_rate": n / base_s,
        "triaged_s": triaged_s,
        "triaged_rate": n / triaged_s,
        "triaged_from_move_s": done_at - moved_at,
        "move_s": move_s,
        "ratio": (n / triaged_s) / (n / base_s),
        "second": second,
        "rss_before_mb": before.get("VmRSS", 0) * 1024 / 1e6,
        "rss_after_mb": after.get("VmRSS", 0) * 1024 / 1e6,
        "rss_again_mb": again.get("VmRSS", 0) * 1024 / 1e6,
        "rss_peak_mb": max(hwm, sampler.peak_kib) * 1024 / 1e6,
        "rss_samples": sampler.samples,
        "rss_parts": {
            when: {k: v * 1024 / 1e6 for k, v in status.items() if k.startswith("Rss")}
            for when, status in (("before", before), ("after", after), ("again", again))
        },
        "checks": checks,
        "db": str(db),
        "config": str(config),
    }


def _wait_stored(db: Path, n: int, daemon: DaemonProcess, stall: float = 60.0) -> float:
    """Polls (every 50 ms) until n messages are stored; returns the wall-clock moment.

    Gives up when the count has not moved for `stall` seconds.
    """
    last, moved = -1, time.monotonic()
    while True:
        stored = count_rows(db, "SELECT COUNT(*) FROM messages")
        if stored >= n:
            return time.time()
        if stored != last:
            last, moved = stored, time.monotonic()
        elif time.monotonic() - moved > stall:
            raise RuntimeError(f"stalled: {stored} of {n} messages stored, none for {stall:.0f}s")
        if daemon.proc is not None and daemon.proc.poll() is not None:
            raise RuntimeError(f"the daemon exited:\n{daemon.log()[-4000:]}")
        time.sleep(0.05)


def _first_received(db: Path) -> float:
    """When the intake pass that took the first message began (its `now`, wall clock)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (text,) = conn.execute("SELECT MIN(received_at) FROM messages").fetchone()
    finally:
        conn.close()
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def _exists(account: Any) -> int:
    with account.session() as client:
        return int(client.select_folder("INBOX", readonly=True)[b"EXISTS"])


# --- 2: delivery ----------------------------------------------------------------------------


def delivery(sink: BenchSink, db: Path, work: Path, n: int) -> dict[str, Any]:
    """The first n outbox rows of the ingest run: a bare smtplib loop, then the OutboxRunner."""
    from triaged.config import load
    from triaged.mail.transport import SmtpTransport
    from triaged.service.outbox import OutboxRunner
    from triaged.store.db import Store

    directory = work / "delivery"
    directory.mkdir(parents=True, exist_ok=True)
    copy = directory / "triaged.db"
    shutil.copyfile(db, copy)
    text = (db.parent / "config.toml").read_text()
    config_path = directory / "config.toml"
    config_path.write_text(text.replace(str(db), str(copy)))
    config = load(config_path)
    smtp = _with_url(config.smtp, sink.url)

    store = Store(copy)
    rows = store.all(
        "SELECT envelope_from, recipient, raw FROM outbox WHERE state = 'pending'"
        " ORDER BY next_attempt_at, id LIMIT ?",
        (n,),
    )
    if len(rows) < n:
        raise RuntimeError(f"only {len(rows)} outbox rows to deliver, {n} wanted")
    messages = [(r["envelope_from"], r["recipient"], bytes(r["raw"])) for r in rows]
    total_bytes = sum(len(m[2]) for m in messages)

    # Two rounds of half each, baseline then triaged, so that a change in the machine's load
    # during the run weighs on both sides alike.
    transport = SmtpTransport(smtp, local_hostname="bench.localhost")
    runner = OutboxRunner(store, transport, smtp)
    now = datetime.now(UTC)
    base_s = triaged_s = 0.0
    half = (n + 1) // 2
    for first in range(0, n, half):
        part = messages[first : first + half]
        base_s += _smtplib_loop(sink, part)
        triaged_s += _runner_loop(sink, runner, now, len(part))
    transport.close()
    store.close()
    _log(f"delivery: baseline sent {n} in {base_s:.2f}s ({n / base_s:.0f}/s)")
    _log(f"delivery: triaged sent {n} in {triaged_s:.2f}s ({n / triaged_s:.0f}/s)")
    marked = count_rows(copy, "SELECT COUNT(*) FROM outbox WHERE state = 'sent'")
    if marked != n:
        raise RuntimeError(f"{marked} outbox rows marked sent, {n} expected")
    return {
        "n": n,
        "bytes": total_bytes,
        "baseline_s": base_s,
        "baseline_rate": n / base_s,
        "triaged_s": triaged_s,
        "triaged_rate": n / triaged_s,
        "ratio": base_s / triaged_s,
    }


def _smtplib_loop(sink: BenchSink, messages: list[tuple[str, str, bytes]]) -> float:
    """The baseline: one connection, sendmail in a loop; returns the seconds it took."""
    start_count = sink.count
    started = time.perf_counter()
    client = smtplib.SMTP(sink.host, sink.port, local_hostname="bench.localhost", timeout=30)
    client.ehlo()
    for envelope_from, recipient, raw in messages:
        client.sendmail(envelope_from, [recipient], raw)
    client.quit()
    elapsed = time.perf_counter() - started
    got = sink.wait_count(start_count + len(messages), timeout=60) - start_count
    if got != len(messages):
        raise RuntimeError(f"the sink got {got} of the baseline's {len(messages)} messages")
    return elapsed


def _runner_loop(sink: BenchSink, runner: Any, now: datetime, n: int) -> float:
    """triaged: the OutboxRunner over the real SMTP transport, as the daemon's outbox loop runs
    it, until n more rows are sent; returns the seconds it took."""
    start_count = sink.count
    started = time.perf_counter()
    sent = 0
    while sent < n:
        done = runner.run_once(now, limit=min(500, n - sent))
        if done == 0:
            raise RuntimeError(f"the outbox runner stalled after {sent} messages")
        sent += done
    elapsed = time.perf_counter() - started
    got = sink.wait_count(start_count + n, timeout=60) - start_count
    if got != n:
        raise RuntimeError(f"the sink got {got} of triaged's {n} messages")
    return elapsed


def _with_url(smtp: Any, url: str) -> Any:
    import dataclasses

    from triaged.config import parse_url

    return dataclasses.replace(smtp, endpoint=parse_url(url, "smtp", Path("/")))


# --- 3: latency -----------------------------------------------------------------------------


class _IdleWatch:
    """An IDLE session on the INBOX that notes when each EXISTS arrives (Dovecot's floor)."""

    def __init__(self, account: Any) -> None:
        self.client = account.client()
        self.client.select_folder("INBOX")
        self.times: list[float] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="idle-watch", daemon=True)

    def start(self) -> _IdleWatch:
        self.client.idle()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            responses = self.client.idle_check(timeout=0.5)
            at = time.monotonic()
            if any(isinstance(r, tuple) and len(r) > 1 and r[1] == b"EXISTS" for r in responses):
                with self._cond:
                    self.times.append(at)
                    self._cond.notify_all()

    def first_after(self, moment: float, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                later = [t for t in self.times if t >= moment]
                if later:
                    return later[0]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        try:
            self.client.idle_done()
            self.client.logout()
        except Exception:
            self.client.shutdown()


def latency(server: DovecotServer, sink: BenchSink, work: Path, n: int) -> dict[str, Any]:
    """n reports APPENDed one at a time to an idle daemon: APPEND -> receipt at the sink."""
    account = server.add_user()
    directory = work / "latency"
    config = write_config(directory, account, sink.url)
    arrivals: dict[str, float] = {}
    settled: dict[str, int] = {}
    cond = threading.Condition()

    def on_message(received: Received) -> None:
        with cond:
            if received.auto_submitted == "auto-replied" and received.in_reply_to:
                arrivals[received.in_reply_to] = received.at
            settled["count"] = settled.get("count", 0) + 1
            cond.notify_all()

    sink.listeners.append(on_message)
    rng = random.Random(3)
    reports = [make_report(50_000 + i, large=i % 5 == 4, tag="latency") for i in range(n)]
    latencies: list[float] = []
    floors: list[float] = []
    over: list[float] = []
    missed = 0
    try:
        with Daemon(config, directory / "daemon.log") as daemon:
            daemon.wait_for_log("reading imap", timeout=30)
            time.sleep(1.5)
            watch = _IdleWatch(account).start()
            appender = account.client()
            try:
                time.sleep(0.5)
                for report in reports:
                    with cond:
                        base_count = settled.get("count", 0)
                    t0 = time.monotonic()
                    appender.append("INBOX", crlf(report.raw))
                    receipt = _wait_receipt(cond, arrivals, report, timeout=30)
                    latencies.append(receipt - t0)
                    floor = watch.first_after(t0, timeout=3)
                    if floor is None:
                        # Dovecot announces nothing of a message that was added and moved
                        # away between two of the watcher's syncs: the daemon was faster.
                        missed += 1
                    else:
                        floors.append(floor - t0)
                        over.append(receipt - floor)
                    # All of this report's mail out, then a quiet mailbox: Dovecot delays
                    # IDLE notifications until 0.5 s after a change (the daemon's MOVE is
                    # one), so each APPEND starts from a mailbox idle for longer than that.
                    with cond:
                        cond.wait_for(
                            lambda b=base_count: settled.get("count", 0) >= b + MESSAGES_PER_REPORT,
                            timeout=30,
                        )
                    time.sleep(rng.uniform(0.7, 1.0))
            finally:
                appender.logout()
                watch.close()
            exit_code = daemon.stop(timeout=60)
    finally:
        sink.listeners.remove(on_message)
    if exit_code != 0:
        raise RuntimeError(f"the latency daemon exited with {exit_code}")
    if len(floors) < n // 2:
        raise RuntimeError(f"the IDLE watcher saw only {len(floors)} of {n} APPENDs")
    figures: dict[str, Any] = {"n": n, "floor_missed": missed, "latencies": latencies}
    for name, values in (("latency", latencies), ("floor", floors), ("over", over)):
        for p in (50, 90, 99):
            figures[f"{name}_p{p}"] = percentile(values, p)
        figures[f"{name}_max"] = max(values)
    return figures


def _wait_receipt(
    cond: threading.Condition, arrivals: dict[str, float], report: Report, timeout: float
) -> float:
    with cond:
        if not cond.wait_for(lambda: report.message_id in arrivals, timeout=timeout):
            raise RuntimeError(f"no receipt for {report.message_id} within {timeout}s")
        return arrivals[report.message_id]


def workdir() -> Path:
    return private_dir("triaged-bench-")


# --- 6: LMTP intake ---------------------------------------------------------------------------


def lmtp(sink: BenchSink, work: Path, n: int, bulk: int) -> dict[str, Any]:
    """n reports delivered one at a time over LMTP (end of DATA -> receipt at the sink), then
    `bulk` reports over 4 parallel LMTP connections to a daemon whose outbox is paused (intake
    only, as the ingest benchmark measures IMAP)."""
    figures = _lmtp_latency(sink, work / "lmtp-latency", n)
    figures.update(_lmtp_bulk(work / "lmtp-bulk", bulk, connections=4))
    return figures


def _lmtp_config(directory: Path, smtp_url: str, port: int) -> Path:
    sections = base_sections(directory, mailbox_url=f"lmtp://127.0.0.1:{port}", smtp_url=smtp_url)
    sections["smtp"].update(retry_initial="1h")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.toml"
    path.write_text(config_text(sections))
    return path


class _LmtpClient:
    """One LMTP connection, spoken by hand so that the end of DATA can be timed exactly. MAIL,
    RCPT and DATA go out together, as an MTA's client does with PIPELINING (Postfix's LMTP
    client does; triaged's server offers it)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.reader = self.sock.makefile("rb")
        self._reply()
        self._command(b"LHLO bench.test")

    def deliver(self, report: Report) -> tuple[float, float]:
        """Sends one message; (end of DATA, its 250) on time.monotonic()."""
        self.sock.sendall(
            f"MAIL FROM:<{report.sender}>\r\nRCPT TO:<security@example.org>\r\nDATA\r\n".encode()
        )
        self._reply(b"250")
        self._reply(b"250")
        self._reply(b"354")
        body = crlf(report.raw).replace(b"\r\n.", b"\r\n..")
        self.sock.sendall(body + (b"" if body.endswith(b"\r\n") else b"\r\n") + b".\r\n")
        sent = time.monotonic()
        self._reply()
        return sent, time.monotonic()

    def close(self) -> None:
        try:
            self._command(b"QUIT", expect=b"221")
        finally:
            self.sock.close()

    def _command(self, line: bytes, expect: bytes = b"250") -> None:
        self.sock.sendall(line + b"\r\n")
        self._reply(expect)

    def _reply(self, expect: bytes = b"2") -> bytes:
        while True:
            line = self.reader.readline()
            if not line.startswith(expect):
                raise RuntimeError(f"LMTP answered {line!r}, expected {expect!r}")
            if line[3:4] != b"-":
                return line


def _lmtp_latency(sink: BenchSink, directory: Path, n: int) -> dict[str, Any]:
    port = free_port()
    config = _lmtp_config(directory, sink.url, port)
    arrivals: dict[str, float] = {}
    cond = threading.Condition()

    def on_message(received: Received) -> None:
        with cond:
            if received.auto_submitted == "auto-replied" and received.in_reply_to:
                arrivals[received.in_reply_to] = received.at
                cond.notify_all()

    sink.listeners.append(on_message)
    reports = [make_report(70_000 + i, large=i % 5 == 4, tag="lmtp") for i in range(n)]
    latencies: list[float] = []
    answers: list[float] = []
    try:
        with Daemon(config, directory / "daemon.log") as daemon:
            daemon.wait_for_log("reading lmtp", timeout=30)
            client = _LmtpClient(port)
            try:
                for report in reports:
                    sent, answered = client.deliver(report)
                    receipt = _wait_receipt(cond, arrivals, report, timeout=30)
                    latencies.append(receipt - sent)
                    answers.append(answered - sent)
                    # The notifications of this report go out before the next one comes.
                    time.sleep(0.05)
            finally:
                client.close()
            exit_code = daemon.stop(timeout=60)
    finally:
        sink.listeners.remove(on_message)
    if exit_code != 0:
        raise RuntimeError(f"the LMTP daemon exited with {exit_code}")
    figures: dict[str, Any] = {"n": n}
    for name, values in (("latency", latencies), ("answer", answers)):
        for p in (50, 90, 99):
            figures[f"{name}_p{p}"] = percentile(values, p)
        figures[f"{name}_max"] = max(values)
    return figures


def _lmtp_bulk(directory: Path, n: int, connections: int) -> dict[str, Any]:
    port = free_port()
    config = _lmtp_config(directory, closed_port_url(), port)
    db = directory / "triaged.db"
    reports = list(corpus(n, tag="lmtp-bulk", start=80_000))
    shares = [reports[i::connections] for i in range(connections)]
    errors: list[BaseException] = []

    def deliver_all(share: list[Report]) -> None:
        try:
            client = _LmtpClient(port)
            try:
                for report in share:
                    client.deliver(report)
            finally:
                client.close()
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    with Daemon(config, directory / "daemon.log") as daemon:
        daemon.wait_for_log("reading lmtp", timeout=30)
        threads = [threading.Thread(target=deliver_all, args=(s,)) for s in shares]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        exit_code = daemon.stop(timeout=60)
    if errors:
        raise RuntimeError(f"an LMTP connection failed: {errors[0]!r}")
    stored = count_rows(db, "SELECT COUNT(*) FROM reports")
    if stored != n or exit_code != 0:
        raise RuntimeError(f"LMTP bulk stored {stored} of {n} reports, exit {exit_code}")
    _log(f"lmtp: {n} reports over {connections} connections in {elapsed:.2f}s")
    return {"bulk": n, "connections": connections, "bulk_s": elapsed, "bulk_rate": n / elapsed}

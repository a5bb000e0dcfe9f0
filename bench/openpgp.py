"""Benchmark 6: encrypted ingest. The same reports, once as PGP/MIME (encrypted to the project
key and signed by the reporter) and once in clear, each taken by a `triaged run` of its own
from its own IMAP INBOX, in the same run; then where the time of an encrypted report goes,
step by step, in-process on a sample.

The keys are throwaway ones made here (tests/pgp.py). The daemons' outbox is paused (their
SMTP URL is a closed port), as in benchmark 1: this measures intake; sealing outgoing mail
(encrypting and signing a receipt or notification) is timed in the breakdown.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.cases import _first_received, _log, _wait_stored
from bench.rig import STAGING, Daemon, Report, closed_port_url, corpus, seed_folder, write_config
from tests.helpers import count_rows
from tests.pgp import Person, pgp_mime
from tests.servers import DovecotServer

SAMPLE = 50  # reports timed step by step


def encrypt_report(report: Report, sender: Person, project: Person) -> Report:
    """The report as a PGP/MIME message: its content (headers Content-* and body) encrypted
    to the project key and signed; the outer header keeps From, Date and Message-ID, and its
    Subject is "..." (the real one travels inside, as a protected header)."""
    raw = report.raw.replace(b"\n", b"\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    fields = head.split(b"\r\n")
    subject = next(f for f in fields if f.lower().startswith(b"subject:"))
    content = [f for f in fields if f.lower().startswith(b"content-")]
    content[0] += b'; protected-headers="v1"'
    entity = b"\r\n".join([*content, subject]) + b"\r\n\r\n" + body
    sealed = pgp_mime(
        sender,
        "security@example.org",
        "...",
        entity,
        [project.fingerprint],
        extra={"X-Bench": str(report.index)},
    )
    # pgp_mime writes its own From, Date and Message-ID: use the report's.
    outer = [
        f
        for f in sealed.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        if not f.lower().startswith((b"from:", b"message-id:"))
    ]
    from_field = next(f for f in fields if f.lower().startswith(b"from:"))
    outer += [from_field, b"Message-ID: " + report.message_id.encode()]
    return replace(
        report,
        raw=(b"\r\n".join(outer) + b"\r\n\r\n" + sealed.split(b"\r\n\r\n", 1)[1]).replace(
            b"\r\n", b"\n"
        ),
    )


def _config(directory: Path, account: Any, project: Person | None) -> Path:
    path = write_config(directory, account, closed_port_url(), retry_initial="1h")
    if project is not None:
        (directory / "project.asc").write_bytes(project.secret_key)
        path.write_text(path.read_text() + '\n[openpgp]\nsecret_key_file = "project.asc"\n')
    return path


def _ingest(
    server: DovecotServer, work: Path, name: str, reports: list[Report], project: Person | None
) -> dict[str, Any]:
    account = server.add_user()
    seed_folder(server, account, STAGING, iter(reports))
    directory = work / name
    config = _config(directory, account, project)
    db = directory / "triaged.db"
    n = len(reports)
    with Daemon(config, directory / "daemon.log") as daemon:
        daemon.wait_for_log("reading imap", timeout=60)
        time.sleep(1.5)
        with account.session() as client:
            client.select_folder(STAGING)
            client.move("1:*", "INBOX")
        done_at = _wait_stored(db, n, daemon)
        first = _first_received(db)
        exit_code = daemon.stop(timeout=60)
    seconds = done_at - first
    reports_made = count_rows(db, "SELECT COUNT(*) FROM reports")
    decrypted = count_rows(
        db, "SELECT COUNT(*) FROM messages WHERE json_extract(openpgp, '$.decrypted')"
    )
    if exit_code != 0 or reports_made != n or (project is not None and decrypted != n):
        raise RuntimeError(
            f"{name}: {reports_made} reports, {decrypted} decrypted of {n}; exit {exit_code}"
        )
    _log(f"openpgp: {name}: {n} in {seconds:.2f}s ({n / seconds:.0f}/s)")
    return {"seconds": seconds, "rate": n / seconds, "db": str(db), "config": str(config)}


def breakdown(config_path: str, plain: list[Report], sealed: list[Report]) -> dict[str, float]:
    """Median milliseconds per report of each step triaged takes for an encrypted report
    (and the plain parse of the same report in clear, for scale)."""
    from triaged.config import load
    from triaged.mail.openpgp import Reader, open_keyring, seal
    from triaged.mail.parse import parse

    config = load(config_path)
    keyring = open_keyring(config)
    assert keyring is not None
    reader = Reader(keyring, config.limits)
    limits = config.limits
    steps: dict[str, list[float]] = {
        "parse in clear": [],
        "parse the outer message": [],
        "gpg: decrypt and verify": [],
        "parse the decrypted message": [],
        "whole open (all of the above)": [],
        "gpg: seal one outgoing mail": [],
        "gpg: decrypt and verify a 3-byte message (the fixed cost)": [],
    }
    recipient = keyring.project_fingerprint or ""
    try:
        tiny = keyring.encrypt(b"hi\n", [])
        for clear, encrypted in zip(plain, sealed, strict=True):
            raw = encrypted.raw.replace(b"\n", b"\r\n")
            t0 = time.perf_counter()
            parse(clear.raw, limits)
            t1 = time.perf_counter()
            outer = parse(raw, limits)
            t2 = time.perf_counter()
            root = _payload_of(raw)
            plain_bytes, _, _ = keyring.decrypt(root, limits.max_message_size)
            t3 = time.perf_counter()
            assert plain_bytes is not None
            parse(plain_bytes, limits)
            t4 = time.perf_counter()
            opened = reader.open(raw, outer)
            t5 = time.perf_counter()
            assert opened.msg.openpgp is not None and opened.msg.openpgp.decrypted
            seal(clear.raw.replace(b"\n", b"\r\n"), keyring, [recipient], "[x] ...")
            t6 = time.perf_counter()
            keyring.decrypt(tiny, 4096)
            t7 = time.perf_counter()
            for key, value in zip(
                steps,
                (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5, t7 - t6),
                strict=True,
            ):
                steps[key].append(value * 1000)
    finally:
        keyring.close()
    return {key: statistics.median(values) for key, values in steps.items()}


def _payload_of(raw: bytes) -> bytes:
    """The armoured OpenPGP message of a PGP/MIME message."""
    start = raw.index(b"-----BEGIN PGP MESSAGE-----")
    end = raw.index(b"-----END PGP MESSAGE-----") + len(b"-----END PGP MESSAGE-----")
    return raw[start:end]


def run(server: DovecotServer, work: Path, n: int) -> dict[str, Any]:
    project = Person("security@example.org", "Example security")
    sender = Person("reporters@outside.example")
    sender.knows(project.public_key)
    try:
        started = time.perf_counter()
        plain = list(_corpus(n))
        sealed = [encrypt_report(report, sender, project) for report in plain]
        _log(f"openpgp: encrypted {n} reports in {time.perf_counter() - started:.1f}s")
        clear = _ingest(server, work / "openpgp", "clear", plain, None)
        encrypted = _ingest(server, work / "openpgp", "encrypted", sealed, project)
        sample = min(SAMPLE, n)
        steps = breakdown(encrypted["config"], plain[:sample], sealed[:sample])
    finally:
        project.close()
        sender.close()
    return {
        "n": n,
        "clear_s": clear["seconds"],
        "clear_rate": clear["rate"],
        "encrypted_s": encrypted["seconds"],
        "encrypted_rate": encrypted["rate"],
        "ratio": encrypted["rate"] / clear["rate"],
        "sample": sample,
        "steps_ms": steps,
    }


def _corpus(n: int) -> Iterator[Report]:
    return corpus(n, tag="pgp")

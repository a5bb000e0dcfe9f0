"""6. `triaged import` of an archive against the naive loop's parse of the same file.

The archive is an mbox file of the ingest corpus (reports, one in five with a 35 KB
attachment) in which every fourth message is a reporter's follow-up to the message before it
(In-Reply-To and References), so the import threads as well as makes reports. Both sides read
the same file from the page cache in the same run: the naive loop parses each message with the
standard library (`mailbox.mbox` + `message_from_bytes(policy=default)`, nothing stored);
`triaged import` runs as its own process (stored, classified, threaded, one transaction per
batch of 50 with SQLite's synchronous=FULL as shipped), and reports its own peak RSS
(getrusage). A second run of the same import must add nothing.
"""

from __future__ import annotations

import email
import email.policy
import mailbox
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.rig import ROOT, corpus
from tests.helpers import count_rows, write_config

_FROM_LINE = re.compile(rb"^(>*From )", re.MULTILINE)
# The child reports its own peak RSS (KiB, Linux) on the way out, whatever the exit path.
_PEAK = (
    "import atexit, resource, sys\n"
    "atexit.register(lambda: sys.stderr.write("
    "'PEAK_RSS_KIB %d\\n' % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))\n"
    "from triaged.cli import main\n"
    "main()\n"
)


def archived(n: int) -> Iterator[bytes]:
    """n messages: the corpus's reports, every fourth replaced by a follow-up to the last."""
    previous = None
    for report in corpus(n, tag="archive"):
        if previous is not None and report.index % 4 == 3:
            head, _, body = report.raw.partition(b"\n\n")
            head = re.sub(
                rb"(?m)^From: .*$", f"From: Reporter <{previous.sender}>".encode(), head, count=1
            )
            reply = (
                f"In-Reply-To: {previous.message_id}\nReferences: {previous.message_id}\n"
            ).encode()
            yield head + b"\n" + reply + b"\n" + body
        else:
            yield report.raw
        previous = report


def write_mbox(path: Path, messages: Iterator[bytes]) -> tuple[int, int]:
    count = size = 0
    with path.open("wb") as out:
        for raw in messages:
            out.write(b"From archive@example.org Sat Nov 21 10:00:00 2026\n")
            body = _FROM_LINE.sub(rb">\1", raw)
            out.write(body if body.endswith(b"\n") else body + b"\n")
            out.write(b"\n")
            count += 1
            size += len(raw)
    return count, size


def naive(path: Path) -> tuple[int, float]:
    started = time.perf_counter()
    box = mailbox.mbox(str(path), create=False)
    parsed = 0
    for key in box.iterkeys():
        email.message_from_bytes(box.get_bytes(key), policy=email.policy.default)
        parsed += 1
    return parsed, time.perf_counter() - started


def triaged_import(config: Path, archive: Path) -> tuple[float, int, str]:
    """(seconds, peak RSS in KiB, the summary line) of one `triaged import` process."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK, "--config", str(config), "import", str(archive)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"triaged import failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    peak = re.search(r"PEAK_RSS_KIB (\d+)", proc.stderr)
    return elapsed, int(peak.group(1)) if peak else 0, proc.stdout.strip()


def run(work: Path, n: int) -> dict[str, Any]:
    directory = work / "import"
    directory.mkdir(parents=True, exist_ok=True)
    config = write_config(directory)
    archive = directory / "archive.mbox"
    written, size = write_mbox(archive, archived(n))
    if written != n:
        raise RuntimeError(f"wrote {written} of {n} messages")
    parsed, base_s = naive(archive)
    if parsed != n:
        raise RuntimeError(f"the naive loop read {parsed} of {n} messages")
    triaged_s, peak_kib, line = triaged_import(config, archive)
    db = directory / "triaged.db"
    checks = {
        "messages stored": count_rows(db, "SELECT COUNT(*) FROM messages"),
        "reports": count_rows(db, "SELECT COUNT(*) FROM reports"),
        "threaded follow-ups": count_rows(
            db, "SELECT COUNT(*) FROM messages WHERE kind = 'followup'"
        ),
        "outbox rows": count_rows(db, "SELECT COUNT(*) FROM outbox"),
    }
    again_s, again_kib, again_line = triaged_import(config, archive)
    checks["messages after a second run"] = count_rows(db, "SELECT COUNT(*) FROM messages")
    followups = sum(1 for i in range(1, n) if i % 4 == 3)
    expected = {
        "messages stored": n,
        "reports": n - followups,
        "threaded follow-ups": followups,
        "outbox rows": 0,
        "messages after a second run": n,
    }
    bad = {k: v for k, v in checks.items() if v != expected[k]}
    if bad:
        raise RuntimeError(f"import did not finish as expected: {bad}; {line}")
    return {
        "n": n,
        "bytes": size,
        "baseline_s": base_s,
        "baseline_rate": n / base_s,
        "triaged_s": triaged_s,
        "triaged_rate": n / triaged_s,
        "ratio": base_s / triaged_s,
        "rss_peak_mb": peak_kib * 1024 / 1e6,
        "again_s": again_s,
        "again_rss_peak_mb": again_kib * 1024 / 1e6,
        "summary": line,
        "again_summary": again_line,
        "checks": checks,
    }

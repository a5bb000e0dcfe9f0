"""Clock pass and digest at scale: 100,000 reports, 10,000 of them open (issue 8, item 5).

No server is needed: the database is built directly, with the events intake and commands
write (received; acknowledged, confirmed, fixed, closed; a severity), then:

- the full recompute: every open report's clocks replayed from its events, as after a start
  or a reload (`ClockRunner.recompute_all` + `run_once`); this is also the baseline: a pass
  that looked at every open report;
- the steady pass a minute later: only the reports whose next instant came (the
  `clock_state.next_at` index); the target (<= 100 ms) is for this pass, the one that runs
  every minute;
- one digest build and render (target <= 1 s); its baseline is one plain scan of every
  report row (`SELECT * FROM reports`).
"""

from __future__ import annotations

import json
import random
import sqlite3
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from triaged import digest
from triaged.clocks.runner import ClockRunner
from triaged.config import load
from triaged.core.timefmt import ts
from triaged.store.db import Store

# The reports came in over two years before NOW; the open ones in the last 60 days.
NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
STATES = ("new", "acknowledged", "confirmed", "fixing")
CLOSED = ("closed", "rejected", "duplicate", "spam")


def _config(work: Path) -> Path:
    path = work / "config.toml"
    path.write_text(
        f"""
[project]
name = "Bench"
address = "security@bench.example"
[mailbox]
url = "maildir:{work / "inbox"}"
[smtp]
url = "maildir:{work / "outbox"}"
[database]
path = "{work / "triaged.db"}"
[maintainers]
members = ["alice@bench.example", "bob@bench.example"]
[policy]
acknowledge = "48h"
respond = "5bd"
update_every = "1w"
remind_before = ["24h"]
[policy.resolve]
critical = "14d"
high = "30d"
"""
    )
    return path


def populate(db: Path, total: int, open_count: int, seed: int = 8) -> None:
    """`total` reports, `open_count` of them open, with the events of their history."""
    rng = random.Random(seed)
    store = Store(db)
    store.close()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA synchronous=OFF")
    reports, events = [], []

    def event(report_id: str, at: datetime, kind: str, **detail: Any) -> None:
        events.append((report_id, ts(at), kind, json.dumps(detail, sort_keys=True)))

    for n in range(total):
        report_id = f"b{n:07d}"
        is_open = n < open_count
        if is_open:
            created = NOW - timedelta(minutes=rng.randrange(60 * 24 * 60))
            state = rng.choice(STATES)
        else:
            created = NOW - timedelta(minutes=rng.randrange(60 * 24 * 60, 60 * 24 * 730))
            state = rng.choice(CLOSED)
        severity = rng.choice((None, "low", "medium", "high", "critical"))
        reports.append(
            (report_id, f"Report {n}", state, severity, "r@outside.example", ts(created))
        )
        event(report_id, created, "received")
        at = created + timedelta(hours=rng.randrange(1, 60))
        path = {
            "new": [],
            "acknowledged": ["acknowledged"],
            "confirmed": ["acknowledged", "confirmed"],
            "fixing": ["acknowledged", "confirmed", "fixing"],
        }.get(state, ["acknowledged", "confirmed", "fixed", state])
        old = "new"
        for new in path:
            if at >= NOW:
                break
            event(report_id, at, "state", old=old, new=new)
            old, at = new, at + timedelta(hours=rng.randrange(1, 200))
        if severity and at < NOW:
            event(report_id, at, "set", field="severity", old=None, new=severity)
    conn.executemany(
        "INSERT INTO reports (id, title, state, severity, reporter, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?6)",
        reports,
    )
    conn.executemany("INSERT INTO events (report_id, at, kind, detail) VALUES (?, ?, ?, ?)", events)
    conn.commit()
    conn.close()


def run(work: Path, total: int = 100_000, open_count: int = 10_000) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    config = load(_config(work))
    started = time.perf_counter()
    populate(config.database, total, open_count)
    build_s = time.perf_counter() - started
    store = Store(config.database)
    try:
        runner = ClockRunner(config, store)
        # Settle: every report computed once (the trigger marked all of them).
        started = time.perf_counter()
        runner.run_once(NOW)
        settle_s = time.perf_counter() - started

        runner.recompute_all()
        started = time.perf_counter()
        runner.run_once(NOW + timedelta(seconds=30))
        full_s = time.perf_counter() - started

        steady = []
        for minute in range(1, 6):
            started = time.perf_counter()
            sent = runner.run_once(NOW + timedelta(minutes=minute))
            steady.append((time.perf_counter() - started, sent))

        scans = []
        for _ in range(3):
            started = time.perf_counter()
            store.all("SELECT * FROM reports")
            scans.append(time.perf_counter() - started)

        renders = []
        text = ""
        for _ in range(3):
            started = time.perf_counter()
            text = digest.render(config, digest.build(store, config, NOW))
            renders.append(time.perf_counter() - started)
        deadlines = store.one("SELECT COUNT(*) AS n FROM deadlines")
    finally:
        store.close()
    steady_s = statistics.median(s for s, _ in steady)
    return {
        "total": total,
        "open": open_count,
        "populate_s": build_s,
        "settle_s": settle_s,
        "full_pass_s": full_s,
        "steady_pass_s": steady_s,
        "steady_notices": [n for _, n in steady],
        "full_vs_steady": full_s / steady_s if steady_s else float("inf"),
        "scan_s": statistics.median(scans),
        "digest_s": statistics.median(renders),
        "digest_lines": text.count("\n"),
        "deadline_rows": int(deadlines["n"]) if deadlines else 0,
    }


if __name__ == "__main__":
    import sys
    import tempfile

    size = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with tempfile.TemporaryDirectory(prefix="triaged-clockscale-") as tmp:
        print(json.dumps(run(Path(tmp), size, size // 10), indent=2))

"""`python -m bench [--smoke]`: runs every benchmark and writes bench/results.md.

Starts its own Dovecot (tests/servers.py) and an aiosmtpd sink (bench/sink.py) on 127.0.0.1,
runs ingest (with the daemon's memory), delivery, latency, the clocks and LMTP intake, prints
each figure with its baseline from the same run, and writes the results. Exit status 0 when
every benchmark ran (a missed target is reported, not an error), 1 when one failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import cases, clockscale, importing, openpgp  # noqa: E402
from bench.rig import machine  # noqa: E402
from bench.sink import BenchSink  # noqa: E402
from tests.servers import DovecotServer, dovecot_version  # noqa: E402

HERE = Path(__file__).resolve().parent
NAMES = ("ingest", "delivery", "latency", "clocks", "openpgp", "lmtp", "import")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="small counts (well under a minute): for CI"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write the results (default bench/results.md; with --smoke: "
        "bench/work/results-smoke.md)",
    )
    parser.add_argument(
        "--only", default=",".join(NAMES), help=f"comma-separated subset of {', '.join(NAMES)}"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    for name in NAMES:
        parser.add_argument(
            f"--{name}",
            dest=_field(name),
            type=int,
            metavar="N",
            help=f"how many for {name} (overrides the mode)",
        )
    args = parser.parse_args(argv)
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in only if name not in NAMES]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    sizes = cases.SMOKE if args.smoke else cases.FULL
    sizes = dataclasses.replace(
        sizes,
        **{
            _field(name): getattr(args, _field(name))
            for name in NAMES
            if getattr(args, _field(name))
        },
    )
    out = args.out or (HERE / "work" / "results-smoke.md" if args.smoke else HERE / "results.md")

    started = datetime.now(UTC)
    load_before = os.getloadavg()
    work = cases.workdir()
    results: dict[str, Any] = {}
    failures: dict[str, str] = {}
    wall = time.perf_counter()
    cases._log(f"{'smoke' if args.smoke else 'full'} run; work directory {work}")
    try:
        with DovecotServer(ssl="no") as server, BenchSink() as sink:
            if "ingest" in only or "delivery" in only:
                _run(results, failures, "ingest", cases.ingest, server, work, sizes.ingest)
            if "delivery" in only and "ingest" in results:
                db = Path(results["ingest"]["db"])
                n = min(sizes.delivery, results["ingest"]["checks"]["outbox rows"])
                _run(results, failures, "delivery", cases.delivery, sink, db, work, n)
            if "latency" in only:
                _run(results, failures, "latency", cases.latency, server, sink, work, sizes.latency)
            if "openpgp" in only:
                _run(results, failures, "openpgp", openpgp.run, server, work, sizes.openpgp)
            if "lmtp" in only:
                n = sizes.lmtp
                _run(results, failures, "lmtp", cases.lmtp, sink, work, n, n * 50)
        if "import" in only:
            # No server: an mbox file read by `triaged import` (see bench/importing.py).
            _run(results, failures, "import", importing.run, work, sizes.import_)
        if "clocks" in only:
            # No server: the database is built directly (see bench/clockscale.py).
            n = sizes.clocks
            _run(results, failures, "clocks", clockscale.run, work / "clocks", n, n // 10)
    finally:
        if args.keep:
            cases._log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if "ingest" not in only:
        results.pop("ingest", None)
    meta = {
        "mode": "smoke" if args.smoke else "full",
        "sizes": sizes,
        "started": started,
        "seconds": time.perf_counter() - wall,
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }
    text = render(results, failures, meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(summary(results))
    cases._log(f"wrote {out}")
    for name, error in failures.items():
        print(f"bench: {name} FAILED:\n{error}", file=sys.stderr)
    return 1 if failures else 0


def _field(name: str) -> str:
    """The Sizes field (and argparse dest) of a benchmark: `import` is a keyword."""
    return "import_" if name == "import" else name


def _run(results: dict[str, Any], failures: dict[str, str], name: str, fn: Any, *args: Any) -> None:
    cases._log(f"{name}: starting")
    try:
        results[name] = fn(*args)
    except Exception:
        failures[name] = traceback.format_exc()
        cases._log(f"{name}: FAILED")


# --- the report -----------------------------------------------------------------------------


def targets(results: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(what, target, measured, met) for every target the results can be judged on."""
    rows: list[tuple[str, str, str, bool]] = []
    if "ingest" in results:
        r = results["ingest"]
        rows.append(
            ("ingest rate vs naive loop", ">= 1.0x", f"{r['ratio']:.2f}x", r["ratio"] >= 1.0)
        )
        growth = r["rss_after_mb"] - r["rss_before_mb"]
        rows.append(
            (
                "daemon peak RSS during ingest",
                "<= 80 MB",
                f"{r['rss_peak_mb']:.1f} MB",
                r["rss_peak_mb"] <= 80,
            )
        )
        rows.append(("daemon RSS growth", "<= 10 MB", f"{growth:+.1f} MB", growth <= 10))
    if "delivery" in results:
        r = results["delivery"]
        rows.append(
            ("delivery rate vs smtplib loop", ">= 0.8x", f"{r['ratio']:.2f}x", r["ratio"] >= 0.8)
        )
    if "latency" in results:
        r = results["latency"]
        rows.append(
            (
                "latency p50",
                f"<= floor p50 + 0.1 s = {r['floor_p50'] + 0.1:.3f} s",
                f"{r['latency_p50']:.3f} s",
                r["latency_p50"] <= r["floor_p50"] + 0.1,
            )
        )
        rows.append(
            (
                "latency p99",
                f"<= floor p99 + 0.3 s = {r['floor_p99'] + 0.3:.3f} s",
                f"{r['latency_p99']:.3f} s",
                r["latency_p99"] <= r["floor_p99"] + 0.3,
            )
        )
    if "lmtp" in results:
        r = results["lmtp"]
        rows.append(
            (
                "LMTP end of DATA -> receipt, p50",
                "<= 50 ms",
                f"{r['latency_p50'] * 1000:.1f} ms",
                r["latency_p50"] <= 0.05,
            )
        )
        rows.append(
            (
                "LMTP end of DATA -> receipt, p99",
                "<= 150 ms",
                f"{r['latency_p99'] * 1000:.1f} ms",
                r["latency_p99"] <= 0.15,
            )
        )
        if "ingest" in results:
            imap = results["ingest"]["triaged_rate"]
            rows.append(
                (
                    f"LMTP ingest, {r['bulk']:,} reports over {r['connections']} connections",
                    f">= the IMAP ingest rate ({imap:.0f} msg/s)",
                    f"{r['bulk_rate']:.0f} msg/s",
                    r["bulk_rate"] >= imap,
                )
            )
    if "clocks" in results:
        r = results["clocks"]
        rows.append(
            (
                f"clock pass, {r['total']:,} reports ({r['open']:,} open)",
                "<= 100 ms",
                f"{r['steady_pass_s'] * 1000:.1f} ms",
                r["steady_pass_s"] <= 0.1,
            )
        )
        rows.append(
            (
                "digest build and render",
                "<= 1 s",
                f"{r['digest_s']:.3f} s",
                r["digest_s"] <= 1.0,
            )
        )
    if "import" in results:
        r = results["import"]
        rows.append(
            (
                "import rate vs naive parse loop",
                ">= 1.0x",
                f"{r['ratio']:.2f}x",
                r["ratio"] >= 1.0,
            )
        )
        rows.append(
            (
                "import peak RSS",
                "<= 80 MB",
                f"{r['rss_peak_mb']:.1f} MB",
                r["rss_peak_mb"] <= 80,
            )
        )
    return rows


def summary(results: dict[str, Any]) -> str:
    lines = ["", "== benchmark summary"]
    if "ingest" in results:
        r = results["ingest"]
        lines.append(
            f"ingest   {r['n']} msgs: triaged {r['triaged_rate']:.0f} msg/s, naive loop "
            f"{r['baseline_rate']:.0f} msg/s, ratio {r['ratio']:.2f}x"
        )
        lines.append(
            f"memory   daemon RSS before {r['rss_before_mb']:.1f} MB, peak "
            f"{r['rss_peak_mb']:.1f} MB, after {r['rss_after_mb']:.1f} MB, after "
            f"{r['second']} more {r['rss_again_mb']:.1f} MB"
        )
    if "delivery" in results:
        r = results["delivery"]
        lines.append(
            f"delivery {r['n']} msgs: triaged {r['triaged_rate']:.0f} msg/s, smtplib loop "
            f"{r['baseline_rate']:.0f} msg/s, ratio {r['ratio']:.2f}x"
        )
    if "latency" in results:
        r = results["latency"]
        lines.append(
            f"latency  {r['n']} reports: p50 {r['latency_p50']:.3f} s, p90 {r['latency_p90']:.3f}"
            f" s, p99 {r['latency_p99']:.3f} s, max {r['latency_max']:.3f} s; IDLE floor p50 "
            f"{r['floor_p50']:.3f} s, p99 {r['floor_p99']:.3f} s"
        )
    if "lmtp" in results:
        r = results["lmtp"]
        lines.append(
            f"lmtp     {r['n']} reports one at a time: end of DATA -> receipt p50 "
            f"{r['latency_p50'] * 1000:.1f} ms, p99 {r['latency_p99'] * 1000:.1f} ms; "
            f"{r['bulk']} over {r['connections']} connections: {r['bulk_rate']:.0f} msg/s"
        )
    if "clocks" in results:
        r = results["clocks"]
        lines.append(
            f"clocks   {r['total']} reports, {r['open']} open: pass {r['steady_pass_s'] * 1000:.1f}"
            f" ms (every open report recomputed: {r['full_pass_s']:.2f} s); digest "
            f"{r['digest_s']:.3f} s (one scan of all reports: {r['scan_s']:.3f} s)"
        )
    if "openpgp" in results:
        r = results["openpgp"]
        lines.append(
            f"openpgp  {r['n']} PGP/MIME reports: {r['encrypted_rate']:.0f} msg/s, the same in "
            f"clear {r['clear_rate']:.0f} msg/s, ratio {r['ratio']:.2f}x; per report: "
            + ", ".join(f"{k} {v:.1f} ms" for k, v in r["steps_ms"].items())
        )
    if "import" in results:
        r = results["import"]
        lines.append(
            f"import   {r['n']} msgs: triaged import {r['triaged_rate']:.0f} msg/s, naive parse "
            f"loop {r['baseline_rate']:.0f} msg/s, ratio {r['ratio']:.2f}x, peak RSS "
            f"{r['rss_peak_mb']:.1f} MB; a second run {r['again_s']:.2f} s"
        )
    for what, target, measured, met in targets(results):
        lines.append(f"target   {what}: {measured} ({target}) {'met' if met else 'MISSED'}")
    return "\n".join(lines)


def _versions() -> list[tuple[str, str]]:
    import aiosmtpd
    import imapclient

    import triaged

    major, minor = dovecot_version()
    try:
        full = subprocess.run(
            ["/usr/sbin/dovecot", "--version"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except OSError:
        full = f"{major}.{minor}"
    return [
        ("triaged", f"{triaged.__version__} ({_git()})"),
        ("Python", f"{platform.python_version()} ({platform.python_implementation()})"),
        ("SQLite", sqlite3.sqlite_version),
        ("Dovecot", full),
        ("IMAPClient", imapclient.__version__),
        ("aiosmtpd", aiosmtpd.__version__),
    ]


def _git() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except OSError:
        return "no git"
    if not head:
        return "no git"
    return f"commit {head}{' with uncommitted changes' if dirty else ''}"


def render(results: dict[str, Any], failures: dict[str, str], meta: dict[str, Any]) -> str:
    sizes = meta["sizes"]
    info = machine()
    lines = [
        "# Benchmark results",
        "",
        "Written by `python -m bench`"
        + (" --smoke" if meta["mode"] == "smoke" else "")
        + f" on {meta['started'].strftime('%Y-%m-%d %H:%M UTC')}"
        + f" ({meta['mode']} run, {meta['seconds']:.0f} s). Every baseline ran in the same run, "
        "on the same data, against the same servers (a private Dovecot and an aiosmtpd sink in "
        "its own process, both on 127.0.0.1).",
        "",
        "## Machine",
        "",
        f"- CPU: {info.get('cpu', '?')}, {info.get('cores', '?')} cores; memory "
        f"{info.get('memory_gib', '?')} GiB; {info.get('os', '?')}, Linux {info.get('kernel')}",
        f"- load average (1/5/15 min) at the start {_load(meta['load_before'])}, at the end "
        f"{_load(meta['load_after'])}. The machine is shared (other test runs may be going "
        "on, with 2 cores for everything): figures are noisy, ratios less so, since the two "
        "sides of each ran back to back (delivery in two interleaved rounds).",
        "",
        "## Versions",
        "",
        *[f"- {name}: {value}" for name, value in _versions()],
        "",
        "## Targets",
        "",
        "| what | target | measured | |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {what} | {target} | {measured} | {'met' if met else '**missed**'} |"
        for what, target, measured, met in targets(results)
    ]
    lines += ["", "## Figures", ""]
    if "ingest" in results:
        r = results["ingest"]
        large = sizes.ingest // 5
        lines += [
            f"### 1. Ingest: {r['n']:,} reports ({r['n'] - large:,} of ~2 KB text, {large:,} of "
            f"~50 KB with an attachment; {r['bytes'] / 1e6:.0f} MB; distinct senders)",
            "",
            "| | time | rate |",
            "|---|---|---|",
            f"| naive loop: UID FETCH BODY.PEEK[] by 100 + message_from_bytes(policy=default) "
            f"| {r['baseline_s']:.2f} s | {r['baseline_rate']:.0f} msg/s |",
            f"| triaged daemon (`triaged run`): stored, classified, threaded, receipt and "
            f"notifications in the outbox, moved to the processed folder | {r['triaged_s']:.2f} s "
            f"| {r['triaged_rate']:.0f} msg/s |",
            f"| ratio triaged / naive | | **{r['ratio']:.2f}x** |",
            "",
            f"Seeded by writing the Maildir files directly ({r['seed_s']:.1f} s) and letting "
            "Dovecot index them. The naive loop reads the staging folder; then one UID MOVE "
            f"({r['move_s']:.1f} s) hands every message to the INBOX of an idle daemon (batch_size"
            " 50, SQLite synchronous=FULL as shipped; its SMTP URL is a closed loopback port so "
            "the outbox stays paused and only intake is measured). triaged's time runs from the "
            "start of the intake pass that took the first message (its `received_at`) to the "
            "moment all were stored (polled every 50 ms); from the UID MOVE command it was "
            f"{r['triaged_from_move_s']:.2f} s (that adds the MOVE and Dovecot's IDLE delay).",
            "",
            f"Checks, after both bursts ({r['n'] + r['second']:,} reports, see 4.): "
            f"{', '.join(f'{k}: {v:,}' for k, v in r['checks'].items())}.",
            "",
            "### 4. Memory of the daemon during the ingest run",
            "",
            "VmRSS of the `triaged run` process, in MB (10^6 bytes, as the targets): before = "
            "idle and connected, before any mail; peak = VmHWM (and VmRSS sampled every 50 ms);"
            f" after = idle again after the {r['n']:,}; then a second burst of "
            f"{r['second']:,} more reports, to tell a leak (it grows again with every burst) "
            "from what the first burst leaves once (caches filled, the allocator's high-water "
            "mark).",
            "",
            "| before | peak | after | growth | after a second burst | growth in the second |",
            "|---|---|---|---|---|---|",
            f"| {r['rss_before_mb']:.1f} | {r['rss_peak_mb']:.1f} | {r['rss_after_mb']:.1f} | "
            f"{r['rss_after_mb'] - r['rss_before_mb']:+.1f} | {r['rss_again_mb']:.1f} | "
            f"{r['rss_again_mb'] - r['rss_after_mb']:+.1f} |",
            "",
            "Of which anonymous memory (RssAnon) / file-backed (RssFile): "
            + ", ".join(
                f"{when} {parts.get('RssAnon', 0):.1f} / {parts.get('RssFile', 0):.1f}"
                for when, parts in r["rss_parts"].items()
            )
            + ".",
            "",
        ]
    if "delivery" in results:
        r = results["delivery"]
        lines += [
            f"### 2. Delivery: {r['n']:,} outbox rows ({r['bytes'] / 1e6:.1f} MB: the receipts "
            "and notifications of the ingest run)",
            "",
            "| | time | rate |",
            "|---|---|---|",
            f"| bare smtplib loop, one connection | {r['baseline_s']:.2f} s "
            f"| {r['baseline_rate']:.0f} msg/s |",
            f"| triaged OutboxRunner + SmtpTransport (each row marked sent in a transaction "
            f"of its own, not fsynced) | {r['triaged_s']:.2f} s | {r['triaged_rate']:.0f} msg/s |",
            f"| ratio triaged / smtplib | | **{r['ratio']:.2f}x** |",
            "",
        ]
    if "latency" in results:
        r = results["latency"]
        lines += [
            f"### 3. Latency: {r['n']} reports APPENDed one at a time to an idle daemon",
            "",
            "From just before the APPEND to the receipt's arrival at the SMTP sink. The floor is "
            "Dovecot's own IDLE notification delay, measured for the same APPENDs by a second "
            "IDLE session on the same INBOX (APPEND -> untagged EXISTS). Dovecot sends it 0.5 s "
            "after the last change to the mailbox, so before each APPEND the mailbox was left "
            "quiet for 0.7-1.0 s (the daemon's own MOVE of the previous report is a change)."
            + (
                f" The floor is from {r['n'] - r['floor_missed']} of the {r['n']} APPENDs: "
                f"for {r['floor_missed']}, the daemon had already taken the message and moved "
                "it when the watcher's session synced, so Dovecot announced nothing to it (they "
                "count in the latency, not in the floor)."
                if r["floor_missed"]
                else ""
            ),
            "",
            "| | p50 | p90 | p99 | max |",
            "|---|---|---|---|---|",
        ]
        for label, key in (
            ("APPEND -> receipt at the sink", "latency"),
            ("floor: APPEND -> EXISTS in IDLE", "floor"),
            ("above the floor (same APPEND)", "over"),
        ):
            lines.append(
                f"| {label} | {r[key + '_p50']:.3f} s | {r[key + '_p90']:.3f} s | "
                f"{r[key + '_p99']:.3f} s | {r[key + '_max']:.3f} s |"
            )
        lines.append("")
    if "clocks" in results:
        r = results["clocks"]
        lines += [
            f"### 5. Clock pass and digest: {r['total']:,} reports, {r['open']:,} open",
            "",
            "The database is built directly with each report's history (received, state changes,"
            " severity); no server. The pass that runs every minute looks only at the reports "
            "whose next instant came (`clock_state.next_at`); its baseline is the pass that "
            "recomputes every open report from its events, as after a start or a reload.",
            "",
            "| | time |",
            "|---|---|",
            f"| baseline: every open report recomputed | {r['full_pass_s']:.3f} s |",
            f"| clock pass a minute later (median of 5; notices sent: "
            f"{', '.join(str(n) for n in r['steady_notices'])}) | "
            f"{r['steady_pass_s'] * 1000:.1f} ms |",
            f"| ratio baseline / pass | **{r['full_vs_steady']:.0f}x** |",
            f"| first pass over a database where every report is new to the clocks "
            f"(after the migration) | {r['settle_s']:.1f} s |",
            f"| baseline: one scan of every report row | {r['scan_s']:.3f} s |",
            f"| digest build and render (median of 3) | {r['digest_s']:.3f} s |",
            "",
        ]
    if "openpgp" in results:
        r = results["openpgp"]
        lines += [
            f"### 6. Encrypted ingest: {r['n']:,} PGP/MIME reports, and the same in clear",
            "",
            "The reports of benchmark 1 (one in five with a 35 KB attachment), each encrypted "
            "to the project key and signed by the reporter (one combined OpenPGP message, "
            "RFC 3156 6.2; the subject inside as a protected header), seeded into the INBOX of "
            "a `triaged run` with `[openpgp]`; the same reports in clear into another daemon's,"
            " in the same run. Timed as benchmark 1 (intake only, the outbox paused).",
            "",
            "| | time | rate |",
            "|---|---|---|",
            f"| in clear | {r['clear_s']:.2f} s | {r['clear_rate']:.0f} msg/s |",
            f"| PGP/MIME, decrypted and verified | {r['encrypted_s']:.2f} s "
            f"| {r['encrypted_rate']:.0f} msg/s |",
            f"| ratio encrypted / clear | | **{r['ratio']:.2f}x** |",
            "",
            f"Where the time of one encrypted report goes (median of {r['sample']}, in-process, "
            "ms):",
            "",
            "| step | ms |",
            "|---|---|",
            *[f"| {step} | {ms:.2f} |" for step, ms in r["steps_ms"].items()],
            "",
            "Each gpg step is one gpg process (python-gnupg starts one per operation, and "
            "the secret-key work goes through the home's gpg-agent): the last line, the same "
            "work on a 3-byte message, is the fixed cost of that process, and the bulk of each "
            "gpg step. Parsing, storing and classifying cost what they cost in clear.",
            "",
        ]
    if "lmtp" in results:
        lines += _lmtp_section(results)
    if "import" in results:
        r = results["import"]
        lines += [
            f"### 8. Import: an mbox archive of {r['n']:,} messages ({r['bytes'] / 1e6:.0f} MB; "
            "the ingest corpus, every fourth message a follow-up to the one before)",
            "",
            "| | time | rate |",
            "|---|---|---|",
            f"| naive loop: mailbox.mbox + message_from_bytes(policy=default), nothing stored "
            f"| {r['baseline_s']:.2f} s | {r['baseline_rate']:.0f} msg/s |",
            f"| `triaged import` (its own process, from start to exit): stored, classified, "
            f"threaded | {r['triaged_s']:.2f} s | {r['triaged_rate']:.0f} msg/s |",
            f"| ratio triaged / naive | | **{r['ratio']:.2f}x** |",
            f"| the same import again (adds nothing) | {r['again_s']:.2f} s | |",
            "",
            f"Peak RSS of the import process (getrusage): {r['rss_peak_mb']:.1f} MB "
            f"({r['again_rss_peak_mb']:.1f} MB the second time). It said: `{r['summary']}`; "
            f"the second time: `{r['again_summary']}`. Checks: "
            f"{', '.join(f'{k}: {v:,}' for k, v in r['checks'].items())}.",
            "",
        ]
    for name, error in failures.items():
        lines += [f"### {name}: FAILED", "", "```", error.rstrip(), "```", ""]
    fixes = HERE / "fixes.md"
    if fixes.exists():
        lines += [fixes.read_text().rstrip(), ""]
    return "\n".join(lines)


def _lmtp_section(results: dict[str, Any]) -> list[str]:
    r = results["lmtp"]
    imap = results.get("latency")
    lines = [
        f"### 7. LMTP intake: {r['n']} reports one at a time, then {r['bulk']:,} over "
        f"{r['connections']} connections",
        "",
        'The daemon with `[mailbox] url = "lmtp://127.0.0.1:PORT"`, an LMTP client speaking to '
        "it directly (the MTA's part), the same reports as the other benchmarks. Latency: from "
        "the last byte of DATA sent to the receipt's arrival at the SMTP sink; the 250 is the "
        "daemon's answer, which comes only after the commit.",
        "",
        "| | p50 | p90 | p99 | max |",
        "|---|---|---|---|---|",
    ]
    for label, key in (
        ("LMTP: end of DATA -> receipt at the sink", "latency"),
        ("LMTP: end of DATA -> 250 (stored)", "answer"),
    ):
        lines.append(
            f"| {label} | {r[key + '_p50'] * 1000:.1f} ms | {r[key + '_p90'] * 1000:.1f} ms | "
            f"{r[key + '_p99'] * 1000:.1f} ms | {r[key + '_max'] * 1000:.1f} ms |"
        )
    if imap is not None:
        lines.append(
            f"| IMAP, same run (3.): APPEND -> receipt | {imap['latency_p50'] * 1000:.1f} ms | "
            f"{imap['latency_p90'] * 1000:.1f} ms | {imap['latency_p99'] * 1000:.1f} ms | "
            f"{imap['latency_max'] * 1000:.1f} ms |"
        )
    ingest = results.get("ingest")
    lines += [
        "",
        f"In parallel: {r['bulk']:,} reports over {r['connections']} LMTP connections to a daemon"
        " whose outbox is paused (intake only, as in 1.), each message answered after its "
        f"commit: {r['bulk_s']:.2f} s, **{r['bulk_rate']:.0f} msg/s**"
        + (
            f" (IMAP ingest in the same run: {ingest['triaged_rate']:.0f} msg/s)."
            if ingest
            else "."
        ),
        "",
    ]
    return lines


def _load(values: tuple[float, float, float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    sys.exit(main())

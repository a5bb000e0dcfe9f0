"""The benchmark command runs (bench/ in --smoke mode): figures are printed, never asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_smoke_runs_and_writes_its_results(tmp_dir: Path) -> None:
    out = tmp_dir / "results.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.read_text()
    for heading in (
        "## Targets",
        "### 1. Ingest",
        "### 4. Memory",
        "### 2. Delivery",
        "### 3.",
        "### 6. Encrypted",
        "### 7. LMTP",
        "### 8. Import",
    ):
        assert heading in text, text
    assert "FAILED" not in text

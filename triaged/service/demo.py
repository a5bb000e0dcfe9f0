"""The embedded default: a config on local Maildirs, fed with sample reports."""

from __future__ import annotations

import mailbox as std_mailbox
from importlib import resources
from pathlib import Path

from triaged.config import Config
from triaged.store.db import Store

EMBEDDED_CONFIG = """\
# The embedded default (written by `triaged demo`): no mail server needed.
# Incoming mail is read from the Maildir ./inbox; what triaged sends is written to the
# Maildir ./outbox, one complete message per file; the database is ./triaged.db.
[project]
name = "Example Project"
address = "security@example.org"
timezone = "UTC"

[mailbox]
url = "maildir:inbox"

[smtp]
url = "maildir:outbox"

[database]
path = "triaged.db"

[maintainers]
members = ["alice@example.org", "bob@example.org"]

[policy]
acknowledge = "48h"
respond = "96h"
update_every = "1w"
"""


def prepare(directory: Path) -> tuple[Path, list[bytes]]:
    """Writes the config (once); returns it and the sample reports to feed (none when the demo
    ran before). The samples go in after the daemon started (`feed`): mail already in a
    mailbox at the first start is taken in silently, and the demo means to answer them."""
    directory.mkdir(parents=True, exist_ok=True)
    config_file = directory / "config.toml"
    samples: list[bytes] = []
    if not config_file.exists():
        config_file.write_text(EMBEDDED_CONFIG, encoding="utf-8")
        folder = resources.files("triaged") / "samples"
        for sample in sorted(folder.iterdir(), key=lambda p: p.name):
            if sample.name.endswith(".eml"):
                samples.append(sample.read_bytes())
    return config_file, samples


def feed(config: Config, samples: list[bytes]) -> int:
    """Delivers the samples into the demo's inbox (a Maildir); returns how many."""
    inbox = std_mailbox.Maildir(config.mailbox.endpoint.path, create=True)
    for sample in samples:
        inbox.add(sample)
    return len(samples)


def summarize(config: Config, seen: set[str]) -> list[str]:
    """One line per report not shown yet, and where its mail went."""
    store = Store(config.database)
    try:
        lines = []
        for row in store.all("SELECT id, reporter, title FROM reports ORDER BY created_at"):
            if row["id"] in seen:
                continue
            seen.add(row["id"])
            sent = store.all(
                "SELECT kind, recipient FROM outbox WHERE report_id = ? ORDER BY id", (row["id"],)
            )
            mails = ", ".join(f"{s['kind']} to {s['recipient']}" for s in sent) or "no mail"
            lines.append(f"report {row['id']} from {row['reporter']}: {row['title']!r} -> {mails}")
        others = store.all(
            "SELECT kind, from_addr, reason FROM messages WHERE report_id IS NULL"
            " AND kind != 'report' ORDER BY id"
        )
        for row in others:
            key = f"m:{row['kind']}:{row['from_addr']}:{row['reason']}"
            if key not in seen:
                seen.add(key)
                lines.append(
                    f"{row['kind']} mail from {row['from_addr']}: {row['reason']} (not answered)"
                )
        return lines
    finally:
        store.close()

"""The hall of fame: who reported what, for a SECURITY.md section, newest first.

A report is listed once it is public: state disclosed, or closed after being disclosed
(`disclosed_at` set, or a `state` event to disclosed in its history). Only the reporter's
stated preference counts: a name is shown; "anonymous" is shown as "Anonymous researcher"
(they asked for credit without a name); a reporter who stated no preference is left out, as
nobody agreed to be listed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from triaged.config import Config
from triaged.core import events as ev
from triaged.core import workflow as wf
from triaged.disclosure import advisory
from triaged.disclosure.credit import NAME, reporter_credit
from triaged.store.db import Store


def disclosed(store: Store) -> list[dict[str, Any]]:
    """The public reports, each with `disclosed_on` (a datetime), newest first."""
    rows = store.all(
        "SELECT r.*, (SELECT MAX(e.at) FROM events e WHERE e.report_id = r.id"
        "  AND e.kind = ? AND json_extract(e.detail, '$.new') = ?)"
        "  AS disclosed_event"
        " FROM reports r WHERE r.state IN (?, ?)",
        (ev.STATE, wf.DISCLOSED, wf.DISCLOSED, wf.CLOSED),
    )
    reports = []
    for row in rows:
        report = dict(row)
        when = advisory.moment(report["disclosed_at"]) or advisory.moment(report["disclosed_event"])
        if when is not None:
            reports.append({**report, "disclosed_on": when})
    reports.sort(key=lambda r: (r["disclosed_on"], r["id"]), reverse=True)
    return reports


def _line(report: Mapping[str, Any], config: Config) -> str | None:
    credit = reporter_credit(report)
    name = credit.public_name()
    if name is None:
        return None
    who = f"**{advisory.markdown_text(name)}**" if credit.kind == NAME else name
    what = ", ".join(advisory.cve_ids(report)) or advisory.advisory_id(report, config)
    url = advisory.advisory_url(report, config)
    if url:
        what = f"[{what}]({url})"
    when: datetime = report["disclosed_on"]
    day = when.astimezone(config.project.timezone).date().isoformat()
    return f"- {who}: {what} ({day})"


def render(reports: list[dict[str, Any]], config: Config) -> str:
    """Markdown, from `disclosed()`: a heading, a sentence, one line per credited report."""
    lines = [line for line in (_line(r, config) for r in reports) if line is not None]
    out = [
        "## Hall of fame",
        "",
        "We thank the people who reported security issues in"
        f" {advisory.markdown_text(config.project.name)} to us privately:",
        "",
        *(lines or ["_Nobody yet._"]),
    ]
    return "\n".join(out) + "\n"

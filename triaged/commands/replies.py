"""Reply templates: the canned answers `/reply template NAME` and `/reject template NAME` send.

A template is `replies/NAME.txt` in the operator's `[templates] directory` (examples ship in
`examples/replies/`). It is rendered in the composer's sandbox with the report's own fields and
nothing a sender wrote as template source: a title that reads `{{ 7*7 }}` stays those
characters. NAME is only ever looked up among the files that exist, never joined into a path.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2

from triaged.core.text import clean_header_text
from triaged.core.timefmt import parse_ts
from triaged.errors import Refused
from triaged.mail.compose import Composer

FOLDER = "replies"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# The report's fields a template may use; the rest (handler, notes, addresses) is internal.
FIELDS = ("id", "title", "state", "severity", "affected", "fixed_in", "embargo", "duplicate_of")
# Also given: `cves` (a list) and `received` (the arrival, as mail writes dates).


def names(directory: Path | None) -> list[str]:
    """The installed templates' names, sorted: `replies/*.txt` files with a plain name."""
    if directory is None or not (directory / FOLDER).is_dir():
        return []
    found = (path.stem for path in (directory / FOLDER).glob("*.txt") if path.is_file())
    return sorted(name for name in found if _NAME.match(name))


def listing(directory: Path | None) -> str:
    """What a refusal or /help says of the installed templates."""
    installed = names(directory)
    if not installed:
        return f"no reply templates are installed ({FOLDER}/NAME.txt in [templates] directory)"
    return "reply templates: " + ", ".join(installed)


def render(composer: Composer, name: str, report: dict[str, Any], now: datetime) -> str:
    """The text of template `name` for `report` (a `reports` row as a dict); Refused for a
    name that is not installed or a template that does not render."""
    directory = composer.config.templates_dir
    if name.lower() not in names(directory):
        shown = clean_header_text(name, 64)
        raise Refused(f"there is no reply template {shown!r}; {listing(directory)}")
    name = name.lower()
    fields = {key: report.get(key) for key in FIELDS}
    fields["cves"] = json.loads(report.get("cves") or "[]")
    received = report.get("created_at")
    fields["received"] = composer.when(parse_ts(str(received))) if received else None
    try:
        text = composer.render(f"{FOLDER}/{name}.txt", report=fields, now=composer.when(now))
    except jinja2.TemplateError as exc:
        reason = clean_header_text(str(exc), 200)
        raise Refused(f"the reply template {name!r} does not render: {reason}") from None
    text = text.strip()
    if not text:
        raise Refused(f"the reply template {name!r} is empty")
    return text

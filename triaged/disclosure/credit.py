"""How the reporter is credited, in one place: the choice `/credit` stores (from a maintainer
or from the reporter), how it reads back, what mail, `/status`, advisories and the hall of
fame say of it, and the one-time question that asks for it.

The choice is stored in `reports.credit` as JSON: `{"kind": "name" | "anonymous", "name":
..., "by": address, "at": timestamp}`. Only a stated choice counts: with none, nobody is named
(advisories say "Reported privately", the hall of fame leaves the report out).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from triaged.config import Config
from triaged.core import events as ev
from triaged.core.text import clean_header_text
from triaged.core.timefmt import ts
from triaged.mail.compose import Composer
from triaged.store import events
from triaged.store.db import Store

NAME = "name"
ANONYMOUS = "anonymous"
NONE = "none"
# How advisories and the hall of fame name a reporter who asked for credit without a name.
ANONYMOUS_RESEARCHER = "Anonymous researcher"
# What mail and advisories say of a reporter who stated no credit preference.
REPORTED_PRIVATELY = "reported privately"
NAME_LIMIT = 100


class ReportContext(Protocol):
    """What the disclosure rules read of a command's context
    (`triaged.commands.base.CommandContext`): one report, inside the message's transaction."""

    store: Store
    config: Config
    composer: Composer
    report_id: str
    now: datetime

    @property
    def report(self) -> dict[str, Any]: ...

    def event(self, kind: str, **detail: Any) -> None: ...

    def tell_reporter(self, template: str, subject: str, **context: Any) -> bool: ...

    def transition(self, target: str, **detail: Any) -> str: ...


@dataclass(frozen=True)
class Credit:
    """A credit choice: kind NAME (with the name), ANONYMOUS, or NONE (nothing stated)."""

    kind: str
    name: str | None = None
    by: str | None = None

    @classmethod
    def chosen(cls, text: str) -> Credit:
        """The choice a `/credit` argument states: "anonymous", or the name to credit."""
        if text.lower() == ANONYMOUS:
            return cls(ANONYMOUS)
        return cls(NAME, clean_header_text(text, NAME_LIMIT))

    def label(self) -> str:
        """As a transcript or `/status` shows it: the name, "anonymous" or "-"."""
        if self.kind == NAME:
            return self.name or ""
        return ANONYMOUS if self.kind == ANONYMOUS else "-"

    def public_name(self) -> str | None:
        """The name an advisory or the hall of fame prints; None when nobody may be named."""
        if self.kind == NAME:
            return self.name
        return ANONYMOUS_RESEARCHER if self.kind == ANONYMOUS else None

    def words(self) -> dict[str, Any]:
        """As mail to the reporter tells it: the kind, and the name only for NAME."""
        return {"kind": self.kind, "name": self.name if self.kind == NAME else None}


def reporter_credit(report: Mapping[str, Any]) -> Credit:
    """The stated choice of a `reports` row (its `credit` column, stored JSON or a dict)."""
    stated = report.get("credit")
    if isinstance(stated, str):
        try:
            stated = json.loads(stated)
        except ValueError:
            stated = None
    if not isinstance(stated, dict):
        return Credit(NONE)
    by = stated.get("by")
    by = by if isinstance(by, str) else None
    if stated.get("kind") == ANONYMOUS:
        return Credit(ANONYMOUS, by=by)
    name = clean_header_text(str(stated.get("name") or ""), NAME_LIMIT)
    return Credit(NAME, name, by) if name else Credit(NONE)


def stored(credit: Credit, by: str, at: datetime) -> str:
    """The `reports.credit` value for a choice stated by `by` at `at`."""
    record = {"kind": credit.kind, "name": credit.name, "by": by, "at": ts(at)}
    return json.dumps(record, sort_keys=True)


def replaced_choice(report: Mapping[str, Any], old: Credit, new: Credit, actor: str) -> str | None:
    """The reporter's own earlier choice, as a transcript quotes it, when a maintainer's
    `/credit` replaces it with a different one; None otherwise."""
    reporter = report.get("reporter")
    if actor == reporter or old.kind == NONE or old.by != reporter:
        return None
    if (old.kind, old.name) == (new.kind, new.name):
        return None
    return ANONYMOUS if old.kind == ANONYMOUS else f'"{old.name}"'


def credit_words(report: Mapping[str, Any]) -> dict[str, Any]:
    """The reporter's credit as mail tells it to them (see `Credit.words`)."""
    return reporter_credit(report).words()


def ask_credit_once(ctx: ReportContext) -> bool:
    """Asks the reporter how to credit them, once per report, unless they (or a maintainer)
    already said; the `credit_asked` event marks it. True when the question went out."""
    if reporter_credit(ctx.report).kind != NONE:
        return False
    if events.happened(ctx.store, ctx.report_id, ev.CREDIT_ASKED):
        return False
    if not ctx.tell_reporter("reporter_credit.txt", "How would you like to be credited?"):
        return False
    ctx.event(ev.CREDIT_ASKED)
    return True

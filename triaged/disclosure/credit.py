"""How the reporter is credited: their stated choice as mail tells it, and the one-time
question that asks for it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from triaged.config import Config
from triaged.disclosure.advisory import reporter_credit
from triaged.mail.compose import Composer
from triaged.store.db import Store

# What mail and advisories say of a reporter who stated no credit preference.
REPORTED_PRIVATELY = "reported privately"


class ReportContext(Protocol):
    """What the disclosure rules read of a command's context (`triaged.commands.base.Context`):
    one report, inside the message's transaction."""

    store: Store
    config: Config
    composer: Composer
    report_id: str
    now: datetime

    @property
    def report(self) -> dict[str, Any]: ...

    def event(self, kind: str, **detail: Any) -> None: ...

    def tell_reporter(self, template: str, subject: str, **context: Any) -> bool: ...


def credit_words(report: Mapping[str, Any]) -> dict[str, Any]:
    """The reporter's credit as mail tells it to them: kind "name" | "anonymous" | "none" and
    the name (only for "name"). Read by the same rule as the advisory."""
    credit = reporter_credit(report)
    return {"kind": credit.kind, "name": credit.name if credit.kind == "name" else None}


def ask_credit_once(ctx: ReportContext) -> bool:
    """Asks the reporter how to credit them, once per report, unless they (or a maintainer)
    already said; the `credit_asked` event marks it. True when the question went out."""
    report = ctx.report
    if credit_words(report)["kind"] != "none":
        return False
    asked = ctx.store.one(
        "SELECT 1 FROM events WHERE report_id = ? AND kind = 'credit_asked'", (ctx.report_id,)
    )
    if asked is not None:
        return False
    if not ctx.tell_reporter("reporter_credit.txt", "How would you like to be credited?"):
        return False
    ctx.event("credit_asked")
    return True

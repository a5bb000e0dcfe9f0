"""What a message is: pure decisions over a parsed message and what the store knows.

The rules run in order and the first that matches decides; `RULES` is the list to read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from triaged.config import SpamVerdict
from triaged.mail import auth
from triaged.mail.parse import ParsedMessage

REPORT = "report"
FOLLOWUP = "followup"
MAINTAINER = "maintainer"
AUTOMATIC = "automatic"
UNVERIFIED = "unverified"
LOOP = "loop"
BLOCKED = "blocked"
SPAM = "spam"
CANARY = "canary"


@dataclass(frozen=True)
class Thread:
    """The report a message threads into (by tag or by our Message-IDs) and who takes part."""

    report_id: str
    participants: dict[str, str]  # address -> role ("reporter", "cc", ...)
    by: str  # "tag" or "references"


def _never_blocked(_address: str | None) -> str | None:
    return None


@dataclass(frozen=True)
class Context:
    project_address: str
    maintainers: frozenset[str]
    # The headers your own mail server adds to spam ([intake] spam_verdicts).
    spam_verdicts: tuple[SpamVerdict, ...] = ()
    # The block (an address, or "@domain") that stops mail from an address, if any: a look
    # into the store's `blocked` table.
    blocking: Callable[[str | None], str | None] = _never_blocked
    # The reply-token key, which also signs the canary's probes.
    key: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class Decision:
    kind: str
    report_id: str | None
    reason: str


def same_mailbox(address: str, project_address: str) -> bool:
    """True for the project address and its plus-addressed variants (security+x@...)."""
    local, _, domain = address.rpartition("@")
    plocal, _, pdomain = project_address.rpartition("@")
    return domain == pdomain and local.split("+", 1)[0] == plocal.split("+", 1)[0]


def _canary(msg: ParsedMessage, thread: Thread | None, ctx: Context) -> Decision | None:
    # Only a probe triaged signed: a forged one is whatever it would be without the header.
    probe = auth.canary_probe(ctx.key, msg.canary)
    if probe is not None:
        return Decision(CANARY, None, f"canary probe {probe}")
    return None


def _loop(msg: ParsedMessage, thread: Thread | None, ctx: Context) -> Decision | None:
    if msg.from_addr and same_mailbox(msg.from_addr, ctx.project_address):
        return Decision(LOOP, thread.report_id if thread else None, "sent from our own address")
    return None


def _blocked(msg: ParsedMessage, thread: Thread | None, ctx: Context) -> Decision | None:
    pattern = ctx.blocking(msg.from_addr)
    if pattern is not None:
        return Decision(BLOCKED, thread.report_id if thread else None, f"blocked: {pattern}")
    return None


def _automatic(msg: ParsedMessage, thread: Thread | None, ctx: Context) -> Decision | None:
    if msg.auto_reason:
        return Decision(AUTOMATIC, thread.report_id if thread else None, msg.auto_reason)
    return None


def _threaded(msg: ParsedMessage, thread: Thread | None, ctx: Context) -> Decision | None:
    if thread is None:
        return None
    sender = msg.from_addr
    if sender and sender in ctx.maintainers:
        return Decision(MAINTAINER, thread.report_id, f"maintainer, threaded by {thread.by}")
    if sender and sender in thread.participants:
        role = thread.participants[sender]
        return Decision(FOLLOWUP, thread.report_id, f"{role}, threaded by {thread.by}")
    return Decision(
        UNVERIFIED,
        thread.report_id,
        f"{sender or 'an unknown sender'} is not a participant of the report",
    )


def _maintainer(msg: ParsedMessage, thread: Thread | None, ctx: Context) -> Decision | None:
    if msg.from_addr and msg.from_addr in ctx.maintainers:
        return Decision(MAINTAINER, None, "maintainer mail about no report")
    return None


def _spam_verdict(msg: ParsedMessage, thread: Thread | None, ctx: Context) -> Decision | None:
    for verdict in ctx.spam_verdicts:
        if any(verdict.matches(value) for value in msg.values(verdict.header)):
            return Decision(SPAM, None, f"spam verdict: {verdict}")
    return None


def _new_report(msg: ParsedMessage, thread: Thread | None, ctx: Context) -> Decision | None:
    return Decision(REPORT, None, "new report")


Rule = Callable[[ParsedMessage, Thread | None, Context], Decision | None]
RULES: list[Rule] = [
    _canary,
    _loop,
    _blocked,
    _automatic,
    _threaded,
    _maintainer,
    _spam_verdict,
    _new_report,
]


def classify(msg: ParsedMessage, thread: Thread | None, ctx: Context) -> Decision:
    for rule in RULES:
        decision = rule(msg, thread, ctx)
        if decision is not None:
            return decision
    raise AssertionError("the last rule always decides")

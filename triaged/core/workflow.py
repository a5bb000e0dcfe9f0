"""The report life cycle: states and the transitions allowed between them. Pure."""

from __future__ import annotations

from dataclasses import dataclass

NEW = "new"
ACKNOWLEDGED = "acknowledged"
CONFIRMED = "confirmed"
FIXING = "fixing"
FIXED = "fixed"
DISCLOSED = "disclosed"
CLOSED = "closed"
REJECTED = "rejected"
DUPLICATE = "duplicate"
SPAM = "spam"

STATES = (NEW, ACKNOWLEDGED, CONFIRMED, FIXING, FIXED, DISCLOSED, CLOSED, REJECTED, DUPLICATE, SPAM)
# Ended: only /reopen leaves these.
TERMINAL = frozenset({CLOSED, REJECTED, DUPLICATE, SPAM})
OPEN = frozenset(STATES) - TERMINAL

TRANSITIONS: dict[str, tuple[str, ...]] = {
    NEW: (ACKNOWLEDGED, CONFIRMED, REJECTED, DUPLICATE, SPAM),
    ACKNOWLEDGED: (CONFIRMED, REJECTED, DUPLICATE, SPAM),
    CONFIRMED: (FIXING, FIXED, REJECTED, DUPLICATE),
    FIXING: (FIXED, CONFIRMED),
    FIXED: (DISCLOSED, CLOSED, FIXING),
    DISCLOSED: (CLOSED,),
    CLOSED: (),
    REJECTED: (),
    DUPLICATE: (),
    SPAM: (),
}

# What the reporter is told about (through a template named reporter_<state>.txt).
REPORTER_TOLD = frozenset({CONFIRMED, REJECTED, FIXED, DISCLOSED})


@dataclass(frozen=True)
class Refusal:
    reason: str


def check(current: str, target: str) -> Refusal | None:
    """None when `current` -> `target` is allowed, else why not (with where it could go)."""
    if target not in STATES:
        return Refusal(f"unknown state {target!r}; the states are {', '.join(STATES)}")
    if target == current:
        return Refusal(f"the report is already {current}")
    allowed = TRANSITIONS[current]
    if target in allowed:
        return None
    if current in TERMINAL:
        return Refusal(f"the report is {current}; /reopen it first")
    return Refusal(f"a {current} report cannot become {target}; it can become {', '.join(allowed)}")


def reopen_target(previous: str | None) -> str:
    """Where /reopen goes: the open state the report had before it ended."""
    if previous in OPEN:
        return previous
    return ACKNOWLEDGED

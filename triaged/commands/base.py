"""Email commands: the context a command works in, the `Command` class and the registry.

One small registered class per command lives in a module per group (`report`, `people`,
`disclosure`, `advisory`); importing `triaged.commands` registers them all. `/help` is
generated from the registry. A command gets the report's context and its arguments, changes
the report through the context (which records every change as an event), and returns one line
for the transcript.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from triaged.config import Config
from triaged.core import workflow as wf
from triaged.core.timefmt import ts
from triaged.disclosure.policy import after_transition, disclosure_context
from triaged.mail.compose import Composer, Outgoing
from triaged.mail.parse import clean_header_text
from triaged.store.db import Store

# /help lists the commands in this order (the order of the README's table); a test checks that
# every registered command has its place here.
HELP_ORDER = (
    *("ack", "assign", "severity", "cvss", "state", "confirm", "reject", "duplicate"),
    *("affects", "fixed-in", "cve", "embargo", "disclose"),
    *("credit", "cc", "waiting", "reply", "note"),
    *("close", "reopen", "status", "advisory", "help"),
)


@dataclass(frozen=True)
class Outcome:
    ok: bool
    text: str


def done(text: str) -> Outcome:
    return Outcome(True, text)


def refused(text: str) -> Outcome:
    return Outcome(False, text)


@dataclass
class Context:
    """What a command may read and change: one report, inside the message's transaction."""

    store: Store
    config: Config
    composer: Composer
    report_id: str
    actor: str
    message: int | None
    now: datetime
    reply_text: str | None = None
    outgoing: list[Outgoing] = field(default_factory=list)
    reply_to_for: Callable[[str], str | None] = lambda _addr: None

    @property
    def report(self) -> dict[str, Any]:
        row = self.store.report(self.report_id)
        assert row is not None
        return dict(row)

    def event(self, kind: str, **detail: Any) -> None:
        self.store.event(
            self.report_id, self.now, kind, actor=self.actor, message=self.message, **detail
        )

    def set(self, column: str, value: Any) -> Any:
        """Changes one field of the report and records the change; returns the old value."""
        old = self.report[column]
        self.store.conn.execute(
            f"UPDATE reports SET {column} = ?, updated_at = ? WHERE id = ?",
            (value, ts(self.now), self.report_id),
        )
        self.event("set", field=column, old=old, new=value)
        return old

    def transition(self, target: str, **detail: Any) -> Outcome:
        current = self.report["state"]
        refusal = wf.check(current, target)
        if refusal is not None:
            return refused(refusal.reason)
        self.store.conn.execute(
            "UPDATE reports SET state = ?, previous_state = ?, updated_at = ? WHERE id = ?",
            (target, current, ts(self.now), self.report_id),
        )
        self.event("state", old=current, new=target, **detail)
        if target == wf.DISCLOSED:
            self.set("disclosed_at", ts(self.now))
        if target in wf.REPORTER_TOLD:
            self.tell_reporter(f"reporter_{target}.txt", f"Your report is {target}", **detail)
        return done(f"state: {current} -> {target}" + after_transition(self, target))

    def tell_reporter(self, template: str, subject: str, **context: Any) -> bool:
        reporter = self.report["reporter"]
        if not reporter:
            return False
        first = self.store.one(
            "SELECT message_id FROM messages WHERE report_id = ? AND kind = 'report'",
            (self.report_id,),
        )
        in_reply_to = first["message_id"] if first else None
        self.outgoing.append(
            self.composer.build(
                kind="reporter",
                to=reporter,
                subject=subject,
                template=template,
                context={"report": self.report, **disclosure_context(self), **context},
                now=self.now,
                report_id=self.report_id,
                in_reply_to=in_reply_to,
            )
        )
        self.event("reporter_mail", template=template)
        return True


class Command(ABC):
    name: ClassVar[str]
    arguments: ClassVar[str] = ""
    description: ClassVar[str]
    example: ClassVar[str]
    # Reporters may use only the commands marked as theirs.
    for_reporters: ClassVar[bool] = False

    @abstractmethod
    def run(self, ctx: Context, args: tuple[str, ...]) -> Outcome:
        """Does the command; returns the transcript line."""

    @classmethod
    def usage(cls) -> str:
        return f"/{cls.name} {cls.arguments}".rstrip()


COMMANDS: dict[str, Command] = {}


def register(cls: type[Command]) -> type[Command]:
    COMMANDS[cls.name] = cls()
    return cls


def help_text(for_reporters: bool = False) -> str:
    lines = []
    for command in sorted(COMMANDS.values(), key=_help_rank):
        if for_reporters and not command.for_reporters:
            continue
        lines.append(f"{command.usage():<34} {command.description}")
        lines.append(f"{'':<34} e.g. {command.example}")
    return "\n".join(lines)


def _help_rank(command: Command) -> int:
    return HELP_ORDER.index(command.name) if command.name in HELP_ORDER else len(HELP_ORDER)


def one_argument(args: tuple[str, ...], what: str) -> str | Outcome:
    if len(args) != 1:
        return refused(f"takes exactly one argument: {what}")
    return args[0]


def text_argument(args: tuple[str, ...], what: str, limit: int = 500) -> str | Outcome:
    text = clean_header_text(" ".join(args), limit)
    return text if text else refused(f"needs {what}")

"""Email commands: the context a command works in, the `Command` class and the registry.

One small registered class per command lives in a module per group (`report`, `people`,
`disclosure`, `advisory`); importing `triaged.commands` registers them all. `/help` is
generated from the registry. A command gets the report's context and its arguments, changes
the report through the context (which records every change as an event), and returns its line
for the transcript; when it will not do what was asked it raises `Refused` (the dispatcher's
savepoint then undoes whatever it had changed).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from triaged.config import Config
from triaged.core import events as ev
from triaged.core import workflow as wf
from triaged.core.text import clean_header_text, parse_address
from triaged.core.timefmt import parse_ts, ts
from triaged.disclosure.policy import after_transition, disclosure_context
from triaged.errors import Refused
from triaged.mail.compose import Composer, Outgoing
from triaged.mail.openpgp import Keyring
from triaged.store import events, messages, reports
from triaged.store.db import Store

# /help lists the commands in this order (the order of the README's table); a test checks that
# every registered command has its place here.
HELP_ORDER = (
    *("ack", "assign", "severity", "cvss", "state", "confirm", "reject", "duplicate"),
    *("affects", "fixed-in", "cve", "embargo", "disclose"),
    *("credit", "cc", "waiting", "reply", "note"),
    *("close", "reopen", "spam", "not-spam", "unblock", "status", "attachments", "advisory"),
    *("help",),
)


__all__ = ["COMMANDS", "Announce", "Command", "CommandContext", "Refused", "register"]

# Builds the receipt and the maintainers' notification of a report that comes in now.
Announce = Callable[[str, datetime], list[Outgoing]]


@dataclass
class CommandContext:
    """What a command may read and change: one report, inside the message's transaction."""

    store: Store
    config: Config
    composer: Composer
    report_id: str
    actor: str
    message: int | None
    now: datetime
    reply_text: str | None = None
    # The daemon's OpenPGP keys (None: OpenPGP is off), to read the report's encrypted
    # messages again (`views.report_messages`).
    keyring: Keyring | None = None
    outgoing: list[Outgoing] = field(default_factory=list)
    reply_to_for: Callable[[str], str | None] = lambda _addr: None
    # The receipt and the notification of a report that comes in now (intake builds them): for
    # a report a spam verdict held, once it is released.
    announce: Announce | None = None
    # True when the reporter is the one commanding (only `for_reporters` commands run then).
    as_reporter: bool = False

    @property
    def report(self) -> dict[str, Any]:
        row = self.store.report(self.report_id)
        assert row is not None
        return dict(row)

    def event(self, kind: str, **detail: Any) -> None:
        events.record(
            self.store,
            self.report_id,
            self.now,
            kind,
            actor=self.actor,
            message=self.message,
            **detail,
        )

    def set(self, column: str, value: Any) -> Any:
        """Changes one field of the report and records the change; returns the old value."""
        return reports.set_field(
            self.store,
            self.report_id,
            column,
            value,
            at=self.now,
            actor=self.actor,
            message=self.message,
        )

    def transition(self, target: str, *, text: str | None = None, **detail: Any) -> str:
        """Moves the report to `target` (or raises Refused); returns the transcript line.
        `detail` goes into the event and the reporter's mail; `text`, when given, is what
        that mail says instead of its standard paragraph (a reply template).

        A report a spam verdict held is released first when it becomes new or acknowledged
        (`release`)."""
        current = self.report["state"]
        released = ""
        if target in (wf.NEW, wf.ACKNOWLEDGED) and self.held_as_spam():
            released = self.release()
            if target == wf.NEW:
                return released
            current, released = wf.NEW, released + "\n"
        refusal = wf.check(current, target)
        if refusal is not None:
            raise Refused(refusal.reason)
        reports.change_state(
            self.store,
            self.report_id,
            current,
            target,
            at=self.now,
            actor=self.actor,
            message=self.message,
            **detail,
        )
        if target == wf.DISCLOSED:
            self.set("disclosed_at", ts(self.now))
        if target in wf.REPORTER_TOLD:
            told = {**detail, "text": text} if text is not None else detail
            self.tell_reporter(f"reporter_{target}.txt", f"Your report is {target}", **told)
        return f"{released}state: {current} -> {target}" + after_transition(self, target)

    def reopen(self) -> str:
        """An ended report goes back to the state it had (or Refused); the transcript line."""
        if self.held_as_spam():
            return self.release()
        report = self.report
        if report["state"] not in wf.TERMINAL:
            raise Refused(f"the report is {report['state']}, not ended")
        target = wf.reopen_target(report["previous_state"])
        reports.reopen(
            self.store, self.report_id, report["state"], target, at=self.now, actor=self.actor,
            message=self.message,
        )  # fmt: skip
        return f"state: {report['state']} -> {target}"

    def held_as_spam(self) -> bool:
        """True for a report that a spam verdict of the mail server held: state spam, and
        never received (no receipt, notification nor clock yet)."""
        return (
            self.report["state"] == wf.SPAM
            and events.happened(self.store, self.report_id, ev.SPAM_VERDICT)
            and not events.happened(self.store, self.report_id, ev.RECEIVED)
        )

    def release(self) -> str:
        """A report a spam verdict held comes in now, as if it had just arrived: state new,
        its `received` event at its arrival (its clocks count from there), its receipt and the
        maintainers' notification."""
        if self.announce is None:
            raise Refused("a held report can only be released by a command mail")
        report = self.report
        arrival = parse_ts(str(report["created_at"]))
        reports.change_state(
            self.store, self.report_id, wf.SPAM, wf.NEW, at=self.now, actor=self.actor,
            message=self.message, released=True,
        )  # fmt: skip
        first = messages.first_of_report(self.store, self.report_id)
        events.record(
            self.store,
            self.report_id,
            arrival,
            ev.RECEIVED,
            actor=report["reporter"],
            message=first["id"] if first else None,
            released=True,
        )
        self.outgoing += self.announce(self.report_id, self.now)
        return (
            "state: spam -> new (not spam: the receipt and the notification go out now;"
            f" its clocks count from its arrival, {self.composer.when(arrival)})"
        )

    def tell_reporter(self, template: str, subject: str, **context: Any) -> bool:
        reporter = self.report["reporter"]
        if not reporter:
            return False
        in_reply_to = messages.first_message_id(self.store, self.report_id)
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
        self.event(ev.REPORTER_MAIL, template=template)
        return True


class Command(ABC):
    name: ClassVar[str]
    arguments: ClassVar[str] = ""
    description: ClassVar[str]
    example: ClassVar[str]
    # Reporters may use only the commands marked as theirs.
    for_reporters: ClassVar[bool] = False

    @abstractmethod
    def run(self, ctx: CommandContext, args: tuple[str, ...]) -> str:
        """Does the command and returns its transcript line, or raises Refused."""

    @classmethod
    def usage(cls) -> str:
        return f"/{cls.name} {cls.arguments}".rstrip()


COMMANDS: dict[str, Command] = {}


def register(cls: type[Command]) -> type[Command]:
    COMMANDS[cls.name] = cls()
    return cls


def help_text(for_reporters: bool = False) -> str:
    """Every command (or only the reporters' ones), in the README's order."""
    commands = sorted(COMMANDS.values(), key=_help_rank)
    return "\n".join(
        _entry(command) for command in commands if command.for_reporters or not for_reporters
    )


def help_for(name: str) -> str:
    """One command's entry, as `help_text` shows it; Refused for a name that is none."""
    command = COMMANDS.get(name.lower().lstrip("/"))
    if command is None:
        raise Refused(f"unknown command /{clean_header_text(name, 40)}; /help lists the commands")
    return _entry(command)


def _entry(command: Command) -> str:
    return f"{command.usage():<34} {command.description}\n{'':<34} e.g. {command.example}"


def _help_rank(command: Command) -> int:
    return HELP_ORDER.index(command.name) if command.name in HELP_ORDER else len(HELP_ORDER)


def one_argument(args: tuple[str, ...], what: str) -> str:
    if len(args) != 1:
        raise Refused(f"takes exactly one argument: {what}")
    return args[0]


def address_argument(args: tuple[str, ...], what: str) -> str:
    """The one argument as an address (core.text: exact and well formed), lowercased."""
    written = one_argument(args, what)
    address = parse_address(written)
    if address is None:
        raise Refused(f"{clean_header_text(written, 80)!r} is not an address")
    return address


def no_arguments(args: tuple[str, ...]) -> None:
    if args:
        raise Refused("takes no arguments")


def text_argument(args: tuple[str, ...], what: str, limit: int = 500) -> str:
    text = clean_header_text(" ".join(args), limit)
    if not text:
        raise Refused(f"needs {what}")
    return text

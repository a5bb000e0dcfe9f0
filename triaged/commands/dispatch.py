"""Running the commands of one message: authentication, execution, the transcript.

Called by the intake runner inside the message's transaction, so a command mail's changes,
its events, its transcript and any mail to the reporter commit together or not at all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from triaged.commands.base import COMMANDS, Announce, CommandContext, Refused
from triaged.commands.parse import Commands, extract
from triaged.config import Config
from triaged.core import events as ev
from triaged.errors import CommandsRefused
from triaged.mail import auth
from triaged.mail.compose import Composer, Outgoing
from triaged.mail.openpgp import Keyring
from triaged.mail.parse import ParsedMessage
from triaged.store import events, messages
from triaged.store import outbox as queue
from triaged.store.db import Store

log = logging.getLogger(__name__)

REPORTER_TRANSCRIPTS_PER_DAY = 5


@dataclass(frozen=True)
class Line:
    command: str
    ok: bool
    text: str


class Dispatcher:
    def __init__(
        self,
        config: Config,
        store: Store,
        composer: Composer,
        key: bytes,
        keyring: Keyring | None = None,
        announce: Announce | None = None,
    ) -> None:
        """`announce` builds the receipt and notification of a report coming in now (intake
        passes its own), for a report a spam verdict held that a command releases."""
        self.config = config
        self.store = store
        self.composer = composer
        self.key = key
        # The daemon's OpenPGP keys: the maintainers' for the "openpgp" proof, the project's
        # for commands that read a report's encrypted messages again.
        self.keyring = keyring
        self.announce = announce

    def reply_to(self, report_id: str | None, maintainer: str) -> str | None:
        """The Reply-To of mail to a maintainer: the address that proves a reply is theirs."""
        if report_id is None:
            return None
        return auth.reply_address(self.key, self.config.project.address, report_id, maintainer)

    def commands_of(self, msg: ParsedMessage) -> Commands:
        # Commands are read only from the first text/plain part, never from HTML,
        # attachments or forwarded messages.
        if not msg.text_is_first_part:
            return Commands((), None, msg.text.strip())
        return extract(msg.text)

    # --- maintainers --------------------------------------------------------------------

    def maintainer(
        self, msg: ParsedMessage, report_id: str, number: int, now: datetime
    ) -> list[Outgoing]:
        """A maintainer's message about a report: its commands run, and its transcript; an
        internal note without commands. Raises CommandsRefused (nothing run) when the sender
        proves nothing."""
        commands = self.commands_of(msg)
        sender = msg.from_addr or ""
        if not commands.lines:
            events.record(
                self.store,
                report_id,
                now,
                ev.NOTE,
                actor=sender,
                message=number,
                chars=len(commands.note),
            )
            return []
        verdict = self._verify(msg, report_id, number)
        ctx = CommandContext(
            store=self.store,
            config=self.config,
            composer=self.composer,
            report_id=report_id,
            actor=sender,
            message=number,
            now=now,
            reply_text=commands.reply,
            announce=self.announce,
            keyring=self.keyring,
            reply_to_for=lambda address: (
                self.reply_to(report_id, address)
                if address in self.config.maintainers.members
                else None
            ),
        )
        lines = self._run_all(ctx, commands, reporter=False)
        if commands.note:
            ctx.event(ev.NOTE, chars=len(commands.note))
        log.info(
            "report %s: %d command(s) from %s (%s)", report_id, len(lines), sender, verdict.proof
        )
        transcript = self._transcript(msg, report_id, sender, lines, ctx, commands, now)
        return [*ctx.outgoing, transcript]

    def _verify(self, msg: ParsedMessage, report_id: str, number: int) -> auth.Verdict:
        """Whether the message proves it comes from the maintainer in its From; raises
        CommandsRefused (and records why on the message) when it does not."""
        sender = msg.from_addr or ""
        verdict = auth.verify(
            key=self.key,
            project_address=self.config.project.address,
            report_id=report_id,
            sender=msg.from_addr,
            to_addrs=msg.to_addrs,
            authentication_results=msg.authentication_results,
            maintainers=self.config.maintainers.members,
            proofs=self.config.auth.proofs,
            authserv_id=self.config.auth.authserv_id,
            signature=msg.openpgp.signature if msg.openpgp else None,
            sender_keys=(
                self.keyring.keys_for(sender) if self.keyring is not None and sender else ()
            ),
        )
        if not verdict.ok:
            log.warning("commands from %s refused: %s", msg.from_addr, verdict.reason)
            messages.set_reason(self.store, number, f"commands refused: {verdict.reason}")
            raise CommandsRefused(verdict.reason)
        return verdict

    def _transcript(
        self,
        msg: ParsedMessage,
        report_id: str,
        sender: str,
        lines: list[Line],
        ctx: CommandContext,
        commands: Commands,
        now: datetime,
    ) -> Outgoing:
        """The one transcript of a command mail, back to its sender."""
        return self.composer.build(
            kind="transcript",
            to=sender,
            subject="Commands: "
            + ", ".join(
                f"{'done' if line.ok else 'refused'} {line.command.split()[0]}" for line in lines
            ),
            template="transcript.txt",
            context={
                "actor": sender,
                "lines": lines,
                "state": ctx.report["state"],
                "note": bool(commands.note),
            },
            now=now,
            report_id=report_id,
            in_reply_to=msg.message_id,
            references=msg.references,
            auto="auto-replied",
            reply_to=self.reply_to(report_id, sender),
        )

    def _run_all(
        self, ctx: CommandContext, commands: Commands, *, reporter: bool, is_reporter: bool = False
    ) -> list[Line]:
        """Runs each command line in order, recording each as an event; one Line each."""
        lines = []
        for line in commands.lines:
            command = COMMANDS.get(line.name)
            try:
                if reporter and command is not None and not (command.for_reporters and is_reporter):
                    raise Refused(f"/{line.name} is not available to you")
                text, ok = self._run(ctx, line.name, line.args, line.error), True
            except Refused as refusal:
                text, ok = refusal.reason, False
            ctx.event(ev.COMMAND, command=line.raw, ok=ok, result=text)
            lines.append(Line(line.raw, ok, text))
        return lines

    def _run(self, ctx: CommandContext, name: str, args: tuple[str, ...], error: str | None) -> str:
        """Runs one command in a savepoint of its own: a refusal leaves none of its changes
        and none of its mail behind."""
        if error:
            raise Refused(error)
        command = COMMANDS.get(name)
        if command is None:
            raise Refused(f"unknown command /{name}; /help lists the commands")
        outgoing_before = len(ctx.outgoing)
        try:
            with self.store.transaction():
                return command.run(ctx, args)
        except Refused:
            del ctx.outgoing[outgoing_before:]
            raise

    # --- reporters ----------------------------------------------------------------------

    def reporter(
        self, msg: ParsedMessage, report_id: str, number: int, now: datetime, is_reporter: bool
    ) -> list[Outgoing]:
        """A participant's commands: only the reporters' own (/credit, /status) run, and only
        for the reporter."""
        commands = self.commands_of(msg)
        if not commands.lines:
            return []
        sender = msg.from_addr or ""
        ctx = CommandContext(
            self.store, self.config, self.composer, report_id, sender, number, now,
            as_reporter=is_reporter,
        )  # fmt: skip
        lines = self._run_all(ctx, commands, reporter=True, is_reporter=is_reporter)
        sent = queue.sent_recently(
            self.store, "reporter_transcript", sender, now - timedelta(days=1)
        )
        if sent >= REPORTER_TRANSCRIPTS_PER_DAY:
            log.info("report %s: no transcript to %s (daily limit)", report_id, sender)
            return []
        return [
            self.composer.build(
                kind="reporter_transcript",
                to=sender,
                subject="Your commands",
                template="reporter_transcript.txt",
                context={"lines": lines},
                now=now,
                report_id=report_id,
                in_reply_to=msg.message_id,
                references=msg.references,
                auto="auto-replied",
            )
        ]

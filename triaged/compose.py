"""Building the mail triaged sends: templates in, complete RFC 5322 bytes out.

Sender text only ever reaches a template as a variable (data, never template source), and every
header value passes `clean_header_text`, so nothing a sender wrote can add a header.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from triaged.config import Config
from triaged.ids import new_message_id, tag
from triaged.message import clean_header_text


@dataclass(frozen=True)
class Outgoing:
    """One complete message for one recipient, ready for the outbox."""

    message_id: str
    kind: str
    recipient: str
    envelope_from: str
    raw: bytes
    report_id: str | None


def template_environment(directory: Path | None) -> jinja2.Environment:
    loaders: list[jinja2.BaseLoader] = []
    if directory is not None:
        loaders.append(jinja2.FileSystemLoader(str(directory)))
    loaders.append(jinja2.PackageLoader("triaged", "templates"))
    return ImmutableSandboxedEnvironment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


class Composer:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.env = template_environment(config.templates_dir)
        self.domain = config.project.address.rpartition("@")[2]

    def render(self, template: str, **context: Any) -> str:
        context.setdefault("project", self.config.project)
        return self.env.get_template(template).render(**context)

    def when(self, moment: datetime) -> str:
        """A due date as people read it: "Tuesday 24 November 2026, 14:00 UTC"."""
        local = moment.astimezone(self.config.project.timezone)
        return local.strftime("%A %d %B %Y, %H:%M %Z")

    def build(
        self,
        *,
        kind: str,
        to: str,
        subject: str,
        template: str,
        context: dict[str, Any],
        now: datetime,
        report_id: str | None = None,
        in_reply_to: str | None = None,
        references: tuple[str, ...] = (),
        auto: str | None = None,
        reply_to: str | None = None,
    ) -> Outgoing:
        """`auto` is an RFC 3834 Auto-Submitted value ("auto-replied", "auto-generated");
        auto-replies go out with an empty envelope sender so nothing bounces back to us."""
        project = self.config.project
        message_id = new_message_id(self.domain)
        msg = EmailMessage(policy=SMTP)
        msg["From"] = Address(display_name=f"{project.name} security", addr_spec=project.address)
        msg["To"] = to
        line = clean_header_text(subject, 250)
        msg["Subject"] = f"{tag(report_id)} {line}" if report_id else line
        msg["Date"] = format_datetime(now)
        msg["Message-ID"] = message_id
        if in_reply_to:
            msg["In-Reply-To"] = clean_header_text(in_reply_to, 998)
        refs = [clean_header_text(r, 998) for r in (*references, in_reply_to) if r]
        if refs:
            # Keep the thread intact without letting a sender grow our headers without bound.
            msg["References"] = " ".join(dict.fromkeys(refs[-20:]))
        if reply_to:
            msg["Reply-To"] = reply_to
        if auto:
            msg["Auto-Submitted"] = auto
        msg["X-Auto-Response-Suppress"] = "All"
        if report_id:
            msg["X-Triaged-Report"] = report_id
        body = self.render(template, report_id=report_id, **context)
        msg.set_content(body, charset="utf-8")
        return Outgoing(
            message_id=message_id,
            kind=kind,
            recipient=to,
            envelope_from="" if auto == "auto-replied" else project.address,
            raw=msg.as_bytes(),
            report_id=report_id,
        )

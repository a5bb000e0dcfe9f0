"""Triage at volume (issue 18): reply templates, spam verdicts and blocked senders, related
reports, limits on the notices that reach maintainers, and the reporter's own /status; end to
end through Dovecot and the SMTP sink.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import MAINTAINERS, REPORTER, Desk, Harness, imap_config, sent_to
from servers import ImapAccount, SmtpSink

from triaged.config import load

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "replies"
ALICE, BOB = MAINTAINERS


def _with(config_path: Path, text: str) -> None:
    config_path.write_text(config_path.read_text() + "\n" + text + "\n")


# --- reply templates --------------------------------------------------------------------


@pytest.fixture
def templated(tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink) -> Iterator[Desk]:
    """A desk whose operator installed the shipped reply templates, on a report whose title
    holds template syntax."""
    templates = tmp_dir / "templates"
    shutil.copytree(EXAMPLES, templates / "replies")
    config = imap_config(tmp_dir, imap_account, smtp_sink)
    _with(config.path, f'[templates]\ndirectory = "{templates}"')
    h = Harness(load(config.path))
    yield Desk(h, imap_account, smtp_sink, subject="{{ 7*7 }} in the importer")
    h.close()


def test_reply_template_sends_the_rendered_text_and_never_evaluates_sender_text(
    templated: Desk,
) -> None:
    sent = templated.send("/reply template out-of-scope\nInternal: a scanner finding.\n")
    (to_reporter,) = sent_to(sent, REPORTER)
    text = to_reporter.msg.get_content()
    assert "our security policy does not cover" in text
    assert f"report {templated.report_id}," in text
    # The title came from the sender: it is shown as written, never rendered.
    assert '"{{ 7*7 }} in the importer"' in text and "49 in the importer" not in text
    assert "Internal" not in text
    (transcript,) = sent_to(sent, ALICE)
    assert "reply template out-of-scope sent to the reporter" in transcript.msg.get_content()
    assert templated.show()["state"] == "new"


def test_reject_template_rejects_with_the_rendered_text(templated: Desk) -> None:
    sent = templated.send("/reject template not-a-vulnerability\n")
    (to_reporter,) = sent_to(sent, REPORTER)
    text = to_reporter.msg.get_content()
    assert "does not describe a security" in text and "public issue tracker" in text
    assert str(to_reporter.msg["Subject"]).endswith("Your report is rejected")
    assert templated.show()["state"] == "rejected"


def test_an_unknown_template_is_refused_with_the_list(templated: Desk) -> None:
    sent = templated.send("/reply template nonsense\n")
    assert sent_to(sent, REPORTER) == []
    body = sent_to(sent, ALICE)[0].msg.get_content()
    assert "REFUSED /reply template nonsense" in body
    assert "reply templates: duplicate, not-a-vulnerability, out-of-scope" in body
    sent = templated.send("/reject template ../../etc/passwd\n")
    assert "there is no reply template" in sent_to(sent, ALICE)[0].msg.get_content()
    assert templated.show()["state"] == "new"


def test_help_lists_the_installed_templates(templated: Desk) -> None:
    body = sent_to(templated.send("/help\n"), ALICE)[0].msg.get_content()
    assert "reply templates: duplicate, not-a-vulnerability, out-of-scope" in body

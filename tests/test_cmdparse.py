from __future__ import annotations

import random

import pytest

from triaged.commands.parse import MAX_LINE, CommandLine, Commands, extract


def names(commands: Commands) -> list[str]:
    return [line.name for line in commands.lines]


# --- where commands are ----------------------------------------------------------------------


def test_commands_at_the_top_then_note() -> None:
    result = extract("/ack\n/severity high\n\nLooks real, reproduced on 3.1.\n")
    assert result.lines == (
        CommandLine(name="ack", args=(), raw="/ack", error=None),
        CommandLine(name="severity", args=("high",), raw="/severity high", error=None),
    )
    assert result.reply is None
    assert result.note == "Looks real, reproduced on 3.1."


def test_no_commands_is_all_note() -> None:
    result = extract("  Just a note.\n\n/close\n")
    assert result.lines == ()
    assert result.reply is None
    assert result.note == "Just a note.\n\n/close"


def test_empty_text() -> None:
    assert extract("") == Commands(lines=(), reply=None, note="")
    assert extract("\n \n\t\n") == Commands(lines=(), reply=None, note="")


def test_leading_and_separating_blank_lines_are_skipped() -> None:
    result = extract("\n\n   \n/ack\n\n\n  /assign alice@example.org  \n\nnote\n")
    assert names(result) == ["ack", "assign"]
    assert result.lines[1].args == ("alice@example.org",)
    assert result.lines[1].raw == "/assign alice@example.org"
    assert result.note == "note"


def test_indented_command_is_a_command() -> None:
    assert names(extract("   \t/ack")) == ["ack"]


def test_nothing_after_the_first_other_line_is_a_command() -> None:
    result = extract("/ack\nThanks!\n/close\n/reply\nhello")
    assert names(result) == ["ack"]
    assert result.reply is None
    assert result.note == "Thanks!\n/close\n/reply\nhello"


@pytest.mark.parametrize("quoted", ["> /close", ">/close", "  > /close", ">> /reply"])
def test_quoted_line_is_never_a_command(quoted: str) -> None:
    result = extract(f"{quoted}\n/ack\n")
    assert result.lines == ()
    assert result.note == f"{quoted}\n/ack".strip()


def test_quoted_line_ends_the_commands() -> None:
    result = extract("/ack\n> /close\n/reopen")
    assert names(result) == ["ack"]
    assert result.note == "> /close\n/reopen"


def test_name_is_lowercased_and_not_guessed() -> None:
    result = extract("/SEVERITY High\n/2026/report.pdf is attached\n/ \n/")
    assert [(line.name, line.args) for line in result.lines] == [
        ("severity", ("High",)),
        ("2026/report.pdf", ("is", "attached")),
        ("", ()),
        ("", ()),
    ]
    assert all(line.error is None for line in result.lines)


def test_crlf_and_cr_line_ends() -> None:
    result = extract("/ack\r\n/close\rnote\r\n")
    assert names(result) == ["ack", "close"]
    assert result.note == "note"


def test_byte_order_mark_before_first_command() -> None:
    assert names(extract("\ufeff/ack")) == ["ack"]


# --- arguments --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "args"),
    [
        ('/credit "Jane Doe"', ("Jane Doe",)),
        ("/reject not a bug", ("not", "a", "bug")),
        ("/reject it's fine", ("it's", "fine")),
        ("/reject 'quoted'  words", ("'quoted'", "words")),
        ('/credit "Jane \\"JD\\" Doe"', ('Jane "JD" Doe',)),
        ('/credit "back\\\\slash"', ("back\\slash",)),
        ('/credit "keep \\n as is"', ("keep \\n as is",)),
        ("/reject C:\\dir\\file", ("C:\\dir\\file",)),
        ('/reject say \\"hi\\"', ("say", '"hi"')),
        ('/credit ""', ("",)),
        ('/credit a"b c"d e', ("ab cd", "e")),
        ("/credit \u201cJane Doe\u201d", ("Jane Doe",)),
        ("/affects <3.2 >=2.0", ("<3.2", ">=2.0")),
        ("/cvss CVSS:3.1/AV:N/AC:L", ("CVSS:3.1/AV:N/AC:L",)),
        ("/severity\thigh\u00a0 now", ("high", "now")),
    ],
)
def test_arguments(line: str, args: tuple[str, ...]) -> None:
    result = extract(line)
    assert len(result.lines) == 1
    assert result.lines[0].error is None
    assert result.lines[0].args == args


@pytest.mark.parametrize(
    "line", ['/credit "Jane Doe', '/credit Jane"', '/credit "a\\"', "/credit \u201cJane"]
)
def test_unbalanced_quote(line: str) -> None:
    (command,) = extract(line + "\nnote").lines
    assert command.name == "credit"
    assert command.args == ()
    assert command.error == "unbalanced double quote"
    assert command.raw == line


def test_unbalanced_quote_does_not_swallow_the_next_lines() -> None:
    result = extract('/credit "Jane\n/ack\nnote')
    assert [(line.name, line.error) for line in result.lines] == [
        ("credit", "unbalanced double quote"),
        ("ack", None),
    ]
    assert result.note == "note"


def test_control_characters_removed_from_raw_and_args() -> None:
    (command,) = extract("/sev\x00erity hi\x07gh\x1b[31m \u202eevil\x7f\x85").lines
    assert command.name == "severity"
    assert command.args == ("high[31m", "evil")
    assert command.raw == "/severity high[31m evil"


def test_overlong_line_is_an_error_and_raw_is_cut() -> None:
    line = "/reject " + "x" * 600
    (command,) = extract(line).lines
    assert command.name == "reject"
    assert command.args == ()
    assert command.error is not None and "too long" in command.error
    assert len(command.raw) == MAX_LINE
    assert line.startswith(command.raw)


def test_line_of_exactly_max_characters_is_fine() -> None:
    line = "/reject " + "x" * (MAX_LINE - len("/reject "))
    (command,) = extract(line).lines
    assert command.error is None
    assert command.raw == line


# --- the limit --------------------------------------------------------------------------------


def test_too_many_commands() -> None:
    text = "\n".join(f"/cve CVE-2026-{n:04d}" for n in range(60)) + "\nnote"
    result = extract(text, max_commands=50)
    assert len(result.lines) == 51
    assert all(line.name == "cve" and line.error is None for line in result.lines[:50])
    assert result.lines[50] == CommandLine(
        name="", args=(), raw="", error="too many commands (limit 50)"
    )
    assert result.note == "note"


def test_exactly_the_limit_is_fine() -> None:
    text = "\n".join(["/ack"] * 5)
    result = extract(text, max_commands=5)
    assert names(result) == ["ack"] * 5
    assert all(line.error is None for line in result.lines)


def test_reply_beyond_the_limit_is_not_honoured() -> None:
    result = extract("/ack\n/ack\n/reply\nSecret text", max_commands=2)
    assert [line.error for line in result.lines] == [None, None, "too many commands (limit 2)"]
    assert result.reply is None
    assert result.note == "Secret text"


def test_default_limit_is_50() -> None:
    result = extract("\n".join(["/ack"] * 51))
    assert len(result.lines) == 51
    assert result.lines[-1].error == "too many commands (limit 50)"


# --- /reply -----------------------------------------------------------------------------------


def test_reply_is_the_rest_and_note_is_empty() -> None:
    result = extract("/ack\n/reply\nHello,\n\nwe confirmed it.\n\n")
    assert names(result) == ["ack", "reply"]
    assert result.lines[1] == CommandLine(name="reply", args=(), raw="/reply", error=None)
    assert result.reply == "Hello,\n\nwe confirmed it."
    assert result.note == ""


def test_reply_template_is_an_ordinary_command_line() -> None:
    result = extract("/reply template out-of-scope\n/close\nInternal: seen it before.\n")
    assert names(result) == ["reply", "close"]
    assert result.lines[0].args == ("template", "out-of-scope")
    assert result.reply is None and result.note == "Internal: seen it before."
    # Anything else on the /reply line is the first line of the reply, as before.
    result = extract("/reply template for the fix: see below\nThanks")
    assert result.lines[0].args == () and result.reply is not None
    assert result.reply.startswith("template for the fix")


def test_reply_is_the_last_command() -> None:
    result = extract("/REPLY\n/close\nThanks")
    assert names(result) == ["reply"]
    assert result.reply == "/close\nThanks"


def test_text_on_the_reply_line_starts_the_reply() -> None:
    result = extract('/reply Thanks, it\'s "confirmed".\nMore soon.')
    assert result.lines[0].args == ()
    assert result.lines[0].error is None
    assert result.reply == 'Thanks, it\'s "confirmed".\nMore soon.'


def test_empty_reply() -> None:
    assert extract("/reply").reply == ""
    assert extract("/reply\n\n  \n").reply == ""
    assert extract("/reply\nOn Mon, 1 Jun 2026, triaged wrote:\n> hi").reply == ""


@pytest.mark.parametrize(
    "cut",
    [
        "> quoted text",
        "  > indented quote",
        "-- ",
        "--",
        "On Mon, 1 Jun 2026 at 10:00, Security <security@example.org> wrote:",
        "Alice wrote:",
        "Le lun. 1 juin 2026 à 10:00, Security <security@example.org> a écrit :",
        "Le lun. 1 juin 2026, Security a\u00a0écrit\u00a0:",
        "Am Mo., 1. Juni 2026 um 10:00 Uhr schrieb Security <security@example.org>:",
        "El lun, 1 jun 2026, Security escribió:",
        "Op ma 1 jun. 2026 om 10:00 schreef Security <security@example.org>:",
        "-----Original Message-----",
        "----- Original Message -----",
        "-----Ursprüngliche Nachricht-----",
        "________________________________",
    ],
)
def test_reply_cut_at_quote_or_signature(cut: str) -> None:
    text = f"/reply\nHello,\nfixed in 3.2.1.\n\n{cut}\nquoted stuff\n> more"
    result = extract(text)
    assert result.reply == "Hello,\nfixed in 3.2.1."
    assert result.note == ""


def test_reply_cut_at_wrapped_attribution() -> None:
    text = (
        "/reply\nHello.\n\nOn Mon, 1 Jun 2026 at 10:00, Security Team <security@\n"
        "example.org> wrote:\n> hi"
    )
    assert extract(text).reply == "Hello."


def test_reply_cut_at_outlook_header_block() -> None:
    text = "/reply\nHello.\n\nFrom: Security <security@example.org>\nSent: Monday\nTo: me"
    assert extract(text).reply == "Hello."


def test_reply_keeps_lines_that_only_look_alike() -> None:
    text = (
        "/reply\nFrom: the team\nWe wrote a fix; see below.\n-- not a signature\n"
        "__init__ changed\n--- a/file.py\nEnd."
    )
    assert extract(text).reply == text.removeprefix("/reply\n")


def test_reply_keeps_inner_blank_lines_and_drops_outer_ones() -> None:
    assert extract("/reply\n\n\nA\n\n\nB\n\n\n-- \nsig").reply == "A\n\n\nB"


def test_reply_text_is_cleaned_of_control_characters() -> None:
    assert extract("/reply\nA\x00B\x1b\tC\ud800").reply == "AB\tC"


# --- hostile input ----------------------------------------------------------------------------


def test_garbage_never_raises() -> None:
    rng = random.Random(8601)
    alphabet = '/\\"\u201c\u201d>-_ \t\n\r\x00\x0b\x0c\x1c\x85\u2028\ud800\ufeff' + "ab:;é字"
    for _ in range(3000):
        length = rng.randint(0, 200)
        text = "".join(rng.choice(alphabet) for _ in range(length))
        result = extract(text, max_commands=rng.randint(-1, 5))
        for line in result.lines:
            assert len(line.raw) <= MAX_LINE
            assert "\n" not in line.raw
            assert not any(ord(c) < 32 and c != "\t" for c in line.raw)
            if line.error:
                assert line.args == ()
        if result.reply is not None:
            assert result.note == ""


def test_random_unicode_never_raises() -> None:
    rng = random.Random(5322)
    for _ in range(500):
        text = "".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(rng.randint(0, 300)))
        extract(text)
        extract("/" + text)
        extract("/reply\n" + text)


def test_large_input_is_linear() -> None:
    text = "/reject " + '"' * 100_000 + "\n" + "/ack\n" * 10_000 + ">" * 100_000
    result = extract(text)
    assert result.lines[0].error is not None
    assert result.lines[-1].error == "too many commands (limit 50)"


def test_pathological_attribution_lines_are_fast() -> None:
    line = "Am " + "schrieb " * 20_000
    result = extract("/reply\nHi\n" + line + "\n" + "wrote" + " " * 50_000 + "x")
    assert result.reply is not None and result.reply.startswith("Hi\nAm schrieb")


def test_many_blank_lines_are_fast() -> None:
    assert extract("/reply" + "\n" * 200_000 + "Hi" + "\n" * 200_000).reply == "Hi"
    assert extract("\n" * 200_000 + "/ack" + "\n" * 200_000).note == ""

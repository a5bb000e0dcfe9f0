"""Advisory drafts (Markdown and OSV), the hall of fame, supported versions, and /advisory."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import MAINTAINERS, Harness, base_sections, imap_config, mail, write_config
from jsonschema import Draft202012Validator, FormatChecker
from servers import Captured, ImapAccount, SmtpSink

from triaged.cli import main
from triaged.config import Config, load
from triaged.core import events as ev
from triaged.core.ids import find_tag, tag
from triaged.core.timefmt import ts
from triaged.core.versions import Range, parse_range, touches_only_unsupported
from triaged.disclosure import halloffame
from triaged.disclosure.advisory import draft
from triaged.errors import ConfigError
from triaged.store import events
from triaged.store.db import Store

SCHEMA = Path(__file__).parent / "data" / "osv-schema.json"
NOW = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
V31 = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"
V40 = "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"
REPORTER = "jane.doe@researcher.example"


def _schema(cvss_v4: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA.read_text())
    if cvss_v4:
        # The copy predates OSV 1.6.2, which added the CVSS_V4 severity type (and nothing
        # else that a triaged record uses): add exactly that value.
        for severity in (
            schema["properties"]["severity"],
            schema["properties"]["affected"]["items"]["properties"]["severity"],
        ):
            enum = severity["items"]["properties"]["type"]["enum"]
            if "CVSS_V4" not in enum:
                enum.append("CVSS_V4")
    return schema


def _validate(record: dict[str, Any]) -> None:
    cvss_v4 = any(s["type"] == "CVSS_V4" for s in record.get("severity", []))
    validator = Draft202012Validator(_schema(cvss_v4), format_checker=FormatChecker())
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(record)]
    assert errors == []
    # jsonschema checks "date-time" only with an optional package: check RFC 3339 here.
    assert RFC3339_UTC.match(record["modified"]) and RFC3339_UTC.match(record["published"])


def _config(tmp_path: Path, **sections: dict[str, Any]) -> Config:
    all_sections = base_sections(tmp_path)
    all_sections["project"]["name"] = "Marmotte"
    all_sections.update(
        {
            "package": {
                "name": "marmotte",
                "ecosystem": "PyPI",
                "repository": "https://github.com/marmotte/marmotte",
                "supported": ["1.0.x"],
            },
            "advisory": {"id_prefix": "MARMOTTE", "url": "https://marmotte.io/advisories/{id}"},
        }
    )
    all_sections.update(sections)
    return load(write_config(tmp_path, all_sections))


def _credit(kind: str, name: str | None = None) -> str:
    return json.dumps({"kind": kind, "name": name, "by": REPORTER, "at": ts(NOW)})


def _report(**fields: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "id": "k7f3q9xm",
        "title": "Path traversal in the importer",
        "state": "fixed",
        "severity": None,
        "cvss": None,
        "cvss_score": None,
        "handler": "alice@example.org",
        "reporter": REPORTER,
        "affected": None,
        "fixed_in": None,
        "cves": "[]",
        "embargo": None,
        "disclosed_at": None,
        "credit": None,
        "waiting": 0,
        "created_at": ts(NOW),
        "updated_at": ts(NOW),
    }
    report.update(fields)
    return report


SHAPES = {
    "cvss 3.1, CVE, named": _report(
        severity="critical",
        cvss=V31,
        cvss_score=9.8,
        affected=">=1.0 <1.0.4",
        fixed_in="1.0.4",
        cves=json.dumps(["CVE-2026-1234", "CVE-2026-1235"]),
        credit=_credit("name", "Jane Doe"),
        disclosed_at=ts(NOW),
    ),
    "cvss 4.0, no CVE, anonymous": _report(
        severity="high",
        cvss=V40,
        cvss_score=9.3,
        affected="<=0.9.2",
        credit=_credit("anonymous"),
        embargo="2026-12-01",
    ),
    "no preference, unread range": _report(
        affected="1.x except 1.3.9", fixed_in="1.4.2", severity="low"
    ),
    "nothing known": _report(),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_osv_records_validate_against_the_schema(tmp_path: Path, shape: str) -> None:
    advisory = draft(SHAPES[shape], _config(tmp_path), NOW)
    _validate(advisory.osv)
    assert json.loads(advisory.osv_json()) == advisory.osv
    assert advisory.osv["id"] == "MARMOTTE-k7f3q9xm"


def test_the_schema_copy_differs_from_osv_1_6_2_only_by_cvss_v4(tmp_path: Path) -> None:
    record = draft(SHAPES["cvss 4.0, no CVE, anonymous"], _config(tmp_path), NOW).osv
    errors = list(Draft202012Validator(_schema()).iter_errors(record))
    assert errors and all("'CVSS_V4' is not one of" in e.message for e in errors)


def test_osv_record_of_a_disclosed_report(tmp_path: Path) -> None:
    record = draft(SHAPES["cvss 3.1, CVE, named"], _config(tmp_path), NOW).osv
    assert record["aliases"] == ["CVE-2026-1234", "CVE-2026-1235"]
    assert record["severity"] == [{"type": "CVSS_V3", "score": V31}]
    assert record["affected"] == [
        {
            "package": {"ecosystem": "PyPI", "name": "marmotte"},
            "ranges": [
                {"type": "ECOSYSTEM", "events": [{"introduced": "1.0"}, {"fixed": "1.0.4"}]}
            ],
        }
    ]
    assert record["credits"] == [{"name": "Jane Doe", "type": "FINDER"}]
    assert record["references"] == [
        {"type": "ADVISORY", "url": "https://marmotte.io/advisories/MARMOTTE-k7f3q9xm"},
        {"type": "ADVISORY", "url": "https://nvd.nist.gov/vuln/detail/CVE-2026-1234"},
        {"type": "ADVISORY", "url": "https://nvd.nist.gov/vuln/detail/CVE-2026-1235"},
        {"type": "PACKAGE", "url": "https://github.com/marmotte/marmotte"},
    ]
    assert record["published"] == record["modified"] == "2026-11-22T09:30:00Z"
    assert record["database_specific"] == {"severity": "CRITICAL"}
    assert record["summary"] == "Path traversal in the importer"


def test_osv_record_before_disclosure_is_published_on_the_embargo_day(tmp_path: Path) -> None:
    config = _config(tmp_path)
    record = draft(SHAPES["cvss 4.0, no CVE, anonymous"], config, NOW).osv
    assert record["severity"] == [{"type": "CVSS_V4", "score": V40}]
    # Midnight in the project's time zone (UTC here), and modified is not before it.
    assert record["published"] == record["modified"] == "2026-12-01T00:00:00Z"
    assert record["affected"][0]["ranges"][0]["events"] == [
        {"introduced": "0"},
        {"last_affected": "0.9.2"},
    ]
    assert "aliases" not in record


@pytest.mark.parametrize(
    ("affected", "fixed_in", "events"),
    [
        ("<3.2", None, [{"introduced": "0"}, {"fixed": "3.2"}]),
        ("<3.2", "3.2", [{"introduced": "0"}, {"fixed": "3.2"}]),
        ("<= 3.1.9", "3.2.0", [{"introduced": "0"}, {"fixed": "3.2.0"}]),
        (">=2.0, <2.4", None, [{"introduced": "2.0"}, {"fixed": "2.4"}]),
        (">=2.0", "2.4.1", [{"introduced": "2.0"}, {"fixed": "2.4.1"}]),
        ("=1.2.3", None, [{"introduced": "1.2.3"}, {"last_affected": "1.2.3"}]),
        (None, "1.0.4", [{"introduced": "0"}, {"fixed": "1.0.4"}]),
        ("before the big rewrite", "1.0.4", [{"introduced": "0"}, {"fixed": "1.0.4"}]),
    ],
)
def test_osv_ranges_from_affects_and_fixed_in(
    tmp_path: Path, affected: str | None, fixed_in: str | None, events: list[dict[str, str]]
) -> None:
    record = draft(_report(affected=affected, fixed_in=fixed_in), _config(tmp_path), NOW).osv
    assert record["affected"][0]["ranges"] == [{"type": "ECOSYSTEM", "events": events}]
    _validate(record)


def test_an_affected_text_that_is_not_a_range_is_kept_as_written(tmp_path: Path) -> None:
    advisory = draft(SHAPES["no preference, unread range"], _config(tmp_path), NOW)
    assert advisory.osv["database_specific"]["affected_versions"] == "1.x except 1.3.9"
    assert "`1.x except 1.3.9`" in advisory.osv["details"]
    assert "`1.x except 1.3.9`" in advisory.markdown
    assert any("'1.x except 1.3.9' are not a range" in gap for gap in advisory.gaps)


def test_a_fixed_in_that_contradicts_the_range_is_pointed_out(tmp_path: Path) -> None:
    advisory = draft(_report(affected="<1.0.4", fixed_in="1.0.5"), _config(tmp_path), NOW)
    assert advisory.osv["affected"][0]["ranges"][0]["events"][-1] == {"fixed": "1.0.5"}
    assert any("/fixed-in says 1.0.5" in gap for gap in advisory.gaps)


def test_without_an_ecosystem_there_is_no_affected_package(tmp_path: Path) -> None:
    config = _config(tmp_path, package={"name": "marmotte"})
    advisory = draft(_report(affected="<1.0", fixed_in="1.0"), config, NOW)
    assert "affected" not in advisory.osv
    assert any("package.ecosystem is not set" in gap for gap in advisory.gaps)
    _validate(advisory.osv)


def test_default_id_prefix_is_the_project_name(tmp_path: Path) -> None:
    config = _config(tmp_path, advisory={})
    assert draft(_report(), config, NOW).id == "MARMOTTE-k7f3q9xm"


def test_markdown_advisory_of_a_disclosed_report(tmp_path: Path) -> None:
    markdown = draft(SHAPES["cvss 3.1, CVE, named"], _config(tmp_path), NOW).markdown
    assert markdown.startswith("# MARMOTTE-k7f3q9xm: Path traversal in the importer\n")
    for line in [
        "- **Package:** marmotte (PyPI)",
        "- **Affected versions:** `>=1.0 <1.0.4`",
        "- **Fixed in:** `1.0.4`",
        f"- **Severity:** Critical, CVSS 3.1 base score 9.8 (`{V31}`)",
        "- **CVE:** CVE-2026-1234, CVE-2026-1235",
        "- **Published:** 2026-11-22",
        "Upgrade to 1.0.4 or later.",
        "Reported by Jane Doe.",
        "- <https://marmotte.io/advisories/MARMOTTE-k7f3q9xm>",
    ]:
        assert line in markdown.splitlines()


def test_markdown_shows_names_and_titles_as_text(tmp_path: Path) -> None:
    report = _report(title="<script>x</script> in *templates*", credit=_credit("name", "[me](x)"))
    markdown = draft(report, _config(tmp_path), NOW).markdown
    assert "\\<script\\>x\\</script\\> in \\*templates\\*" in markdown
    assert "Reported by \\[me\\](x)." in markdown


def _every_output(tmp_path: Path, report: dict[str, Any]) -> str:
    config = _config(tmp_path)
    advisory = draft(report, config, NOW)
    store = Store(config.database)
    store.insert("reports", {**report, "state": "disclosed", "disclosed_at": ts(NOW)})
    fame = halloffame.render(halloffame.disclosed(store), config)
    store.close()
    return "\n".join([advisory.markdown, advisory.osv_json(), fame])


def test_anonymous_credit_names_nobody_anywhere(tmp_path: Path) -> None:
    report = _report(credit=_credit("anonymous"))
    advisory = draft(report, _config(tmp_path), NOW)
    assert "credits" not in advisory.osv
    assert "Reported privately by a researcher who asked to remain anonymous." in (
        advisory.markdown
    )
    everything = _every_output(tmp_path, report)
    assert "jane" not in everything.lower() and "researcher.example" not in everything
    assert "- Anonymous researcher: [MARMOTTE-k7f3q9xm]" in everything


def test_no_stated_preference_gives_no_credit_and_says_reported_privately(
    tmp_path: Path,
) -> None:
    advisory = draft(_report(), _config(tmp_path), NOW)
    assert "credits" not in advisory.osv
    assert "\n## Credit\n\nReported privately.\n" in advisory.markdown
    assert "Reported privately." in advisory.osv["details"]
    assert any("no credit preference" in gap for gap in advisory.gaps)
    everything = _every_output(tmp_path, _report())
    assert "jane" not in everything.lower()
    assert "_Nobody yet._" in everything


def test_the_reporter_address_is_never_in_an_advisory(tmp_path: Path) -> None:
    for report in SHAPES.values():
        advisory = draft(report, _config(tmp_path), NOW)
        assert REPORTER not in advisory.markdown + advisory.osv_json()


# --- hall of fame ---------------------------------------------------------------------------


def test_hall_of_fame_lists_public_reports_newest_first(tmp_path: Path) -> None:
    config = _config(tmp_path)
    store = Store(config.database)
    rows = [
        _report(
            id="aaaaaaaa",
            state="closed",
            disclosed_at="2026-03-01T10:00:00.000000Z",
            credit=_credit("name", "Ada"),
            cves=json.dumps(["CVE-2026-0001"]),
        ),
        _report(
            id="bbbbbbbb",
            state="disclosed",
            disclosed_at="2026-09-15T10:00:00.000000Z",
            credit=_credit("anonymous"),
        ),
        # Disclosed through /state, without disclosed_at: the state event dates it.
        _report(id="cccccccc", state="disclosed", credit=_credit("name", "Grace")),
        # Closed without ever being disclosed, or not public yet: not listed.
        _report(id="dddddddd", state="closed", credit=_credit("name", "Private Pat")),
        _report(id="eeeeeeee", state="fixed", credit=_credit("name", "Early Eve")),
        # No preference stated: not listed.
        _report(id="ffffffff", state="disclosed", disclosed_at="2026-10-01T10:00:00.000000Z"),
    ]
    for row in rows:
        store.insert("reports", row)
    events.record(
        store, "cccccccc", datetime(2026, 6, 1, tzinfo=UTC), ev.STATE, old="fixed", new="disclosed"
    )
    text = halloffame.render(halloffame.disclosed(store), config)
    store.close()
    assert text == (
        "## Hall of fame\n"
        "\n"
        "We thank the people who reported security issues in Marmotte to us privately:\n"
        "\n"
        "- Anonymous researcher: [MARMOTTE-bbbbbbbb]"
        "(https://marmotte.io/advisories/MARMOTTE-bbbbbbbb) (2026-09-15)\n"
        "- **Grace**: [MARMOTTE-cccccccc](https://marmotte.io/advisories/MARMOTTE-cccccccc)"
        " (2026-06-01)\n"
        "- **Ada**: [CVE-2026-0001](https://marmotte.io/advisories/MARMOTTE-aaaaaaaa)"
        " (2026-03-01)\n"
    )


# --- supported versions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<3.2", Range("0", fixed="3.2")),
        ("< 3.2", Range("0", fixed="3.2")),
        ("<=3.2", Range("0", last_affected="3.2")),
        (">=1.0 <1.0.4", Range("1.0", fixed="1.0.4")),
        (">=1.0,<1.0.4", Range("1.0", fixed="1.0.4")),
        (">=1.0 and <=1.2", Range("1.0", last_affected="1.2")),
        (">=2.1", Range("2.1")),
        ("1.2.3", Range("1.2.3", last_affected="1.2.3")),
        ("all", Range("0")),
        (">1.0", None),
        ("<1 <2", None),
        (">=2 <1", None),
        ("1.0.x", None),
        ("<3.2 || >=4", None),
        ("the old importer", None),
        ("", None),
    ],
)
def test_affected_ranges_read(text: str, expected: Range | None) -> None:
    assert parse_range(text) == expected


@pytest.mark.parametrize(
    ("affected", "supported", "only_unsupported"),
    [
        ("<1.0", ["1.0.x"], True),
        ("<=0.9.5", ["1.0.x"], True),
        ("0.9.x", ["1.0.x"], True),
        ("<1.0.0", ["1.0.x"], True),
        ("<1.0.4", ["1.0.x"], False),
        (">=1.0 <1.0.4", ["1.0.x"], False),
        (">=0.2", ["1.0.x"], False),
        ("<0.3", ["0.4.x", "0.3.x"], True),
        ("<0.3.5", ["0.4.x", "0.3.x"], False),
        ("1.0rc1", ["1.0.x"], True),
        ("<3", [">=3.0"], True),
        ("<1.0", [], False),
        ("old versions", ["1.0.x"], False),
        (None, ["1.0.x"], False),
    ],
)
def test_only_unsupported(
    affected: str | None, supported: list[str], only_unsupported: bool
) -> None:
    assert touches_only_unsupported(affected, supported) is only_unsupported


def test_a_supported_line_that_is_not_one_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _config(tmp_path, package={"supported": ["latest"]})
    assert info.value.key == "package.supported"
    assert "'latest' is not a version line" in info.value.message


# --- the command line -----------------------------------------------------------------------


def _cli(tmp_path: Path, *args: str) -> Any:
    return CliRunner().invoke(main, ["--config", str(tmp_path / "config.toml"), *args])


def test_cli_advisory_markdown_and_osv(tmp_path: Path) -> None:
    config = _config(tmp_path)
    store = Store(config.database)
    store.insert("reports", SHAPES["cvss 3.1, CVE, named"])
    store.close()
    result = _cli(tmp_path, "advisory", "k7f3q9xm")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# MARMOTTE-k7f3q9xm: Path traversal in the importer\n")
    out = tmp_path / "MARMOTTE-k7f3q9xm.json"
    result = _cli(tmp_path, "advisory", "#K7F3Q9XM", "--format", "osv", "--output", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert f"advisory MARMOTTE-k7f3q9xm (osv) written to {out}" in result.stderr
    record = json.loads(out.read_text())
    assert record["credits"] == [{"name": "Jane Doe", "type": "FINDER"}]
    _validate(record)


def test_cli_advisory_tells_what_to_check_on_stderr(tmp_path: Path) -> None:
    config = _config(tmp_path)
    store = Store(config.database)
    store.insert("reports", _report())
    store.close()
    result = _cli(tmp_path, "advisory", "k7f3q9xm", "--format", "osv")
    assert result.exit_code == 0
    json.loads(result.stdout)
    assert "check: no affected versions (/affects) and no fixed release" in result.stderr


def test_cli_advisory_of_an_unknown_report(tmp_path: Path) -> None:
    _config(tmp_path)
    result = _cli(tmp_path, "advisory", "zzzzzzzz")
    assert result.exit_code == 1
    assert "no report zzzzzzzz" in result.stderr


def test_cli_hall_of_fame(tmp_path: Path) -> None:
    config = _config(tmp_path)
    store = Store(config.database)
    store.insert("reports", SHAPES["cvss 3.1, CVE, named"] | {"state": "disclosed"})
    store.close()
    result = _cli(tmp_path, "hall-of-fame")
    assert result.exit_code == 0
    assert "- **Jane Doe**: [CVE-2026-1234, CVE-2026-1235](" in result.stdout


def test_readme_documents_the_disclosure_commands() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for command in ("triaged advisory", "triaged hall-of-fame", "triaged security-txt"):
        assert f"`{command}" in readme


# --- /advisory by email, end to end ---------------------------------------------------------

TEAM = "security-team@example.org"


class _Desk:
    def __init__(self, h: Harness, account: ImapAccount, sink: SmtpSink) -> None:
        self.h, self.account, self.sink = h, account, sink
        account.append(mail(sender=REPORTER, subject="Path traversal in the importer"))
        h.pump()
        got = sink.wait_for(1 + len(MAINTAINERS))
        report_id = find_tag(str(got[0].msg["Subject"]))
        assert report_id
        self.report_id = report_id
        alice = next(c for c in got if c.rcpt_tos == [MAINTAINERS[0]])
        self.reply_to = str(alice.msg["Reply-To"])
        self.seen = len(got)

    def send(self, body: str) -> list[Captured]:
        self.account.append(
            mail(
                sender=MAINTAINERS[0],
                to=self.reply_to,
                subject=f"Re: {tag(self.report_id)} Path traversal",
                body=body,
            )
        )
        assert self.h.pump() == 1
        new = self.sink.messages[self.seen :]
        self.seen = len(self.sink.messages)
        return list(new)


@pytest.fixture
def desk(tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink) -> Iterator[_Desk]:
    config = imap_config(tmp_dir, imap_account, smtp_sink)
    config.path.write_text(
        config.path.read_text().replace("[maintainers]\n", f'[maintainers]\nteam = "{TEAM}"\n')
        + '\n[package]\nname = "marmotte"\necosystem = "PyPI"\nsupported = ["1.0.x"]\n'
        + '\n[advisory]\nid_prefix = "MARMOTTE"\n'
    )
    h = Harness(load(config.path))
    yield _Desk(h, imap_account, smtp_sink)
    h.close()


def _between(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0]


def test_advisory_command_mails_both_drafts_to_the_team(desk: _Desk) -> None:
    sent = desk.send(
        f"/severity critical\n/cvss {V40}\n/affects >=1.0 <1.0.4\n/fixed-in 1.0.4\n"
        "/cve CVE-2026-1234\n/credit anonymous\n/advisory\n"
    )
    (transcript,) = [c for c in sent if c.rcpt_tos == [MAINTAINERS[0]]]
    (drafts,) = [c for c in sent if c.rcpt_tos == [TEAM]]
    ident = f"MARMOTTE-{desk.report_id}"
    assert f"advisory draft {ident} sent to {TEAM}" in transcript.msg.get_content()
    assert str(drafts.msg["Subject"]) == f"{tag(desk.report_id)} Advisory draft {ident}"
    body = drafts.msg.get_content().replace("\r\n", "\n")
    assert "not public yet" in body
    markdown = _between(body, f"----- {ident}.md -----\n", f"----- end of {ident}.md")
    assert markdown.startswith(f"# {ident}: Path traversal in the importer\n")
    assert "Reported privately by a researcher who asked to remain anonymous." in markdown
    record = json.loads(_between(body, f"----- {ident}.json (OSV) -----\n", "----- end of"))
    _validate(record)
    assert record["aliases"] == ["CVE-2026-1234"]
    assert record["severity"] == [{"type": "CVSS_V4", "score": V40}]
    assert "credits" not in record
    assert REPORTER not in body
    # Nothing about the draft reaches the reporter.
    assert [c for c in sent if c.rcpt_tos == [REPORTER]] == []


def test_affects_on_unsupported_versions_only_is_flagged(desk: _Desk) -> None:
    (transcript,) = desk.send("/affects <1.0\n")
    body = transcript.msg.get_content()
    assert "done    /affects <1.0" in body
    assert "note: only unsupported versions (supported: 1.0.x)" in body
    (transcript,) = desk.send("/affects <1.0.4\n")
    assert "unsupported" not in transcript.msg.get_content()


def test_reporters_may_not_ask_for_an_advisory(desk: _Desk) -> None:
    desk.account.append(
        mail(sender=REPORTER, subject=f"Re: {tag(desk.report_id)} x", body="/advisory\n")
    )
    desk.h.pump()
    new = desk.sink.messages[desk.seen :]
    answer = [c for c in new if c.rcpt_tos == [REPORTER]]
    assert answer and "REFUSED /advisory" in answer[0].msg.get_content()
    assert not any(c.rcpt_tos == [TEAM] and "Advisory draft" in str(c.msg["Subject"]) for c in new)

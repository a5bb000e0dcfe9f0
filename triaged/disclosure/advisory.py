"""Advisory drafts from a report's fields: Markdown for people, an OSV record for databases. Pure.

`draft(report, config, now)` takes a `reports` row (as a dict) and gives both, with the `gaps`
a maintainer should fill before publishing. Decisions:

- The ID is `<advisory.id_prefix>-<report ID>` (the prefix defaults to the project's name,
  upper-cased). It stays the same for the report's whole life; CVE IDs, which often come
  later, are `aliases`.
- Credits come from the reporter's stated preference (`/credit`) and nothing else: a name is
  an OSV credit of type FINDER; "anonymous" gives no name anywhere; no preference gives no
  credit entry, and the text says "Reported privately". The reporter's address never appears.
- Versions: `/affects` is read as a range (see core/versions.py) and `/fixed-in` is the range's
  fixed event, and wins over the range's own end. An `/affects` text that is not a range is
  kept as written, in `database_specific.affected_versions` and in the details; with a fixed
  release the range is then "introduced 0, fixed X".
- `published` is the disclosure time, else the start of the embargo day (project time zone),
  else now; `modified` is now, or `published` when that is later.
- The report's text is never copied: it is private and holds the proof of concept. The
  Markdown has a placeholder for the description.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from triaged.config import Config
from triaged.core.text import clean_header_text
from triaged.core.versions import parse_range
from triaged.disclosure.credit import ANONYMOUS, NAME, NONE, Credit, reporter_credit

# 1.6.2 is the first OSV schema version with the CVSS_V4 severity type.
OSV_SCHEMA_VERSION = "1.6.2"


def _credit_sentence(credit: Credit) -> str:
    if credit.kind == NAME:
        return f"Reported by {markdown_text(credit.name or '')}."
    if credit.kind == ANONYMOUS:
        return "Reported privately by a researcher who asked to remain anonymous."
    return "Reported privately."


@dataclass(frozen=True)
class Advisory:
    id: str
    markdown: str
    osv: dict[str, Any]
    gaps: tuple[str, ...]

    def osv_json(self) -> str:
        return json.dumps(self.osv, indent=2, ensure_ascii=False) + "\n"


def id_prefix(config: Config) -> str:
    if config.advisory.id_prefix:
        return config.advisory.id_prefix
    return re.sub(r"[^A-Z0-9]+", "-", config.project.name.upper()).strip("-") or "ADVISORY"


def advisory_id(report: Mapping[str, Any], config: Config) -> str:
    return f"{id_prefix(config)}-{report['id']}"


def advisory_url(report: Mapping[str, Any], config: Config) -> str | None:
    url = config.advisory.url
    return url.replace("{id}", advisory_id(report, config)) if url else None


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def moment(text: str | None) -> datetime | None:
    """A stored date-time (any ISO 8601 form; no offset means UTC), or None."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _published(report: Mapping[str, Any], config: Config, now: datetime) -> datetime:
    disclosed = moment(report.get("disclosed_at"))
    if disclosed is not None:
        return disclosed
    embargo = report.get("embargo")
    if embargo:
        try:
            day = date.fromisoformat(embargo)
        except ValueError:
            return moment(embargo) or now
        return datetime.combine(day, time(0), tzinfo=config.project.timezone)
    return now


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


def markdown_text(text: str) -> str:
    """Text shown as itself in Markdown (a name, a title): no emphasis, links or HTML."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def _code(text: str) -> str:
    return "`" + text.replace("`", "'") + "`"


def cve_ids(report: Mapping[str, Any]) -> list[str]:
    cves = report.get("cves") or []
    if isinstance(cves, str):
        cves = json.loads(cves)
    return [str(cve) for cve in cves]


def _sentence(text: str) -> str:
    return text if text.endswith((".", "!", "?")) else f"{text}."


def _cvss_type(vector: str) -> str | None:
    if vector.startswith("CVSS:4.0/"):
        return "CVSS_V4"
    if vector.startswith("CVSS:3."):
        return "CVSS_V3"
    return None


@dataclass(frozen=True)
class _Versions:
    events: list[dict[str, str]]
    unparsed: str | None
    gaps: list[str]


def _versions(affected: str | None, fixed_in: str | None) -> _Versions:
    gaps: list[str] = []
    parsed = parse_range(affected)
    unparsed = affected if affected and parsed is None else None
    events: list[dict[str, str]] = []
    if parsed is not None:
        events.append({"introduced": parsed.introduced})
        if fixed_in:
            if parsed.fixed and parsed.fixed != fixed_in:
                gaps.append(
                    f"/affects ends the range before {parsed.fixed} but /fixed-in says"
                    f" {fixed_in}: the OSV range says fixed {fixed_in}"
                )
            events.append({"fixed": fixed_in})
        elif parsed.fixed:
            events.append({"fixed": parsed.fixed})
        elif parsed.last_affected:
            events.append({"last_affected": parsed.last_affected})
    elif fixed_in:
        events = [{"introduced": "0"}, {"fixed": fixed_in}]
    if unparsed:
        gaps.append(
            f"the affected versions {unparsed!r} are not a range triaged reads"
            " (<X, <=X, >=A <B, =X): they are kept as text; write the OSV range by hand"
        )
    if not affected and not fixed_in:
        gaps.append("no affected versions (/affects) and no fixed release (/fixed-in)")
    elif not fixed_in:
        gaps.append("no fixed release (/fixed-in)")
    return _Versions(events, unparsed, gaps)


@dataclass(frozen=True)
class _Facts:
    """What both formats say, read once from the report's fields."""

    ident: str
    title: str
    affected: str | None
    fixed_in: str | None
    cves: list[str]
    severity: str | None
    vector: str | None
    score: Any
    credit: Credit
    published: datetime
    modified: datetime
    versions: _Versions
    references: list[dict[str, str]]
    package_name: str

    @property
    def affected_text(self) -> str:
        return _code(self.affected) if self.affected else "not stated"

    @property
    def remedy(self) -> str:
        return f"Upgrade to {self.fixed_in} or later." if self.fixed_in else "No fixed release yet."


def draft(report: Mapping[str, Any], config: Config, now: datetime) -> Advisory:
    """The advisory of `report` (a `reports` row as a dict), as of `now`."""
    facts = _facts(report, config, now)
    return Advisory(
        facts.ident, _markdown(facts, config), _osv(facts, config), _gaps(facts, config)
    )


def _facts(report: Mapping[str, Any], config: Config, now: datetime) -> _Facts:
    published = _published(report, config, now)
    cves = cve_ids(report)
    return _Facts(
        ident=advisory_id(report, config),
        title=clean_header_text(str(report.get("title") or ""), 200) or "Security issue",
        affected=report.get("affected") or None,
        fixed_in=report.get("fixed_in") or None,
        cves=cves,
        severity=report.get("severity") or None,
        vector=report.get("cvss") or None,
        score=report.get("cvss_score"),
        credit=reporter_credit(report),
        published=published,
        modified=max(now, published),
        versions=_versions(report.get("affected") or None, report.get("fixed_in") or None),
        references=_references(report, config, cves),
        package_name=config.package.name or config.project.name,
    )


def _references(report: Mapping[str, Any], config: Config, cves: list[str]) -> list[dict[str, str]]:
    references: list[dict[str, str]] = []
    url = advisory_url(report, config)
    if url:
        references.append({"type": "ADVISORY", "url": url})
    references += [
        {"type": "ADVISORY", "url": f"https://nvd.nist.gov/vuln/detail/{cve}"} for cve in cves
    ]
    if config.package.repository:
        references.append({"type": "PACKAGE", "url": config.package.repository})
    return references


def _gaps(facts: _Facts, config: Config) -> tuple[str, ...]:
    """What a maintainer should fill in before publishing, in the order the draft meets them."""
    gaps = list(facts.versions.gaps)
    if not config.package.ecosystem:
        gaps.append("package.ecosystem is not set: the OSV record names no affected package")
    if not facts.severity and not facts.vector:
        gaps.append("no severity (/severity) and no CVSS vector (/cvss)")
    if facts.credit.kind == NONE:
        gaps.append('the reporter stated no credit preference: the draft says "Reported privately"')
    return tuple(gaps)


def _osv(facts: _Facts, config: Config) -> dict[str, Any]:
    """The OSV record (schema OSV_SCHEMA_VERSION)."""
    record: dict[str, Any] = {
        "schema_version": OSV_SCHEMA_VERSION,
        "id": facts.ident,
        "modified": rfc3339(facts.modified),
        "published": rfc3339(facts.published),
    }
    if facts.cves:
        record["aliases"] = facts.cves
    record["summary"] = clean_header_text(facts.title, 120)
    record["details"] = "\n\n".join(
        [
            _sentence(markdown_text(facts.title)),
            f"Affected versions: {facts.affected_text}. {facts.remedy}",
            _credit_sentence(facts.credit),
        ]
    )
    cvss_type = _cvss_type(facts.vector) if facts.vector else None
    if facts.vector and cvss_type:
        record["severity"] = [{"type": cvss_type, "score": facts.vector}]
    if config.package.ecosystem:
        entry: dict[str, Any] = {
            "package": {"ecosystem": config.package.ecosystem, "name": facts.package_name}
        }
        if facts.versions.events:
            entry["ranges"] = [{"type": "ECOSYSTEM", "events": facts.versions.events}]
        record["affected"] = [entry]
    if facts.references:
        record["references"] = facts.references
    if facts.credit.kind == NAME and facts.credit.name:
        record["credits"] = [{"name": facts.credit.name, "type": "FINDER"}]
    specific: dict[str, Any] = {}
    if facts.severity:
        specific["severity"] = str(facts.severity).upper()
    if facts.versions.unparsed:
        specific["affected_versions"] = facts.versions.unparsed
    if specific:
        record["database_specific"] = specific
    return record


def _severity_text(facts: _Facts) -> str:
    """ "High, CVSS 3.1 base score 7.5 (`CVSS:3.1/...`)", or "not rated"."""
    text = str(facts.severity).capitalize() if facts.severity else ""
    if facts.vector:
        version = facts.vector.split("/", 1)[0].removeprefix("CVSS:")
        score = facts.score
        scored = f"CVSS {version} base score {score}" if score is not None else f"CVSS {version}"
        text = f"{text}, {scored}" if text else scored
        text += f" ({_code(facts.vector)})"
    return text or "not rated"


def _markdown(facts: _Facts, config: Config) -> str:
    """The advisory for people, with a placeholder where the description goes."""
    ecosystem = config.package.ecosystem
    facts_list = [
        f"- **Package:** {markdown_text(facts.package_name)}"
        + (f" ({markdown_text(ecosystem)})" if ecosystem else ""),
        f"- **Affected versions:** {facts.affected_text}",
        f"- **Fixed in:** {_code(facts.fixed_in) if facts.fixed_in else 'not yet'}",
        f"- **Severity:** {_severity_text(facts)}",
    ]
    if facts.cves:
        facts_list.append(f"- **CVE:** {', '.join(facts.cves)}")
    day = facts.published.astimezone(config.project.timezone).date().isoformat()
    facts_list.append(f"- **Published:** {day}")
    lines = [
        f"# {facts.ident}: {markdown_text(facts.title)}",
        "",
        *facts_list,
        "",
        "## Summary",
        "",
        _sentence(markdown_text(facts.title)),
        "",
        "## Details",
        "",
        "<!-- Describe the vulnerability, its impact, and how to tell whether a system is"
        " affected. -->",
        "",
        "## Remediation",
        "",
        facts.remedy,
        "",
        "## Credit",
        "",
        _credit_sentence(facts.credit),
    ]
    if facts.references:
        lines += ["", "## References", "", *(f"- <{r['url']}>" for r in facts.references)]
    return "\n".join(lines) + "\n"

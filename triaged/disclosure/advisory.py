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
from triaged.core.versions import parse_range
from triaged.disclosure.credit import ANONYMOUS, NAME, NONE, Credit, reporter_credit
from triaged.mail.parse import clean_header_text

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


def draft(report: Mapping[str, Any], config: Config, now: datetime) -> Advisory:
    """The advisory of `report` (a `reports` row as a dict), as of `now`."""
    ident = advisory_id(report, config)
    title = clean_header_text(str(report.get("title") or ""), 200) or "Security issue"
    summary = clean_header_text(title, 120)
    affected = report.get("affected") or None
    fixed_in = report.get("fixed_in") or None
    cves = cve_ids(report)
    severity = report.get("severity") or None
    vector = report.get("cvss") or None
    score = report.get("cvss_score")
    credit = reporter_credit(report)
    published = _published(report, config, now)
    modified = max(now, published)
    versions = _versions(affected, fixed_in)
    gaps = list(versions.gaps)

    references: list[dict[str, str]] = []
    url = advisory_url(report, config)
    if url:
        references.append({"type": "ADVISORY", "url": url})
    references += [
        {"type": "ADVISORY", "url": f"https://nvd.nist.gov/vuln/detail/{cve}"} for cve in cves
    ]
    if config.package.repository:
        references.append({"type": "PACKAGE", "url": config.package.repository})

    package_name = config.package.name or config.project.name
    affected_text = _code(affected) if affected else "not stated"
    remedy = f"Upgrade to {fixed_in} or later." if fixed_in else "No fixed release yet."
    details = "\n\n".join(
        [
            _sentence(markdown_text(title)),
            f"Affected versions: {affected_text}. {remedy}",
            _credit_sentence(credit),
        ]
    )

    record: dict[str, Any] = {
        "schema_version": OSV_SCHEMA_VERSION,
        "id": ident,
        "modified": rfc3339(modified),
        "published": rfc3339(published),
    }
    if cves:
        record["aliases"] = cves
    record["summary"] = summary
    record["details"] = details
    cvss_type = _cvss_type(vector) if vector else None
    if vector and cvss_type:
        record["severity"] = [{"type": cvss_type, "score": vector}]
    if config.package.ecosystem:
        entry: dict[str, Any] = {
            "package": {"ecosystem": config.package.ecosystem, "name": package_name}
        }
        if versions.events:
            entry["ranges"] = [{"type": "ECOSYSTEM", "events": versions.events}]
        record["affected"] = [entry]
    else:
        gaps.append("package.ecosystem is not set: the OSV record names no affected package")
    if references:
        record["references"] = references
    if credit.kind == NAME and credit.name:
        record["credits"] = [{"name": credit.name, "type": "FINDER"}]
    specific: dict[str, Any] = {}
    if severity:
        specific["severity"] = str(severity).upper()
    if versions.unparsed:
        specific["affected_versions"] = versions.unparsed
    if specific:
        record["database_specific"] = specific

    if not severity and not vector:
        gaps.append("no severity (/severity) and no CVSS vector (/cvss)")
    if credit.kind == NONE:
        gaps.append('the reporter stated no credit preference: the draft says "Reported privately"')

    severity_text = str(severity).capitalize() if severity else ""
    if vector:
        version = vector.split("/", 1)[0].removeprefix("CVSS:")
        scored = f"CVSS {version} base score {score}" if score is not None else f"CVSS {version}"
        severity_text = f"{severity_text}, {scored}" if severity_text else scored
        severity_text += f" ({_code(vector)})"
    facts = [
        f"- **Package:** {markdown_text(package_name)}"
        + (f" ({markdown_text(config.package.ecosystem)})" if config.package.ecosystem else ""),
        f"- **Affected versions:** {affected_text}",
        f"- **Fixed in:** {_code(fixed_in) if fixed_in else 'not yet'}",
        f"- **Severity:** {severity_text or 'not rated'}",
    ]
    if cves:
        facts.append(f"- **CVE:** {', '.join(cves)}")
    facts.append(
        f"- **Published:** {published.astimezone(config.project.timezone).date().isoformat()}"
    )
    lines = [
        f"# {ident}: {markdown_text(title)}",
        "",
        *facts,
        "",
        "## Summary",
        "",
        _sentence(markdown_text(title)),
        "",
        "## Details",
        "",
        "<!-- Describe the vulnerability, its impact, and how to tell whether a system is"
        " affected. -->",
        "",
        "## Remediation",
        "",
        remedy,
        "",
        "## Credit",
        "",
        _credit_sentence(credit),
    ]
    if references:
        lines += ["", "## References", "", *(f"- <{r['url']}>" for r in references)]
    return Advisory(ident, "\n".join(lines) + "\n", record, tuple(gaps))

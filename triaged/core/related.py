"""Related reports: what a report names, and which other reports name the same. Pure.

A new report's notification lists "possibly related" reports, open or recent, that share
with it the sender, the subject (normalised: no tag, no "Re:", any case), a CVE or CWE ID, or
a URL path or file name found in its text; at most `LIMIT`, each with the reason it is listed.

A report's `terms` are strings "kind:value" (stored in `report_terms`, triaged/store/terms.py):
    sender:jane@example.net    subject:xss in the search box    cve:CVE-2026-1234
    cwe:CWE-79                 path:/api/v1/upload              file:importer.py
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

LIMIT = 3
MAX_TERMS = 50
# Reasons in the order they count: a shared sender says more than a shared weakness class.
KINDS = ("sender", "cve", "subject", "path", "file", "cwe")

_TAG = re.compile(r"\[security report #[a-z0-9]+\]", re.IGNORECASE)
_REPLY_PREFIX = re.compile(r"^\s*(?:(?:re|fwd?|aw|sv|tr|antw)\s*(?:\[\d+\])?\s*:\s*)+", re.I)
_CVE = re.compile(r"\bCVE-\d{4}-\d{4,19}\b", re.IGNORECASE)
_CWE = re.compile(r"\bCWE-(\d{1,5})\b", re.IGNORECASE)
_URL = re.compile(r"\bhttps?://[^\s/<>\"')]+(/[^\s<>\"'()?#]*)", re.IGNORECASE)
# A file name with an extension of source code, configuration or a document people attach.
_FILE = re.compile(
    r"(?<![\w.-])([\w][\w.-]{0,100}\.(?:c|h|cc|cpp|hpp|py|js|mjs|ts|tsx|jsx|go|rs|java|kt|rb|php"
    r"|pl|sh|lua|swift|cs|scala|ex|exs|erl|hs|ml|sql|html|xml|json|yaml|yml|toml|ini|cfg|conf))"
    r"(?![\w])",
    re.IGNORECASE,
)
_SUBJECT_MIN = 8


@dataclass(frozen=True)
class Related:
    report_id: str
    title: str
    state: str
    reason: str


def normalised_subject(subject: str) -> str:
    """The subject as two reports about one thing share it: no tag of ours, no reply or
    forward prefixes, any case, single spaces."""
    text = _TAG.sub(" ", subject)
    text = _REPLY_PREFIX.sub("", text)
    return " ".join(text.lower().split()).strip(" .:-")


def terms(sender: str | None, subject: str, text: str) -> list[str]:
    """What a report names, as terms (at most MAX_TERMS, the sender and subject first)."""
    found: list[str] = []
    if sender:
        found.append(f"sender:{sender.lower()}")
    normal = normalised_subject(subject)
    if len(normal) >= _SUBJECT_MIN:
        found.append(f"subject:{normal}")
    body = f"{subject}\n{text}"
    found += [f"cve:{m.upper()}" for m in _CVE.findall(body)]
    found += [f"cwe:CWE-{int(m)}" for m in _CWE.findall(body)]
    for path in _URL.findall(body):
        path = path.rstrip(".,;:!")
        if len(path) > 1:
            found.append(f"path:{path[:200]}")
    found += [f"file:{name.lower()}" for name in _FILE.findall(body)]
    return list(dict.fromkeys(found))[:MAX_TERMS]


def cve_term(cve: str) -> str:
    return f"cve:{cve.upper()}"


def reason(term: str) -> str:
    """Why a shared term makes two reports possibly related, as the notification says it."""
    kind, _, value = term.partition(":")
    return {
        "sender": "same sender",
        "subject": "same subject",
        "cve": f"names {value} too",
        "cwe": f"names {value} too",
        "path": f"names the URL path {value} too",
        "file": f"names the file {value} too",
    }.get(kind, "shares a detail")


def best(shared: Iterable[tuple[str, str, str, str]]) -> list[Related]:
    """From (report_id, title, state, term) rows of the terms other reports share with a new
    one, newest report first: at most LIMIT reports, each with its strongest reason."""
    chosen: dict[str, tuple[int, Related]] = {}
    order: list[str] = []
    for report_id, title, state, term in shared:
        kind = term.partition(":")[0]
        rank = KINDS.index(kind) if kind in KINDS else len(KINDS)
        if report_id not in chosen:
            order.append(report_id)
        elif chosen[report_id][0] <= rank:
            continue
        chosen[report_id] = (rank, Related(report_id, title, state, reason(term)))
    ranked = sorted(order, key=lambda r: (chosen[r][0], order.index(r)))
    return [chosen[r][1] for r in ranked[:LIMIT]]

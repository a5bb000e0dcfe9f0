"""Version ranges as maintainers write them (`/affects`), and the supported version lines. Pure.

An affected range is read when it is one of the common forms, with the bounds separated by
spaces, commas, `&&` or `and`:

    <X          every version before X         OSV: introduced "0", fixed X
    <=X         up to and including X          OSV: introduced "0", last_affected X
    >=A         A and every later version      OSV: introduced A
    >=A <B      from A, before B               OSV: introduced A, fixed B
    >=A <=B     from A up to and including B   OSV: introduced A, last_affected B
    =X, X       that one version               OSV: introduced X, last_affected X
    *, all      every version                  OSV: introduced "0"

Anything else (`>X`, several ranges, prose) is not a `Range`: callers keep it as text.

A supported line is `1.0.x` (or `1.0.*`: every 1.0 release), `2.x`, or one of the ranges
above (`>=2.0`). Versions compare by their numeric parts; a letter part after a number is a
pre-release (`1.0rc1` comes before `1.0`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_VERSION = r"v?\d[A-Za-z0-9.+_~-]*"
_BOUND = re.compile(rf"\s*(>=|=>|<=|=<|==|=|<|>)?\s*({_VERSION})\s*")
_SEPARATOR = re.compile(r"\s*(?:,|&&|\band\b)?\s*", re.IGNORECASE)
_LINE = re.compile(r"^\s*v?(\d+(?:\.\d+)*)\.[x*]\s*$", re.IGNORECASE)
_EVERY = frozenset({"*", "all", "all versions"})

Key = tuple[tuple[int, int, str], ...]


@dataclass(frozen=True)
class Range:
    """Affected versions: from `introduced` ("0": the first release) up to `fixed` (not
    affected) or `last_affected` (affected), or with no end."""

    introduced: str
    fixed: str | None = None
    last_affected: str | None = None


def key(version: str) -> Key:
    """A sort key: numbers compare as numbers; a letter part marks a pre-release."""
    parts: list[tuple[int, int, str]] = []
    for token in [*re.findall(r"\d+|[A-Za-z]+", version.lstrip("vV")), None]:
        if token is None or not token.isdigit():
            # Trailing zeros say nothing: 1.0.0 is 1.0, and 1.0.0rc1 is 1.0rc1.
            while parts and parts[-1] == (2, 0, ""):
                parts.pop()
        if token is None:
            # The end sorts after a letter part (1.0rc1 < 1.0) and before a number.
            parts.append((1, 0, ""))
        elif token.isdigit():
            parts.append((2, int(token), ""))
        else:
            parts.append((0, 0, token.lower()))
    return tuple(parts)


def parse_range(text: str | None) -> Range | None:
    """The range `text` describes, or None when it is not one of the forms above."""
    if text is None or not text.strip():
        return None
    if text.strip().lower() in _EVERY:
        return Range("0")
    bounds: list[tuple[str, str]] = []
    pos, end = 0, len(text)
    while pos < end:
        if bounds:
            separator = _SEPARATOR.match(text, pos)
            assert separator is not None  # it matches the empty string too
            pos = separator.end()
        match = _BOUND.match(text, pos)
        # A line (1.0.x) is not a version: as a range it is only read by `_interval`.
        if match is None or match.end() == pos or _LINE.match(match.group(2)):
            return None
        bounds.append((match.group(1) or "=", match.group(2)))
        pos = match.end()
    return _from_bounds(bounds)


def _from_bounds(bounds: list[tuple[str, str]]) -> Range | None:
    lower = [v for op, v in bounds if op in (">=", "=>")]
    below = [v for op, v in bounds if op == "<"]
    upto = [v for op, v in bounds if op in ("<=", "=<")]
    exact = [v for op, v in bounds if op in ("=", "==")]
    if any(op == ">" for op, _ in bounds) or len(bounds) > 2:
        return None
    if exact:
        return Range(exact[0], last_affected=exact[0]) if len(bounds) == 1 else None
    if len(lower) > 1 or len(below) + len(upto) > 1:
        return None
    introduced = lower[0] if lower else "0"
    if below:
        if introduced != "0" and key(below[0]) <= key(introduced):
            return None
        return Range(introduced, fixed=below[0])
    if upto:
        if introduced != "0" and key(upto[0]) < key(introduced):
            return None
        return Range(introduced, last_affected=upto[0])
    return Range(introduced)


@dataclass(frozen=True)
class _Interval:
    low: Key | None  # None: from the first version
    high: Key | None  # None: no end
    high_included: bool

    def reaches(self, point: Key | None) -> bool:
        """Whether a version at `point` (None: the very first) is at or before the end."""
        if self.high is None:
            return True
        if point is None:
            return True
        return point <= self.high if self.high_included else point < self.high


def _interval(text: str) -> _Interval | None:
    line = _LINE.match(text)
    if line is not None:
        numbers = [int(n) for n in line.group(1).split(".")]
        following = [*numbers[:-1], numbers[-1] + 1]
        return _Interval(
            key(".".join(map(str, numbers))), key(".".join(map(str, following))), False
        )
    parsed = parse_range(text)
    if parsed is None:
        return None
    low = None if parsed.introduced == "0" else key(parsed.introduced)
    if parsed.fixed is not None:
        return _Interval(low, key(parsed.fixed), False)
    if parsed.last_affected is not None:
        return _Interval(low, key(parsed.last_affected), True)
    return _Interval(low, None, False)


def check_line(text: str) -> str:
    """Validates one supported line (for the config); raises ValueError with the forms."""
    if _interval(text) is None:
        raise ValueError(
            f"{text!r} is not a version line (1.0.x, 2.x) or a range (>=2.0, >=1.4 <2)"
        )
    return text.strip()


def touches_only_unsupported(affected: str | None, supported: Sequence[str]) -> bool:
    """True when `affected` is read and overlaps none of the `supported` lines.

    False when nothing is known: no supported lines listed, or an affected text that is not
    a line or a range (a flag must never be raised on a guess)."""
    if not supported or affected is None:
        return False
    versions = _interval(affected)
    if versions is None:
        return False
    for line in supported:
        other = _interval(line)
        if other is None:
            return False
        if versions.reaches(other.low) and other.reaches(versions.low):
            return False
    return True

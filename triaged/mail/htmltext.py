"""HTML to readable plain text, offline: what a sender's HTML part says, as a person reads it.

BeautifulSoup builds the tree with the standard library's `html.parser` (pure Python: no C
parser ever sees a hostile sender's bytes, and no nesting depth loses text), and `to_text` walks
it without recursion. Paragraphs, headings, list items, table rows and quotes become lines;
links are shown with their URL (`text <https://...>`, http, https, ftp and mailto only);
images only by their alt text. `<script>`, `<style>`, `<template>`, the document head, embedded
objects and anything hidden (the `hidden` attribute, `display: none`, `visibility: hidden`,
`mso-hide: all`) are dropped. Nothing is fetched: no URL is ever opened. No I/O, no logging.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning, XMLParsedAsHTMLWarning
from bs4.element import NavigableString, PageElement, PreformattedString, Tag

from triaged.core.text import CONTROL_CHARS, LINE_AND_BIDI_CHARS

__all__ = ["MAX_HTML_CHARS", "to_text"]

# The most HTML converted (characters): html.parser builds about 100,000 tags a second, so a
# hostile part made of nothing but tags costs at most a few seconds; the rest is cut.
MAX_HTML_CHARS = 1_000_000
MAX_URL = 2000

# Elements whose content is never shown: code, styling, metadata and embedded objects.
_DROPPED = frozenset(
    (
        "script",
        "style",
        "template",
        "head",
        "title",
        "meta",
        "link",
        "iframe",
        "frame",
        "frameset",
        "object",
        "embed",
        "applet",
        "noembed",
        "canvas",
        "svg",
        "math",
        "audio",
        "video",
        "select",
    )
)
# Elements that stand apart from the text around them: a paragraph break (2) or a line (1).
_BLOCKS = {
    **dict.fromkeys(("p", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote"), 2),
    **dict.fromkeys(("table", "dl", "hr", "figure", "address", "fieldset"), 2),
    **dict.fromkeys(("div", "section", "article", "header", "footer", "main", "nav"), 1),
    **dict.fromkeys(("aside", "center", "form", "details", "summary", "figcaption"), 1),
    **dict.fromkeys(("li", "tr", "dt", "dd", "caption", "legend", "body", "html"), 1),
}
_HIDDEN_STYLE = re.compile(
    r"(?:^|;)\s*(?:display\s*:\s*none|visibility\s*:\s*(?:hidden|collapse)|mso-hide\s*:\s*all)"
    r"\s*(?:!\s*important\s*)?(?:;|$)",
    re.IGNORECASE,
)
_SPACE = re.compile(r"[ \t\n\r\f\v]+")  # HTML's white space; a no-break space stays
_URL_JUNK = re.compile(f"[\\s{CONTROL_CHARS}{LINE_AND_BIDI_CHARS}<>]+")
_SHOWN_SCHEMES = ("http://", "https://", "ftp://", "mailto:")


@dataclass
class _Prefix:
    """What starts each line inside a quote or a list item: `first` once, then `rest`."""

    first: str
    rest: str
    used: bool = False

    def take(self) -> str:
        if self.used:
            return self.rest
        self.used = True
        return self.first


@dataclass
class _Writer:
    """Lines of text with paragraph breaks, quote marks and list indents; whitespace collapsed
    as a browser does, except inside <pre>."""

    limit: int
    lines: list[str] = field(default_factory=list)
    line: str | None = None  # the line being written (None: none open)
    breaks: int = 0  # 1: the next text starts a new line; 2: after a blank line
    space: bool = False  # a space is owed before the next text on this line
    separator: str = ""  # owed before the next text on this line (between table cells)
    prefixes: list[_Prefix] = field(default_factory=list)
    size: int = 0

    @property
    def full(self) -> bool:
        return self.size >= self.limit

    def want(self, breaks: int) -> None:
        self.breaks = max(self.breaks, breaks)

    def _end_line(self) -> None:
        if self.line is not None:
            self.lines.append(self.line.rstrip())
            self.line = None

    def _open_line(self) -> None:
        if self.breaks >= 2 and self.lines and self.lines[-1].strip(" >"):
            self.lines.append("".join(p.rest for p in self.prefixes if p.used).rstrip())
        self.line = "".join(p.take() for p in self.prefixes)
        self.breaks = 0
        self.space = False
        self.separator = ""

    def _put(self, text: str) -> None:
        if self.breaks and self.line is not None:
            self._end_line()
        if self.line is None:
            self._open_line()
        elif self.separator:
            self.line += self.separator
        elif self.space:
            self.line += " "
        self.separator = ""
        self.space = False
        assert self.line is not None
        self.line += text
        self.size += len(text)

    def text(self, value: str, preformatted: bool) -> None:
        if preformatted:
            for index, piece in enumerate(value.replace("\r\n", "\n").split("\n")):
                if index:
                    self.line_break()
                if piece:
                    self._put(piece)
            return
        words = _SPACE.sub(" ", value)
        if words.startswith(" ") and self.line is not None:
            self.space = True
        words = words.strip(" ")
        if words:
            self._put(words)
            self.space = value[-1:].isspace() and value[-1:] != "\xa0"

    def line_break(self) -> None:
        """<br>: ends the line; a second one in a row leaves an empty line."""
        if self.line is None:
            self.lines.append("".join(p.take() for p in self.prefixes).rstrip())
        else:
            self._end_line()
        self.breaks = 0

    def result(self) -> str:
        self._end_line()
        text = "\n".join(self.lines)
        return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


def _hidden(tag: Tag) -> bool:
    if tag.has_attr("hidden"):
        return True
    style = tag.get("style")
    return isinstance(style, str) and bool(_HIDDEN_STYLE.search(style))


def _shown_url(tag: Tag) -> str | None:
    href = tag.get("href")
    if not isinstance(href, str):
        return None
    url = _URL_JUNK.sub("", href)
    if not url.lower().startswith(_SHOWN_SCHEMES) or len(url) > MAX_URL:
        return None
    return url


def _same(text: str, url: str) -> bool:
    """True when a link's text already is its URL (so it is not shown twice)."""
    text = " ".join(text.split()).strip("<>")
    bare = url.removeprefix("mailto:")
    return text in (url, bare) or text.rstrip("/") == url.rstrip("/")


_ENTER, _LEAVE = 0, 1


def to_text(html: str, max_chars: int = MAX_HTML_CHARS) -> str:
    """The readable text of an HTML document or fragment; never raises on any input string.

    At most MAX_HTML_CHARS characters of `html` are read and at most `max_chars` written.
    """
    try:
        return _convert(html[:MAX_HTML_CHARS], max_chars)
    except Exception:  # the converter must never stop intake: the raw message is kept
        return ""


def _convert(html: str, max_chars: int) -> str:
    with warnings.catch_warnings():
        # A report may well be a short text that looks like a URL or a file name, or XHTML.
        warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(html, "html.parser")
    out = _Writer(max_chars)
    preformatted = 0
    # Per open <ol>/<ul>: the next item number (0 for a bulleted list).
    lists: list[int] = []
    stack: list[tuple[int, PageElement]] = [(_ENTER, child) for child in reversed(soup.contents)]
    while stack and not out.full:
        phase, node = stack.pop()
        if isinstance(node, NavigableString):
            # Comments, CDATA, doctypes and processing instructions are not text.
            if not isinstance(node, PreformattedString):
                out.text(str(node), preformatted > 0)
            continue
        if not isinstance(node, Tag):
            continue
        name = (node.name or "").lower()
        if phase == _LEAVE:
            preformatted -= name == "pre"
            _leave(out, node, name, lists)
            continue
        if name in _DROPPED or _hidden(node):
            continue
        preformatted += name == "pre"
        _enter(out, node, name, lists)
        stack.append((_LEAVE, node))
        stack.extend((_ENTER, child) for child in reversed(node.contents))
    return out.result()[:max_chars]


def _enter(out: _Writer, node: Tag, name: str, lists: list[int]) -> None:
    if name in _BLOCKS:
        out.want(_BLOCKS[name])
    if name == "br":
        out.line_break()
    elif name == "hr":
        out.text("-----", False)
        out.want(2)
    elif name == "img":
        alt = node.get("alt")
        if isinstance(alt, str) and alt.strip():
            out.text(f"[image: {' '.join(alt.split())}]", False)
    elif name in ("ul", "ol"):
        # A nested list is one line apart from its item, not a paragraph.
        out.want(1 if lists else 2)
        lists.append(1 if name == "ol" else 0)
    elif name == "li":
        number = lists[-1] if lists else 0
        marker = f"{number}. " if number else "- "
        if lists and number:
            lists[-1] += 1
        out.prefixes.append(_Prefix("  " + marker, "  " + " " * len(marker)))
    elif name == "blockquote":
        out.prefixes.append(_Prefix("> ", "> "))
    elif name in ("td", "th"):
        previous = node.find_previous_sibling(("td", "th"))
        if previous is not None:
            out.separator = " | "


def _leave(out: _Writer, node: Tag, name: str, lists: list[int]) -> None:
    if name == "a":
        url = _shown_url(node)
        if url is not None and not _same(node.get_text(" "), url):
            out.text(f" <{url}>", False)
    elif name in ("ul", "ol"):
        if lists:
            lists.pop()
        out.want(1 if lists else 2)
    elif name in ("li", "blockquote") and out.prefixes:
        out.prefixes.pop()
    if name in _BLOCKS:
        out.want(_BLOCKS[name])

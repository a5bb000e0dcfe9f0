"""HTML to text (triaged/mail/htmltext.py) and where parse() uses it."""

from __future__ import annotations

import base64
import hashlib
import http.server
import threading
import urllib.request
from collections.abc import Iterator
from typing import ClassVar

import pytest

from triaged.config import LimitsConfig
from triaged.mail.htmltext import to_text
from triaged.mail.parse import attachment_data, parse

LIMITS = LimitsConfig(
    max_message_size=1_000_000,
    max_header_bytes=65536,
    max_headers=200,
    max_mime_depth=20,
    max_parts=100,
    max_text_chars=100_000,
    receipts_per_sender_per_day=1,
)


def test_paragraphs_lists_and_links_with_their_url() -> None:
    html = (
        "<p>Hello <b>team</b>,</p><p>an <a href='https://example.net/poc'>XSS</a> in the"
        " login form.</p><ul><li>step one</li><li>step two<ol><li>a</li><li>b</li></ol></li>"
        "</ul><p>Line<br>break &amp; &lt;tag&gt;</p>"
    )
    assert to_text(html) == (
        "Hello team,\n\n"
        "an XSS <https://example.net/poc> in the login form.\n\n"
        "  - step one\n"
        "  - step two\n"
        "      1. a\n"
        "      2. b\n\n"
        "Line\n"
        "break & <tag>"
    )


def test_script_style_and_hidden_elements_are_dropped() -> None:
    html = (
        "<html><head><title>TITLE</title><style>p { color: red }</style></head><body>"
        "<script>alert('SCRIPT TEXT')</script><p>visible</p>"
        "<div style='display:none'>NONE</div><span hidden>ATTR</span>"
        "<p style='color: red; visibility : hidden !important'>VIS</p>"
        "<p style='mso-hide:all'>MSO</p><template>TEMPLATE</template>"
        "<!-- COMMENT --><noscript>shown without scripts</noscript></body></html>"
    )
    text = to_text(html)
    assert text == "visible\n\nshown without scripts"


def test_quotes_tables_pre_and_images() -> None:
    html = (
        "<blockquote>quoted<p>again</p></blockquote>"
        "<table><tr><th>version</th><th>affected</th></tr><tr><td>1.2</td><td>yes</td></tr>"
        "</table><pre>  indented\n\n  code</pre><img src='https://t.example/p.gif' alt='diagram'>"
        "<img src='https://t.example/pixel.gif'>"
    )
    assert to_text(html) == (
        "> quoted\n>\n> again\n\n"
        "version | affected\n1.2 | yes\n\n"
        "  indented\n\n  code\n\n"
        "[image: diagram]"
    )


@pytest.mark.parametrize(
    ("href", "shown"),
    [
        ("javascript:alert(1)", False),
        ("data:text/html,<script>x</script>", False),
        ("cid:part1@example.net", False),
        ("mailto:jane@example.net", True),
        ("https://example.net/a\r\nb", True),
    ],
)
def test_only_web_and_mail_links_are_shown(href: str, shown: bool) -> None:
    text = to_text(f'<a href="{href}">here</a>')
    assert ("<" in text) is shown
    assert "\r" not in text and "\n" not in text


def test_a_link_whose_text_is_its_url_is_shown_once() -> None:
    assert to_text('<a href="https://example.net/">https://example.net/</a>') == (
        "https://example.net/"
    )


def test_deep_nesting_loses_no_text() -> None:
    depth = 20_000
    html = "<p>before</p>" + "<div>" * depth + "deep" + "</div>" * depth + "<p>after</p>"
    assert to_text(html).split() == ["before", "deep", "after"]


def test_output_is_capped() -> None:
    assert len(to_text("<p>" + "word " * 10_000 + "</p>", max_chars=100)) == 100


class _Counter(http.server.BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<p>FETCHED</p>")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def web_server() -> Iterator[str]:
    _Counter.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Counter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_nothing_is_fetched(web_server: str) -> None:
    html = (
        f"<html><head><link rel=stylesheet href='{web_server}/a.css'>"
        f"<style>@import url({web_server}/b.css);</style>"
        f"<meta http-equiv=refresh content='0; url={web_server}/c'>"
        f"<base href='{web_server}/'></head><body>"
        f"<img src='{web_server}/d.png' alt='pic'><iframe src='{web_server}/e'></iframe>"
        f"<script src='{web_server}/f.js'></script><object data='{web_server}/g'></object>"
        f"<p style='background: url({web_server}/h.png)'>text</p></body></html>"
    )
    assert to_text(html) == "[image: pic]\n\ntext"
    # A request the converter made would have arrived by now: the server answers at once.
    with urllib.request.urlopen(f"{web_server}/probe", timeout=5):
        pass
    assert _Counter.hits == ["/probe"]


# --- parse() ----------------------------------------------------------------------------------


def _mail(content_type: str, body: str, *extra: str) -> bytes:
    head = "\r\n".join(
        ("From: Jane <jane@example.net>", "Subject: s", f"Content-Type: {content_type}", *extra)
    )
    return f"{head}\r\n\r\n{body}".encode()


def _alternative(plain: str, html: str) -> bytes:
    return _mail(
        "multipart/alternative; boundary=b",
        f"--b\r\nContent-Type: text/plain\r\n\r\n{plain}\r\n"
        f"--b\r\nContent-Type: text/html\r\n\r\n{html}\r\n--b--\r\n",
    )


def test_html_only_message_gets_its_text_converted() -> None:
    parsed = parse(_mail("text/html; charset=utf-8", "<p>Gr\u00fc\u00dfe <b>team</b></p>"), LIMITS)
    assert (parsed.text, parsed.text_from_html) == ("Grüße team", True)


def test_alternative_keeps_preferring_text_plain() -> None:
    parsed = parse(_alternative("the plain text", "<p>the HTML</p>"), LIMITS)
    assert (parsed.text, parsed.text_from_html) == ("the plain text", False)


def test_blank_text_plain_is_not_usable() -> None:
    parsed = parse(_alternative("  \r\n ", "<p>the HTML</p>"), LIMITS)
    assert (parsed.text, parsed.text_from_html, parsed.text_is_first_part) == (
        "the HTML",
        True,
        False,
    )


def test_html_attachments_and_forwarded_html_are_not_the_text() -> None:
    raw = _mail(
        "multipart/mixed; boundary=m",
        "--m\r\nContent-Type: text/html\r\nContent-Disposition: attachment; filename=x.html\r\n"
        "\r\n<p>ATTACHED</p>\r\n"
        "--m\r\nContent-Type: message/rfc822\r\n\r\n"
        "Subject: inner\r\nContent-Type: text/html\r\n\r\n<p>FORWARDED</p>\r\n--m--\r\n",
    )
    parsed = parse(raw, LIMITS)
    assert parsed.text == "" and not parsed.text_from_html
    assert [a.filename for a in parsed.attachments] == ["x.html", ""]


def test_attachment_hashes_are_of_the_bytes_and_attachment_data_gives_them() -> None:
    payload = bytes(range(256)) * 3
    encoded = base64.encodebytes(payload).decode().replace("\n", "\r\n")
    raw = _mail(
        "multipart/mixed; boundary=m",
        "--m\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        "--m\r\nContent-Type: application/octet-stream\r\n"
        'Content-Disposition: attachment; filename="poc.bin"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{encoded}--m--\r\n",
    )
    parsed = parse(raw, LIMITS)
    (attachment,) = parsed.attachments
    assert attachment.size == len(payload)
    assert attachment.sha256 == hashlib.sha256(payload).hexdigest()
    assert attachment_data(raw, LIMITS) == [payload]

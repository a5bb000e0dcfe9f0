"""triaged.core.text: the one reader of addresses, on its own."""

from __future__ import annotations

import random

import pytest

from triaged.core.text import AddressList, Mailbox, address_list, parse_address, parse_domain


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("alice@example.org", "alice@example.org"),
        ("Alice@Example.ORG", "alice@example.org"),
        ("first.last+tag@mail.example.co.uk", "first.last+tag@mail.example.co.uk"),
        ("o'brien@example.ie", "o'brien@example.ie"),
        ("root@localhost", "root@localhost"),
        ("a" * 64 + "@example.org", "a" * 64 + "@example.org"),
        # Never repaired: whitespace anywhere, surrounding whitespace included.
        ("ali ce@example.org", None),
        ("johnsmith js18@example.net", None),
        (" alice@example.org", None),
        ("alice@example.org\n", None),
        ("alice\t@example.org", None),
        ("alice@ example.org", None),
        # Not well formed.
        ("", None),
        ("alice", None),
        ("@example.org", None),
        ("alice@", None),
        ("a@b@example.org", None),
        ("alice..x@example.org", None),
        (".alice@example.org", None),
        ("alice.@example.org", None),
        ('"alice"@example.org', None),
        ("alice(x)@example.org", None),
        ("<alice@example.org>", None),
        ("alice@example.org.", None),
        ("alice@-example.org", None),
        ("alice@example-.org", None),
        ("alice@exa_mple.org", None),
        ("alice@[192.0.2.1]", None),
        ("a" * 65 + "@example.org", None),
        ("a@" + "b" * 64 + ".org", None),
        ("a@" + ".".join(["b" * 60] * 5), None),
        # Not ASCII, and no lowercasing into ASCII: the Kelvin sign lowercases to "k".
        ("\u212aim@example.org", None),
        ("jürgen@example.de", None),
        ("alice@bücher.example", None),
    ],
)
def test_parse_address(text: str, expected: str | None) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Example.ORG", "example.org"),
        ("localhost", "localhost"),
        ("", None),
        ("example.org.", None),
        ("exa mple.org", None),
        ("@example.org", None),
        ("a@example.org", None),
        ("-x.example", None),
        ("\u212a.example", None),
    ],
)
def test_parse_domain(text: str, expected: str | None) -> None:
    assert parse_domain(text) == expected


def boxes(value: str) -> list[tuple[str, str, str | None]]:
    return [(b.name, b.spec, b.address) for b in address_list(value).mailboxes]


def test_mailboxes_of_an_address_list() -> None:
    assert boxes(
        '"Doe, Jane" <Jane@Example.org>, bob@example.org (Bob), undisclosed:;, '
        "Team: <c@example.org>, d@example.org;, <@relay.example:route@example.org>"
    ) == [
        ("Doe, Jane", "Jane@Example.org", "jane@example.org"),
        ("Bob", "bob@example.org", "bob@example.org"),
        ("", "c@example.org", "c@example.org"),
        ("", "d@example.org", "d@example.org"),
        ("", "@relay.example:route@example.org", "route@example.org"),
    ]


def test_a_mailbox_that_is_no_address_keeps_what_was_written() -> None:
    assert boxes("John Smith js18@example.net") == [("", "John Smith js18@example.net", None)]
    assert boxes("MAILER-DAEMON (Mail Delivery System)") == [
        ("Mail Delivery System", "MAILER-DAEMON", None)
    ]
    assert boxes("<>") == [("", "", None)]
    # A broken mailbox does not take its neighbours with it.
    assert boxes("Bad <a@b@c>, <x<y@example.org>, good@example.org") == [
        ("Bad", "a@b@c", None),
        ("", "x<y@example.org", None),
        ("", "good@example.org", "good@example.org"),
    ]


def test_encoded_words_are_atoms() -> None:
    # Specials inside an encoded word neither start a group nor end a mailbox.
    assert boxes("=?utf-8?q?Doe,_J:_x?= <j@example.org>") == [
        ("=?utf-8?q?Doe,_J:_x?=", "j@example.org", "j@example.org")
    ]
    # Nor does an encoded word become an address: it is split off undecoded.
    assert boxes("=?utf-8?q?boss=40example=2Eorg?=") == [
        ("", "=?utf-8?q?boss=40example=2Eorg?=", None)
    ]


@pytest.mark.parametrize(
    ("value", "single"),
    [
        ("Alice <alice@example.org>", "alice@example.org"),
        ("alice@example.org, Alice <ALICE@example.org>", "alice@example.org"),
        ("Team: <alice@example.org>;", "alice@example.org"),
        ("alice@example.org, bob@example.org", None),
        ("alice@example.org, not an address", None),
        ("", None),
        ("undisclosed-recipients:;", None),
        ("ali ce@example.org", None),
        # Broken around the mailboxes: unclosed quote, comment or group, stray ";".
        ('"Alice <alice@example.org>', None),
        ("Alice (x <alice@example.org>", None),
        ("ali:ce@example.org", None),
        ("alice@example.org;", None),
        ("A: B: <alice@example.org>;;", None),
    ],
)
def test_single(value: str, single: str | None) -> None:
    box = address_list(value).single()
    assert (box.address if box else None) == single


def test_single_is_the_first_mailbox() -> None:
    parsed = address_list("Alice <alice@example.org>, alice@example.org")
    assert parsed.single() == Mailbox("Alice", "alice@example.org", "alice@example.org")
    assert AddressList((), False).single() is None


def test_any_text_is_scanned_without_raising() -> None:
    rng = random.Random(12)
    alphabet = 'ab @.,;:<>()"\\=?_\t\r\n\x00é'
    for _ in range(5000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
        parsed = address_list(value)
        for box in parsed.mailboxes:
            assert box.address is None or box.address == parse_address(box.address)
    # Deep nesting is not recursion.
    assert address_list("(" * 100_000 + "a@example.org").single() is None
    assert address_list("<" * 100_000).single() is None

"""triaged.mail.openpgp against a real gpg, with throwaway keys (tests/pgp.py): reading
PGP/MIME, inline and clearsigned mail, keys from mail, sealing outgoing mail."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import pytest
from conftest import People
from helpers import MAINTAINERS, PROJECT, mail, make_config
from pgp import (
    clearsigned,
    inline,
    pgp_mime,
    signed_mime,
    text_entity,
    with_autocrypt,
    wrapped,
)

from triaged.config import LimitsConfig
from triaged.core.protection import BAD, GOOD, UNKNOWN_KEY
from triaged.mail import openpgp
from triaged.mail.openpgp import Keyring, Reader
from triaged.mail.parse import parse

REPORT = "The importer follows ../ in archive paths.\nSteps: unpack evil.tar.\n"


@pytest.fixture
def limits(tmp_dir: Path) -> LimitsConfig:
    return make_config(tmp_dir / "cfg").limits


@pytest.fixture
def keyring(tmp_dir: Path, people: People) -> Iterator[Keyring]:
    ring = Keyring(tmp_dir / "gnupg", PROJECT, protected=MAINTAINERS)
    secret = tmp_dir / "project.asc"
    secret.write_bytes(people.project.secret_key)
    ring.load_secret(secret)
    (tmp_dir / "keys").mkdir()
    (tmp_dir / "keys" / "alice.asc").write_bytes(people.alice.public_key)
    ring.load_public([str(tmp_dir / "keys" / "*.asc")])
    try:
        yield ring
    finally:
        ring.close()


def read(keyring: Keyring, limits: LimitsConfig, raw: bytes) -> openpgp.Opened:
    return Reader(keyring, limits).open(raw, parse(raw, limits))


# --- the keyring ------------------------------------------------------------------------------


def test_home_is_private_and_the_keys_are_loaded(
    tmp_dir: Path, keyring: Keyring, people: People
) -> None:
    assert (tmp_dir / "gnupg").stat().st_mode & 0o777 == 0o700
    assert keyring.project_fingerprint == people.project.fingerprint
    assert keyring.key_for("alice@example.org") == people.alice.fingerprint
    assert keyring.key_for("bob@example.org") is None
    assert "key " + people.project.fingerprint in keyring.self_test()


def test_generated_key_is_ed25519_for_the_project_address(tmp_dir: Path) -> None:
    armoured, fingerprint = openpgp.generate_key("Example security", PROJECT)
    assert armoured.startswith("-----BEGIN PGP PRIVATE KEY BLOCK-----")
    ring = Keyring(tmp_dir / "g2", PROJECT)
    try:
        path = tmp_dir / "secret.asc"
        path.write_text(armoured)
        assert ring.load_secret(path) == fingerprint
        assert ring.key_for(PROJECT) == fingerprint
        listing = subprocess.run(
            ["gpg", "--homedir", str(ring.home), "--with-colons", "--list-keys"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert ":ed25519:" in listing and ":cv25519:" in listing
        assert "-----BEGIN PGP PUBLIC KEY BLOCK-----" in ring.export_public()
    finally:
        ring.close()


def test_a_file_without_a_secret_key_is_refused(tmp_dir: Path, people: People) -> None:
    ring = Keyring(tmp_dir / "g3", PROJECT)
    try:
        path = tmp_dir / "public.asc"
        path.write_bytes(people.project.public_key)
        with pytest.raises(openpgp.OpenPGPError, match="no OpenPGP secret key"):
            ring.load_secret(path)
    finally:
        ring.close()


# --- reading mail -----------------------------------------------------------------------------


def test_pgp_mime_encrypted_and_signed_with_the_reporters_key(
    keyring: Keyring, limits: LimitsConfig, people: People
) -> None:
    reporter = people.reporter
    entity = text_entity(REPORT, subject="Path traversal", key=reporter.public_key)
    raw = pgp_mime(reporter, PROJECT, "...", entity, [people.project.fingerprint])
    opened = read(keyring, limits, raw)
    assert opened.msg.text.strip() == REPORT.strip()
    assert opened.msg.subject == "Path traversal"  # the protected Subject wins over "..."
    assert opened.msg.from_addr == reporter.address
    status = opened.msg.openpgp
    assert status is not None and status.encrypted and status.decrypted
    assert status.signature is not None
    assert status.signature.status == GOOD
    assert status.signature.fingerprint == reporter.fingerprint
    assert status.signature.by_sender and status.signature.whole
    (key,) = opened.msg.openpgp.keys
    assert key.imported and key.fingerprint == reporter.fingerprint
    assert keyring.key_for(reporter.address) == reporter.fingerprint


def test_inline_armoured_report(keyring: Keyring, limits: LimitsConfig, people: People) -> None:
    raw = inline(people.outsider, PROJECT, "Report", REPORT, [people.project.fingerprint])
    opened = read(keyring, limits, raw)
    assert opened.msg.text.strip() == REPORT.strip()
    status = opened.msg.openpgp
    assert status is not None and status.decrypted
    # Signed by a key triaged does not hold: stated as such, never "good".
    assert status.signature is not None and status.signature.status == UNKNOWN_KEY


def test_encrypted_to_another_key_is_not_read(
    keyring: Keyring, limits: LimitsConfig, people: People
) -> None:
    entity = text_entity(REPORT)
    raw = pgp_mime(people.reporter, PROJECT, "Report", entity, [people.outsider.fingerprint])
    opened = read(keyring, limits, raw)
    status = opened.msg.openpgp
    assert status is not None and status.encrypted and not status.decrypted
    assert status.problem is not None and "another key" in status.problem
    assert REPORT.split()[1] not in opened.msg.text


def test_corrupt_ciphertext_is_a_problem_not_a_crash(
    keyring: Keyring, limits: LimitsConfig
) -> None:
    body = "-----BEGIN PGP MESSAGE-----\n\nhQEMA0ZZZZZZ\n-----END PGP MESSAGE-----\n"
    opened = read(keyring, limits, mail(body=body))
    status = opened.msg.openpgp
    assert status is not None and not status.decrypted and status.problem


def test_decompression_bomb_stops_at_the_size_cap(
    tmp_dir: Path, keyring: Keyring, people: People
) -> None:
    limits = make_config(tmp_dir / "small").limits
    small = LimitsConfig(**{**limits.__dict__, "max_message_size": 100_000})
    raw = inline(people.reporter, PROJECT, "zeros", "0" * 2_000_000, [people.project.fingerprint])
    assert len(raw) < 100_000
    opened = Reader(keyring, small).open(raw, parse(raw, small))
    status = opened.msg.openpgp
    assert status is not None and not status.decrypted
    assert status.problem is not None and "larger than" in status.problem


def test_multipart_signed_good_and_bad(
    keyring: Keyring, limits: LimitsConfig, people: People
) -> None:
    alice = people.alice
    entity = text_entity("/severity high\n")
    good = read(keyring, limits, signed_mime(alice, PROJECT, "Re: x", entity)).msg.openpgp
    assert good is not None and good.signature is not None
    assert good.signature.status == GOOD and good.signature.whole and good.signature.by_sender
    tampered = signed_mime(alice, PROJECT, "Re: x", entity, tamper=b"/severity low\r\n")
    bad = read(keyring, limits, tampered).msg.openpgp
    assert bad is not None and bad.signature is not None and bad.signature.status == BAD
    assert "good" not in bad.describe()


def test_multipart_signed_over_lf_line_ends(
    keyring: Keyring, limits: LimitsConfig, people: People
) -> None:
    """Stored with LF line ends (a Maildir, a local delivery): verified over CRLF all the same."""
    raw = signed_mime(people.alice, PROJECT, "Re: x", text_entity("/ack\nthanks\n"))
    opened = read(keyring, limits, raw.replace(b"\r\n", b"\n"))
    assert opened.msg.openpgp is not None and opened.msg.openpgp.signature is not None
    assert opened.msg.openpgp.signature.status == GOOD


def test_signed_part_wrapped_with_unsigned_text_is_not_whole(
    keyring: Keyring, limits: LimitsConfig, people: People
) -> None:
    raw = wrapped(signed_mime(people.alice, PROJECT, "Re: x", text_entity("/ack\n")), "footer")
    status = read(keyring, limits, raw).msg.openpgp
    assert status is not None and status.signature is not None
    assert status.signature.status == GOOD and not status.signature.whole


def test_clearsigned_whole_and_with_unsigned_text_before(
    keyring: Keyring, limits: LimitsConfig, people: People
) -> None:
    raw = clearsigned(people.alice, PROJECT, "Re: x", "/severity high\n- dash line\n")
    opened = read(keyring, limits, raw)
    sig = opened.msg.openpgp.signature if opened.msg.openpgp else None
    assert sig is not None and sig.status == GOOD and sig.whole
    assert opened.msg.text.startswith("/severity high\n- dash line")
    raw = clearsigned(people.alice, PROJECT, "Re: x", "/ack\n", before="/severity critical\n")
    opened = read(keyring, limits, raw)
    sig = opened.msg.openpgp.signature if opened.msg.openpgp else None
    assert sig is not None and sig.status == GOOD and not sig.whole
    assert opened.msg.text.startswith("/severity critical\n")


def test_plain_mail_is_left_alone(keyring: Keyring, limits: LimitsConfig) -> None:
    raw = mail()
    msg = parse(raw, limits)
    assert Reader(keyring, limits).open(raw, msg).msg is msg


# --- keys from mail ---------------------------------------------------------------------------


def test_key_naming_another_address_is_not_used(
    keyring: Keyring, limits: LimitsConfig, people: People
) -> None:
    stranger = people.stranger
    entity = text_entity(REPORT, key=stranger.public_key)
    opened = read(keyring, limits, signed_mime(stranger, PROJECT, "Report", entity))
    (key,) = opened.msg.openpgp.keys
    assert not key.imported and "sender's address" in key.reason
    assert keyring.key_for(stranger.address) is None
    assert keyring.key_for("someone@else.example") is None


def test_key_for_a_maintainer_address_never_comes_from_mail(
    keyring: Keyring, limits: LimitsConfig, people: People
) -> None:
    raw = with_autocrypt(mail(sender="bob@example.org"), people.bob)
    (key,) = read(keyring, limits, raw).msg.openpgp.keys
    assert not key.imported and "configuration" in key.reason
    assert keyring.key_for("bob@example.org") is None


@pytest.mark.parametrize(
    ("uid", "address"),
    [
        ("Jane Doe <Jane@Example.org>", "jane@example.org"),
        ("Doe, Jane (work) <jane@example.org>", "jane@example.org"),
        ("jane@example.org", "jane@example.org"),
        ("Jane <ja ne@example.org>", None),
        ("Jane Doe jane@example.org", None),
        ("Kim <\u212aim@example.org>", None),  # lowercases to kim@example.org: a lookalike
        ("Jane <jane@example.org> (old)", None),
        ("Jane", None),
    ],
)
def test_user_id_addresses_are_read_as_every_address_is(uid: str, address: str | None) -> None:
    assert openpgp.uid_address(uid) == address


def test_autocrypt_header_key(keyring: Keyring, limits: LimitsConfig, people: People) -> None:
    raw = with_autocrypt(mail(sender=people.outsider.address), people.outsider)
    (key,) = read(keyring, limits, raw).msg.openpgp.keys
    assert key.imported and key.source == "autocrypt"
    assert keyring.key_for(people.outsider.address) == people.outsider.fingerprint


def test_a_second_key_needs_the_first_ones_signature(
    keyring: Keyring, limits: LimitsConfig, people: People
) -> None:
    from pgp import Person

    first = people.reporter
    second = Person(first.address)
    try:
        keyring.offer(first.address, first.public_key, "attachment")
        unsigned = with_autocrypt(mail(sender=first.address), second)
        (key,) = read(keyring, limits, unsigned).msg.openpgp.keys
        assert not key.imported and "already known" in key.reason
        assert keyring.key_for(first.address) == first.fingerprint
        entity = text_entity("my new key\n", key=second.public_key)
        (key,) = read(
            keyring, limits, signed_mime(first, PROJECT, "new key", entity)
        ).msg.openpgp.keys
        assert key.imported and key.reason == "replaced"
        assert keyring.key_for(first.address) == second.fingerprint
    finally:
        second.close()


# --- sealing outgoing mail --------------------------------------------------------------------


def test_sealed_mail_decrypts_for_the_recipient_with_protected_headers(
    tmp_dir: Path, keyring: Keyring, people: People
) -> None:
    from triaged.mail.compose import Composer

    composer = Composer(make_config(tmp_dir / "c"))
    out = composer.build(
        kind="receipt",
        to=people.reporter.address,
        subject="Your report was received",
        template="receipt.txt",
        context={"tag": "[security report #abcd2345]", "promises": []},
        now=__import__("datetime").datetime.now(__import__("datetime").UTC),
        report_id="abcd2345",
    )
    keyring.offer(people.reporter.address, people.reporter.public_key, "attachment")
    sealed = openpgp.seal(
        out.raw, keyring, [people.reporter.fingerprint], "[security report #abcd2345] ..."
    )
    outer = message_from_bytes(sealed, policy=default)
    assert outer.get_content_type() == "multipart/encrypted"
    assert outer["Subject"] == "[security report #abcd2345] ..."
    assert outer["Message-ID"] == re.search(rb"Message-ID: (\S+)", out.raw).group(1).decode()  # type: ignore[union-attr]
    assert b"received" not in sealed.split(b"\r\n\r\n", 1)[1]
    armour = outer.get_payload()[1].get_payload(decode=True)  # type: ignore[index, union-attr]
    plain, status = people.reporter.decrypt(armour)
    assert f"GOODSIG {people.project.fingerprint[-16:]}" in status
    inner = message_from_bytes(plain, policy=default)
    assert inner["Subject"] == "[security report #abcd2345] Your report was received"
    assert "[security report #abcd2345]" in inner.get_content()
    # The project key can read its own copy too.
    assert keyring.decrypt(armour, 10**6)[0] == plain


# --- what a maintainer without a key may read, under "require" (mail/sealing.py) -----------------


def _composed(tmp_dir: Path, subject: str, text: str) -> bytes:
    from datetime import UTC, datetime

    from triaged.mail.compose import Composer

    composer = Composer(make_config(tmp_dir / "cfg"))
    out = composer.build(
        kind="clock",
        to="bob@example.org",
        subject=subject,
        template="transcript.txt",
        context={"actor": text, "lines": [], "state": "new", "note": False},
        now=datetime.now(UTC),
        report_id="k7f3q9xm",
    )
    return out.raw


def test_protected_subjects_are_replaced_whole_in_subject_and_text(tmp_dir: Path) -> None:
    from triaged.mail.sealing import hide_protected

    title = "Überlauf im Importer " + "x" * 80  # encoded words and a long, base64 text line
    raw = _composed(tmp_dir, f"About {title}", f"{title}; also reported: Importers")
    hidden = message_from_bytes(
        hide_protected(raw, [(title, "k7f3q9xm"), ("Importer", None)]), policy=default
    )
    assert hidden["Subject"] == "[security report #k7f3q9xm] About encrypted report #k7f3q9xm"
    text = hidden.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    # Whole subjects only, in one pass: "Importers" is another word, and the replacement of
    # the title is not looked at again for "Importer".
    assert "from encrypted report #k7f3q9xm; also reported: Importers" in text
    assert "Überlauf" not in text
    assert hidden["Message-ID"] == message_from_bytes(raw, policy=default)["Message-ID"]


def test_a_subject_several_reports_share_names_none_of_them(tmp_dir: Path) -> None:
    from triaged.mail.sealing import hide_protected

    raw = _composed(tmp_dir, "Digest", "RCE in the importer")
    hidden = hide_protected(raw, [("RCE in the importer", "aaaa"), ("RCE in the importer", "b")])
    assert "from encrypted subject" in message_from_bytes(hidden, policy=default).get_content()  # type: ignore[attr-defined]
    # Nothing protected in it: the very same bytes.
    assert hide_protected(raw, [("Something else", "aaaa")]) is raw

"""People with OpenPGP keys, as the tests play them: a reporter's or a maintainer's mail client.

Each `Person` has a GnuPG home of its own (short paths under /tmp: gpg-agent's socket lives in
the home, and a Unix socket path is limited to 108 bytes) and a throwaway ed25519 / cv25519 key
made when the person is created. Everything here drives the gpg command line directly, as a
mail client would; none of it uses triaged's own OpenPGP code.
"""

from __future__ import annotations

import base64
import secrets
import shutil
import subprocess
import tempfile
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid
from pathlib import Path

PROJECT_PREAMBLE = b"This is an OpenPGP/MIME message\r\n"


class Person:
    def __init__(self, address: str, name: str = "", uid_address: str | None = None) -> None:
        self.address = address
        self.home = Path(tempfile.mkdtemp(prefix="tpgp-", dir="/tmp"))
        self.home.chmod(0o700)
        uid = f"{name or address.split('@')[0].title()} <{uid_address or address}>"
        self.gpg("--quick-gen-key", uid, "ed25519", "sign", "never")
        self.fingerprint = self._fingerprints()[0]
        self.gpg("--quick-add-key", self.fingerprint, "cv25519", "encr", "never")
        self.public_key = self.gpg("--armor", "--export", self.fingerprint)
        self.secret_key = self.gpg("--armor", "--export-secret-keys", self.fingerprint)

    def gpg(self, *args: str, data: bytes = b"", check: bool = True) -> bytes:
        proc = subprocess.run(
            [
                "gpg",
                "--homedir",
                str(self.home),
                "--batch",
                "--yes",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                "--trust-model",
                "always",
                "--disable-dirmngr",
                *args,
            ],
            input=data,
            capture_output=True,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"gpg {' '.join(args)} failed: {proc.stderr.decode()}")
        return proc.stdout

    def _fingerprints(self) -> list[str]:
        out = self.gpg("--list-keys", "--with-colons").decode()
        result = []
        previous = ""
        for line in out.splitlines():
            fields = line.split(":")
            if fields[0] == "fpr" and previous == "pub":
                result.append(fields[9])
            previous = fields[0] if fields[0] in ("pub", "sub") else previous
            if fields[0] == "fpr":
                previous = ""
        return result

    def knows(self, public_key: bytes) -> None:
        self.gpg("--import", data=public_key)

    def encrypt(self, data: bytes, to: list[str], sign: bool = True) -> bytes:
        args = ["--armor", "--encrypt"]
        for fingerprint in to:
            args += ["--recipient", fingerprint]
        if sign:
            args += ["--sign", "--local-user", self.fingerprint]
        return self.gpg(*args, data=data)

    def sign_detached(self, data: bytes) -> bytes:
        return self.gpg("--armor", "--detach-sign", "--local-user", self.fingerprint, data=data)

    def clearsign(self, text: bytes) -> bytes:
        return self.gpg("--clearsign", "--local-user", self.fingerprint, data=text)

    def decrypt(self, data: bytes) -> tuple[bytes, str]:
        """(plaintext, gpg's status lines) of an OpenPGP message sent to this person."""
        proc = subprocess.run(
            [
                "gpg",
                "--homedir",
                str(self.home),
                "--batch",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                "--status-fd",
                "2",
                "--decrypt",
            ],
            input=data,
            capture_output=True,
            check=False,
        )
        if proc.returncode != 0:
            raise AssertionError(f"{self.address} cannot decrypt: {proc.stderr.decode()}")
        return proc.stdout, proc.stderr.decode()

    def close(self) -> None:
        subprocess.run(
            ["gpgconf", "--homedir", str(self.home), "--kill", "gpg-agent"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.home, ignore_errors=True)


# --- messages as mail clients write them --------------------------------------------------------


def _head(sender: str, to: str, subject: str, extra: dict[str, str] | None = None) -> bytes:
    lines = [
        f"From: {sender}",
        f"To: {to}",
        f"Subject: {subject}",
        f"Date: {format_datetime(datetime.now(UTC))}",
        f"Message-ID: {make_msgid(domain='outside.example')}",
    ]
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    return ("\r\n".join(lines) + "\r\n").encode()


def text_entity(text: str, subject: str | None = None, key: bytes | None = None) -> bytes:
    """A MIME entity: the text, with the sender's public key attached when given; with
    `subject`, marked as carrying protected headers (as Thunderbird writes them)."""
    body = text.replace("\n", "\r\n").encode()
    if key is None:
        head = b"Content-Type: text/plain; charset=utf-8"
        if subject is not None:
            head += b'; protected-headers="v1"\r\nSubject: ' + subject.encode()
        return head + b"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + body
    boundary = f"k{secrets.token_hex(8)}".encode()
    head = b'Content-Type: multipart/mixed; boundary="' + boundary + b'"'
    if subject is not None:
        head += b'; protected-headers="v1"\r\nSubject: ' + subject.encode()
    return (
        head
        + b"\r\n\r\n--"
        + boundary
        + b"\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + body
        + b"\r\n--"
        + boundary
        + b'\r\nContent-Type: application/pgp-keys; name="key.asc"\r\n'
        + b'Content-Disposition: attachment; filename="key.asc"\r\n\r\n'
        + key.replace(b"\n", b"\r\n")
        + b"\r\n--"
        + boundary
        + b"--\r\n"
    )


def mixed_entity(text: str, files: list[tuple[str, bytes]], subject: str | None = None) -> bytes:
    """A multipart/mixed MIME entity: the text, then each (name, bytes) as a base64
    attachment; with `subject`, marked as carrying protected headers."""
    boundary = f"m{secrets.token_hex(8)}".encode()
    head = b'Content-Type: multipart/mixed; boundary="' + boundary + b'"'
    if subject is not None:
        head += b'; protected-headers="v1"\r\nSubject: ' + subject.encode()
    parts = [
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + text.replace("\n", "\r\n").encode()
    ]
    for name, data in files:
        parts.append(
            b"Content-Type: application/octet-stream\r\n"
            + b'Content-Disposition: attachment; filename="'
            + name.encode()
            + b'"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
            + base64.encodebytes(data).replace(b"\n", b"\r\n")
        )
    body = b"".join(b"\r\n--" + boundary + b"\r\n" + part for part in parts)
    return head + b"\r\n" + body + b"\r\n--" + boundary + b"--\r\n"


def in_clear(sender: Person, to: str, subject: str, entity: bytes) -> bytes:
    """A mail sent without OpenPGP, `entity` as its content."""
    return _head(sender.address, to, subject) + b"MIME-Version: 1.0\r\n" + entity


def pgp_mime(
    sender: Person,
    to: str,
    subject: str,
    entity: bytes,
    recipients: list[str],
    sign: bool = True,
    extra: dict[str, str] | None = None,
) -> bytes:
    """An encrypted (and, by default, signed: one combined OpenPGP message) PGP/MIME mail."""
    armour = sender.encrypt(entity, recipients, sign=sign).replace(b"\n", b"\r\n")
    boundary = f"e{secrets.token_hex(8)}".encode()
    return (
        _head(sender.address, to, subject, extra)
        + b"MIME-Version: 1.0\r\n"
        + b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";'
        + b' boundary="'
        + boundary
        + b'"\r\n\r\n'
        + PROJECT_PREAMBLE
        + b"--"
        + boundary
        + b"\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--"
        + boundary
        + b'\r\nContent-Type: application/octet-stream; name="encrypted.asc"\r\n\r\n'
        + armour
        + b"\r\n--"
        + boundary
        + b"--\r\n"
    )


def signed_mime(
    sender: Person,
    to: str,
    subject: str,
    entity: bytes,
    tamper: bytes | None = None,
    extra: dict[str, str] | None = None,
    signer: Person | None = None,
) -> bytes:
    """A multipart/signed mail over `entity`; with `tamper`, the entity sent is changed after
    signing (its text gets `tamper` appended), so the signature is bad."""
    signature = (signer or sender).sign_detached(entity)
    sent = entity + tamper if tamper else entity
    boundary = f"s{secrets.token_hex(8)}".encode()
    return (
        _head(sender.address, to, subject, extra)
        + b"MIME-Version: 1.0\r\n"
        + b"Content-Type: multipart/signed; micalg=pgp-sha256;"
        + b' protocol="application/pgp-signature"; boundary="'
        + boundary
        + b'"\r\n\r\n--'
        + boundary
        + b"\r\n"
        + sent
        + b"\r\n--"
        + boundary
        + b'\r\nContent-Type: application/pgp-signature; name="signature.asc"\r\n\r\n'
        + signature.replace(b"\n", b"\r\n")
        + b"\r\n--"
        + boundary
        + b"--\r\n"
    )


def wrapped(message: bytes, footer: str) -> bytes:
    """`message` (a multipart/signed mail) inside multipart/mixed with an unsigned text part
    after it, as a mailing list adds a footer."""
    head, _, body = message.partition(b"\r\n\r\n")
    fields = head.split(b"\r\nMIME-Version")[0]
    content = b"MIME-Version" + head.split(b"\r\nMIME-Version", 1)[1]
    boundary = f"w{secrets.token_hex(8)}".encode()
    return (
        fields
        + b'\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="'
        + boundary
        + b'"\r\n\r\n--'
        + boundary
        + b"\r\n"
        + content.split(b"\r\n", 1)[1]
        + b"\r\n\r\n"
        + body
        + b"\r\n--"
        + boundary
        + b"\r\nContent-Type: text/plain\r\n\r\n"
        + footer.encode()
        + b"\r\n--"
        + boundary
        + b"--\r\n"
    )


def inline(
    sender: Person,
    to: str,
    subject: str,
    text: str,
    recipients: list[str],
    extra: dict[str, str] | None = None,
) -> bytes:
    """A text/plain mail whose body is an ASCII-armoured, signed OpenPGP message."""
    armour = sender.encrypt(text.encode(), recipients).replace(b"\n", b"\r\n")
    return (
        _head(sender.address, to, subject, extra)
        + b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        + armour
    )


def clearsigned(
    sender: Person,
    to: str,
    subject: str,
    text: str,
    before: str = "",
    extra: dict[str, str] | None = None,
) -> bytes:
    body = before.encode() + sender.clearsign(text.encode())
    return (
        _head(sender.address, to, subject, extra)
        + b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    )


def with_autocrypt(raw: bytes, person: Person, addr: str | None = None) -> bytes:
    """`raw` with an Autocrypt header carrying the person's key, folded as clients fold it."""
    keydata = base64.b64encode(person.gpg("--export", person.fingerprint)).decode()
    lines = [keydata[i : i + 76] for i in range(0, len(keydata), 76)]
    value = f"addr={addr or person.address}; prefer-encrypt=mutual; keydata=\r\n " + "\r\n ".join(
        lines
    )
    return f"Autocrypt: {value}\r\n".encode() + raw

"""OpenPGP: reading what reporters and maintainers encrypt or sign, sealing what triaged sends.

GnuPG does the cryptography, driven through python-gnupg, in triaged's own home directory
(`[openpgp] home`, mode 0700): the project's secret key, the maintainers' keys from
`[openpgp] public_keys`, and the reporters' keys that came with their mail. No key server is
ever contacted and no key is ever looked up anywhere else (`--disable-dirmngr`,
`--no-auto-key-locate`, `--no-auto-key-retrieve`).

The MIME is triaged's own, after RFC 3156:

- `multipart/encrypted`: the second part is decrypted; the result is a MIME entity that takes
  the place of the body, under the outer header (a protected Subject inside wins over the outer
  one, which clients replace by "...");
- `multipart/signed`: the first part is verified exactly as received, line ends made CRLF;
- inline ASCII armour in the text part (`-----BEGIN PGP MESSAGE-----`, clearsigned text).

Whether a signature covers the whole text that commands are read from (`Signature.whole`)
matters to `[auth] proofs = ["openpgp"]`: a signed part with unsigned text around it, or
nested below the top of the message, is not whole.

A reporter's key (an `application/pgp-keys` part, or an `Autocrypt:` header) is imported only
for the sender's own address: only the user IDs naming that address are kept, a key naming
it nowhere is refused, and keys for the project's or a maintainer's address never come from
mail. A second, different key for an address replaces the first only when the message that
brings it is signed by the first.

Outgoing mail is sealed as PGP/MIME (`seal`): encrypted to the recipient and the project key
and signed by the project key, combined in one OpenPGP message (RFC 3156, 6.2). The original
header fields are copied into the encrypted part (protected headers), and the outer Subject
keeps only the report's tag, so a reply still threads.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import glob
import itertools
import logging
import os
import re
import secrets
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from email.message import Message
from pathlib import Path
from typing import Any

import gnupg

from triaged.config import Config, LimitsConfig
from triaged.core.protection import BAD, GOOD, UNKNOWN_KEY, KeyOutcome, OpenPGPStatus, Signature
from triaged.core.text import parse_address
from triaged.errors import ConfigError, UnsafeMessage
from triaged.mail.parse import (
    HEADER_END,
    ParsedMessage,
    clean_header_text,
    content_param,
    content_params,
    first_raw,
    parse,
    parse_tree,
)

log = logging.getLogger(__name__)

# Options for every gpg run: never ask, never reach out, trust is triaged's own decision
# (which key belongs to which address), not the web of trust's.
_GPG_OPTIONS = [
    "--pinentry-mode",
    "loopback",
    "--disable-dirmngr",
    "--no-auto-key-locate",
    "--no-auto-key-retrieve",
    "--trust-model",
    "always",
    "--no-permission-warning",
]
MAX_KEY_BYTES = 256 * 1024  # an armoured key block taken from mail
MAX_KEYS_PER_MESSAGE = 4
MAX_SECRET_KEY_FILE = 1024 * 1024

_ARMOUR = re.compile(
    rb"-----BEGIN PGP (MESSAGE|SIGNED MESSAGE)-----\r?\n.*?-----END PGP (?:MESSAGE|SIGNATURE)-----",
    re.DOTALL,
)
# Cheap test of raw bytes before any work: most mail has none of these.
_INTERESTING = re.compile(
    rb"-----BEGIN PGP |application/pgp-|^autocrypt:", re.IGNORECASE | re.MULTILINE
)
_UID_ADDRESS = re.compile(r"<([^<>]*)>$")


# --- what a message was -----------------------------------------------------------------------


@dataclass(frozen=True)
class Opened:
    msg: ParsedMessage  # the message as triaged reads it: decrypted, the signed text
    status: OpenPGPStatus | None  # None: neither encrypted nor signed
    # The decrypted message `msg` was parsed from (its attachments' bytes are read from it:
    # `parse.attachment_data`); None when they are those of the raw message as received.
    source: bytes | None = None


# --- the keyring ------------------------------------------------------------------------------


class OpenPGPError(Exception):
    """GnuPG failed, or a key is unusable; the message says which and why."""


@dataclass(frozen=True)
class _Key:
    fingerprint: str
    addresses: frozenset[str]  # of its valid user IDs, lowercased
    can_encrypt: bool
    created: int
    secret: bool = False


def uid_address(uid: str) -> str | None:
    """The address of a user ID ("Name <addr>" or a bare "addr"), lowercased; read as every
    address is (core.text), so "<ali ce@x>" or a non-ASCII lookalike names no address."""
    uid = uid.strip()
    match = _UID_ADDRESS.search(uid)
    return parse_address(match.group(1) if match else uid)


def _private_dir(path: Path) -> None:
    """Creates `path` (mode 0700) or makes an existing one private; gpg refuses others."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = path.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise OpenPGPError(f"{path} is not a directory")
    if info.st_mode & 0o077:
        path.chmod(0o700)


class Keyring:
    """triaged's GnuPG home: one instance per daemon, shared by its threads."""

    def __init__(self, home: Path, project_address: str, protected: Iterable[str] = ()) -> None:
        _private_dir(home)
        self.home = home
        self.project_address = project_address.lower()
        # Addresses whose keys come only from the configuration, never from mail.
        self.protected = frozenset(a.lower() for a in (project_address, *protected))
        # python-gnupg logs what it hands to gpg at DEBUG and every gpg warning about hostile
        # input at WARNING; triaged reports the outcomes itself.
        logging.getLogger("gnupg").setLevel(logging.ERROR)
        try:
            self.gpg = gnupg.GPG(gnupghome=str(home), options=list(_GPG_OPTIONS))
        except (OSError, ValueError) as exc:
            raise OpenPGPError(f"cannot run gpg: {exc}") from None
        self.gpg.encoding = "utf-8"
        self.project_fingerprint: str | None = None
        self._lock = threading.Lock()
        self._keys: list[_Key] | None = None

    # --- reading the keyring ----------------------------------------------------------------

    def _list(self) -> list[_Key]:
        with self._lock:
            if self._keys is None:
                secret = {k["fingerprint"] for k in self.gpg.list_keys(secret=True)}
                self._keys = [
                    _key(raw, raw["fingerprint"] in secret) for raw in self.gpg.list_keys()
                ]
            return self._keys

    def _changed(self) -> None:
        with self._lock:
            self._keys = None

    def key_for(self, address: str | None) -> str | None:
        """The fingerprint of the key to encrypt to `address`: a valid, encryption-capable key
        with a user ID naming exactly that address (the newest of several); else None."""
        if not address:
            return None
        address = address.lower()
        found = [k for k in self._list() if address in k.addresses and k.can_encrypt]
        if not found:
            return None
        return max(found, key=lambda k: k.created).fingerprint

    def keys_for(self, address: str) -> list[str]:
        """Every key fingerprint with a valid user ID naming `address`."""
        address = address.lower()
        return [k.fingerprint for k in self._list() if address in k.addresses]

    # --- loading the configured keys --------------------------------------------------------

    def load_secret(self, path: Path) -> str:
        """Imports the project's armoured secret key; returns its fingerprint."""
        try:
            with path.open("rb") as fh:
                data = fh.read(MAX_SECRET_KEY_FILE + 1)
        except OSError as exc:
            raise OpenPGPError(f"cannot read {path}: {exc.strerror or exc}") from None
        if len(data) > MAX_SECRET_KEY_FILE:
            raise OpenPGPError(f"{path} is larger than {MAX_SECRET_KEY_FILE} bytes")
        result = self.gpg.import_keys(data, extra_args=["--batch"])
        self._changed()
        fingerprints = {f for f in result.fingerprints if f}
        secret = [k for k in self._list() if k.fingerprint in fingerprints and k.secret]
        if not secret:
            raise OpenPGPError(f"{path} holds no OpenPGP secret key")
        if len(secret) > 1:
            raise OpenPGPError(f"{path} holds {len(secret)} secret keys; give it one")
        key = secret[0]
        if not key.can_encrypt:
            raise OpenPGPError(f"the key in {path} cannot encrypt (no valid encryption subkey)")
        if self.project_address not in key.addresses:
            log.warning(
                "the project key %s has no user ID for %s", key.fingerprint, self.project_address
            )
        self.project_fingerprint = key.fingerprint
        return key.fingerprint

    def load_public(self, patterns: Sequence[str]) -> list[str]:
        """Imports every armoured public key file the (absolute) patterns name; returns the
        files. A pattern without wildcards must name a file; a glob may match none."""
        files: list[str] = []
        for pattern in patterns:
            matches = sorted(glob.glob(pattern))
            if not matches and not glob.has_magic(pattern):
                raise OpenPGPError(f"{pattern}: no such file")
            files += matches
        for name in files:
            try:
                data = Path(name).read_bytes()
            except OSError as exc:
                raise OpenPGPError(f"cannot read {name}: {exc.strerror or exc}") from None
            result = self.gpg.import_keys(data, extra_args=["--import-options", "import-minimal"])
            if not [f for f in result.fingerprints if f]:
                raise OpenPGPError(f"{name} holds no OpenPGP public key")
            self._changed()
        return files

    # --- keys from mail ---------------------------------------------------------------------

    def offer(
        self, address: str, data: bytes, source: str, signed_by: str | None = None
    ) -> KeyOutcome:
        """Imports a key that came from `address`, for that address only.

        `signed_by` is the fingerprint of a good signature on the message that brought it:
        a key replacing another one for the address is taken only when the old one signed.
        """
        address = address.lower()

        def refuse(reason: str, fingerprint: str | None = None) -> KeyOutcome:
            return KeyOutcome(address, source, fingerprint, False, reason)

        if address in self.protected:
            return refuse("keys for this address come only from the configuration")
        if len(data) > MAX_KEY_BYTES:
            return refuse(f"key data larger than {MAX_KEY_BYTES} bytes")
        scanned = self.gpg.scan_keys_mem(data)
        if any(k.get("type") == "sec" for k in scanned):
            return refuse("it holds a secret key")
        mine = [
            k
            for k in scanned
            if k.get("fingerprint") and any(uid_address(u) == address for u in k.get("uids", []))
        ]
        if not mine:
            return refuse("no user ID of the key names the sender's address")
        if len(mine) > 1:
            return refuse("several keys name the sender's address")
        fingerprint = str(mine[0]["fingerprint"])
        known = self.keys_for(address)
        if fingerprint in known:
            return KeyOutcome(address, source, fingerprint, False, "already known")
        if known and signed_by not in known:
            return refuse(
                "another key is already known for this address; a new one is taken only from "
                "a message signed by the old one",
                fingerprint,
            )
        result = self.gpg.import_keys(
            data,
            extra_args=[
                "--import-options",
                "import-minimal",
                "--import-filter",
                f"keep-uid=mbox = {address}",
            ],
        )
        self._changed()
        if fingerprint not in result.fingerprints or self.key_for(address) != fingerprint:
            return refuse("gpg did not import a usable encryption key", fingerprint)
        return KeyOutcome(address, source, fingerprint, True, "replaced" if known else "new")

    # --- cryptography -----------------------------------------------------------------------

    def decrypt(self, data: bytes, max_output: int) -> tuple[bytes | None, str, Signature | None]:
        """(plaintext or None, what went wrong, the signature inside if any)."""
        result = self.gpg.decrypt(data, extra_args=["--max-output", str(max_output)])
        if "max-output" in (result.stderr or ""):
            return None, f"the decrypted text is larger than {max_output} bytes", None
        signature = _signature(result, whole=True)
        if result.ok:
            return bytes(result.data), "", signature
        if result.status == "no secret key":
            which = f" (key ID {result.key_id})" if result.key_id else ""
            return None, f"encrypted to another key{which}, not the project key", None
        return None, f"cannot be decrypted ({result.status or 'corrupt data'})", None

    def verify_detached(self, data: bytes, signature: bytes, whole: bool) -> Signature:
        fd, name = tempfile.mkstemp(dir=self.home, prefix="sig-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(signature)
            result = self.gpg.verify_data(name, data)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)
        return _signature(result, whole) or Signature(BAD, None, whole, detail="no signature")

    def verify_clearsigned(self, data: bytes, whole: bool) -> Signature:
        result = self.gpg.verify(data)
        return _signature(result, whole) or Signature(BAD, None, whole, detail="no signature")

    def encrypt(self, data: bytes, recipients: Sequence[str]) -> bytes:
        """Armoured OpenPGP message: encrypted to `recipients` and the project key, signed by
        the project key. Raises OpenPGPError."""
        if self.project_fingerprint is None:
            raise OpenPGPError("no project key is configured ([openpgp] secret_key_file)")
        to = list(dict.fromkeys([*recipients, self.project_fingerprint]))
        result = self.gpg.encrypt(data, to, sign=self.project_fingerprint, armor=True)
        if not result.ok:
            raise OpenPGPError(f"gpg could not encrypt: {result.status or 'failed'}")
        return bytes(result.data)

    def export_public(self) -> str:
        if self.project_fingerprint is None:
            raise OpenPGPError("no project key is configured ([openpgp] secret_key_file)")
        return str(self.gpg.export_keys(self.project_fingerprint, armor=True))

    def self_test(self) -> str:
        """Encrypts a short message to the project key and decrypts it; returns what was
        checked, raises OpenPGPError when either fails."""
        probe = f"triaged self-test {secrets.token_hex(8)}\n".encode()
        sealed = self.encrypt(probe, [])
        plain, problem, signature = self.decrypt(sealed, 4096)
        if plain != probe:
            raise OpenPGPError(f"the project key cannot decrypt its own message: {problem}")
        if signature is None or signature.status != GOOD:
            raise OpenPGPError("the project key's signature does not verify")
        return f"key {self.project_fingerprint} encrypts, signs and decrypts"

    def close(self) -> None:
        """Stops the gpg-agent of this home (one runs per home directory)."""
        stop_agent(self.home)


def open_keyring(config: Config, home: Path | None = None) -> Keyring | None:
    """The keyring of `[openpgp]` with its keys loaded, or None when OpenPGP is off; raises
    ConfigError naming the key whose file is unusable. `home` replaces the configured home
    (the command line uses a scratch one: see `scratch_keyring`)."""
    pgp = config.openpgp
    if pgp is None:
        return None
    path = str(config.path)
    maintainers = config.maintainers
    protected = [*maintainers.members, *maintainers.notify]
    if config.policy.escalate_to:
        protected.append(config.policy.escalate_to)
    try:
        keyring = Keyring(home or pgp.home, config.project.address, protected)
    except OpenPGPError as exc:
        raise ConfigError(path, "openpgp.home", str(exc)) from None
    try:
        keyring.load_secret(pgp.secret_key_file)
    except OpenPGPError as exc:
        keyring.close()
        raise ConfigError(path, "openpgp.secret_key_file", str(exc)) from None
    try:
        keyring.load_public(pgp.public_keys)
    except OpenPGPError as exc:
        keyring.close()
        raise ConfigError(path, "openpgp.public_keys", str(exc)) from None
    return keyring


@contextlib.contextmanager
def scratch_keyring(config: Config) -> Iterator[Keyring | None]:
    """The configured keys loaded into a throwaway home, for the command line: run as another
    user (root), gpg would leave files in the daemon's home that the daemon cannot write."""
    home = Path(tempfile.mkdtemp(prefix="triaged-gpg-", dir="/tmp"))
    try:
        keyring = open_keyring(config, home)
        try:
            yield keyring
        finally:
            if keyring is not None:
                keyring.close()
    finally:
        stop_agent(home)
        shutil.rmtree(home, ignore_errors=True)


def stop_agent(home: Path) -> None:
    gpgconf = shutil.which("gpgconf")
    if gpgconf is None:
        return
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            [gpgconf, "--homedir", str(home), "--kill", "gpg-agent"],
            capture_output=True,
            timeout=10,
            check=False,
        )


def _key(raw: dict[str, Any], secret: bool) -> _Key:
    usable = raw.get("trust") not in ("r", "e", "i", "d")
    addresses = set()
    for uid in raw.get("uids", []):
        info = raw.get("uid_map", {}).get(uid, {}) if isinstance(raw.get("uid_map"), dict) else {}
        if info.get("trust") in ("r", "e", "i"):
            continue
        address = uid_address(uid)
        if address:
            addresses.add(address)
    return _Key(
        fingerprint=str(raw["fingerprint"]),
        addresses=frozenset(addresses) if usable else frozenset(),
        can_encrypt=usable and "E" in str(raw.get("cap", "")),
        created=int(raw.get("date") or 0),
        secret=secret,
    )


def _signature(result: Any, whole: bool) -> Signature | None:
    """A python-gnupg Verify/Crypt result -> Signature, or None when nothing was signed."""
    problems = getattr(result, "problems", []) or []
    statuses = [p.get("status", "") for p in problems]
    if result.valid and not statuses:
        fingerprint = result.pubkey_fingerprint or result.fingerprint
        return Signature(GOOD, str(fingerprint) if fingerprint else None, whole)
    if "signature bad" in statuses:
        return Signature(BAD, result.key_id, whole, detail="the signature does not match")
    if "signing key has expired" in statuses or "signature expired" in statuses:
        return Signature(BAD, result.key_id, whole, detail="the signing key has expired")
    if "signing key was revoked" in statuses:
        return Signature(BAD, result.key_id, whole, detail="the signing key was revoked")
    if "no public key" in statuses or "signature error" in statuses:
        named = next((p.get("fingerprint") for p in problems if p.get("fingerprint")), None)
        return Signature(UNKNOWN_KEY, named or result.key_id, whole)
    if result.status in ("signature valid", "signature good") and result.valid:
        fingerprint = result.pubkey_fingerprint or result.fingerprint
        return Signature(GOOD, str(fingerprint) if fingerprint else None, whole)
    return None


# --- generating the project key --------------------------------------------------------------


def generate_key(name: str, address: str) -> tuple[str, str]:
    """A new ed25519 / cv25519 key for `address`, without passphrase, made in a throwaway
    GnuPG home: (its armoured secret key, its fingerprint)."""
    home = Path(tempfile.mkdtemp(prefix="triaged-gpg-", dir="/tmp"))
    try:
        logging.getLogger("gnupg").setLevel(logging.ERROR)
        gpg = gnupg.GPG(gnupghome=str(home), options=list(_GPG_OPTIONS))
        uid_name = clean_header_text(name, 100).replace("<", "").replace(">", "")
        params = (
            "Key-Type: EDDSA\nKey-Curve: ed25519\nKey-Usage: sign\n"
            "Subkey-Type: ECDH\nSubkey-Curve: cv25519\nSubkey-Usage: encrypt\n"
            f"Name-Real: {uid_name}\nName-Email: {address}\n"
            "Expire-Date: 0\n%no-protection\n%commit\n"
        )
        result = gpg.gen_key(params)
        fingerprint = str(result.fingerprint or "")
        if not fingerprint:
            raise OpenPGPError(f"gpg could not make a key: {result.stderr[-300:]}")
        secret = gpg.export_keys(fingerprint, secret=True, armor=True, expect_passphrase=False)
        if "BEGIN PGP PRIVATE KEY BLOCK" not in secret:
            raise OpenPGPError("gpg made a key but did not export it")
        return str(secret), fingerprint
    finally:
        stop_agent(home)
        shutil.rmtree(home, ignore_errors=True)


# --- reading mail -----------------------------------------------------------------------------


def interesting(raw: bytes) -> bool:
    """Whether a raw message may hold anything OpenPGP: most mail does not, at no cost."""
    return _INTERESTING.search(raw) is not None


def _content(part: Message) -> tuple[str, dict[str, str]]:
    raw_type = first_raw(part, "content-type")
    if raw_type is None:
        return "text/plain", {}
    return content_params(raw_type)


def _split_head(entity: bytes) -> tuple[bytes, bytes]:
    """(header block with its last line end, body) of a MIME entity or message."""
    end = HEADER_END.search(entity)
    if end is None:
        return entity, b""
    # The match is the line end of the last field and the empty line.
    first = entity[end.start() : end.end()]
    cut = end.start() + (2 if first.startswith(b"\r\n") else 1)
    return entity[:cut], entity[end.end() :]


def _fields(head: bytes) -> list[tuple[str, bytes]]:
    """(lowercased name, the field's lines as they are) for each field of a header block."""
    fields: list[tuple[str, bytes]] = []
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            name, text = fields[-1]
            fields[-1] = (name, text + line)
            continue
        name = line.split(b":", 1)[0].strip().lower().decode("ascii", "replace")
        fields.append((name, line))
    return fields


def _eol(text: bytes) -> bytes:
    return text if text.endswith(b"\n") else text + b"\r\n"


_CONTENT_FIELDS = ("content-type", "content-transfer-encoding", "mime-version")


def combine(raw: bytes, entity: bytes) -> bytes:
    """The outer message's header with `entity` (a decrypted MIME entity) as its content.

    The outer header keeps From, To, Message-ID and the rest (what the transport saw); the
    content fields come from the entity. A Subject in an entity marked protected-headers
    replaces the outer one.
    """
    outer_head, _ = _split_head(raw)
    inner_head, body = _split_head(entity)
    inner = _fields(inner_head)
    subject = protected_subject(entity)
    drop = set(_CONTENT_FIELDS)
    if subject is not None:
        drop.add("subject")
    out = [_eol(text) for name, text in _fields(outer_head) if name not in drop]
    if subject is not None:
        out.append(_eol(subject))
    out.append(b"MIME-Version: 1.0\r\n")
    out += [_eol(text) for name, text in inner if name.startswith("content-")]
    if not any(name == "content-type" for name, _ in inner):
        out.append(b"Content-Type: text/plain\r\n")
    return b"".join(out) + b"\r\n" + body


def protected_subject(entity: bytes) -> bytes | None:
    """The Subject field of a decrypted entity marked as carrying protected headers (it
    replaces the outer one), or None."""
    head, _ = _split_head(entity)
    fields = _fields(head)
    content_type = next((text for name, text in fields if name == "content-type"), b"")
    if b"protected-headers" not in content_type.lower():
        return None
    return next((text for name, text in fields if name == "subject"), None)


def _with_text(raw: bytes, text: str) -> bytes:
    """The outer header with one UTF-8 text/plain body holding `text`."""
    head, _ = _split_head(raw)
    out = [_eol(t) for name, t in _fields(head) if name not in _CONTENT_FIELDS]
    out.append(b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n")
    out.append(b"Content-Transfer-Encoding: base64\r\n")
    data = text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8", "replace")
    return b"".join(out) + b"\r\n" + base64.encodebytes(data).replace(b"\n", b"\r\n")


def body_parts(entity: bytes, boundary: str) -> list[bytes]:
    """The parts of a multipart entity exactly as received, each without the line end that
    belongs to the delimiter after it (RFC 2046)."""
    _, body = _split_head(entity)
    delimiter = re.compile(
        rb"^--" + re.escape(boundary.encode("ascii", "replace")) + rb"(--)?[ \t]*\r?$",
        re.MULTILINE,
    )
    marks = list(delimiter.finditer(body))
    parts = []
    for mark, following in itertools.pairwise(marks):
        if mark.group(1):  # the close delimiter
            break
        start = mark.end()
        start += 2 if body[start : start + 2] == b"\r\n" else 1
        end = following.start()
        if body[end - 2 : end] == b"\r\n":
            end -= 2
        elif body[end - 1 : end] == b"\n":
            end -= 1
        parts.append(body[start:end])
    return parts


def signed_parts(entity: bytes, boundary: str) -> tuple[bytes, bytes] | None:
    """(the first part exactly as received, CRLF-canonical; the second part's raw content)
    of a multipart/signed entity, or None when its parts cannot be found."""
    parts = body_parts(entity, boundary)
    if len(parts) < 2:
        return None
    return re.sub(rb"\r?\n", b"\r\n", parts[0]), parts[1]


def _payload(part: Message) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception:
        return b""
    return data if isinstance(data, bytes) else b""


def _body_part(root: Message) -> Message | None:
    """The part `parse` takes the text from: the first text/plain leaf that is not an
    attachment, outside any message/* part."""
    stack = [root]
    while stack:
        part = stack.pop()
        ctype, _ = _content(part)
        payload = part.get_payload()
        if isinstance(payload, list):
            if ctype.startswith("multipart/"):
                stack.extend(reversed([p for p in payload if isinstance(p, Message)]))
            continue
        raw_disposition = first_raw(part, "content-disposition")
        disposition, params = content_params(raw_disposition) if raw_disposition else ("", {})
        _, type_params = _content(part)
        named = bool(content_param(params, "filename") or content_param(type_params, "name"))
        if ctype == "text/plain" and disposition != "attachment" and not named:
            return part
    return None


def _decode(data: bytes, charset: str | None) -> str:
    try:
        return data.decode(charset or "utf-8")
    except (LookupError, UnicodeDecodeError):
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("cp1252", "replace")


def _cleartext(block: bytes) -> bytes:
    """The signed text of a clearsigned block: after the armour header, before the signature,
    dash-escaping undone (RFC 4880, 7.1)."""
    head_end = re.search(rb"\r?\n\r?\n", block)
    sig = block.find(b"-----BEGIN PGP SIGNATURE-----")
    if head_end is None or sig < 0:
        return b""
    text = block[head_end.end() : sig]
    lines = [line[2:] if line.startswith(b"- ") else line for line in text.split(b"\n")]
    return b"\n".join(lines).rstrip(b"\r\n") + b"\n"


def _keys_in(root: Message) -> list[bytes]:
    found: list[bytes] = []
    stack = [root]
    while stack and len(found) < MAX_KEYS_PER_MESSAGE:
        part = stack.pop()
        payload = part.get_payload()
        if isinstance(payload, list):
            if _content(part)[0].startswith("multipart/"):
                stack.extend(reversed([p for p in payload if isinstance(p, Message)]))
            continue
        if _content(part)[0] == "application/pgp-keys":
            data = _payload(part)
            if data:
                found.append(data)
    return found


def autocrypt_key(raw: bytes, sender: str | None) -> bytes | None:
    """The key of the first `Autocrypt:` header whose addr= is the sender (Autocrypt 1.1)."""
    if not sender:
        return None
    head, _ = _split_head(raw)
    for name, text in _fields(head):
        if name != "autocrypt":
            continue
        value = re.sub(rb"\r?\n[ \t]*", b"", text.split(b":", 1)[1]).decode("ascii", "replace")
        attrs: dict[str, str] = {}
        for item in value.split(";"):
            key, sep, val = item.partition("=")
            if sep:
                attrs.setdefault(key.strip().lower(), val.strip())
        if parse_address(attrs.get("addr", "")) != sender or "keydata" not in attrs:
            continue
        try:
            return base64.b64decode("".join(attrs["keydata"].split()), validate=True)
        except (binascii.Error, ValueError):
            return None
    return None


class Reader:
    """Opens incoming mail: decrypts, verifies, takes the sender's keys."""

    def __init__(self, keyring: Keyring, limits: LimitsConfig) -> None:
        self.keyring = keyring
        self.limits = limits

    def open(self, raw: bytes, msg: ParsedMessage) -> Opened:
        """`msg` is `parse(raw)`; never raises for anything a message holds."""
        if not interesting(raw):
            return Opened(msg, None)
        try:
            root = parse_tree(raw, self.limits)
        except UnsafeMessage:
            return Opened(msg, None)
        opened, carried = self._open(raw, msg, root)
        keys = self._take_keys(raw, msg, carried, opened)
        if keys and opened.status is not None and opened.status.signature is not None:
            sig = opened.status.signature
            if sig.status == UNKNOWN_KEY and any(k.imported for k in keys):
                # The key came with the message it signed: look again now that it is known.
                opened, _ = self._open(raw, msg, root)
        status = opened.status or OpenPGPStatus(False, False, None, None)
        if keys or opened.status is not None:
            opened = replace(opened, status=replace(status, keys=tuple(keys)))
        return replace(opened, msg=_mark(opened, self.keyring))

    def reread(self, raw: bytes, msg: ParsedMessage) -> Opened:
        """A stored message read again (`msg` is `parse(raw)`): decrypted and verified as
        `open` does, but no key it carries is taken. Never raises for anything it holds."""
        if not interesting(raw):
            return Opened(msg, None)
        try:
            root = parse_tree(raw, self.limits)
        except UnsafeMessage:
            return Opened(msg, None)
        opened, _ = self._open(raw, msg, root)
        return opened

    def _open(self, raw: bytes, msg: ParsedMessage, root: Message) -> tuple[Opened, list[bytes]]:
        ctype, params = _content(root)
        protocol = (content_param(params, "protocol") or "").strip().lower()
        if ctype == "multipart/encrypted" and protocol == "application/pgp-encrypted":
            return self._encrypted(raw, msg, root)
        if ctype == "multipart/signed" and protocol == "application/pgp-signature":
            return self._signed(raw, msg, root, raw, whole=True), _keys_in(root)
        nested = self._nested_signed(raw, msg, root)
        if nested is not None:
            return nested, _keys_in(root)
        return self._inline(raw, msg, root), _keys_in(root)

    def _nested_signed(self, raw: bytes, msg: ParsedMessage, root: Message) -> Opened | None:
        """A multipart/signed first part of a multipart (a list's footer after it): verified,
        but not whole."""
        children = root.get_payload()
        boundary = root.get_boundary()
        if not isinstance(children, list) or not children or not isinstance(boundary, str):
            return None
        first = children[0]
        if not isinstance(first, Message):
            return None
        ctype, params = _content(first)
        protocol = (content_param(params, "protocol") or "").strip().lower()
        if ctype != "multipart/signed" or protocol != "application/pgp-signature":
            return None
        parts = body_parts(raw, boundary)
        if not parts:
            return None
        return self._signed(raw, msg, first, parts[0], whole=False)

    def _encrypted(
        self, raw: bytes, msg: ParsedMessage, root: Message
    ) -> tuple[Opened, list[bytes]]:
        parts = root.get_payload()
        if not isinstance(parts, list) or len(parts) < 2 or not isinstance(parts[1], Message):
            status = OpenPGPStatus(
                True, False, "a multipart/encrypted message without its parts", None
            )
            return Opened(msg, status), []
        plain, problem, signature = self.keyring.decrypt(
            _payload(parts[1]), self.limits.max_message_size
        )
        if plain is None:
            return Opened(msg, OpenPGPStatus(True, False, problem, None)), []
        combined = combine(raw, plain)
        try:
            inner = parse(combined, self.limits)
            inner_root = parse_tree(combined, self.limits)
        except UnsafeMessage as exc:
            status = OpenPGPStatus(True, False, f"the decrypted message is unsafe: {exc}", None)
            return Opened(msg, status), []
        ctype, params = _content(inner_root)
        protocol = (content_param(params, "protocol") or "").strip().lower()
        if (
            signature is None
            and ctype == "multipart/signed"
            and protocol == "application/pgp-signature"
        ):
            # Signed, then encrypted (RFC 3156, 6.1), as mutt does.
            nested = self._signed(combined, inner, inner_root, plain, whole=True)
            signature = nested.status.signature if nested.status else None
        status = OpenPGPStatus(
            True, True, None, signature, subject_protected=protected_subject(plain) is not None
        )
        return Opened(inner, status, combined), _keys_in(inner_root)

    def _signed(
        self, raw: bytes, msg: ParsedMessage, root: Message, entity: bytes, whole: bool
    ) -> Opened:
        boundary = root.get_boundary()
        parts = signed_parts(entity, boundary) if isinstance(boundary, str) else None
        if parts is None:
            signature = Signature(BAD, None, whole, detail="the signed parts cannot be found")
        else:
            signed, sig_part = parts
            children = root.get_payload()
            second = children[1] if isinstance(children, list) and len(children) > 1 else None
            sig_data = _payload(second) if isinstance(second, Message) else sig_part
            signature = self.keyring.verify_detached(signed, sig_data or sig_part, whole)
        return Opened(msg, OpenPGPStatus(False, False, None, signature))

    def _inline(self, raw: bytes, msg: ParsedMessage, root: Message) -> Opened:
        part = _body_part(root)
        if part is None:
            return Opened(msg, None)
        data = _payload(part)
        match = _ARMOUR.search(data)
        if match is None:
            return Opened(msg, None)
        _, params = _content(part)
        charset = content_param(params, "charset")
        before = _decode(data[: match.start()], charset)
        after = _decode(data[match.end() :], charset)
        whole = not before.strip() and not after.strip()
        block = match.group(0)
        if match.group(1) == b"SIGNED MESSAGE":
            clearsigned = self.keyring.verify_clearsigned(block, whole)
            text = before + _decode(_cleartext(block), charset) + after
            status = OpenPGPStatus(False, False, None, clearsigned)
            return Opened(replace(msg, text=_text_cap(text, self.limits)), status)
        plain, problem, signature = self.keyring.decrypt(block, self.limits.max_message_size)
        if plain is None:
            return Opened(msg, OpenPGPStatus(True, False, problem, None))
        if signature is not None:
            signature = replace(signature, whole=whole)
        text = before + _decode(plain, charset) + after
        try:
            inner = parse(_with_text(raw, text), self.limits)
        except UnsafeMessage as exc:
            status = OpenPGPStatus(True, False, f"the decrypted message is unsafe: {exc}", None)
            return Opened(msg, status)
        inner = replace(
            inner, attachments=msg.attachments, text_is_first_part=msg.text_is_first_part
        )
        return Opened(inner, OpenPGPStatus(True, True, None, signature))

    def _take_keys(
        self, raw: bytes, msg: ParsedMessage, carried: list[bytes], opened: Opened
    ) -> list[KeyOutcome]:
        sender = msg.from_addr
        if not sender:
            return []
        signature = opened.status.signature if opened.status else None
        signed_by = signature.fingerprint if signature and signature.status == GOOD else None
        offers = [("attachment", data) for data in carried]
        header_key = autocrypt_key(raw, sender)
        if header_key is not None:
            offers.append(("autocrypt", header_key))
        outcomes = []
        for source, data in offers[:MAX_KEYS_PER_MESSAGE]:
            try:
                outcome = self.keyring.offer(sender, data, source, signed_by)
            except Exception as exc:  # gpg on hostile key data: the message goes on
                outcome = KeyOutcome(
                    sender, source, None, False, f"unreadable ({type(exc).__name__})"
                )
            log.info(
                "openpgp: key from %s (%s): %s",
                sender,
                source,
                f"imported {outcome.fingerprint}" if outcome.imported else outcome.reason,
            )
            outcomes.append(outcome)
        return outcomes


def _text_cap(text: str, limits: LimitsConfig) -> str:
    return text.replace("\x00", "").replace("\r\n", "\n")[: limits.max_text_chars]


def _mark(opened: Opened, keyring: Keyring) -> ParsedMessage:
    """The message with its OpenPGP status, the signature judged against the sender's key."""
    status = opened.status
    if status is None:
        return opened.msg
    sig = status.signature
    if sig is not None and sig.status == GOOD:
        by_sender = sig.fingerprint is not None and sig.fingerprint in keyring.keys_for(
            opened.msg.from_addr or ""
        )
        status = replace(status, signature=replace(sig, by_sender=by_sender))
    return replace(opened.msg, openpgp=status)


# --- sealing outgoing mail --------------------------------------------------------------------

_PREAMBLE = b"This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n"
# Copied into the encrypted part, so the reader's client shows them (protected headers).
_PROTECTED = ("subject", "from", "to", "date", "message-id", "reply-to")


def seal(raw: bytes, keyring: Keyring, recipients: Sequence[str], outer_subject: str) -> bytes:
    """`raw` (a message triaged composed) as PGP/MIME, encrypted to `recipients` and signed.

    Raises OpenPGPError when gpg cannot encrypt.
    """
    head, body = _split_head(raw)
    fields = _fields(head)
    inner_fields = []
    for name, text in fields:
        if name == "content-type":
            inner_fields.append(_eol(text.rstrip(b"\r\n") + b'; protected-headers="v1"'))
        elif name == "content-transfer-encoding" or name in _PROTECTED:
            inner_fields.append(_eol(text))
    entity = b"".join(inner_fields) + b"\r\n" + body
    armour = keyring.encrypt(entity, recipients).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    boundary = f"=_triaged_{secrets.token_hex(12)}"
    subject = clean_header_text(outer_subject, 200).encode("ascii", "replace")
    outer = [_eol(text) for name, text in fields if name not in (*_CONTENT_FIELDS, "subject")]
    outer.append(b"Subject: " + subject + b"\r\n")
    outer.append(b"MIME-Version: 1.0\r\n")
    outer.append(
        b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\r\n'
        b' boundary="' + boundary.encode("ascii") + b'"\r\n'
    )
    b = boundary.encode("ascii")
    content = (
        _PREAMBLE
        + b"--"
        + b
        + b"\r\n"
        + b"Content-Type: application/pgp-encrypted\r\n"
        + b"Content-Description: PGP/MIME version identification\r\n\r\n"
        + b"Version: 1\r\n\r\n"
        + b"--"
        + b
        + b"\r\n"
        + b'Content-Type: application/octet-stream; name="encrypted.asc"\r\n'
        + b"Content-Description: OpenPGP encrypted message\r\n"
        + b'Content-Disposition: inline; filename="encrypted.asc"\r\n\r\n'
        + armour
        + (b"" if armour.endswith(b"\r\n") else b"\r\n")
        + b"--"
        + b
        + b"--\r\n"
    )
    return b"".join(outer) + b"\r\n" + content

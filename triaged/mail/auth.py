"""Proofs that a maintainer's message really comes from that maintainer.

The From header proves nothing. A message proves its sender in one of three ways:

- "token": it was sent to the reply address triaged put in its own mail to that maintainer
  about that report, `local+<token>@domain`, where the token is an HMAC of the report ID and
  the maintainer's address under a key only triaged holds;
- "dmarc": the topmost Authentication-Results header written by the configured, trusted
  authserv-id (our own receiving server) says DMARC passed for the From domain, or that a DKIM
  signature of exactly that domain verified;
- "openpgp": a good OpenPGP signature over the whole text commands are read from, by a key
  configured for that maintainer (`[openpgp] public_keys`). A signed part wrapped with unsigned
  text, or a signature by anyone but the sender, proves nothing.

Everything fails closed: whatever cannot be parsed or matched is no proof. Only
`load_or_create_key` does I/O; it never logs or shows the key.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import os
import re
import secrets
import stat
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from triaged.core.files import fsync_path
from triaged.core.protection import GOOD, Signature
from triaged.core.text import (
    CONTROL_CHARS,
    LINE_AND_BIDI_CHARS,
    parse_address,
    parse_domain,
)
from triaged.errors import ConfigError

__all__ = [
    "CANARY_HEADER",
    "KEY_BYTES",
    "TOKEN_LENGTH",
    "ReplyTokens",
    "Verdict",
    "canary_probe",
    "canary_token",
    "dmarc_proof",
    "load_or_create_key",
    "reply_address",
    "reply_token",
    "token_proof",
    "verify",
]

log = logging.getLogger(__name__)

KEY_BYTES = 32  # the least a key file may hold
TOKEN_LENGTH = 26  # base32 characters: 130 bits
_KEY_FILE_MAX = 4096  # bytes read from a key file
_CONFIG_KEY = "auth.key_file"


# --- the key ----------------------------------------------------------------------------------


def load_or_create_key(path: Path) -> bytes:
    """The token key stored in `path` as hex, created (64 hex digits, mode 0600) if absent.

    Creation is atomic: the key is written to a private temporary file that is then linked
    to `path`, so no reader ever sees a partial key; when another process created the file
    first, its key is used. A key file that group or others may read is refused.
    """
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    try:
        _create_key(path)
    except FileExistsError:
        pass  # another process won the race; its key is the key
    except OSError as exc:
        raise ConfigError(str(path), _CONFIG_KEY, f"cannot create: {exc.strerror}") from None
    else:
        log.info("created a new reply-token key in %s", path)
    try:
        return _read_key(path)
    except FileNotFoundError:
        raise ConfigError(str(path), _CONFIG_KEY, "vanished right after creation") from None


def _read_key(path: Path) -> bytes:
    """The key in `path`; FileNotFoundError when it does not exist, else ConfigError."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ConfigError(str(path), _CONFIG_KEY, f"cannot read: {exc.strerror}") from None
    try:
        # The checks are made on the opened file, so the file checked is the file read.
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(str(path), _CONFIG_KEY, "is not a regular file")
        if info.st_mode & 0o077:
            raise ConfigError(str(path), _CONFIG_KEY, "must not be readable by others (chmod 600)")
        data = os.read(fd, _KEY_FILE_MAX + 1)
    except OSError as exc:
        raise ConfigError(str(path), _CONFIG_KEY, f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > _KEY_FILE_MAX:
        raise ConfigError(str(path), _CONFIG_KEY, f"is larger than {_KEY_FILE_MAX} bytes")
    try:
        key = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise ConfigError(
            str(path), _CONFIG_KEY, "must hold the key as hexadecimal digits only"
        ) from None
    if len(key) < KEY_BYTES:
        raise ConfigError(
            str(path),
            _CONFIG_KEY,
            f"key too short: {len(key)} bytes, needs at least {KEY_BYTES} random bytes "
            f"({2 * KEY_BYTES} hex digits)",
        )
    return key


def _create_key(path: Path) -> None:
    """Writes a new key to `path`; FileExistsError when `path` already exists."""
    content = (secrets.token_hex(KEY_BYTES) + "\n").encode("ascii")
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(temporary, flags, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            os.write(fd, content)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            # link() fails when `path` exists: the first process to link wins, and the file
            # appears with its whole content.
            os.link(temporary, path)
        except FileExistsError:
            raise
        except OSError:
            # A file system without hard links: create `path` exclusively and write it.
            _write_exclusive(path, content)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
    with contextlib.suppress(OSError):
        fsync_path(path.parent)


def _write_exclusive(path: Path, content: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)


# --- proof 1: the reply token -----------------------------------------------------------------


def reply_token(key: bytes, report_id: str, maintainer: str) -> str:
    """The token for one report and one maintainer: 26 lowercase base32 characters."""
    message = f"{report_id}\n{maintainer.lower()}".encode("utf-8", "surrogatepass")
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.b32encode(digest).decode("ascii").rstrip("=").lower()[:TOKEN_LENGTH]


def reply_address(key: bytes, project_address: str, report_id: str, maintainer: str) -> str:
    """`local+<token>@domain` of the project address, for one report and one maintainer.

    The configured local part is kept whole, even when it already holds a `+`:
    `security+triaged@example.org` gives `security+triaged+<token>@example.org`. Dropping the
    existing subaddress could send replies to a mailbox other than the one configured; with
    the usual `recipient_delimiter = +` the mail still reaches `security`.
    """
    local, _, domain = project_address.strip().rpartition("@")
    return f"{local}+{reply_token(key, report_id, maintainer)}@{domain}"


# --- the canary's probes (triaged/service/canary.py) ------------------------------------------

CANARY_HEADER = "X-Triaged-Canary"
# Another message than any reply token's ("<report id>\n<address>"), under the same key.
_CANARY_CONTEXT = b"triaged canary probe\n"
_PROBE_ID = re.compile(r"^[0-9a-f]{32}$")


def canary_token(key: bytes, probe_id: str) -> str:
    """`<probe id>.<HMAC>`: what a probe carries in its X-Triaged-Canary header, so that nobody
    without the key can make one (and so hide that mail stopped arriving)."""
    digest = hmac.new(key, _CANARY_CONTEXT + probe_id.encode("ascii"), hashlib.sha256).digest()
    return f"{probe_id}.{base64.b32encode(digest).decode('ascii').rstrip('=').lower()}"


def canary_probe(key: bytes, value: str | None) -> str | None:
    """The probe ID of a genuine token; None for anything else (forged, damaged, absent)."""
    if not key or not value:
        return None
    value = value.strip()
    probe_id = value.partition(".")[0]
    if not _PROBE_ID.match(probe_id):
        return None
    return probe_id if hmac.compare_digest(canary_token(key, probe_id), value) else None


@dataclass(frozen=True)
class ReplyTokens:
    """Reply addresses that prove a maintainer's reply, for anyone who sends team mail.

    The key is loaded once (`load_or_create_key`, by whoever starts the work) and passed in:
    making an address is an HMAC, no I/O.
    """

    key: bytes = field(repr=False)
    project_address: str
    maintainers: frozenset[str] = frozenset()

    def reply_to(self, report_id: str | None, address: str) -> str | None:
        """The Reply-To of mail about `report_id` to `address`: its reply address when it is a
        maintainer's (a token for anyone else would prove nothing), else None."""
        if report_id is None or address not in self.maintainers:
            return None
        return reply_address(self.key, self.project_address, report_id, address)


def token_proof(
    key: bytes, project_address: str, report_id: str, sender: str, to_addrs: Iterable[str]
) -> bool:
    """Whether a recipient is the reply address of this report and this sender."""
    local, at, domain = project_address.strip().lower().rpartition("@")
    if not at or not local or not domain:
        return False
    prefix = f"{local}+"
    suffix = f"@{domain}"
    expected = reply_token(key, report_id, sender).encode("ascii")
    found = False
    for address in to_addrs:
        candidate = parse_address(address)
        if candidate is None or not (candidate.startswith(prefix) and candidate.endswith(suffix)):
            continue
        token = candidate[len(prefix) : len(candidate) - len(suffix)]
        if hmac.compare_digest(token.encode("utf-8", "surrogatepass"), expected):
            found = True
    return found


# --- proof 2: DMARC / DKIM in Authentication-Results (RFC 8601) -------------------------------

_Token = tuple[str, str]  # (kind, text): "w" a word, "q" a quoted string, "=" an equals sign
_WORD_END = re.compile(r'[\s()";=\\]')


def dmarc_proof(
    authentication_results: Sequence[str], authserv_id: str | None, from_addr: str
) -> bool:
    """Whether our trusted server's Authentication-Results shows DMARC or aligned DKIM pass.

    Only the topmost header whose authserv-id is `authserv_id` counts: our server adds its
    header on top, and any header lower down with the same ID came with the message and may
    be forged. Headers of other authserv-ids are ignored.
    """
    if not authserv_id or not authserv_id.strip():
        return False
    our_id = authserv_id.strip().lower()
    address = parse_address(from_addr or "")
    if address is None:
        return False
    from_domain = address.rpartition("@")[2]
    for value in authentication_results:
        try:
            statements = _statements(value)
        except Exception:
            # Skipping it could let a forged header lower down decide: no proof at all.
            return False
        head = statements[0]
        if not head or head[0][0] == "=" or head[0][1].strip().lower() != our_id:
            continue
        # The topmost header of our server decides alone, pass or not.
        return any(_passes(statement, from_domain) for statement in statements[1:])
    return False


def _statements(value: str) -> list[list[_Token]]:
    """The header value split at `;` into tokens, with comments and whitespace dropped.

    Quoted strings and comments (nested, with backslash escapes) are honoured, so a `;` or a
    `dmarc=pass` inside either is never read as structure. An unclosed comment or quoted
    string runs to the end of the value.
    """
    statements: list[list[_Token]] = [[]]
    pos = 0
    end = len(value)
    while pos < end:
        char = value[pos]
        if char == "(":
            depth = 1
            pos += 1
            while pos < end and depth:
                char = value[pos]
                if char == "\\":
                    pos += 2
                    continue
                if char == "(":
                    depth += 1
                elif char == ")":
                    depth -= 1
                pos += 1
        elif char == '"':
            text: list[str] = []
            pos += 1
            while pos < end:
                char = value[pos]
                if char == "\\" and pos + 1 < end:
                    text.append(value[pos + 1])
                    pos += 2
                    continue
                pos += 1
                if char == '"':
                    break
                text.append(char)
            statements[-1].append(("q", "".join(text)))
        elif char == ";":
            statements.append([])
            pos += 1
        elif char == "=":
            statements[-1].append(("=", "="))
            pos += 1
        elif char.isspace() or char in ")\\":
            pos += 1
        else:
            match = _WORD_END.search(value, pos)
            stop = match.start() if match else end
            statements[-1].append(("w", value[pos:stop]))
            pos = stop
    return statements


def _passes(tokens: list[_Token], from_domain: str) -> bool:
    """Whether one resinfo is `dmarc=pass` or `dkim=pass` aligned with `from_domain`."""
    if len(tokens) < 3 or tokens[0][0] != "w" or tokens[1][0] != "=" or tokens[2][0] != "w":
        return False
    method = tokens[0][1].lower().split("/", 1)[0]  # "dkim/1": a method version
    if tokens[2][1].lower() != "pass" or method not in ("dmarc", "dkim"):
        return False
    properties: dict[str, list[str]] = {}
    pos = 3
    while pos < len(tokens):
        if (
            pos + 2 >= len(tokens)
            or tokens[pos][0] != "w"
            or tokens[pos + 1][0] != "="
            or tokens[pos + 2][0] == "="
        ):
            return False  # not the shape RFC 8601 gives a resinfo: no proof
        name = tokens[pos][1].lower()
        value = tokens[pos + 2][1]
        pos += 3
        # Base64 padding at the end of a value such as header.b.
        while pos < len(tokens) and tokens[pos][0] == "=":
            value += "="
            pos += 1
        properties.setdefault(name, []).append(value)
    if method == "dmarc":
        return _all_match(properties.get("header.from"), from_domain, at_sign="optional")
    # Strict alignment: the signing domain d= decides; i= only when no d= is given.
    if "header.d" in properties:
        return _all_match(properties["header.d"], from_domain, at_sign="never")
    return _all_match(properties.get("header.i"), from_domain, at_sign="required")


def _all_match(values: list[str] | None, from_domain: str, *, at_sign: str) -> bool:
    """Whether there are values and each names exactly `from_domain`.

    at_sign: "never" (a bare domain, header.d), "required" (`[local]@domain`, header.i), or
    "optional" (header.from, which some servers write as a whole address).
    """
    if not values:
        return False
    return all(_named_domain(value, at_sign) == from_domain for value in values)


def _named_domain(value: str, at_sign: str) -> str | None:
    """The domain a property value names, read as core.text reads addresses; None if none.

    `@domain` (a signing identity without its local part) and one trailing root dot are
    allowed; anything else that is not exactly a domain or an address names nothing.
    """
    text = value.strip()
    if text.endswith("."):
        text = text[:-1]
    local, at, domain = text.rpartition("@")
    if (at_sign == "never" and at) or (at_sign == "required" and not at):
        return None
    if local and parse_address(text) is None:
        return None
    return parse_domain(domain)


# --- the verdict ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    ok: bool
    proof: str | None  # "token", "dmarc" or "openpgp" when ok
    reason: str  # a sentence saying why it passed or failed; never holds a secret


def openpgp_proof(signature: Signature | None, sender_keys: Collection[str], shown: str) -> Verdict:
    """Whether a good signature over the whole text is by a key configured for the sender."""
    if not sender_keys:
        return Verdict(False, None, f"no OpenPGP key is configured for {shown}")
    if signature is None:
        return Verdict(False, None, "the message has no OpenPGP signature")
    if signature.status != GOOD:
        return Verdict(False, None, f"its OpenPGP signature is {signature.status}")
    if not signature.whole:
        return Verdict(False, None, "its OpenPGP signature covers only part of the message")
    if signature.fingerprint not in sender_keys:
        return Verdict(
            False, None, f"it is signed by {signature.fingerprint}, not by a key of {shown}"
        )
    return Verdict(True, "openpgp", f"{shown} signed it with their key {signature.fingerprint}")


_SHOWN = re.compile(f"[{CONTROL_CHARS}{LINE_AND_BIDI_CHARS}]+")


def _show(text: str) -> str:
    """`text` made safe for a one-line reason."""
    return _SHOWN.sub("", text)[:254]


def verify(
    *,
    key: bytes,
    project_address: str,
    report_id: str | None,
    sender: str | None,
    to_addrs: Iterable[str],
    authentication_results: Sequence[str],
    maintainers: Collection[str],
    proofs: Collection[str],
    authserv_id: str | None,
    signature: Signature | None = None,
    sender_keys: Collection[str] = (),
) -> Verdict:
    """Whether `sender` is a maintainer and the message proves it, by one of `proofs`.

    Fails closed: no sender, a sender who is not a maintainer, no enabled proof, or no proof
    that holds, is a refusal. Proofs other than "token", "dmarc" and "openpgp" are never
    satisfied. `signature` is the message's OpenPGP signature, `sender_keys` the fingerprints
    of the keys configured for the sender.
    """
    address = parse_address(sender or "")
    if address is None:
        return Verdict(False, None, "the message has no valid From address")
    shown = _show(address)
    if address not in {parse_address(member) for member in maintainers}:
        return Verdict(False, None, f"{shown} is not a maintainer")
    enabled = {proof.strip().lower() for proof in proofs}
    failures: list[str] = []
    if "token" in enabled:
        if not report_id:
            failures.append("no report to check a reply token against")
        elif token_proof(key, project_address, report_id, address, to_addrs):
            reason = f"{shown} wrote to their reply address for report {_show(report_id)}"
            return Verdict(True, "token", reason)
        else:
            failures.append(f"no valid reply token for report {_show(report_id)} and {shown}")
    if "dmarc" in enabled:
        if not authserv_id or not authserv_id.strip():
            failures.append("DMARC proof is off (no auth.authserv_id configured)")
        elif dmarc_proof(authentication_results, authserv_id, address):
            server = _show(authserv_id.strip())
            reason = f"DMARC or aligned DKIM pass for {shown} from authserv-id {server}"
            return Verdict(True, "dmarc", reason)
        else:
            server = _show(authserv_id.strip())
            failures.append(f"no DMARC pass from authserv-id {server}")
    if "openpgp" in enabled:
        verdict = openpgp_proof(signature, sender_keys, shown)
        if verdict.ok:
            return verdict
        failures.append(verdict.reason)
    if not failures:
        return Verdict(False, None, "no proof is enabled (auth.proofs names none we know)")
    return Verdict(False, None, ", and ".join(failures))

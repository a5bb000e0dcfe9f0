from __future__ import annotations

import os
import random
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from triaged.errors import ConfigError
from triaged.mail.auth import (
    TOKEN_LENGTH,
    Verdict,
    dmarc_proof,
    load_or_create_key,
    reply_address,
    reply_token,
    token_proof,
    verify,
)

KEY = bytes(range(32))
PROJECT = "security@example.org"
ALICE = "alice@example.org"
BOB = "bob@example.net"
MX = "mx.example.org"


# --- the key file -----------------------------------------------------------------------------


def test_key_created_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "token.key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    content = path.read_text()
    assert content.strip() == key.hex()
    assert len(content.strip()) == 64
    assert load_or_create_key(path) == key
    assert path.read_text() == content
    assert [p.name for p in tmp_path.iterdir()] == ["token.key"]  # no temporary file left


def test_key_created_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        load_or_create_key(tmp_path / "k")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600


def test_two_keys_differ(tmp_path: Path) -> None:
    assert load_or_create_key(tmp_path / "a") != load_or_create_key(tmp_path / "b")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o601])
def test_key_readable_by_others_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "token.key"
    path.write_text("ab" * 32)
    path.chmod(mode)
    with pytest.raises(ConfigError) as info:
        load_or_create_key(path)
    assert info.value.key == "auth.key_file"
    assert info.value.path == str(path)
    assert info.value.message == "must not be readable by others (chmod 600)"


def test_existing_key_read(tmp_path: Path) -> None:
    path = tmp_path / "token.key"
    path.write_text(" " + "AB" * 40 + "\n")
    path.chmod(0o400)
    assert load_or_create_key(path) == bytes([0xAB]) * 40


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"ab" * 31, "too short"),
        (b"", "too short"),
        (b"zz" * 32, "hexadecimal"),
        (b"ab" * 31 + b"a", "hexadecimal"),
        (b"\xff\xfe" * 32, "hexadecimal"),
        (b"a" * 10_000, "larger than"),
    ],
)
def test_bad_key_file(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "token.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(ConfigError) as info:
        load_or_create_key(path)
    assert expected in info.value.message
    assert info.value.key == "auth.key_file"
    # The message never shows the file's content.
    assert "abab" not in info.value.message


def test_unreadable_key_file(tmp_dir: Path) -> None:
    path = tmp_dir / "token.key"
    path.write_text("ab" * 32)
    path.chmod(0o000)
    if os.geteuid() != 0:
        with pytest.raises(ConfigError, match="cannot read"):
            load_or_create_key(path)
        return
    # Root reads any file: try as an unprivileged user, as the service would run.
    code = (
        "from pathlib import Path\n"
        "from triaged.mail.auth import load_or_create_key\n"
        "from triaged.errors import ConfigError\n"
        "try:\n"
        f"    load_or_create_key(Path({str(path)!r}))\n"
        "except ConfigError as exc:\n"
        "    print(exc.message)\n"
    )
    root = Path(__file__).parent.parent
    # The system interpreter: a pyenv or venv one under /root is not executable by others.
    python = shutil.which("python3", path="/usr/bin:/usr/local/bin") or sys.executable
    result = subprocess.run(
        [python, "-c", code],
        capture_output=True,
        text=True,
        user=65534,
        group=65534,
        env={**os.environ, "PYTHONPATH": str(root)},
        cwd="/",
        check=False,
    )
    assert "cannot read" in result.stdout, result.stdout + result.stderr


def test_key_file_that_is_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "token.key"
    path.mkdir(mode=0o700)
    with pytest.raises(ConfigError):
        load_or_create_key(path)


def test_key_in_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot create"):
        load_or_create_key(tmp_path / "missing" / "token.key")


def test_concurrent_creation_yields_one_key(tmp_path: Path) -> None:
    path = tmp_path / "token.key"
    results: list[bytes] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def run() -> None:
        barrier.wait()
        try:
            results.append(load_or_create_key(path))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(results)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token.key"]


def test_race_lost_uses_the_other_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "token.key"
    real_link = os.link

    def link_after_rival(src: str, dst: str) -> None:
        # Another process creates the key between our check and our link.
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, b"cd" * 32)
        os.close(fd)
        real_link(src, dst)

    monkeypatch.setattr(os, "link", link_after_rival)
    assert load_or_create_key(path) == bytes([0xCD]) * 32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token.key"]


def test_no_hard_links_falls_back_to_exclusive_create(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_link(src: str, dst: str) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_link)
    path = tmp_path / "token.key"
    key = load_or_create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token.key"]


# --- tokens -----------------------------------------------------------------------------------


def test_token_shape_and_stability() -> None:
    token = reply_token(KEY, "abc23def", ALICE)
    assert len(token) == TOKEN_LENGTH == 26
    assert set(token) <= set("abcdefghijklmnopqrstuvwxyz234567")
    assert reply_token(KEY, "abc23def", ALICE.upper()) == token
    assert reply_token(KEY, "abc23def", BOB) != token
    assert reply_token(KEY, "abc23deg", ALICE) != token
    assert reply_token(bytes(32), "abc23def", ALICE) != token


def test_token_is_the_documented_hmac() -> None:
    import base64
    import hashlib
    import hmac

    digest = hmac.new(KEY, b"abc23def\nalice@example.org", hashlib.sha256).digest()
    expected = base64.b32encode(digest).decode().rstrip("=").lower()[:26]
    assert reply_token(KEY, "abc23def", "Alice@Example.org") == expected


def test_reply_address() -> None:
    token = reply_token(KEY, "abc23def", ALICE)
    assert reply_address(KEY, PROJECT, "abc23def", ALICE) == f"security+{token}@example.org"


def test_reply_address_keeps_an_existing_subaddress() -> None:
    token = reply_token(KEY, "r1", ALICE)
    address = reply_address(KEY, "security+triaged@example.org", "r1", ALICE)
    assert address == f"security+triaged+{token}@example.org"
    assert token_proof(KEY, "security+triaged@example.org", "r1", ALICE, [address])
    assert not token_proof(KEY, PROJECT, "r1", ALICE, [address])


def test_token_proof_accepts_own_reply_address() -> None:
    address = reply_address(KEY, PROJECT, "r1", ALICE)
    assert token_proof(KEY, PROJECT, "r1", ALICE, ["someone@else.org", address])


def test_token_proof_is_case_insensitive() -> None:
    address = reply_address(KEY, PROJECT, "r1", ALICE)
    assert token_proof(KEY, "Security@EXAMPLE.org", "r1", "ALICE@example.ORG", [address.upper()])


@pytest.mark.parametrize(
    "to_addrs",
    [
        [],
        [PROJECT],
        ["security+@example.org"],
        [reply_address(KEY, PROJECT, "r2", ALICE)],  # another report
        [reply_address(KEY, PROJECT, "r1", BOB)],  # another maintainer
        [reply_address(bytes(32), PROJECT, "r1", ALICE)],  # another key
        [reply_address(KEY, "security@example.net", "r1", ALICE)],  # another domain
        [reply_address(KEY, "sec@example.org", "r1", ALICE)],  # another local part
        [reply_address(KEY, PROJECT, "r1", ALICE).replace("@", "x@")],
        [reply_address(KEY, PROJECT, "r1", ALICE)[:-1]],
        ["x" + reply_address(KEY, PROJECT, "r1", ALICE)],
        [reply_address(KEY, PROJECT, "r1", ALICE) + ".evil.com"],
        ["security+ékey\ud800@example.org"],
    ],
)
def test_token_proof_refuses(to_addrs: list[str]) -> None:
    assert not token_proof(KEY, PROJECT, "r1", ALICE, to_addrs)


def test_token_proof_with_bad_project_address() -> None:
    address = reply_address(KEY, PROJECT, "r1", ALICE)
    assert not token_proof(KEY, "", "r1", ALICE, [address])
    assert not token_proof(KEY, "security", "r1", ALICE, [address])
    assert not token_proof(KEY, "@example.org", "r1", ALICE, [address])


# --- DMARC ------------------------------------------------------------------------------------

PASS = (
    f"{MX}; dkim=pass header.d=example.org; spf=pass smtp.mailfrom=example.org;"
    " dmarc=pass (p=reject dis=none) header.from=example.org"
)


@pytest.mark.parametrize(
    "header",
    [
        PASS,
        f"{MX}; dmarc=pass header.from=example.org",
        f"{MX.upper()}; DMARC=Pass header.from=EXAMPLE.ORG",
        f"{MX} 1; dmarc=pass header.from=example.org",
        f"{MX} (Postfix) 1 (v1); dmarc = pass (ok) header.from = example.org",
        f"{MX};\r\n\tdmarc=pass header.from=example.org.",
        f'{MX}; dmarc=pass policy.dmarc=reject header.from="example.org"',
        f"{MX}; dmarc=pass action=none header.from=example.org",
        f"{MX}; dkim=pass (2048-bit key) header.d=example.org header.i=@example.org "
        "header.s=s1 header.b=AbCd+/==",
        f"{MX}; dkim/1=pass header.d=example.org",
        f"{MX}; dkim=pass header.i=@example.org",
        f"{MX}; dkim=pass header.i=alice@example.org",
        f"{MX}; dkim=pass header.d=evil.com; dkim=pass header.d=example.org",
        f"{MX}; dmarc=fail header.from=example.org; dkim=pass header.d=example.org",
        f'"{MX}"; dmarc=pass header.from=example.org',
        f"{MX}; none; dmarc=pass header.from=example.org",
    ],
)
def test_dmarc_pass(header: str) -> None:
    assert dmarc_proof([header], MX, "Alice@Example.org")


@pytest.mark.parametrize(
    "header",
    [
        f"{MX}; dmarc=fail header.from=example.org",
        f"{MX}; dmarc=none header.from=example.org",
        f"{MX}; dmarc=temperror header.from=example.org",
        f"{MX}; dmarc=permerror header.from=example.org",
        f"{MX}; dmarc=bestguesspass header.from=example.org",
        f"{MX}; dmarc=pass",  # no header.from
        f"{MX}; dmarc=pass header.from=",
        f"{MX}; dmarc=pass header.from=evil.com",
        f"{MX}; dmarc=pass header.from=example.org.evil.com",
        f"{MX}; dmarc=pass header.from=sub.example.org",
        f"{MX}; dmarc=pass header.from=example.org header.from=evil.com",
        f"{MX}; dmarc=fail (dmarc=pass header.from=example.org) header.from=example.org",
        f"{MX}; dmarc=fail header.from=example.org (; dmarc=pass header.from=example.org)",
        f"{MX}; dmarc=fail header.from=example.org ((nested); dmarc=pass header.from=example.org)",
        f"{MX}; dmarc=fail header.from=example.org (\\); dmarc=pass header.from=example.org)",
        f'{MX}; dmarc=fail reason="; dmarc=pass header.from=example.org"',
        f'{MX}; dmarc=fail reason="\\"; dmarc=pass header.from=example.org"',
        f"{MX}; dmarc=fail (unclosed; dmarc=pass header.from=example.org",
        f"{MX}; (dmarc=pass header.from=example.org)",
        f'{MX}; dmarc="pass" header.from=example.org',
        f"{MX}; dmarc=pass header.from example.org",
        f"{MX}; dmarc pass header.from=example.org",
        f"{MX}; dkim=pass header.d=evil.com",
        f"{MX}; dkim=pass header.d=sub.example.org",
        f"{MX}; dkim=pass header.d=example.org.evil.com",
        f"{MX}; dkim=pass header.d=evil.com header.i=@example.org",
        f"{MX}; dkim=pass header.i=example.org",
        f"{MX}; dkim=pass header.i=@evil.com",
        f"{MX}; dkim=pass",
        f"{MX}; dkim=fail header.d=example.org",
        f"{MX}; dkim=neutral header.d=example.org",
        f"{MX}; spf=pass smtp.mailfrom=example.org",
        f"{MX}; arc=pass header.from=example.org",
        f"{MX}; none",
        f"{MX}",
        "",
        "mx.example.org.evil.com; dmarc=pass header.from=example.org",
        f"other.{MX}; dmarc=pass header.from=example.org",
    ],
)
def test_dmarc_no_pass(header: str) -> None:
    assert not dmarc_proof([header], MX, ALICE)


def test_only_the_configured_authserv_id_counts() -> None:
    forged = "mx.evil.com; dmarc=pass header.from=example.org"
    assert not dmarc_proof([forged], MX, ALICE)
    assert dmarc_proof([forged], "mx.evil.com", ALICE)
    # Other servers' headers, above or below ours, are ignored entirely.
    ours_fail = f"{MX}; dmarc=fail header.from=example.org"
    assert not dmarc_proof([forged, ours_fail], MX, ALICE)
    assert not dmarc_proof([ours_fail, forged], MX, ALICE)
    assert dmarc_proof([forged, PASS], MX, ALICE)


def test_forged_header_below_ours_is_ignored() -> None:
    real = (
        f"{MX}; dkim=none; spf=softfail smtp.mailfrom=evil.com; dmarc=fail header.from=example.org"
    )
    forged = f"{MX}; dmarc=pass header.from=example.org"
    assert not dmarc_proof([real, forged], MX, ALICE)
    assert not dmarc_proof([f"{MX}; none", forged], MX, ALICE)
    # The topmost header of ours decides, pass or not.
    assert dmarc_proof([PASS, f"{MX}; dmarc=fail header.from=example.org"], MX, ALICE)


def test_garbled_header_of_ours_still_decides() -> None:
    forged = f"{MX}; dmarc=pass header.from=example.org"
    for garbled in (f"{MX} junk junk; ===", f"{MX} (unclosed", f'{MX} "x; y', f"{MX};;;"):
        assert not dmarc_proof([garbled, forged], MX, ALICE)


@pytest.mark.parametrize("authserv_id", [None, "", "  "])
def test_dmarc_off_without_authserv_id(authserv_id: str | None) -> None:
    assert not dmarc_proof([PASS], authserv_id, ALICE)
    assert not dmarc_proof(["; dmarc=pass header.from=example.org"], authserv_id, ALICE)


@pytest.mark.parametrize("from_addr", ["", "alice", "alice@", "@", "alice@evil.com"])
def test_dmarc_needs_the_from_domain(from_addr: str) -> None:
    assert not dmarc_proof([PASS], MX, from_addr)


def test_dmarc_garbage_never_raises() -> None:
    rng = random.Random(7489)
    alphabet = '()";=\\@. \t\r\nabdkimrcpsfhe.-/1' + "\x00é\ud800"
    for _ in range(3000):
        header = MX + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
        dmarc_proof([header], MX, ALICE)
    for _ in range(200):
        header = "".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(rng.randint(0, 200)))
        assert not dmarc_proof([header], MX, ALICE)


def test_dmarc_long_header_is_linear() -> None:
    header = f"{MX}; " + "(" * 50_000 + ")" * 50_000 + "; " + "a=" * 50_000
    assert not dmarc_proof([header], MX, ALICE)
    assert not dmarc_proof([f"{MX}; dkim=pass " + "header.b=x== " * 20_000], MX, ALICE)


# --- verify -----------------------------------------------------------------------------------


def run_verify(
    *,
    sender: str | None = ALICE,
    report_id: str | None = "r1",
    to_addrs: Sequence[str] = (),
    auth: Sequence[str] = (),
    maintainers: Sequence[str] = (ALICE, BOB),
    proofs: Sequence[str] = ("token", "dmarc"),
    authserv_id: str | None = MX,
) -> Verdict:
    return verify(
        key=KEY,
        project_address=PROJECT,
        report_id=report_id,
        sender=sender,
        to_addrs=to_addrs,
        authentication_results=auth,
        maintainers=maintainers,
        proofs=proofs,
        authserv_id=authserv_id,
    )


ALICE_R1 = reply_address(KEY, PROJECT, "r1", ALICE)


def test_verify_token() -> None:
    verdict = run_verify(to_addrs=[ALICE_R1])
    assert verdict.ok and verdict.proof == "token"
    assert "r1" in verdict.reason and ALICE in verdict.reason
    assert reply_token(KEY, "r1", ALICE) not in verdict.reason


def test_verify_dmarc() -> None:
    verdict = run_verify(auth=[PASS])
    assert verdict.ok and verdict.proof == "dmarc"
    assert MX in verdict.reason


def test_verify_token_preferred_when_both_hold() -> None:
    assert run_verify(to_addrs=[ALICE_R1], auth=[PASS]).proof == "token"


def test_verify_maintainer_is_matched_lowercased() -> None:
    verdict = run_verify(
        sender="ALICE@Example.org", to_addrs=[ALICE_R1], maintainers=["Alice@example.ORG"]
    )
    assert verdict.ok


def test_verify_not_a_maintainer() -> None:
    verdict = run_verify(sender="mallory@example.org", to_addrs=[ALICE_R1], auth=[PASS])
    assert verdict == Verdict(False, None, "mallory@example.org is not a maintainer")


@pytest.mark.parametrize("sender", [None, "", "  "])
def test_verify_no_sender(sender: str | None) -> None:
    verdict = run_verify(sender=sender, to_addrs=[ALICE_R1], auth=[PASS])
    assert not verdict.ok and verdict.proof is None
    assert "From" in verdict.reason


def test_verify_no_proof_holds() -> None:
    verdict = run_verify(to_addrs=[PROJECT])
    assert verdict == Verdict(
        False,
        None,
        "no valid reply token for report r1 and alice@example.org, "
        "and no DMARC pass from authserv-id mx.example.org",
    )


def test_verify_dmarc_off() -> None:
    verdict = run_verify(auth=[PASS], authserv_id=None)
    assert not verdict.ok
    assert verdict.reason.endswith("DMARC proof is off (no auth.authserv_id configured)")
    assert run_verify(auth=[PASS], authserv_id=None, proofs=["dmarc"]).reason == (
        "DMARC proof is off (no auth.authserv_id configured)"
    )


def test_verify_only_enabled_proofs_count() -> None:
    assert not run_verify(to_addrs=[ALICE_R1], proofs=["dmarc"]).ok
    assert not run_verify(auth=[PASS], proofs=["token"]).ok
    assert run_verify(to_addrs=[ALICE_R1], proofs=["token"]).proof == "token"
    assert run_verify(auth=[PASS], proofs=["dmarc"]).proof == "dmarc"


@pytest.mark.parametrize("proofs", [(), ("dkim",), ("from",)])
def test_verify_no_known_proof_enabled(proofs: tuple[str, ...]) -> None:
    verdict = run_verify(to_addrs=[ALICE_R1], auth=[PASS], proofs=proofs)
    assert not verdict.ok
    assert "no proof is enabled" in verdict.reason


def test_verify_token_needs_a_report() -> None:
    verdict = run_verify(report_id=None, to_addrs=[ALICE_R1], proofs=["token"])
    assert not verdict.ok
    assert verdict.reason == "no report to check a reply token against"
    assert run_verify(report_id=None, auth=[PASS]).proof == "dmarc"


def test_verify_token_of_another_maintainer_or_report() -> None:
    bob_r1 = reply_address(KEY, PROJECT, "r1", BOB)
    alice_r2 = reply_address(KEY, PROJECT, "r2", ALICE)
    assert not run_verify(to_addrs=[bob_r1], proofs=["token"]).ok
    assert not run_verify(to_addrs=[alice_r2], proofs=["token"]).ok
    assert run_verify(sender=BOB, to_addrs=[bob_r1], proofs=["token"]).ok


def test_verify_dmarc_for_another_domain() -> None:
    # Bob's mail passes DMARC for example.org only if his From domain is example.org.
    assert not run_verify(sender=BOB, auth=[PASS], proofs=["dmarc"]).ok


def test_verify_empty_maintainers_refuses() -> None:
    assert not run_verify(to_addrs=[ALICE_R1], auth=[PASS], maintainers=()).ok


def test_verify_reason_is_one_clean_line() -> None:
    verdict = run_verify(sender="x\n\x1b@example.org", maintainers=["x\n\x1b@example.org"])
    assert "\n" not in verdict.reason and "\x1b" not in verdict.reason

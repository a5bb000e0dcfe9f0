"""Running under systemd: the unit file, sd_notify, the single-instance lock, online backups.

The unit is checked with `systemd-analyze` (Debian package `systemd`; it needs no running
systemd). `verify` checks that every ExecStart= names an executable, so it runs on the unit
installed as systemd/README.md says: unchanged, with a drop-in pointing ExecStart= at this
checkout's `triaged` script. The bare unit is verified too, where the only complaint allowed
is that /usr/bin/triaged is not installed here.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from triaged.errors import AlreadyRunning, BackupError, TriagedError
from triaged.service.backup import backup
from triaged.service.lock import InstanceLock
from triaged.service.sdnotify import Notifier, watchdog_interval
from triaged.store.db import Store

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "triaged.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None,
    reason="systemd-analyze not found (Debian package `systemd`; no running systemd needed)",
)


def _python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )


def _unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


# --- the unit file ------------------------------------------------------------------------


def _analyze(*args: str, unit_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    env = dict(os.environ)
    if unit_path is not None:
        env["SYSTEMD_UNIT_PATH"] = f"{unit_path}:"  # the trailing ":" keeps the default path
    return subprocess.run(
        [ANALYZE, *args], capture_output=True, text=True, timeout=120, check=False, env=env
    )


@needs_analyze
def test_unit_verifies_clean(tmp_path: Path) -> None:
    """The unit as installed by systemd/README.md: unchanged, plus a drop-in for ExecStart."""
    script = Path(sys.executable).parent / "triaged"
    executable = script if os.access(script, os.X_OK) else Path(sys.executable)
    units = tmp_path / "units"
    (units / "triaged.service.d").mkdir(parents=True)
    shutil.copy(UNIT, units / "triaged.service")
    (units / "triaged.service.d" / "venv.conf").write_text(
        f"[Service]\nExecStart=\nExecStart={executable} --config /etc/triaged/config.toml run\n"
    )
    result = _analyze("verify", str(units / "triaged.service"), unit_path=units)
    # Unknown keys and bad values are only warnings (exit status 0): nothing may be printed.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")

    result = _analyze("verify", str(UNIT))
    complaints = [line for line in result.stderr.splitlines() if line.strip()]
    allowed = "triaged.service: Command /usr/bin/triaged is not executable"
    assert all(line.startswith(allowed) for line in complaints), result.stderr
    assert result.stdout == ""


@needs_analyze
@needs_analyze
def test_unit_with_the_openpgp_drop_in(tmp_path: Path) -> None:
    """systemd/openpgp.conf (the project key as a credential): still verifies clean, and the
    exposure stays at most 2.0."""
    units = tmp_path / "units"
    (units / "triaged.service.d").mkdir(parents=True)
    shutil.copy(UNIT, units / "triaged.service")
    shutil.copy(UNIT.parent / "openpgp.conf", units / "triaged.service.d" / "openpgp.conf")
    script = Path(sys.executable).parent / "triaged"
    executable = script if os.access(script, os.X_OK) else Path(sys.executable)
    (units / "triaged.service.d" / "venv.conf").write_text(
        f"[Service]\nExecStart=\nExecStart={executable} --config /etc/triaged/config.toml run\n"
    )
    result = _analyze("verify", str(units / "triaged.service"), unit_path=units)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    result = _analyze("security", "--offline=true", str(units / "triaged.service"), unit_path=units)
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for triaged\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout
    assert float(match.group(1)) <= 2.0, result.stdout


def test_unit_exposure_at_most_2() -> None:
    result = _analyze("security", "--offline=true", str(UNIT))
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for triaged\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout
    assert float(match.group(1)) <= 2.0, result.stdout


def test_unit_settings_the_daemon_relies_on() -> None:
    s = _unit_settings()
    assert s["Type"] == ["notify"]
    assert s["NotifyAccess"] == ["main"]
    assert s["ExecStart"] == ["/usr/bin/triaged --config /etc/triaged/config.toml run"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["WatchdogSec"] and s["TimeoutStopSec"] == ["30s"]
    assert s["StateDirectory"] == ["triaged"]  # /var/lib/triaged/triaged.db, the default
    assert s["ConfigurationDirectory"] == ["triaged"]
    assert s["RuntimeDirectory"] == ["triaged"]  # lmtp+unix:///run/triaged/lmtp.sock
    assert s["LoadCredential"] == [
        "imap-password:/etc/triaged/imap-password",
        "smtp-password:/etc/triaged/smtp-password",
    ]
    assert "AF_UNIX" in s["RestrictAddressFamilies"][0]  # NOTIFY_SOCKET is an AF_UNIX socket
    assert s["MemoryDenyWriteExecute"] == ["yes"]


MDWE_PROBE = """
    import ctypes, mmap, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN (Linux 6.3)
        print("unsupported", os.strerror(ctypes.get_errno()))
        sys.exit(0)
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        sys.exit("W+X memory was still allowed")
    except OSError:
        pass
    import ssl, smtplib, imaplib, jinja2, imapclient, sqlite_utils, click
    import apscheduler.schedulers.background
    import triaged.cli, triaged.service.daemon, triaged.mail.compose, triaged.intake.runner
    import triaged.service.outbox, triaged.mail.mailbox.lmtp, aiosmtpd.lmtp
    from pathlib import Path
    from triaged.service.backup import backup
    from triaged.store.db import Store
    base = Path(sys.argv[1])
    store = Store(base / "db.sqlite")
    store.conn.execute("CREATE TABLE t (x)")
    store.conn.execute("INSERT INTO t VALUES (randomblob(100000))")
    backup(base / "db.sqlite", base / "copy.sqlite")
    store.close()
    ssl.create_default_context().load_default_certs()
    env = jinja2.Environment(autoescape=False)
    assert env.from_string("{% for i in range(3) %}{{ i }}{% endfor %}").render() == "012"
    # gpg and gpg-agent, started from here, inherit the restriction.
    from triaged.mail.openpgp import Keyring, generate_key
    armoured, fingerprint = generate_key("Probe", "security@example.org")
    (base / "key.asc").write_text(armoured)
    keyring = Keyring(Path(sys.argv[2]), "security@example.org")
    try:
        keyring.load_secret(base / "key.asc")
        keyring.self_test()
    finally:
        keyring.close()
    print("ok")
"""


def test_runs_without_writable_executable_memory(tmp_path: Path) -> None:
    """MemoryDenyWriteExecute=yes: CPython, sqlite3, ssl, jinja2, gpg and gpg-agent need no
    W+X memory.

    The kernel's own PR_SET_MDWE refuses what systemd's seccomp filter refuses (mappings
    both writable and executable, making memory executable later).
    """
    home = tempfile.mkdtemp(prefix="triaged-mdwe-", dir="/tmp")  # gpg-agent's socket path
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(MDWE_PROBE), str(tmp_path), home],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    shutil.rmtree(home, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr
    if proc.stdout.startswith("unsupported"):
        pytest.skip(f"the kernel has no PR_SET_MDWE: {proc.stdout.strip()}")
    assert proc.stdout.strip() == "ok"


# --- sd_notify ----------------------------------------------------------------------------


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    # A short directory: socket paths are limited to 107 bytes.
    directory = tempfile.mkdtemp(prefix="triaged-notify-", dir="/tmp")
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    try:
        yield sock
    finally:
        sock.close()
        shutil.rmtree(directory, ignore_errors=True)


def test_notify_sends_datagrams(notify_socket: socket.socket) -> None:
    notifier = Notifier()
    assert notifier.enabled
    assert notifier.notify("READY=1", "STATUS=reading INBOX")
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=reading INBOX"
    for line in ("WATCHDOG=1", "STOPPING=1", "STATUS=3 message(s) waiting in the outbox"):
        assert notifier.notify(line)
        assert notify_socket.recv(4096) == line.encode()


def test_notify_reloading_carries_monotonic_usec(notify_socket: socket.socket) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert Notifier().notify("RELOADING=1", "STATUS=reloading")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = notify_socket.recv(4096).decode().split("\n")
    assert lines[:2] == ["RELOADING=1", "STATUS=reloading"]
    assert len(lines) == 3 and lines[2].startswith("MONOTONIC_USEC=")
    assert before <= int(lines[2].split("=", 1)[1]) <= after


def test_notify_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"triaged-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(10)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert Notifier().notify("READY=1")
        assert sock.recv(4096) == b"READY=1"


def test_notify_from_a_subprocess_comes_from_its_pid(notify_socket: socket.socket) -> None:
    """NotifyAccess=main: systemd trusts a datagram by the sender pid in its credentials."""
    notify_socket.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    proc = _python(
        """
        import sys
        from triaged.service.sdnotify import Notifier
        notifier = Notifier()
        sys.exit(0 if notifier.notify("READY=1", "STATUS=child") else 1)
        """
    )
    data, ancillary, _, _ = notify_socket.recvmsg(4096, socket.CMSG_SPACE(12))
    assert proc.wait(timeout=60) == 0
    assert data == b"READY=1\nSTATUS=child"
    creds = [d for lvl, kind, d in ancillary if kind == socket.SCM_CREDENTIALS]
    assert creds and struct.unpack("iII", creds[0][:12])[0] == proc.pid


def test_notify_is_a_noop_outside_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    assert notifier.notify("READY=1") is False
    assert Notifier({"NOTIFY_SOCKET": "vsock:2:1234"}).notify("READY=1") is False


def test_notify_failure_never_raises_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="triaged.service.sdnotify")
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.notify("READY=1") is False
    assert notifier.notify("WATCHDOG=1") is False
    assert notifier.notify("STATUS=\udcff") is False  # not encodable: still no exception
    records = [r for r in caplog.records if r.name == "triaged.service.sdnotify"]
    assert len(records) == 1 and records[0].levelno == logging.DEBUG


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    pid = str(os.getpid())
    assert Notifier({"WATCHDOG_USEC": "120000000"}).watchdog_interval() == 60.0
    assert Notifier({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": pid}).watchdog_interval() == 60
    assert Notifier({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": "1"}).watchdog_interval() is None
    for bad in ("", "0", "-5", "2m"):
        assert Notifier({"WATCHDOG_USEC": bad}).watchdog_interval() is None
    assert Notifier({}).watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() == 1.5


# --- the single-instance lock -------------------------------------------------------------


def test_lock_refuses_a_second_holder_in_another_process(tmp_path: Path) -> None:
    db = tmp_path / "state" / "triaged.db"
    holder = _python(
        """
        import sys
        from triaged.service.lock import InstanceLock
        lock = InstanceLock(sys.argv[1])
        lock.acquire()
        print("locked", flush=True)
        sys.stdin.read()
        """,
        str(db),
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(AlreadyRunning) as caught:
            InstanceLock(db).acquire()
        assert isinstance(caught.value, TriagedError)
        assert caught.value.pid == holder.pid
        assert str(caught.value) == (
            f"another triaged is already running on {db} (pid {holder.pid})"
        )
        # However the holder dies, the kernel drops its lock.
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
        with InstanceLock(db) as lock:
            assert lock.held
            assert (tmp_path / "state" / "triaged.db.lock").read_text() == f"{os.getpid()}\n"
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_lock_in_one_process_and_release(tmp_path: Path) -> None:
    db = tmp_path / "triaged.db"
    first = InstanceLock(db)
    refused = r"already running on .*triaged\.db \(pid \d+\)"
    with first, pytest.raises(AlreadyRunning, match=refused):
        InstanceLock(db).acquire()
    assert not first.held
    second = InstanceLock(db)
    second.acquire()
    second.release()
    second.release()  # harmless


# --- backups ------------------------------------------------------------------------------

WRITER = """
    import sys
    from triaged.store.db import Store
    store = Store(sys.argv[1])
    n = store.one("SELECT coalesce(max(n), 0) FROM ticks")[0]
    while n < 1_000_000:
        n += 1
        with store.transaction():
            store.conn.execute("INSERT INTO ticks (n, pad) VALUES (?, randomblob(3000))", (n,))
            store.conn.execute("UPDATE total SET n = ?", (n,))
        if n % 20 == 0:
            print(n, flush=True)
"""


def _max_tick(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT coalesce(max(n), 0) FROM ticks").fetchone()[0])
    finally:
        conn.close()


def test_backup_while_another_process_writes(tmp_path: Path) -> None:
    db = tmp_path / "triaged.db"
    store = Store(db)
    with store.transaction():
        store.conn.execute("CREATE TABLE ticks (n INTEGER PRIMARY KEY, pad BLOB)")
        store.conn.execute("CREATE TABLE total (n INTEGER)")
        store.conn.execute("INSERT INTO total VALUES (0)")
    with store.transaction():  # about 20 MB, so that a copy takes a while
        store.conn.execute("CREATE TABLE filler (pad BLOB)")
        for _ in range(5000):
            store.conn.execute("INSERT INTO filler VALUES (randomblob(4000))")
    store.close()

    writer = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WRITER), str(db)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        assert int(writer.stdout.readline()) >= 20  # writing has begun
        first = _max_tick(db)
        for i in range(5):
            before = _max_tick(db)
            target = tmp_path / "backups" / f"copy-{i}.db"
            target.parent.mkdir(exist_ok=True)
            pages = backup(db, target)
            after = _max_tick(db)
            assert pages > 5000
            assert sorted(p.name for p in target.parent.iterdir()) == sorted(
                f"copy-{j}.db" for j in range(i + 1)
            )  # one self-contained file: no -wal, -shm, -journal or temporary file
            assert target.stat().st_mode & 0o777 == 0o600
            conn = sqlite3.connect(target)
            try:
                assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
                assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
                count, low, high = conn.execute(
                    "SELECT count(*), coalesce(min(n), 0), coalesce(max(n), 0) FROM ticks"
                ).fetchone()
                # A prefix of the writes: every committed row up to some point, none after.
                assert before <= high <= after
                assert count == high and (low == 1 or count == 0)
                assert conn.execute("SELECT n FROM total").fetchone()[0] == high
                assert conn.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0] >= 1
            finally:
                conn.close()
        assert writer.poll() is None, "the writer stopped during the backups"
        assert _max_tick(db) > first, "the backups blocked the writer"
    finally:
        writer.terminate()
        writer.wait(timeout=60)


def test_backup_refuses_to_overwrite(tmp_path: Path) -> None:
    db = tmp_path / "triaged.db"
    store = Store(db)
    store.close()
    target = tmp_path / "out" / "backup.db"
    target.parent.mkdir()
    target.write_bytes(b"precious")
    with pytest.raises(BackupError, match="exists; refusing to overwrite"):
        backup(db, target)
    assert target.read_bytes() == b"precious"
    assert [p.name for p in target.parent.iterdir()] == ["backup.db"]  # no temporary file left
    assert backup(db, target, overwrite=True) > 0
    conn = sqlite3.connect(target)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()
    with pytest.raises(BackupError, match="the database itself"):
        backup(db, db, overwrite=True)


def test_backup_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(BackupError, match="no such database") as caught:
        backup(missing, tmp_path / "copy.db")
    assert isinstance(caught.value, TriagedError)
    assert not missing.exists() and not (tmp_path / "copy.db").exists()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    with pytest.raises(BackupError):
        backup(garbage, tmp_path / "copy.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.db"]
    with pytest.raises(BackupError, match="cannot write in"):
        backup(garbage, tmp_path / "no" / "such" / "dir.db")

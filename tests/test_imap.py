"""ImapMailbox against a real Dovecot on 127.0.0.1 (see conftest.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from servers import DovecotServer, ImapAccount, mailbox_config

from triaged.errors import MailboxError
from triaged.mail.mailbox import open_mailbox
from triaged.mail.mailbox.imap import (
    PROCESSED_KEYWORD,
    QUARANTINE_KEYWORD,
    ImapMailbox,
    _message_set,
)

# Without MOVE and IDLE: the fallbacks (keywords instead of folders, polling instead of IDLE).
BASIC_CAPABILITIES = "IMAP4rev1 LITERAL+ SASL-IR LOGIN-REFERRALS ID ENABLE UIDPLUS"


def message(n: int, extra: bytes = b"") -> bytes:
    return (
        b"From: Reporter <reporter@example.net>\r\n"
        b"To: security@example.org\r\n"
        b"Subject: report " + str(n).encode() + b"\r\n"
        b"Message-ID: <m" + str(n).encode() + b"@example.net>\r\n"
        b"Content-Type: text/plain; charset=latin-1\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n"
        b"caf\xe9 \xff\xfe bytes, trailing space \r\n" + extra + b"\r\n.\r\nend\r\n"
    )


@pytest.fixture
def mailbox(imap_account: ImapAccount) -> Iterator[ImapMailbox]:
    box = ImapMailbox(mailbox_config(imap_account))
    box.connect()
    try:
        yield box
    finally:
        box.close()


@pytest.fixture(scope="module")
def dovecot_basic() -> Iterator[DovecotServer]:
    with DovecotServer(ssl="no", capabilities=BASIC_CAPABILITIES) as server:
        yield server


def later(delay: float, fn: object) -> threading.Thread:
    assert callable(fn)

    def run() -> None:
        time.sleep(delay)
        fn()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_message_set() -> None:
    assert _message_set([]) == ""
    assert _message_set([7]) == "7"
    assert _message_set([3, 1, 2, 7, 9, 10, 2]) == "1:3,7,9:10"


def test_pending_and_fetch_return_exact_bytes_without_setting_seen(
    imap_account: ImapAccount,
) -> None:
    raws = [message(1), message(2, b"x" * 5000)]
    uids = [imap_account.append(raw) for raw in raws]
    box = open_mailbox(mailbox_config(imap_account))
    assert isinstance(box, ImapMailbox)
    box.connect()
    try:
        assert box.uidvalidity() > 0
        pending = box.pending()
        assert [(env.uid, env.size) for env in pending] == [
            (str(uid), len(raw)) for uid, raw in zip(uids, raws, strict=True)
        ]
        # When each arrived (INTERNALDATE, aware): adopting a mailbox depends on it.
        for env in pending:
            assert env.received is not None and env.received.utcoffset() == timedelta(0)
            assert abs(datetime.now(UTC) - env.received) < timedelta(minutes=5)
        got = box.fetch([env.uid for env in pending] + ["999", "not-a-uid"])
        assert got == {str(uid): raw for uid, raw in zip(uids, raws, strict=True)}
        assert box.fetch([]) == {}
    finally:
        box.close()
    for flags in imap_account.flags().values():
        assert "\\Seen" not in flags
    assert imap_account.fetch_all() == raws


def test_connect_creates_the_folders_and_is_repeatable(imap_account: ImapAccount) -> None:
    config = mailbox_config(imap_account, processed_folder="done", quarantine_folder="bad")
    box = ImapMailbox(config)
    box.connect()
    box.connect()  # reconnecting on an open mailbox starts over; folders already exist
    first = box.uidvalidity()
    box.close()
    assert {"INBOX", "done", "bad"} <= set(imap_account.folders())
    box.connect()
    assert box.uidvalidity() == first
    box.close()


def test_mark_processed_and_quarantine_move_messages(
    imap_account: ImapAccount, mailbox: ImapMailbox
) -> None:
    raws = [message(n) for n in range(4)]
    uids = [str(imap_account.append(raw)) for raw in raws]
    assert [env.uid for env in mailbox.pending()] == uids

    mailbox.mark_processed([uids[0], uids[2]])
    mailbox.quarantine([uids[3]])
    mailbox.mark_processed([uids[0]])  # already gone: no error
    mailbox.mark_processed([])

    assert [env.uid for env in mailbox.pending()] == [uids[1]]
    assert imap_account.fetch_all("INBOX") == [raws[1]]
    assert imap_account.fetch_all("triaged-processed") == [raws[0], raws[2]]
    assert imap_account.fetch_all("triaged-quarantine") == [raws[3]]


def test_without_move_messages_are_flagged_and_skipped(dovecot_basic: DovecotServer) -> None:
    account = dovecot_basic.add_user()
    raws = [message(n) for n in range(3)]
    uids = [str(account.append(raw)) for raw in raws]
    box = ImapMailbox(mailbox_config(account))
    box.connect()
    try:
        mailbox_caps = box.client.capabilities()
        assert b"MOVE" not in mailbox_caps
        assert b"IDLE" not in mailbox_caps
        box.mark_processed([uids[0]])
        box.quarantine([uids[2]])
        assert [env.uid for env in box.pending()] == [uids[1]]
        assert box.fetch(uids) == dict(zip(uids, raws, strict=True))
    finally:
        box.close()
    flags = account.flags()
    assert PROCESSED_KEYWORD in flags[int(uids[0])]
    assert QUARANTINE_KEYWORD in flags[int(uids[2])]
    assert not flags[int(uids[1])] & {PROCESSED_KEYWORD, QUARANTINE_KEYWORD}
    assert account.fetch_all() == raws  # nothing left the folder


def test_without_idle_wait_polls(dovecot_basic: DovecotServer) -> None:
    account = dovecot_basic.add_user()
    box = ImapMailbox(mailbox_config(account, poll_interval="1s"))
    box.connect()
    try:
        stop = threading.Event()
        started = time.monotonic()
        box.wait(30, stop)
        assert 0.9 <= time.monotonic() - started < 5
        account.append(message(1))
        box.wait(30, stop)
        assert len(box.pending()) == 1
        stop.set()
        started = time.monotonic()
        box.wait(30, stop)
        assert time.monotonic() - started < 0.5
    finally:
        box.close()


def test_wait_returns_when_mail_arrives(imap_account: ImapAccount, mailbox: ImapMailbox) -> None:
    assert mailbox.pending() == []
    stop = threading.Event()
    thread = later(0.5, lambda: imap_account.append(message(1)))
    started = time.monotonic()
    mailbox.wait(20, stop)
    elapsed = time.monotonic() - started
    thread.join(10)
    assert elapsed < 4, f"wait() took {elapsed:.1f}s: it did not notice the new message"
    assert len(mailbox.pending()) == 1  # and the connection is usable after IDLE


def test_wait_returns_promptly_when_stop_is_set(mailbox: ImapMailbox) -> None:
    stop = threading.Event()
    thread = later(0.3, stop.set)
    started = time.monotonic()
    mailbox.wait(20, stop)
    elapsed = time.monotonic() - started
    thread.join(5)
    assert elapsed < 2.5
    assert mailbox.pending() == []


def test_wait_returns_after_its_timeout(mailbox: ImapMailbox) -> None:
    started = time.monotonic()
    mailbox.wait(1.5, threading.Event())
    assert 1.4 <= time.monotonic() - started < 4
    assert mailbox.pending() == []


def test_wrong_password_is_a_mailbox_error_without_the_password(
    imap_account: ImapAccount,
) -> None:
    wrong = "Wr0ng-Pa55word-zq9"
    box = ImapMailbox(mailbox_config(imap_account, password=wrong))
    with pytest.raises(MailboxError) as info:
        box.connect()
    text = str(info.value)
    assert wrong not in text
    assert imap_account.password not in text
    assert "login" in text.lower()
    assert imap_account.user in text
    assert wrong not in repr(info.value.__cause__)
    box.close()


def test_starttls_is_refused_when_the_server_does_not_offer_it(
    dovecot: DovecotServer, imap_account: ImapAccount
) -> None:
    box = ImapMailbox(mailbox_config(imap_account, scheme="imap"))
    with pytest.raises(MailboxError, match="STARTTLS"):
        box.connect()
    assert f"user=<{imap_account.user}>" not in dovecot.log_text()  # no login was tried
    box.close()


def test_starttls_with_ca_file(dovecot_tls: DovecotServer, imap_account_tls: ImapAccount) -> None:
    raw = message(1)
    imap_account_tls.append(raw)
    config = mailbox_config(imap_account_tls, scheme="imap", ca_file=dovecot_tls.ca_file)
    box = ImapMailbox(config)
    box.connect()
    try:
        [env] = box.pending()
        assert box.fetch([env.uid]) == {env.uid: raw}
    finally:
        box.close()


def test_imaps_with_ca_file(dovecot_tls: DovecotServer, imap_account_tls: ImapAccount) -> None:
    raw = message(1)
    imap_account_tls.append(raw)
    config = mailbox_config(imap_account_tls, scheme="imaps", ca_file=dovecot_tls.ca_file)
    assert config.endpoint.port == dovecot_tls.imaps_port
    box = ImapMailbox(config)
    box.connect()
    try:
        [env] = box.pending()
        assert box.fetch([env.uid]) == {env.uid: raw}
        box.mark_processed([env.uid])
        assert box.pending() == []
    finally:
        box.close()


@pytest.mark.parametrize("scheme", ["imaps", "imap"])
def test_tls_without_the_ca_file_fails_verification(
    imap_account_tls: ImapAccount, scheme: str
) -> None:
    box = ImapMailbox(mailbox_config(imap_account_tls, scheme=scheme))
    with pytest.raises(MailboxError, match="certificate verif") as info:
        box.connect()
    assert imap_account_tls.password not in str(info.value)
    assert info.value.__cause__ is not None
    box.close()


def test_server_restart_fails_the_next_call_and_reconnect_works() -> None:
    with DovecotServer(ssl="no") as server:
        account = server.add_user()
        raw = message(1)
        account.append(raw)
        box = ImapMailbox(mailbox_config(account))
        box.connect()
        try:
            assert len(box.pending()) == 1
            server.restart()
            with pytest.raises(MailboxError) as info:
                box.pending()
            assert isinstance(info.value.__cause__, Exception)
            with pytest.raises(MailboxError, match="not connected"):
                box.pending()
            box.close()
            box.close()
            box.connect()
            [env] = box.pending()
            assert box.fetch([env.uid]) == {env.uid: raw}
        finally:
            box.close()


def test_server_going_away_during_idle_fails_wait_promptly() -> None:
    with DovecotServer(ssl="no") as server:
        box = ImapMailbox(mailbox_config(server.add_user()))
        box.connect()
        try:
            thread = later(0.5, server.stop)
            started = time.monotonic()
            with pytest.raises(MailboxError):
                box.wait(30, threading.Event())
            assert time.monotonic() - started < 10
            thread.join(15)
        finally:
            box.close()
        box.close()  # never raises, even with the server down


def test_unknown_folder_and_unreachable_server(
    dovecot: DovecotServer, imap_account: ImapAccount
) -> None:
    box = ImapMailbox(mailbox_config(imap_account, folder="NoSuchFolder"))
    with pytest.raises(MailboxError, match="NoSuchFolder"):
        box.connect()
    with pytest.raises(MailboxError, match="not connected"):
        box.pending()
    with DovecotServer(ssl="no") as gone:
        account = gone.add_user()
        gone.stop()
        box = ImapMailbox(mailbox_config(account))
        with pytest.raises(MailboxError, match="connect"):
            box.connect()
        box.close()


def test_name_shows_the_endpoint_but_no_secret(imap_account: ImapAccount) -> None:
    box = ImapMailbox(mailbox_config(imap_account))
    assert box.name == f"imap+plain://{imap_account.user}@127.0.0.1:{imap_account.port}/INBOX"
    assert imap_account.password not in box.name


@pytest.mark.parametrize("scheme", ["imap+plain", "imaps", "imap"])
def test_wait_sees_mail_announced_with_the_answer_to_idle(
    scheme: str, request: pytest.FixtureRequest
) -> None:
    # Mail that arrives after the last look and before IDLE: Dovecot sends its EXISTS in the
    # same packet as "+ idling", so it is read into imaplib's buffer with the continuation and
    # the socket never becomes readable for it. Over TLS too (implicit and STARTTLS).
    if scheme == "imap+plain":
        account: ImapAccount = request.getfixturevalue("imap_account")
        config = mailbox_config(account)
    else:
        server: DovecotServer = request.getfixturevalue("dovecot_tls")
        account = request.getfixturevalue("imap_account_tls")
        config = mailbox_config(account, scheme=scheme, ca_file=server.ca_file)
    box = ImapMailbox(config)
    box.connect()
    try:
        assert box.pending() == []
        account.append(message(1))
        stop = threading.Event()
        # The bound: before the fix, wait() sat until Dovecot's keepalive (about 2 minutes).
        guard = threading.Timer(15, stop.set)
        guard.start()
        box.wait(60, stop)
        guard.cancel()
        assert not stop.is_set(), "wait() did not see the announced message"
        assert len(box.pending()) == 1
    finally:
        box.close()


def test_wait_sees_mail_announced_in_the_answer_to_the_search(
    imap_account: ImapAccount, mailbox: ImapMailbox
) -> None:
    # Mail that arrives while the folder is listed: Dovecot announces it (EXISTS) after the
    # SEARCH result that does not hold it, and IDLE reports only what is newer than that.
    client = mailbox.client
    search = client.search

    def search_after_a_delivery(criteria: list[str]) -> list[int]:
        imap_account.append(message(1))
        return search(criteria)  # type: ignore[no-any-return]

    client.search = search_after_a_delivery
    assert mailbox.pending() == []
    client.search = search
    stop = threading.Event()
    guard = threading.Timer(15, stop.set)
    guard.start()
    mailbox.wait(60, stop)
    guard.cancel()
    assert not stop.is_set(), "wait() did not see the announced message"
    assert len(mailbox.pending()) == 1


def test_a_server_that_repeats_exists_costs_one_look_not_a_busy_loop(
    imap_account: ImapAccount, mailbox: ImapMailbox
) -> None:
    # Some servers repeat "* n EXISTS" in answers without new mail. An announcement wakes the
    # wait once; when the look it caused found nothing new, the next one is not believed.
    client = mailbox.client
    search = client.search

    def search_repeating_exists(criteria: list[str]) -> list[int]:
        found = search(criteria)
        client._imap.untagged_responses.setdefault("EXISTS", []).append(b"0")
        return found  # type: ignore[no-any-return]

    client.search = search_repeating_exists
    assert mailbox.pending() == []
    stop = threading.Event()
    guard = threading.Timer(15, stop.set)
    guard.start()
    mailbox.wait(60, stop)  # the one extra look
    guard.cancel()
    assert not stop.is_set()
    assert mailbox.pending() == []
    started = time.monotonic()
    mailbox.wait(1.5, threading.Event())
    assert time.monotonic() - started >= 1.4  # waited: no second immediate wake-up

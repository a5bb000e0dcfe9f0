"""The outbox against a real SMTP server (aiosmtpd): delivery, outages, refusals."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import make_config
from servers import SmtpSink

from triaged.config import Config
from triaged.mail.compose import Composer
from triaged.mail.transport import SmtpTransport
from triaged.service.outbox import OutboxRunner, enqueue
from triaged.store.db import Store

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture
def setup(tmp_path: Path, smtp_sink: SmtpSink) -> Iterator[tuple[Config, Store, OutboxRunner]]:
    config = make_config(tmp_path, smtp_url=smtp_sink.url)
    store = Store(config.database)
    transport = SmtpTransport(config.smtp)
    runner = OutboxRunner(store, transport, config.smtp)
    yield config, store, runner
    transport.close()
    store.close()


def _queue(config: Config, store: Store, n: int, now: datetime = T0) -> list[str]:
    composer = Composer(config)
    out = [
        composer.build(
            kind="notify",
            to=f"m{i}@example.org",
            subject=f"message {i}",
            template="held.txt",
            context={"sender": "x@y.example", "subject": "s", "message_number": i},
            now=now,
        )
        for i in range(n)
    ]
    with store.transaction():
        enqueue(store, out, now)
    return [o.message_id for o in out]


def _states(store: Store) -> list[str]:
    return [r["state"] for r in store.all("SELECT state FROM outbox ORDER BY id")]


def test_delivers_every_row_once_with_its_message_id(
    setup: tuple[Config, Store, OutboxRunner], smtp_sink: SmtpSink
) -> None:
    config, store, runner = setup
    ids = _queue(config, store, 3)
    assert runner.run_once(T0) == 3
    got = smtp_sink.wait_for(3)
    assert [c.msg["Message-ID"] for c in got] == ids
    assert [c.rcpt_tos for c in got] == [["m0@example.org"], ["m1@example.org"], ["m2@example.org"]]
    assert _states(store) == ["sent"] * 3
    assert runner.run_once(T0 + timedelta(hours=1)) == 0
    assert len(smtp_sink.messages) == 3


def test_server_down_then_back_delivers_exactly_once_with_the_same_message_id(
    setup: tuple[Config, Store, OutboxRunner], smtp_sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    config, store, runner = setup
    smtp_sink.stop()
    ids = _queue(config, store, 2)
    with caplog.at_level(logging.INFO, logger="triaged.service.outbox"):
        now = T0
        for _ in range(4):
            assert runner.run_once(now) == 0
            now += timedelta(minutes=5)
        assert _states(store) == ["pending", "pending"]
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, "an outage is logged once, not once per retry"
        smtp_sink.start()
        assert runner.run_once(now) == 2
    got = smtp_sink.wait_for(2)
    assert [c.msg["Message-ID"] for c in got] == ids
    assert _states(store) == ["sent", "sent"]
    assert "works again" in caplog.text
    assert runner.run_once(now + timedelta(hours=1)) == 0
    assert len(smtp_sink.messages) == 2


def test_permanent_refusal_is_held_and_logged(
    setup: tuple[Config, Store, OutboxRunner], smtp_sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    config, store, runner = setup
    smtp_sink.fail_with = (550, "no such user")
    _queue(config, store, 1)
    with caplog.at_level(logging.ERROR, logger="triaged.service.outbox"):
        assert runner.run_once(T0) == 0
    assert _states(store) == ["held"]
    row = store.one("SELECT last_error FROM outbox")
    assert row is not None and "550" in row["last_error"]
    assert "refused for good" in caplog.text
    # A held message is never retried; the next one still goes out.
    smtp_sink.fail_with = None
    _queue(config, store, 1)
    assert runner.run_once(T0 + timedelta(days=1)) == 1
    assert _states(store) == ["held", "sent"]


def test_temporary_refusal_is_retried_with_backoff(
    setup: tuple[Config, Store, OutboxRunner], smtp_sink: SmtpSink
) -> None:
    config, store, runner = setup
    smtp_sink.fail_with = (451, "try later")
    _queue(config, store, 1)
    assert runner.run_once(T0) == 0
    row = store.one("SELECT attempts, next_attempt_at, state FROM outbox")
    assert row is not None and row["attempts"] == 1 and row["state"] == "pending"
    assert runner.run_once(T0 + timedelta(seconds=1)) == 0  # not due yet: backoff
    smtp_sink.fail_with = None
    assert runner.run_once(T0 + timedelta(minutes=5)) == 1
    assert len(smtp_sink.messages) == 1


def test_gives_up_after_the_configured_time(
    setup: tuple[Config, Store, OutboxRunner], smtp_sink: SmtpSink
) -> None:
    config, store, runner = setup
    smtp_sink.fail_with = (451, "try later")
    _queue(config, store, 1)
    runner.run_once(T0)
    runner.run_once(T0 + timedelta(days=4))
    assert _states(store) == ["held"]


def test_starttls_is_required_for_smtp_urls(tmp_path: Path, smtp_sink: SmtpSink) -> None:
    """smtp:// against a server without STARTTLS: nothing is sent in clear."""
    config = make_config(tmp_path, smtp_url=f"smtp://127.0.0.1:{smtp_sink.port}")
    store = Store(config.database)
    runner = OutboxRunner(store, SmtpTransport(config.smtp), config.smtp)
    _queue(config, store, 1)
    assert runner.run_once(T0) == 0
    row = store.one("SELECT last_error FROM outbox")
    assert row is not None and "STARTTLS" in row["last_error"]
    assert smtp_sink.messages == []


def test_starttls_with_verified_certificate(tmp_path: Path, smtp_sink_tls: SmtpSink) -> None:
    sections_config = make_config(tmp_path, smtp_url=smtp_sink_tls.url)
    text = sections_config.path.read_text().replace(
        f'url = "{smtp_sink_tls.url}"',
        f'url = "{smtp_sink_tls.url}"\nca_file = "{smtp_sink_tls.ca_file}"',
    )
    sections_config.path.write_text(text)
    from triaged.config import load

    config = load(sections_config.path)
    store = Store(config.database)
    runner = OutboxRunner(store, SmtpTransport(config.smtp), config.smtp)
    _queue(config, store, 1)
    assert runner.run_once(T0) == 1
    assert len(smtp_sink_tls.wait_for(1)) == 1

"""Fixtures shared by the whole suite: a real Dovecot and a real SMTP sink, on 127.0.0.1 only.

- `dovecot` (session): plaintext IMAP, no STARTTLS offered. `dovecot_tls` (session): TLS
  required, STARTTLS on `.port` and implicit TLS on `.imaps_port`, certificate in `.ca_file`.
- `imap_account` / `imap_account_tls` (function): a fresh user with an empty INBOX.
- `smtp_sink` (function): captures every message; `smtp_sink_tls` also offers STARTTLS.
- `test_certs` (session): the private CA and server certificate both TLS servers use.
- `tmp_dir` (function): a directory under /tmp that Dovecot's processes may enter.
- `people` (session): throwaway OpenPGP keys (tests/pgp.py) for the project, two
  maintainers, a reporter, a stranger whose key names another address, and an outsider.

When a test fails, the tail of the Dovecot log is added to its report.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pgp import Person
from servers import (
    CertFiles,
    DovecotServer,
    ImapAccount,
    SmtpSink,
    make_certs,
    private_dir,
)


@pytest.fixture(scope="session")
def test_certs() -> Iterator[CertFiles]:
    directory = private_dir("triaged-certs-")
    try:
        yield make_certs(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    with DovecotServer(ssl="no") as server:
        yield server


@pytest.fixture(scope="session")
def dovecot_tls(test_certs: CertFiles) -> Iterator[DovecotServer]:
    with DovecotServer(ssl="required", certs=test_certs) as server:
        yield server


@pytest.fixture
def imap_account(dovecot: DovecotServer) -> ImapAccount:
    return dovecot.add_user()


@pytest.fixture
def imap_account_tls(dovecot_tls: DovecotServer) -> ImapAccount:
    return dovecot_tls.add_user()


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture
def smtp_sink_tls(test_certs: CertFiles) -> Iterator[SmtpSink]:
    sink = SmtpSink(certs=test_certs).start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture
def tmp_dir() -> Iterator[Path]:
    directory = private_dir("triaged-test-")
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class People:
    def __init__(self) -> None:
        self.project = Person("security@example.org", "Example security")
        self.alice = Person("alice@example.org")
        self.bob = Person("bob@example.org")
        self.reporter = Person("reporter@outside.example")
        # A key made by someone writing from stranger@outside.example, naming another address.
        self.stranger = Person("stranger@outside.example", uid_address="someone@else.example")
        self.outsider = Person("outsider@outside.example")
        everyone = (self.project, self.alice, self.bob, self.reporter, self.outsider)
        for person in everyone:
            for other in everyone:
                if other is not person:
                    person.knows(other.public_key)

    def close(self) -> None:
        for person in (
            self.project,
            self.alice,
            self.bob,
            self.reporter,
            self.stranger,
            self.outsider,
        ):
            person.close()


@pytest.fixture(scope="session")
def people() -> Iterator[People]:
    made = People()
    try:
        yield made
    finally:
        made.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        funcargs = getattr(item, "funcargs", {})
        for name, value in funcargs.items():
            if isinstance(value, DovecotServer):
                report.sections.append((f"dovecot log ({name})", value.log_text()[-6000:]))
    return report

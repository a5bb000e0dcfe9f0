"""The presets in examples/policies/: each keeps the promises of its SECURITY.md.

Each preset is loaded as shipped (with its credentials given the systemd way), then run with
its mailbox, SMTP and database pointed at local Maildirs, through a scripted report with an
injected time: what the maintainers and the reporter receive, and when, is the policy.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from helpers import REPORTER, ClockDesk, config_text

from triaged.config import load
from triaged.core.durations import Duration

PRESETS = Path(__file__).resolve().parent.parent / "examples" / "policies"
H = timedelta(hours=1)
D = timedelta(days=1)


def preset_desk(name: str, directory: Path) -> ClockDesk:
    data = tomllib.loads((PRESETS / f"{name}.toml").read_text())
    data["mailbox"] = {"url": f"maildir:{directory / 'inbox'}"}
    data["smtp"] = {"url": f"maildir:{directory / 'outbox'}"}
    data["database"] = {"path": str(directory / "triaged.db")}
    path = directory / "config.toml"
    path.write_text(config_text(data))
    return ClockDesk(load(path))


@pytest.fixture
def desks(tmp_path: Path) -> Iterator[list[ClockDesk]]:
    made: list[ClockDesk] = []
    yield made
    for desk in made:
        desk.close()


def kinds(msgs: list[EmailMessage]) -> list[str]:
    """ "Reminder: Acknowledge" etc., one per distinct notice (not per recipient)."""
    out = {re.sub(r" (was )?due .*", "", str(m["Subject"]).split("] ", 1)[1]) for m in msgs}
    return sorted(out)


def to_reporter(msgs: list[EmailMessage]) -> list[EmailMessage]:
    return [m for m in msgs if m["To"] == REPORTER]


@pytest.mark.parametrize("name", ["marmotte", "bases", "generic", "pynomaly"])
def test_each_preset_loads_as_shipped(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for credential in ("imap-password", "smtp-password"):
        (tmp_path / credential).write_text("secret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    config = load(PRESETS / f"{name}.toml")
    assert config.policy.acknowledge is not None
    assert config.mailbox.password is not None and config.smtp.password is not None


def test_marmotte_acknowledges_in_48h_and_responds_in_96h(
    tmp_path: Path, desks: list[ClockDesk]
) -> None:
    desk = preset_desk("marmotte", tmp_path)
    desks.append(desk)
    paris = ZoneInfo("Europe/Paris")
    t0 = datetime(2026, 11, 2, 10, 0, tzinfo=paris)  # Monday 10:00 in Paris
    desk.report(t0)
    assert desk.tick(t0 + 23 * H) == []
    reminder = desk.tick(t0 + 24 * H)
    assert kinds(reminder) == ["Reminder: Acknowledge"]
    # Due times are told in the project's time zone.
    assert "Wednesday 04 November 2026, 10:00 CET" in str(reminder[0]["Subject"])
    assert kinds(desk.tick(t0 + 44 * H)) == ["Reminder: Acknowledge"]  # 4 hours before
    desk.command("/ack\n/assign bob@marmotte.io", t0 + 45 * H)
    assert desk.tick(t0 + 48 * H) == []  # met: no escalation
    # The detailed response is due 96 hours after receipt; its reminder goes to the handler.
    reminder = desk.tick(t0 + 72 * H)
    assert kinds(reminder) == ["Reminder: Detailed response"]
    assert [m["To"] for m in reminder] == ["bob@marmotte.io"]
    missed = desk.tick(t0 + 96 * H)
    assert kinds(missed) == ["Missed: Detailed response"]
    assert sorted(m["To"] for m in missed) == ["alice@marmotte.io", "bob@marmotte.io"]
    desk.command("/reply\nWe reproduced it; a fix is planned for 1.0.4.", t0 + 100 * H)
    assert desk.tick(t0 + 120 * H) == []  # met: no daily repeat
    assert to_reporter(desk.tick(t0 + 60 * D)) == []  # Marmotte promises no periodic updates


def test_bases_24h_48h_and_weekly_updates_until_fixed(
    tmp_path: Path, desks: list[ClockDesk]
) -> None:
    desk = preset_desk("bases", tmp_path)
    desks.append(desk)
    t0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    desk.report(t0)
    assert kinds(desk.tick(t0 + 12 * H)) == ["Reminder: Acknowledge"]  # half-way
    assert kinds(desk.tick(t0 + 22 * H)) == ["Reminder: Acknowledge"]  # 2 hours before
    # The detailed response's half-way reminder comes at the same instant.
    assert kinds(desk.tick(t0 + 24 * H)) == ["Missed: Acknowledge", "Reminder: Detailed response"]
    desk.command("/ack", t0 + 25 * H)
    desk.command("/reply\nConfirmed on 4.1; the fix needs a new encoder.", t0 + 40 * H)
    desk.command("/confirm", t0 + 41 * H)
    assert desk.tick(t0 + 48 * H) == []  # the detailed response came in time
    # A week after the last contact (the /confirm mail), the first weekly update.
    assert to_reporter(desk.tick(t0 + 41 * H + 7 * D - timedelta(minutes=1))) == []
    first = to_reporter(desk.tick(t0 + 41 * H + 7 * D))
    assert len(first) == 1 and "at least every 1 week" in str(first[0].get_body(("plain",)))
    second = to_reporter(desk.tick(t0 + 41 * H + 14 * D))
    assert len(second) == 1
    desk.command("/state fixed", t0 + 15 * D)
    assert to_reporter(desk.tick(t0 + 60 * D)) == []  # fixed: no more updates


def test_generic_promises_only_the_48h_acknowledgement(
    tmp_path: Path, desks: list[ClockDesk]
) -> None:
    desk = preset_desk("generic", tmp_path)
    desks.append(desk)
    t0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    desk.report(t0)
    assert kinds(desk.tick(t0 + 24 * H)) == ["Reminder: Acknowledge"]
    assert kinds(desk.tick(t0 + 48 * H)) == ["Missed: Acknowledge"]
    assert kinds(desk.tick(t0 + 72 * H)) == ["Still overdue: Acknowledge"]
    desk.command("/ack", t0 + 73 * H)
    assert desk.tick(t0 + 90 * D) == []  # no other clock, no updates


def test_pynomaly_5_business_days_over_christmas_and_critical_in_14_days(
    tmp_path: Path, desks: list[ClockDesk]
) -> None:
    desk = preset_desk("pynomaly", tmp_path)
    desks.append(desk)
    t0 = datetime(2026, 12, 21, 15, 0, tzinfo=UTC)  # Monday before Christmas
    desk.report(t0)
    desk.command("/ack\n/severity critical", t0 + 2 * H)
    # 5 business days, skipping Friday 25 December (a holiday) and the weekend: Tuesday 29th.
    due = datetime(2026, 12, 29, 15, 0, tzinfo=UTC)
    reminder = desk.tick(due - D)  # 1bd before: Monday 28th
    assert kinds(reminder) == ["Reminder: Detailed response"]
    assert "Tuesday 29 December 2026, 15:00 UTC" in str(reminder[0]["Subject"])
    assert kinds(desk.tick(due)) == ["Missed: Detailed response"]
    desk.command("/confirm", due + H)
    # Critical: resolved within 14 calendar days of the report.
    assert kinds(desk.tick(t0 + 13 * D)) == ["Reminder: Resolve (critical)"]
    assert kinds(desk.tick(t0 + 14 * D)) == ["Missed: Resolve (critical)"]
    desk.command("/state fixed", t0 + 14 * D + H)
    assert desk.tick(t0 + 30 * D) == []


def _command_results(desk: ClockDesk) -> list[tuple[bool, str]]:
    rows = desk.store.all(
        "SELECT detail FROM events WHERE report_id = ? AND kind = 'command' ORDER BY id",
        (desk.report_id,),
    )
    return [(bool(d["ok"]), str(d["result"])) for d in (json.loads(r["detail"]) for r in rows)]


def test_each_preset_carries_its_disclosure_rules(tmp_path: Path, desks: list[ClockDesk]) -> None:
    made = {}
    for name in ("marmotte", "bases", "generic", "pynomaly"):
        (tmp_path / name).mkdir()
        made[name] = preset_desk(name, tmp_path / name)
        desks.append(made[name])
    policies = {name: desk.config.policy for name, desk in made.items()}
    assert policies["marmotte"].disclose_after_fix == Duration(7, "d")
    assert policies["bases"].embargo_default == Duration(72, "h")
    assert policies["pynomaly"].embargo_remind == (Duration(1, "bd"),)
    assert all(p.embargo_max is None for p in policies.values())

    # Marmotte: "at least a week after the patch is released".
    marmotte = made["marmotte"]
    t0 = datetime(2026, 11, 2, 10, 0, tzinfo=ZoneInfo("Europe/Paris"))
    marmotte.report(t0)
    marmotte.command("/ack\n/confirm\n/fixed-in 1.0.4\n/state fixed", t0 + H)
    marmotte.command("/embargo +6d", t0 + 2 * H)
    marmotte.command("/embargo 2026-11-10", t0 + 3 * H)
    (ok, text), (later_ok, _) = _command_results(marmotte)[-2:]
    assert not ok and "the earliest is Monday 09 November 2026, 11:00 CET" in text
    assert later_ok

    # bases: "embargo date (typically 72 hours from the issue being opened)".
    bases = made["bases"]
    t0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    bases.report(t0)
    bases.command("/ack\n/confirm\n/state fixing\n/embargo", t0 + 2 * H)
    row = bases.store.report(bases.report_id)
    assert row is not None and row["embargo"] == "2026-11-05T12:00+00:00"

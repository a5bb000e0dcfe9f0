"""The receipt a new report's sender gets: whether one may go, and what it says.

The text is `templates/receipt.txt`; the sentences that promise dates are
`clocks/wording.PROMISES`, dated by the clock engine (`engine.at_receipt`), so a receipt
promises exactly the deadlines the clocks then run on.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from triaged.clocks import engine, wording
from triaged.config import LimitsConfig
from triaged.core.ids import tag
from triaged.mail.compose import Composer, Outgoing
from triaged.mail.openpgp import Keyring
from triaged.mail.parse import ParsedMessage
from triaged.store import outbox as queue
from triaged.store.db import Store


def refusal(store: Store, limits: LimitsConfig, reporter: str | None, now: datetime) -> str | None:
    """Why no receipt may go to this address now, or None when one may."""
    if not reporter:
        return "no usable From address"
    sent = queue.sent_recently(store, "receipt", reporter, now - timedelta(days=1))
    if sent >= limits.receipts_per_sender_per_day:
        return "this address already got a receipt in the last 24 hours"
    return None


def build(
    composer: Composer,
    keyring: Keyring | None,
    report_id: str,
    reporter: str,
    msg: ParsedMessage,
    now: datetime,
    clocks: Sequence[engine.Clock],
) -> Outgoing:
    """The receipt of report `report_id` (first message `msg`) to `reporter`."""
    promises = wording.receipt_promises(clocks, composer.when)
    # The receipt never quotes the sender's text (not even the subject): a forged From must
    # not turn triaged into a relay of someone else's words.
    return composer.build(
        kind="receipt",
        to=reporter,
        subject="Your report was received",
        template="receipt.txt",
        context={"tag": tag(report_id), "promises": promises, **_openpgp(keyring, msg)},
        now=now,
        report_id=report_id,
        in_reply_to=msg.message_id,
        references=msg.references,
        auto="auto-replied",
    )


def _openpgp(keyring: Keyring | None, msg: ParsedMessage) -> dict[str, object]:
    """What the receipt says of encryption: the message could not be read (and which key
    to use), or it was read but no key of the reporter is known to answer encrypted."""
    status = msg.openpgp
    if keyring is None or status is None or not status.encrypted:
        return {}
    if not status.decrypted:
        return {"unreadable": True, "project_key": keyring.project_fingerprint}
    return {"keyless": keyring.key_for(msg.from_addr) is None}

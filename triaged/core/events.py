"""Events: what happened to a report, in the words of the `events` table. Pure.

This module is the contract between the modules that record events (intake, commands, the
clock runner) and those that read them (the clock engine, the digest, the hall of fame,
disclosure's `fixed_at`). Events are written only by `triaged.store.events.record`, which
refuses a kind not listed here; readers compare with these constants, never with bare strings.

Every event has a `report_id` (None only for `held` and `quarantined`), `at` (UTC), an
`actor` (the address that caused it, when there is one), a `message` (the stored message that
caused it, when there is one), a `kind`, and a `detail`: a JSON object whose keys depend on
the kind.

kind                detail keys                    what happened
received            released (only when true)      a new report came in (actor: the reporter);
                                                   `released`: held by a spam verdict until
                                                   /not-spam, recorded then with `at` still
                                                   the arrival (its clocks count from there)
spam_verdict        verdict                        a new report the mail server judged spam
                                                   ([intake] spam_verdicts): stored as spam,
                                                   no receipt, no notification, no clocks
blocked_mail        pattern                        mail from a blocked sender: stored and
                                                   counted, never answered nor forwarded
                                                   (report_id: the report it threads into)
receipt             to                             the reporter's receipt was queued
receipt_suppressed  reason                         no receipt (rate limit, no address)
followup            -                              a participant wrote (the reporter's mail
                                                   also ends a /waiting pause: waiting_over)
waiting_over        -                              the pause of /waiting ended: a participant
                                                   wrote (`triaged.store.reports.end_waiting`)
automatic           reason                         automatic mail (bounce, auto-reply) threaded
held                claimed, notified              a non-participant used a report's tag
                                                   (report_id None: held apart); `notified`
                                                   false: over the hourly notice limit, in
                                                   the next notices_summary instead
quarantined         -                              a message that cannot be handled safely
                                                   (report_id None)
note                chars                          a maintainer's internal note
command             command, ok, result            one command line and its transcript line
commands_refused    reason, notified               the sender could not prove who they are
                                                   (`notified` as for held)
notices_summary     through, count                 the summary of `count` held / refused
                                                   notices over the limit, up to event id
                                                   `through`, went to the team
sender_blocked      pattern                        /spam blocked an address or "@domain"
sender_unblocked    pattern                        /unblock lifted a block
set                 field, old, new                a field of the report changed (`field` is
                                                   the column: severity, waiting, embargo,
                                                   disclosed_at, credit, ...)
state               old, new, and: reason          a state transition; `reason` of /reject,
                    (rejected), of (duplicate),    `of` of /duplicate, `early` of /disclose
                    early (disclosed), reopened    early, `reopened` true for /reopen
reporter_mail       template                       a mail to the reporter (state, embargo...)
participant_added   address                        /cc added a participant
reply               chars                          /reply sent text to the reporter
advisory_draft      advisory, gaps                 /advisory mailed the drafts
credit_asked        -                              the reporter was asked how to be credited
update_sent         key                            the periodic update to the reporter
clock_notice        key, clock, notice             a reminder, escalation or overdue notice
attachments_sent    to, sent, over                 /attachments mailed the numbered files in
                                                   `sent` to `to` (the maintainer who asked);
                                                   those in `over` were too large for one mail
imported            source, as                     a message taken in silently (adopting a
                                                   mailbox, `triaged import`): no receipt, no
                                                   notification, no clock; `as` is what it
                                                   was (report, followup, ...). A report whose
                                                   first event this is was made by an import
openpgp_key         fingerprint, source,           an OpenPGP key came with a participant's
                    imported, reason               mail (attachment or Autocrypt header):
                                                   taken for their address, or why not

A new kind is a constant here, a line in this table, and, when it moves a clock, a rule in
`triaged.clocks.engine` (its `parse_happenings`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

RECEIVED: Final = "received"
RECEIPT: Final = "receipt"
RECEIPT_SUPPRESSED: Final = "receipt_suppressed"
FOLLOWUP: Final = "followup"
WAITING_OVER: Final = "waiting_over"
AUTOMATIC: Final = "automatic"
HELD: Final = "held"
QUARANTINED: Final = "quarantined"
NOTE: Final = "note"
COMMAND: Final = "command"
COMMANDS_REFUSED: Final = "commands_refused"
SET: Final = "set"
STATE: Final = "state"
REPORTER_MAIL: Final = "reporter_mail"
PARTICIPANT_ADDED: Final = "participant_added"
REPLY: Final = "reply"
ADVISORY_DRAFT: Final = "advisory_draft"
CREDIT_ASKED: Final = "credit_asked"
UPDATE_SENT: Final = "update_sent"
CLOCK_NOTICE: Final = "clock_notice"
IMPORTED: Final = "imported"
OPENPGP_KEY: Final = "openpgp_key"
SPAM_VERDICT: Final = "spam_verdict"
BLOCKED_MAIL: Final = "blocked_mail"
NOTICES_SUMMARY: Final = "notices_summary"
SENDER_BLOCKED: Final = "sender_blocked"
SENDER_UNBLOCKED: Final = "sender_unblocked"
ATTACHMENTS_SENT: Final = "attachments_sent"

KINDS: Final = frozenset(
    {
        RECEIVED,
        RECEIPT,
        RECEIPT_SUPPRESSED,
        FOLLOWUP,
        WAITING_OVER,
        AUTOMATIC,
        HELD,
        QUARANTINED,
        NOTE,
        COMMAND,
        COMMANDS_REFUSED,
        SET,
        STATE,
        REPORTER_MAIL,
        PARTICIPANT_ADDED,
        REPLY,
        ADVISORY_DRAFT,
        CREDIT_ASKED,
        UPDATE_SENT,
        CLOCK_NOTICE,
        IMPORTED,
        OPENPGP_KEY,
        SPAM_VERDICT,
        BLOCKED_MAIL,
        NOTICES_SUMMARY,
        SENDER_BLOCKED,
        SENDER_UNBLOCKED,
        ATTACHMENTS_SENT,
    }
)


def encode_detail(detail: Mapping[str, Any]) -> str:
    """The detail as stored: a JSON object with sorted keys."""
    return json.dumps(dict(detail), sort_keys=True)


def decode_detail(raw: object) -> dict[str, Any]:
    """A stored detail as a dict; {} for anything that is not a JSON object (a reader never
    fails on an odd row)."""
    if isinstance(raw, Mapping):
        return dict(raw)
    if not isinstance(raw, str | bytes) or not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}

"""The command line: `triaged run`, `check`, `reports`, `show`, `export`, `import`, `deadlines`,
`digest`, `backup`, `demo`, `oauth2 login`, and the disclosure outputs."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from triaged import __version__
from triaged.config import Config, OpenPGPConfig, config_path, load
from triaged.core.protection import OpenPGPStatus
from triaged.core.timefmt import parse_ts
from triaged.errors import (
    AlreadyRunning,
    BackupError,
    ConfigError,
    MailboxError,
    TokenError,
    TransportError,
)
from triaged.logs import setup_logging
from triaged.mail.openpgp import Keyring
from triaged.service.signals import SignalRelay
from triaged.store.db import Store
from triaged.views import deadline_list, report_detail, report_list

if TYPE_CHECKING:
    from triaged.mail.oauth2 import TokenManager

log = logging.getLogger(__name__)

EXIT_CONFIG = 2
EXIT_UNREACHABLE = 1


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"triaged: {message}", err=True)
    sys.exit(code)


def _config(ctx: click.Context) -> Config:
    path = config_path(ctx.obj["config"])
    try:
        return load(path)
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)


@click.group()
@click.version_option(__version__, prog_name="triaged")
@click.option(
    "--config",
    "config",
    metavar="PATH",
    help="Configuration file (default: $TRIAGED_CONFIG, else /etc/triaged/config.toml).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines on stderr: plain text (journald adds the time) or one JSON object each.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages too.")
@click.pass_context
def main(ctx: click.Context, config: str | None, log_format: str, verbose: bool) -> None:
    """triaged runs a project's security mailbox.

    Example: triaged --config /etc/triaged/config.toml run
    """
    ctx.ensure_object(dict)
    ctx.obj["config"] = config
    setup_logging(log_format, logging.DEBUG if verbose else logging.INFO)


def _run_daemon(config: Config, on_intake: Any = None, on_ready: Any = None) -> None:
    from triaged.service.daemon import Daemon

    daemon = Daemon(config)
    daemon.on_intake = on_intake
    daemon.on_ready = on_ready

    def stop(signum: int) -> None:
        log.info("signal %d: stopping", signum)
        daemon.request_stop()

    def reload(signum: int) -> None:
        log.info("SIGHUP: reloading the configuration")
        daemon.request_reload()

    # Acted on in a thread of their own (triaged/service/signals.py): a handler that sets the
    # daemon's Events can wait forever on a lock the interrupted intake loop holds.
    relay = SignalRelay({signal.SIGTERM: stop, signal.SIGINT: stop, signal.SIGHUP: reload})
    try:
        with relay:
            daemon.run()
    except AlreadyRunning as exc:
        _fail(str(exc), EXIT_UNREACHABLE)
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)


def _printed_whole(rows: Any, as_json: bool, nothing: str) -> bool:
    """For the listing commands: prints `rows` as JSON, or `nothing` when there are none, and
    says whether that was the whole answer (else the caller prints its table)."""
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return True
    if not rows:
        click.echo(nothing)
        return True
    return False


@main.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Run the daemon in the foreground until SIGTERM or Ctrl-C.

    Example: triaged --config /etc/triaged/config.toml run
    """
    _run_daemon(_config(ctx))


@main.command()
@click.option(
    "--canary",
    is_flag=True,
    help="Also send a canary probe now and wait for the daemon to take it back.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=120.0,
    show_default=True,
    help="How many seconds --canary waits for the probe.",
)
@click.pass_context
def check(ctx: click.Context, canary: bool, timeout: float) -> None:
    """Validate the config, get an OAuth2 token if one is needed, log in to the mailbox (or
    speak LMTP with it), greet the SMTP server; each line says which login (password or
    oauth2) that side uses. With --canary, send a probe through SMTP to the project's address
    and wait until the running daemon takes it back through its mailbox; print the round trip.

    Exit status: 0 all fine, 1 the mailbox, SMTP or token endpoint failed or the probe did not
    come back, 2 the config is bad.

    Example: triaged --config /etc/triaged/config.toml check --canary --timeout 300
    """
    from triaged.mail.oauth2 import tokens_for
    from triaged.mail.transport import open_transport

    config = _config(ctx)
    click.echo(f"config: ok ({config.path})")
    failed = False
    tokens = tokens_for(config)
    if tokens is not None:
        try:
            tokens.token()
            left = tokens.expires_in() or 0
            click.echo(
                f"oauth2: ok (a token from {tokens.config.token_url} by the "
                f"{tokens.config.grant} grant, valid for {left / 60:.0f} more minutes)"
            )
        except TokenError as exc:
            click.echo(f"oauth2: FAILED: {exc}")
            failed = True
    failed = not _check_mailbox(config, tokens) or failed
    transport = open_transport(config.smtp, tokens)
    auth = _auth_name(
        config.smtp.auth, config.smtp.endpoint.is_maildir, config.smtp.password is not None
    )
    try:
        click.echo(f"smtp: ok ({auth}; {transport.check()})")
    except TransportError as exc:
        click.echo(f"smtp: FAILED ({auth}): {exc}")
        failed = True
    finally:
        transport.close()
    if config.openpgp is not None:
        failed = not _check_openpgp(config) or failed
    if canary and not failed:
        failed = not _check_canary(config, tokens, timeout)
    sys.exit(EXIT_UNREACHABLE if failed else 0)


def _check_canary(config: Config, tokens: TokenManager | None, timeout: float) -> bool:
    """Sends one probe at once (not through the outbox) and waits for the daemon's intake to
    take it back."""
    import time

    from triaged.mail import auth
    from triaged.mail.transport import open_transport
    from triaged.service.canary import Canary
    from triaged.store import canaries

    store = Store(config.database)
    try:
        probe_id, mail = Canary(config, store, auth.load_or_create_key(config.auth.key_file)).probe(
            datetime.now(UTC)
        )
        transport = open_transport(config.smtp, tokens)
        try:
            transport.send(mail.envelope_from, mail.recipient, mail.raw)
        except TransportError as exc:
            canaries.forget(store, probe_id)
            click.echo(f"canary: FAILED: the probe could not be sent: {exc}")
            return False
        finally:
            transport.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            probe = canaries.get(store, probe_id)
            if probe is not None and probe.round_trip is not None:
                seconds = probe.round_trip.total_seconds()
                click.echo(f"canary: ok (back through the mailbox after {seconds:.2f} s)")
                return True
            time.sleep(0.2)
        click.echo(
            f"canary: FAILED: the probe sent to {config.project.address} did not come back"
            f" within {timeout:g} s (the running daemon takes probes back: is it running, and"
            " does mail to that address reach the mailbox it reads?)"
        )
        return False
    finally:
        store.close()


def _check_mailbox(config: Config, tokens: TokenManager | None) -> bool:
    """One line on the mailbox: logged in and looked (IMAP, Maildir), or LMTP spoken with."""
    from triaged.mail.mailbox import lmtp, open_mailbox

    endpoint = config.mailbox.endpoint
    if endpoint.is_lmtp:
        try:
            said = lmtp.check(
                config.mailbox, config.project.address, config.limits.max_message_size
            )
        except MailboxError as exc:
            click.echo(f"mailbox: FAILED (LMTP): {exc}")
            return False
        click.echo(f"mailbox: ok ({endpoint.display()}, LMTP: {said})")
        return True
    mailbox = open_mailbox(config.mailbox, tokens)
    auth = _auth_name(config.mailbox.auth, endpoint.is_maildir, True)
    try:
        mailbox.connect()
        waiting = len(mailbox.pending())
        click.echo(f"mailbox: ok ({endpoint.display()}, {auth}, {waiting} waiting)")
    except MailboxError as exc:
        click.echo(f"mailbox: FAILED ({auth}): {exc}")
        return False
    finally:
        mailbox.close()
    return True


def _check_openpgp(config: Config) -> bool:
    """Whether the project key loads and decrypts a self-test message (and the maintainers'
    key files load), said in one line."""
    from triaged.mail.openpgp import OpenPGPError, scratch_keyring

    try:
        with scratch_keyring(config) as keyring:
            assert keyring is not None
            click.echo(f"openpgp: ok ({keyring.self_test()})")
    except (ConfigError, OpenPGPError) as exc:
        click.echo(f"openpgp: FAILED: {exc}")
        return False
    return True


def _auth_name(auth: str, is_maildir: bool, has_password: bool) -> str:
    if is_maildir:
        return "no login"
    if auth == "oauth2":
        return "auth oauth2 (XOAUTH2)"
    return "auth password" if has_password else "no login"


@main.group()
def oauth2() -> None:
    """OAuth2 for hosted mailboxes (Microsoft 365, Google Workspace): see [oauth2].

    Example: triaged --config /etc/triaged/config.toml oauth2 login
    """


@oauth2.command()
@click.pass_context
def login(ctx: click.Context) -> None:
    """Get the first refresh token from a terminal (the device authorization grant,
    RFC 8628): prints a URL and a code to enter there, waits for the sign-in, and stores the
    refresh token in [oauth2] refresh_token_file (mode 0600). The daemon uses it at its next
    login; a running one needs no restart.

    Example: triaged --config /etc/triaged/config.toml oauth2 login
    """
    from triaged.mail.oauth2 import device_authorization, poll_device_token, write_refresh_token

    config = _config(ctx)
    settings = config.oauth2
    if settings is None:
        _fail(f"{config.path}: there is no [oauth2] section", EXIT_CONFIG)
    target = settings.refresh_token_file
    if target is None:
        _fail(
            f"{config.path}: oauth2.refresh_token_file is not set: the client credentials grant "
            "needs no sign-in",
            EXIT_CONFIG,
        )
    try:
        code = device_authorization(settings)
        click.echo(f"To sign in, open {code.verification_uri} and enter the code {code.user_code}")
        if code.verification_uri_complete:
            click.echo(f"(or open {code.verification_uri_complete})")
        click.echo(
            f"Sign in as the mailbox's user ({config.mailbox.endpoint.username or '-'}). "
            f"Waiting up to {code.expires_in / 60:.0f} minutes..."
        )
        refresh_token = poll_device_token(settings, code)
        write_refresh_token(target, refresh_token)
    except TokenError as exc:
        _fail(str(exc), EXIT_UNREACHABLE)
    except OSError as exc:
        _fail(f"cannot write {target}: {exc.strerror or exc}", EXIT_UNREACHABLE)
    click.echo(f"Signed in. The refresh token is in {target} (mode 0600).")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def reports(ctx: click.Context, as_json: bool) -> None:
    """List the reports, newest first.

    Example: triaged reports --json
    """
    store = Store(_config(ctx).database)
    rows = report_list(store)
    if _printed_whole(rows, as_json, "no reports"):
        return
    click.echo(f"{'ID':<9} {'STATE':<13} {'SEVERITY':<9} {'RECEIVED':<17} {'REPORTER':<28} TITLE")
    for row in rows:
        click.echo(
            f"{row['id']:<9} {row['state']:<13} {row['severity'] or '-':<9} "
            f"{row['created_at'][:16].replace('T', ' '):<17} {row['reporter'] or '-':<28.28} "
            f"{row['title'][:60]}"
        )


@contextlib.contextmanager
def _reading_keys(config: Config, store: Store, report_id: str) -> Iterator[Keyring | None]:
    """The keys to read a report's encrypted messages with (the configured ones, loaded in a
    scratch home), or None when it holds none or OpenPGP is off. A key that cannot be loaded
    is said on stderr, and the messages it would decrypt are shown as unreadable."""
    from triaged.mail.openpgp import OpenPGPError, scratch_keyring
    from triaged.store.messages import report_encrypted

    if not report_encrypted(store, report_id):
        yield None
        return
    if config.openpgp is None:
        click.echo("note: OpenPGP is off ([openpgp]): encrypted messages are not read", err=True)
        yield None
        return
    with contextlib.ExitStack() as stack:
        keyring: Keyring | None = None
        try:
            keyring = stack.enter_context(scratch_keyring(config))
        except (ConfigError, OpenPGPError) as exc:
            click.echo(
                f"note: encrypted messages are not read (no text, no attachments; the numbers"
                f" of later attachments shift): {exc}",
                err=True,
            )
        yield keyring


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def blocked(ctx: click.Context, as_json: bool) -> None:
    """List the blocked senders (set by /spam), with who blocked them when.

    Example: triaged blocked --json
    """
    from triaged.store import blocklist

    rows = blocklist.entries(Store(_config(ctx).database))
    if _printed_whole(rows, as_json, "no blocked senders"):
        return
    click.echo(f"{'BLOCKED':<32} {'BY':<26} {'SINCE':<17} {'REPORT':<9} STOPPED")
    for row in rows:
        pattern = str(row["pattern"])
        shown = f"{pattern[1:]} (domain)" if pattern.startswith("@") else pattern
        click.echo(
            f"{shown:<32.32} {row['blocked_by']:<26.26} "
            f"{row['blocked_at'][:16].replace('T', ' '):<17} {row['report_id'] or '-':<9} "
            f"{row['stopped']}"
        )


@main.command()
@click.argument("report_id")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print JSON: the report, its messages (with text and attachments), events, outbox.",
)
@click.pass_context
def show(ctx: click.Context, report_id: str, as_json: bool) -> None:
    """Show one report: its fields, each message with its text and attachments, its events.

    Example: triaged show k7f3q9xm --json
    """
    from triaged.core.text import clean_body_text

    config = _config(ctx)
    store = Store(config.database)
    report_id = report_id.lower().lstrip("#")
    if store.report(report_id) is None:
        _fail(f"no report {report_id}", 1)
    with _reading_keys(config, store, report_id) as keyring:
        detail = report_detail(store, report_id, config.limits, keyring)
    if detail is None:
        _fail(f"no report {report_id}", 1)
    if as_json:
        click.echo(json.dumps(detail, indent=2))
        return
    for key in ("id", "title", "state", "severity", "handler", "reporter", "created_at"):
        click.echo(f"{key + ':':<12} {detail[key] if detail[key] is not None else '-'}")
    if detail["imported"]:
        click.echo(f"{'imported:':<12} yes (taken in silently: no receipt, no notification)")
    untrusted = detail["untrusted"]
    if untrusted["held"] or untrusted["refused"]:
        click.echo(
            f"{'untrusted:':<12} {untrusted['held']} held message(s), {untrusted['refused']}"
            f" with refused commands ({untrusted['folded']} told in hourly summaries)"
        )
    click.echo("messages:")
    for m in detail["messages"]:
        marks = " (imported)" if m["imported"] else ""
        click.echo(f"  #{m['id']} {m['received_at'][:16]} {m['kind']:<11} {m['from_addr']}{marks}")
        if m["openpgp"]:
            click.echo(f"    OpenPGP: {OpenPGPStatus.from_json(m['openpgp']).describe()}")
        for a in m["attachments"]:
            click.echo(
                f"    attachment {a['index']}: {a['filename'] or '(no name)'} "
                f"({a['content_type']}, {a['size']} bytes, sha256 {a['sha256']})"
            )
        if m["unreadable"]:
            click.echo(f"    (no text: {m['unreadable']})")
            continue
        origin = " (converted from HTML)" if m["text_from_html"] else ""
        click.echo(f"    ----- text{origin} -----")
        for line in clean_body_text(m["text"]).splitlines() or ["(no text)"]:
            click.echo(f"    {line}")
        click.echo("    ----- end of text -----")
    if detail["keys"]:
        click.echo("keys:")
        for k in detail["keys"]:
            click.echo(f"  {k['address']} {k['fingerprint']} (from its {k['source']})")
    click.echo("events:")
    for e in detail["events"]:
        click.echo(f"  {e['at'][:16]} {e['kind']:<18} {e['actor'] or ''}")


@main.command()
@click.argument("report_id")
@click.option(
    "--output",
    "directory",
    metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write (created 0700 if missing; default: ./report-ID).",
)
@click.pass_context
def export(ctx: click.Context, report_id: str, directory: Path | None) -> None:
    """Write a report's raw messages (one mbox file) and attachments (one file each, mode 0600)
    into DIR, and print each file's SHA-256. Nothing is overwritten or unpacked.

    Messages that came encrypted are in the mbox as received (ciphertext); their attachments
    are written decrypted, numbered as `show` numbers them.

    Example: triaged export k7f3q9xm --output /secure/k7f3q9xm
    """
    from triaged.export import export as export_report

    config = _config(ctx)
    store = Store(config.database)
    report_id = report_id.lower().lstrip("#")
    if store.report(report_id) is None:
        _fail(f"no report {report_id}", 1)
    target = directory or Path(f"report-{report_id}")
    with _reading_keys(config, store, report_id) as keyring:
        try:
            done = export_report(store, report_id, config.limits, target, keyring)
        except OSError as exc:
            _fail(f"cannot write into {target}: {exc.strerror or exc}", 1)
    for item in done.written:
        # The sha256sum format, so that `sha256sum -c` can check the files later.
        click.echo(f"{item.sha256}  {item.path}")
    attachments = len(done.written) - 1
    click.echo(
        f"report {report_id}: {attachments} attachment(s) and the messages written to {target}",
        err=True,
    )
    if done.encrypted:
        click.echo(
            f"{done.encrypted} message(s) came encrypted: the mbox holds them as received"
            " (ciphertext); their attachments are written decrypted",
            err=True,
        )
    for number, why in done.unreadable:
        click.echo(f"message #{number}: {why}; no attachment of it is written", err=True)


@main.command("import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.pass_context
def import_archive(ctx: click.Context, path: Path) -> None:
    """Take in an archive of the mailbox (an mbox file or a Maildir) silently: each message is
    stored and threaded, nothing is sent, no command runs and no clock starts. Run twice, it
    adds nothing. A progress bar on a terminal; plain lines otherwise; one line at the end.

    Example: triaged import /srv/mail/security-2019-2025.mbox
    """
    from triaged.intake.archive import import_archive as take_in

    config = _config(ctx)
    store = Store(config.database)
    progress = _Progress(sys.stderr.isatty())
    try:
        with _import_keys(config) as keyring:
            summary = take_in(
                config,
                store,
                path,
                datetime.now(UTC),
                progress.start,
                progress.advance,
                keyring,
            )
    except MailboxError as exc:
        _fail(str(exc), 1)
    finally:
        progress.finish()
    click.echo(f"import {path}: {summary.line()}")


@contextlib.contextmanager
def _import_keys(config: Config) -> Iterator[Keyring | None]:
    """The configured OpenPGP keys (in a scratch home) to read encrypted archived mail with;
    None when OpenPGP is off or they cannot be loaded (said on stderr)."""
    from triaged.mail.openpgp import OpenPGPError, scratch_keyring

    if config.openpgp is None:
        yield None
        return
    with contextlib.ExitStack() as stack:
        keyring: Keyring | None = None
        try:
            keyring = stack.enter_context(scratch_keyring(config))
        except (ConfigError, OpenPGPError) as exc:
            click.echo(f"note: encrypted messages are stored unread: {exc}", err=True)
        yield keyring


class _Progress:
    """A progress bar (click's) on a terminal; otherwise a plain line every 1,000 messages."""

    EVERY = 1000

    def __init__(self, terminal: bool) -> None:
        self.terminal = terminal
        self.bar: Any = None
        self.total = 0
        self.done = 0

    def start(self, total: int) -> None:
        self.total = total
        if self.terminal:
            self.bar = click.progressbar(length=total, label="importing", file=sys.stderr)
            self.bar.__enter__()
        else:
            click.echo(f"import: {total} messages to read", err=True)

    def advance(self, count: int) -> None:
        before, self.done = self.done, self.done + count
        if self.bar is not None:
            self.bar.update(count)
        elif before // self.EVERY != self.done // self.EVERY:
            click.echo(f"import: {self.done} of {self.total} messages", err=True)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (timestamps in UTC).")
@click.pass_context
def deadlines(ctx: click.Context, as_json: bool) -> None:
    """List the running deadlines of the open reports, overdue first, then by due time.

    Due times are shown in the project's time zone. Clocks paused while waiting on the
    reporter, met or stopped are not listed.

    Example: triaged deadlines --json
    """
    from triaged.core.durations import span

    config = _config(ctx)
    store = Store(config.database)
    now = datetime.now(UTC)
    rows = deadline_list(store, now)
    if _printed_whole(rows, as_json, "no deadlines running"):
        return
    zone = config.project.timezone
    click.echo(f"{'DUE':<26} {'WHEN':<30} {'ID':<9} {'CLOCK':<12} TITLE")
    for row in rows:
        due = parse_ts(row["due_at"])
        left = span(due - now)
        when = f"OVERDUE by {left}" if row["overdue"] else f"in {left}"
        click.echo(
            f"{due.astimezone(zone).strftime('%a %Y-%m-%d %H:%M %Z'):<26} {when:<30} "
            f"{row['report_id']:<9} {row['clock']:<12} {row['title'][:60]}"
        )


@main.command()
@click.option("--print", "to_stdout", is_flag=True, help="Print the digest; send nothing.")
@click.pass_context
def digest(ctx: click.Context, to_stdout: bool) -> None:
    """Make the team's digest now: into the outbox (the daemon sends it), or with --print to
    the terminal only.

    Example: triaged digest --print
    """
    from triaged import digest as digests
    from triaged.mail import auth
    from triaged.mail.compose import Composer
    from triaged.service.outbox import enqueue

    config = _config(ctx)
    store = Store(config.database)
    now = datetime.now(UTC)
    composer = Composer(config)
    if to_stdout:
        click.echo(digests.render(config, digests.build(store, config, now), composer), nl=False)
        return
    tokens = auth.ReplyTokens(
        auth.load_or_create_key(config.auth.key_file),
        config.project.address,
        frozenset(config.maintainers.members),
    )
    with store.transaction():
        outgoing = digests.compose(config, store, composer, now, tokens)
        enqueue(store, outgoing, now)
    recipients = ", ".join(out.recipient for out in outgoing)
    click.echo(f"digest queued in the outbox for {recipients}; the daemon sends it")


@main.command()
@click.argument("target", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace TARGET if it exists.")
@click.pass_context
def backup(ctx: click.Context, target: Path, overwrite: bool) -> None:
    """Copy the database to TARGET, consistently, also while the daemon runs.

    Example: triaged backup /var/backups/triaged-$(date +%F).db
    """
    from triaged.service.backup import backup as copy_database

    config = _config(ctx)
    try:
        pages = copy_database(config.database, target, overwrite=overwrite)
    except BackupError as exc:
        _fail(str(exc), 1)
    click.echo(f"backup: {config.database} -> {target} ({pages} pages, integrity ok)")


@main.command()
@click.option(
    "--dir",
    "directory",
    default="demo",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the demo keeps its config, Maildirs and database.",
)
def demo(directory: Path) -> None:
    """Run on the embedded default (local Maildirs, no mail server) with sample reports.

    Example: triaged demo --dir /tmp/triaged-demo
    """
    from triaged.service.demo import feed, prepare, summarize

    config_file, samples = prepare(directory)
    config = load(config_file)
    click.echo(f"triaged demo in {directory}/ (config: {config_file})")
    click.echo(
        f"drop more mail files into {config.mailbox.endpoint.path}/new; "
        f"what triaged sends lands in {config.smtp.endpoint.path}/new; Ctrl-C stops"
    )

    seen: set[str] = set()

    def on_ready() -> None:
        # After the start: mail already there at a new database's first start is taken in
        # silently, and the demo wants its samples answered.
        if samples:
            fed = feed(config, samples)
            click.echo(f"fed {fed} sample message(s) into {config.mailbox.endpoint.path}/new")

    def on_intake(handled: int) -> None:
        for line in summarize(config, seen):
            click.echo(line)

    _run_daemon(config, on_intake, on_ready)


@main.command()
@click.argument("report_id")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["markdown", "osv"]),
    default="markdown",
    show_default=True,
    help="A Markdown advisory, or an OSV JSON record.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to FILE instead of standard output.",
)
@click.pass_context
def advisory(ctx: click.Context, report_id: str, fmt: str, output: Path | None) -> None:
    """Draft a report's advisory from its fields; what to check goes to stderr.

    Example: triaged advisory k7f3q9xm --format osv --output advisory.json
    """
    from triaged.disclosure.advisory import draft

    config = _config(ctx)
    store = Store(config.database)
    row = store.report(report_id.lower().lstrip("#"))
    if row is None:
        _fail(f"no report {report_id}", 1)
    drafted = draft(dict(row), config, datetime.now(UTC))
    text = drafted.markdown if fmt == "markdown" else drafted.osv_json()
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"advisory {drafted.id} ({fmt}) written to {output}", err=True)
    for gap in drafted.gaps:
        click.echo(f"check: {gap}", err=True)


@main.command("hall-of-fame")
@click.pass_context
def hall_of_fame(ctx: click.Context) -> None:
    """Markdown crediting the reporters of disclosed reports, newest first, for SECURITY.md.

    Example: triaged hall-of-fame > hall-of-fame.md
    """
    from triaged.disclosure import halloffame

    config = _config(ctx)
    store = Store(config.database)
    click.echo(halloffame.render(halloffame.disclosed(store), config), nl=False)


@main.command("security-txt")
@click.pass_context
def security_txt(ctx: click.Context) -> None:
    """The project's security.txt (RFC 9116) from [security_txt]; notes go to stderr.

    With [openpgp] and no [security_txt] encryption, an Encryption: line names the project
    key (openpgp4fpr:).

    Example: triaged security-txt > /var/www/.well-known/security.txt
    """
    from triaged.disclosure import securitytxt

    config = _config(ctx)
    now = datetime.now(UTC)
    fingerprint = None
    if config.openpgp is not None and not config.security_txt.encryption:
        fingerprint, _ = _project_key(config)
    click.echo(securitytxt.render(config, now, fingerprint), nl=False)
    for note in securitytxt.notes(config, now):
        click.echo(f"note: {note}", err=True)


# --- the project's OpenPGP key -------------------------------------------------------------


def _openpgp_config(config: Config) -> OpenPGPConfig:
    if config.openpgp is None:
        _fail(f"{config.path}: openpgp: no [openpgp] section: OpenPGP is off", EXIT_CONFIG)
    return config.openpgp


def _project_key(config: Config) -> tuple[str, str]:
    """The project key, loaded in a scratch home: (its fingerprint, its public key)."""
    from triaged.mail.openpgp import OpenPGPError, scratch_keyring

    _openpgp_config(config)
    try:
        with scratch_keyring(config) as keyring:
            assert keyring is not None
            return keyring.project_fingerprint or "", keyring.export_public()
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)
    except OpenPGPError as exc:
        _fail(str(exc), 1)


@main.group()
def key() -> None:
    """The project's OpenPGP key ([openpgp] secret_key_file).

    Example: triaged key generate && triaged key export > project-key.asc
    """


@key.command("generate")
@click.pass_context
def key_generate(ctx: click.Context) -> None:
    """Make a new project key (ed25519 / cv25519, the project address as user ID, no
    passphrase) and write it, mode 0600, to [openpgp] secret_key_file; refused when that
    file exists.

    Example: triaged key generate
    """
    import os

    from triaged.mail.openpgp import OpenPGPError, generate_key

    config = _config(ctx)
    target = _openpgp_config(config).secret_key_file
    if target.exists():
        _fail(f"{target} exists already; move it away first to make a new key", 1)
    try:
        armoured, fingerprint = generate_key(
            f"{config.project.name} security", config.project.address
        )
    except OpenPGPError as exc:
        _fail(str(exc), 1)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(armoured)
    click.echo(f"key {fingerprint} for {config.project.address} written to {target}")
    click.echo("publish it: triaged key export > key.asc; restart (or reload) the daemon")


@key.command("export")
@click.pass_context
def key_export(ctx: click.Context) -> None:
    """Print the project's public key (ASCII armour), to publish it.

    Example: triaged key export > /var/www/.well-known/security-key.asc
    """
    fingerprint, public_key = _project_key(_config(ctx))
    click.echo(public_key, nl=False)
    click.echo(f"fingerprint: {fingerprint}", err=True)

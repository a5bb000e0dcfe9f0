"""Every exception triaged raises on purpose, in one place."""


class TriagedError(Exception):
    """Base class of triaged's own errors."""


class ConfigError(TriagedError):
    """The configuration file is unusable; names the file and the key."""

    def __init__(self, path: str, key: str, message: str) -> None:
        super().__init__(f"{path}: {key}: {message}")
        self.path = path
        self.key = key
        self.message = message


class UnsafeMessage(TriagedError):
    """A message cannot be parsed safely and must be quarantined."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Refused(TriagedError):
    """A command (or a rule it asks) will not do what was asked; the text says why, for the
    transcript. Raised inside the command's savepoint, so nothing of it is kept."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CommandsRefused(TriagedError):
    """A message's commands were not run at all: its sender could not prove to be a
    maintainer. Nothing changed; the team is told (within its notice limit), never the sender."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MailboxError(TriagedError):
    """The mailbox cannot be reached or refused an operation."""


class TransportError(TriagedError):
    """Sending a message failed."""


class TemporaryFailure(TransportError):
    """Sending failed in a way that may succeed later (4xx, connection trouble)."""


class ConnectionFailure(TemporaryFailure):
    """The server could not be reached or talked to at all (every message would fail)."""


class PermanentFailure(TransportError):
    """The server refused the message for good (5xx)."""


class AlreadyRunning(TriagedError):
    """Another triaged holds the single-instance lock of the same database."""

    def __init__(self, database: str, pid: int | None) -> None:
        super().__init__(
            f"another triaged is already running on {database} (pid {pid or 'unknown'})"
        )
        self.database = database
        self.pid = pid


class TokenError(TriagedError):
    """No OAuth2 access token could be had: says what failed and, when a person must act,
    the one command that fixes it (`fix`). `lasting` is true when retrying alone cannot help
    (a revoked grant, a wrong client secret, a missing refresh token)."""

    def __init__(self, what: str, fix: str = "", lasting: bool = False) -> None:
        super().__init__(f"{what}; fix: {fix}" if fix else what)
        self.what = what
        self.fix = fix
        self.lasting = lasting


class BackupError(TriagedError):
    """The backup could not be made; nothing was left at the target."""

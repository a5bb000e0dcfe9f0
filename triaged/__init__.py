"""triaged: a daemon that runs a project's security mailbox."""

__version__ = "0.1.0"

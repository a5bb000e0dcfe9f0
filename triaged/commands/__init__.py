"""Email commands. Importing this package registers every command (see `base`)."""

from triaged.commands import advisory, attachments, disclosure, people, report, triage

__all__ = ["advisory", "attachments", "disclosure", "people", "report", "triage"]

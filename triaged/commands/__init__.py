"""Email commands. Importing this package registers every command (see `base`)."""

from triaged.commands import advisory, disclosure, people, report, triage

__all__ = ["advisory", "disclosure", "people", "report", "triage"]

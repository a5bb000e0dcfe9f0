"""Small file-system helpers shared by the modules that write files durably."""

from __future__ import annotations

import os
import re
from pathlib import Path

from triaged.core.text import UNSAFE_CHARS


def fsync_path(path: Path) -> None:
    """Flushes a file, or a directory's entries (after a rename or link), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Characters never kept in a file name written from a name a sender chose: path separators,
# NUL and every control character (C0, DEL, C1, line and paragraph separators, bidi controls).
_UNSAFE_NAME = re.compile(f"[/\\\\{UNSAFE_CHARS}]+")
MAX_NAME_BYTES = 200  # of UTF-8; file systems allow 255


def safe_name(name: str, fallback: str) -> str:
    """A file name made from `name` that stays inside its directory: no path separator, no
    control character, not hidden (no leading dot), at most MAX_NAME_BYTES bytes of UTF-8 (the
    extension kept when the name is cut); `fallback` when nothing is left."""
    cleaned = " ".join(_UNSAFE_NAME.sub("_", name).split()).lstrip(".").strip()
    if not cleaned:
        return fallback
    stem, dot, extension = cleaned.rpartition(".")
    if not dot or len(extension.encode()) > 20:
        stem, extension = cleaned, ""
    suffix = f".{extension}" if extension else ""
    budget = MAX_NAME_BYTES - len(suffix.encode())
    stem = stem.encode()[:budget].decode("utf-8", "ignore").rstrip() or fallback
    return stem + suffix


def write_new(directory: int, name: str, data: bytes) -> str:
    """Writes `data` to a new file `name` in the directory open as `directory` (a file
    descriptor), mode 0600, never following a link and never replacing a file: when `name` is
    taken, "stem-2.ext", "stem-3.ext", ... Returns the name written."""
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem:
        stem, extension = name, ""
    suffix = f".{extension}" if extension else ""
    candidate = name
    for number in range(2, 10_000):
        try:
            fd = os.open(
                candidate,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=directory,
            )
        except FileExistsError:
            candidate = f"{stem}-{number}{suffix}"
            continue
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        return candidate
    raise FileExistsError(f"no free file name for {name!r}")

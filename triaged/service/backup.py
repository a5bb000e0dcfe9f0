"""`triaged backup PATH`: a consistent copy of the live database, with SQLite's backup API.

The copy is taken in one step, inside one read transaction: in WAL mode that is a snapshot
that never blocks the daemon's writers, and a writer cannot force the copy to start over
(which a copy in several steps would do after every write by another connection). It is
written to a temporary file next to the target, set to journal_mode=DELETE (one
self-contained file), checked with `PRAGMA integrity_check`, flushed to disk, and only then
given its name. It is created with mode 0600: the database holds undisclosed reports.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from pathlib import Path
from urllib.parse import quote

from triaged.core.files import fsync_path
from triaged.errors import BackupError


def backup(database: Path, target: Path, *, overwrite: bool = False) -> int:
    """Copies `database` to `target` consistently; returns the number of pages copied."""
    database, target = Path(database), Path(target)
    if not database.is_file():
        raise BackupError(f"{database}: no such database")
    if target.is_dir():
        raise BackupError(f"{target} is a directory; name the backup file")
    if target.exists():
        if not overwrite:
            raise BackupError(f"{target} exists; refusing to overwrite it")
        if target.resolve() == database.resolve():
            raise BackupError(f"{target} is the database itself")
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise BackupError(f"cannot write in {target.parent}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        pages = _copy(database, tmp)
        fsync_path(tmp)
        _publish(tmp, target, overwrite)
    except BaseException:
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            with contextlib.suppress(OSError):
                leftover.unlink()
        raise
    fsync_path(target.parent)
    return pages


def _copy(database: Path, tmp: Path) -> int:
    # mode=rw: never create a missing database; read-write so that, when this is the last
    # connection, SQLite removes the -wal and -shm files it may have created (a read-only
    # connection would leave them behind, owned by whoever ran the backup).
    uri = f"file:{quote(str(database.resolve()))}?mode=rw"
    try:
        src = sqlite3.connect(uri, uri=True, timeout=30)
    except sqlite3.Error as exc:
        raise BackupError(f"{database}: cannot open: {exc}") from None
    try:
        dst = sqlite3.connect(tmp)
        try:
            src.execute("PRAGMA busy_timeout=30000")
            src.backup(dst, pages=-1)
            dst.execute("PRAGMA journal_mode=DELETE")
            problems = [row[0] for row in dst.execute("PRAGMA integrity_check")]
            if problems != ["ok"]:
                raise BackupError(f"the copy of {database} is damaged: {'; '.join(problems[:5])}")
            pages = int(dst.execute("PRAGMA page_count").fetchone()[0])
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise BackupError(f"{database}: backup failed: {exc}") from None
    finally:
        src.close()
    return pages


def _publish(tmp: Path, target: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, target)
        return
    # link() fails if the target appeared meanwhile, where rename() would replace it.
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise BackupError(f"{target} exists; refusing to overwrite it") from None
    except OSError:  # a file system without hard links
        if target.exists():
            raise BackupError(f"{target} exists; refusing to overwrite it") from None
        os.replace(tmp, target)
        return
    tmp.unlink()

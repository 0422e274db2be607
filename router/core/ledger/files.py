"""The ledger's files are the owner's alone: the database 0600 and the directories it creates 0700.

SQLite creates a database's `-wal`, `-shm` and `-journal` files with the database file's own mode, so
creating the database file 0600 before SQLite opens it keeps all of them private (the umask can only
take more away). A database left by an earlier version with wider permissions is narrowed to 0600 once
the ledger has opened it as a database, together with its side files, where this process owns them.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIRECTORY_MODE = 0o700
SIDE_FILE_SUFFIXES = ("-wal", "-shm", "-journal")


def make_private_directories(directory: Path) -> None:
    """Creates `directory` and its missing parents, each 0700; directories already there are left alone
    (they may be shared on purpose, like ~/.local/share)."""
    missing: list[Path] = []
    current = directory
    while not os.path.lexists(current) and current != current.parent:
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIRECTORY_MODE)
        except FileExistsError:
            pass  # another process made it meanwhile


def create_private_file(path: Path) -> None:
    """Creates `path` empty and 0600 if it is missing (SQLite takes an empty file for a new database);
    an existing file is left as it is. Raises OSError where it cannot (a directory, a path under a file)."""
    make_private_directories(path.parent)
    # O_RDONLY: creating needs no write access, and a read-only database still opens (and SQLite then
    # says it is read-only).
    descriptor = os.open(path, os.O_RDONLY | os.O_CREAT, PRIVATE_FILE_MODE)
    os.close(descriptor)


def narrow_database_to_owner(path: Path) -> None:
    """Takes group and other permissions off the database and its side files, where this process owns them."""
    for file in (path, *(path.with_name(path.name + suffix) for suffix in SIDE_FILE_SUFFIXES)):
        _narrow_to_owner(file)


def _narrow_to_owner(path: Path) -> None:
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return
    if stat.S_ISREG(status.st_mode) and status.st_uid == os.geteuid() and stat.S_IMODE(status.st_mode) & 0o077:
        try:
            os.chmod(path, stat.S_IMODE(status.st_mode) & PRIVATE_FILE_MODE)
        except OSError:
            pass  # a read-only file system: the database still works, as private as it was

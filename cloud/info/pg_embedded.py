"""A private PostgreSQL (16, with pgvector) for an index kept in a directory: the embedded mode.

The server comes from the `pgserver` wheel, which bundles the PostgreSQL binaries and pgvector, so
nothing is installed system-wide. Its data lives in `<directory>/pg`; it listens on a Unix socket only
(in that directory, or under the user's runtime directory when the path is too long for a socket),
never on TCP. Several handles on one directory, in this process or in others, share one postmaster:
pgserver records the processes using it in the data directory, and the last one to let go stops it.
A process that exits without closing lets go at exit.

Connections go over the socket named by a libpq key=value string built here (pgserver's own URI is not
percent-encoded, so a `%` or `#` in the path would name another socket). pgserver starts the server
through pg_ctl, which passes the socket directory unquoted to a shell: a directory whose path holds a
space or another character the shell would read is refused before anything starts (`refuse_unsafe_path`).

Running as root: PostgreSQL refuses to run as root, so pgserver creates a system user `pgserver`
(`useradd`) if there is none, gives it the data directory, and adds read and traverse permission for
everyone (o+rx) to every parent directory of the data directory and to the wheel's binaries. The data
directory itself stays 0700 (PostgreSQL insists), so the documents' text remains private to that user.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from psycopg.conninfo import make_conninfo

from cloud.info.errors import IndexUnavailableError
from cloud.info.store import make_private_directories

DATA_FOLDER = "pg"
# Where pgserver lists the processes holding a handle on the server of a data directory (its own file).
_HANDLE_LIST = ".handle_pids.json"
# What pg_ctl's shell would split, expand or run in an unquoted `-k <socket directory>` (or break out of
# the double quotes around `-D` and `-l`), and the comma, which separates hosts in libpq's `host`. A `?`,
# the one glob character let through, matches the socket directory itself, which exists when it starts.
_SHELL_UNSAFE = frozenset("\"'\\$`&;|<>()*[]{},")


class EmbeddedServer:
    """One handle on the private server of an index directory; `release` lets go of it."""

    # pgserver keeps one server object per data directory per process, in a class-level dict that its
    # own lock guards only between processes: taking a handle and letting go of the last one must not
    # interleave between threads here (see `release`).
    _process_lock = threading.Lock()

    def __init__(self, directory: Path) -> None:
        """Starts the server of `directory` (or joins the one already running there).
        IndexUnavailableError when pgserver is not installed or the server does not start."""
        try:
            import pgserver
        except ImportError as exc:
            raise IndexUnavailableError("the embedded PostgreSQL index needs the pgserver package "
                                        "(pip install pgserver): it is not installed") from exc
        self.directory = Path(directory)
        refuse_unsafe_path(self.directory)
        make_private_directories(self.directory)
        forget_dead_handles(self.directory)
        try:
            with self._process_lock:
                self._server: Any = pgserver.get_server(self.directory / DATA_FOLDER, cleanup_mode="stop")
                # pgserver counts the handles of this process on one server object; the last release stops it.
                self._server.__enter__()
            self.uri: str = socket_conninfo(self._server.get_postmaster_info())
        except Exception as exc:  # pgserver raises assertion, subprocess and OS errors alike
            log = self.directory / DATA_FOLDER / "log"
            raise IndexUnavailableError(f"the embedded PostgreSQL in {self.directory / DATA_FOLDER} did not start "
                                        f"({type(exc).__name__}: {exc}); its log is {log}") from exc
        self._released = False

    def release(self) -> None:
        """Lets go of the server: it stops when no handle, here or in another process, still uses it."""
        if self._released:
            return
        self._released = True
        forget_dead_handles(self.directory)
        with self._process_lock:
            with contextlib.suppress(Exception):  # a server already stopped has nothing left to release
                self._server.__exit__(None, None, None)
            if self._server._count <= 0:
                _forget_server_object(self._server)


def _forget_server_object(server: Any) -> None:
    """pgserver drops its object for a data directory when the last process lets go, but keeps it when
    another process still holds the server; a later handle in this process would get that object back
    with this process no longer on the server's list of users (the other process, letting go, would stop
    the server under it). Dropped here, the next handle makes a new object, which lists this process."""
    from pgserver.postgres_server import PostgresServer

    with PostgresServer._lock:
        if PostgresServer._instances.get(server.pgdata) is server:
            del PostgresServer._instances[server.pgdata]
    atexit.unregister(server._cleanup)  # it let go already; at exit it would take this process off the list


def socket_conninfo(postmaster: Any) -> str:
    """A libpq key=value string for the server's Unix socket, as pgserver's postmaster.pid names it,
    connecting as the superuser pgserver made, to the database `postgres`."""
    return make_conninfo(host=str(postmaster.socket_dir), port=str(postmaster.port), user="postgres",
                         dbname="postgres")


def refuse_unsafe_path(directory: Path) -> None:
    """IndexUnavailableError when pgserver cannot start a server in `directory` (see the module docstring)."""
    resolved = str((Path(directory).expanduser().resolve() / DATA_FOLDER))
    unsafe = sorted({character for character in resolved if character in _SHELL_UNSAFE or character.isspace()})
    if unsafe:
        raise IndexUnavailableError(
            f"the index directory {directory} cannot hold an embedded PostgreSQL: its path contains "
            f"{' '.join(repr(c) for c in unsafe)}, which the server's start-up command (pg_ctl, through a shell) "
            "cannot pass; use another index_dir without them, info.engine = \"files\", or a PostgreSQL server "
            "(info.dsn)")


def forget_dead_handles(directory: Path) -> None:
    """Drops the processes that died holding the server (killed, never released) from pgserver's list of
    its users. pgserver stops the server only when the last listed process lets go, so one dead entry would
    keep it running after everyone alive has gone, and no later process would ever stop it."""
    path = Path(directory) / DATA_FOLDER / _HANDLE_LIST
    try:
        from pgserver.postgres_server import PostgresServer

        lock: Any = PostgresServer._lock  # pgserver's own lock over that list, across processes
    except (ImportError, AttributeError):
        lock = contextlib.nullcontext()
    with lock:
        try:
            listed = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        if not isinstance(listed, list):
            return
        alive = [pid for pid in listed if isinstance(pid, int) and pid > 0 and (pid == os.getpid() or _running(pid))]
        if alive != listed:
            with contextlib.suppress(OSError):
                path.write_text(json.dumps(alive))


def other_processes_using(directory: Path) -> list[int]:
    """The live processes other than this one that hold the embedded server of `directory`, as pgserver
    lists them; [] where there is no server or no list. A process that died without letting go stays in
    pgserver's list: only the ones still running are returned."""
    try:
        listed = json.loads((Path(directory) / DATA_FOLDER / _HANDLE_LIST).read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(listed, list):
        return []
    return sorted(pid for pid in {p for p in listed if isinstance(p, int) and p > 0}
                  if pid != os.getpid() and _running(pid))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True

"""A private PostgreSQL (16, with pgvector) for an index kept in a directory: the embedded mode.

The server comes from the `pgserver` wheel, which bundles the PostgreSQL binaries and pgvector, so
nothing is installed system-wide. Its data lives in `<directory>/pg`; it listens on a Unix socket only
(in that directory, or under the user's runtime directory when the path is too long for a socket),
never on TCP. Several handles on one directory, in this process or in others, share one postmaster:
pgserver records the processes using it in the data directory, and the last one to let go stops it.
A process that exits without closing lets go at exit.

Running as root: PostgreSQL refuses to run as root, so pgserver creates a system user `pgserver`
(`useradd`) if there is none, gives it the data directory, and adds read and traverse permission for
everyone (o+rx) to every parent directory of the data directory and to the wheel's binaries. The data
directory itself stays 0700 (PostgreSQL insists), so the documents' text remains private to that user.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from cloud.info.errors import IndexUnavailableError
from cloud.info.store import make_private_directories

DATA_FOLDER = "pg"
# Where pgserver lists the processes holding a handle on the server of a data directory (its own file).
_HANDLE_LIST = ".handle_pids.json"


class EmbeddedServer:
    """One handle on the private server of an index directory; `release` lets go of it."""

    def __init__(self, directory: Path) -> None:
        """Starts the server of `directory` (or joins the one already running there).
        IndexUnavailableError when pgserver is not installed or the server does not start."""
        try:
            import pgserver
        except ImportError as exc:
            raise IndexUnavailableError("the embedded PostgreSQL index needs the pgserver package "
                                        "(pip install pgserver): it is not installed") from exc
        self.directory = Path(directory)
        make_private_directories(self.directory)
        forget_dead_handles(self.directory)
        try:
            self._server: Any = pgserver.get_server(self.directory / DATA_FOLDER, cleanup_mode="stop")
            # pgserver counts the handles of this process on one server object; the last release stops it.
            self._server.__enter__()
            self.uri: str = self._server.get_uri()
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
        with contextlib.suppress(Exception):  # a server already stopped has nothing left to release
            self._server.__exit__(None, None, None)


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

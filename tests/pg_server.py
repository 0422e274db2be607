"""A real PostgreSQL server (16, with pgvector) for tests of the Info index's server mode.

It runs the binaries bundled in the pgserver wheel: initdb and pg_ctl on a data directory under the
given (temporary) folder, listening on 127.0.0.1 only, on a free port, with no Unix socket; as root,
as the unprivileged user `pgserver` (created as the embedded mode does, see cloud/info/pg_embedded.py).
pgvector is installed into template1, so every database created afterwards has it; `create_database`
makes a fresh one per test.
"""
from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

# The user the embedded mode runs PostgreSQL as when we are root: one extra system user, not two.
SYSTEM_USER = "pgserver"
SUPERUSER = "postgres"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PgTestServer:
    """initdb + pg_ctl start in `root`/data; `stop` shuts it down (fast mode) and removes the data."""

    def __init__(self, root: Path) -> None:
        from pgserver._commands import POSTGRES_BIN_PATH

        self.bin = Path(POSTGRES_BIN_PATH)
        self.data = Path(root) / "data"
        self.log = Path(root) / "postgres.log"
        self.port = 0
        self._run_as: str | None = None

    @property
    def dsn(self) -> str:
        return self.dsn_for(SUPERUSER)

    def dsn_for(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def dsn_as(self, user: str, dsn: str) -> str:
        """`dsn` (one of this server's databases) connecting as `user` instead (trust: no password)."""
        from psycopg.conninfo import conninfo_to_dict

        return f"postgresql://{user}@127.0.0.1:{self.port}/{conninfo_to_dict(dsn)['dbname']}"

    def start(self) -> None:
        if os.geteuid() == 0:
            self._prepare_unprivileged_user()
        self._command("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8")
        for _ in range(3):  # the port chosen may be taken by someone else before postgres binds it
            self.port = _free_port()
            started = self._command("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "120", "-o",
                                    f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories='' "
                                    "-c fsync=off", "start", check=False)
            if started.returncode == 0:
                break
        else:
            raise RuntimeError(f"PostgreSQL did not start; its log {self.log}:\n{self.log.read_text()}")
        with psycopg.connect(self.dsn_for("template1"), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")

    def create_database(self, name: str) -> str:
        """A new database (with pgvector) named `name`; its DSN."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template1')
        return self.dsn_for(name)

    def drop_database(self, name: str) -> None:
        """Removes the database `name`, closing any connection still open on it."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self.port:
            self._command("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)
        shutil.rmtree(self.data, ignore_errors=True)

    def _command(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / program), *args]
        if self._run_as is not None:
            command = ["runuser", "-u", self._run_as, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        return result

    def _prepare_unprivileged_user(self) -> None:
        """PostgreSQL refuses to run as root: the same user, and the same permissions on the wheel's
        binaries and on the data directory's parents, as pgserver's embedded mode sets up."""
        from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(SYSTEM_USER)
        read = stat.S_IRGRP | stat.S_IROTH
        ensure_prefix_permissions(self.bin)
        ensure_folder_permissions(self.bin, read | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(self.bin.parent / "lib", read)
        self.data.mkdir(mode=0o700, parents=True, exist_ok=True)
        ensure_prefix_permissions(self.data)
        account = pwd.getpwnam(SYSTEM_USER)
        os.chown(self.data, account.pw_uid, account.pw_gid)
        self.log.touch()
        os.chown(self.log, account.pw_uid, account.pw_gid)
        self._run_as = SYSTEM_USER


class EmbeddedIndexTemplate:
    """An index directory whose embedded server (cloud/info/pg_embedded.py) was initialised once and
    stopped: `copy_to` gives a new, empty index directory in a fraction of initdb's time. Opening a copy
    runs everything the embedded mode does at open but initdb (pgserver skips it where PG_VERSION is)."""

    def __init__(self, root: Path) -> None:
        from cloud.info.pg_embedded import DATA_FOLDER, EmbeddedServer

        self.path = Path(root) / "template"
        EmbeddedServer(self.path).release()  # initdb, start, stop
        # As the test server: no flush to disk at each commit and checkpoint, which only a crash would need.
        with (self.path / DATA_FOLDER / "postgresql.auto.conf").open("a") as conf:
            conf.write("fsync = off\n")

    def copy_to(self, directory: Path) -> Path:
        """`directory` (which must not exist) as a copy of the template; its owners and modes kept, as the
        server's user owns the data directory."""
        directory.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", str(self.path), str(directory)], check=True, capture_output=True, timeout=300)
        return directory


class FreshDatabases:
    """New databases on a PgTestServer, each named uniquely; `drop_all` removes every one made here."""

    def __init__(self, server: PgTestServer) -> None:
        self.server = server
        self._names: list[str] = []

    def create(self) -> str:
        """A new empty database's DSN."""
        self._names.append(f"test_{uuid.uuid4().hex}")
        return self.server.create_database(self._names[-1])

    def drop_all(self) -> None:
        for name in self._names:
            self.server.drop_database(name)
        self._names.clear()


class FreshIndexDirectories:
    """New, empty index directories of the embedded mode (copies of the template) in a folder of their
    own under `parent`; `remove_all` removes them (close their indexes first)."""

    def __init__(self, template: EmbeddedIndexTemplate, parent: Path) -> None:
        self.template = template
        self.folder = Path(tempfile.mkdtemp(prefix="indexes-", dir=parent))

    def create(self, name: str) -> Path:
        return self.template.copy_to(self.folder / name)

    def remove_all(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

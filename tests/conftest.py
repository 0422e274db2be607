"""Shared fixtures: the test model, settings, and a real daemon on port 0 in a background thread.

The daemon runs its own event loop in a thread, so tests can use both the sync and the async SDK
against it, exactly as separate processes would.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, MutableMapping, Optional

import pytest

from edge.catalogue import ModelCache
from router.domain.config import Settings, load_settings
from router.doors.server import RouterServer

if TYPE_CHECKING:  # psycopg and pgserver load only for the tests of the postgres engine
    from tests.pg_server import EmbeddedIndexTemplate, PgTestServer

TEST_MODEL = "smollm2-135m"
# The longest any test waits for something that must happen (a log line, a row, a process's end) before
# it takes it as never coming: far beyond what a loaded 2-core machine needs (docs/development.md, "Test bounds").
WAIT_S = 600.0


def models_dir() -> Path:
    return Path(os.environ.get("HYBRID_ROUTER_MODELS__CACHE_DIR", "~/.cache/hybrid-router/models")).expanduser()


@pytest.fixture(scope="session")
def smollm_path() -> Path:
    return ModelCache(models_dir()).require(TEST_MODEL)


# Variables a test daemon must never inherit: a real provider's key or a user's config would point a test
# at money or at the user's own files.
INHERITED_PREFIXES = ("HYBRID_ROUTER_", "OPENAI_")
MODELS_CACHE_ENV = "HYBRID_ROUTER_MODELS__CACHE_DIR"


def forget_inherited_variables(environ: MutableMapping[str, str]) -> None:
    """Removes every HYBRID_ROUTER_* and OPENAI_* variable but where the models were pulled."""
    for key in [key for key in environ if key.startswith(INHERITED_PREFIXES) and key != MODELS_CACHE_ENV]:
        del environ[key]


def pytest_configure(config: pytest.Config) -> None:
    """The test process itself forgets the user's variables, so that an in-process daemon (the OpenAI
    client reads OPENAI_API_KEY and OPENAI_BASE_URL itself), the CLI called in-process and every child
    started without isolated_env see none of them either.

    It also gets a cache directory of its own: onnxruntime writes a device id under $XDG_CACHE_HOME
    (else ~/.cache) when it is first imported, and no test may write into the user's home."""
    forget_inherited_variables(os.environ)
    if "onnxruntime" not in sys.modules:
        cache = Path(tempfile.mkdtemp(prefix="hybrid-router-tests-cache-"))
        config.add_cleanup(lambda: shutil.rmtree(cache, ignore_errors=True))
        os.environ["XDG_CACHE_HOME"] = str(cache)


def wait_until(condition: Callable[[], object], what: str, timeout_s: float = WAIT_S) -> None:
    """Polls `condition` until it holds; fails naming `what` if it never does within timeout_s. The
    pause between polls orders nothing: only the condition decides when the test goes on."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: still not the case after {timeout_s:g} s"
        time.sleep(0.01)  # a poll: the condition decides, the pause orders nothing


async def wait_until_async(condition: Callable[[], object], what: str, timeout_s: float = WAIT_S) -> None:
    """wait_until for a condition that this event loop's own tasks make true: each poll lets them run a
    step. The pause orders nothing: only the condition decides when the test goes on."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: still not the case after {timeout_s:g} s"
        await asyncio.sleep(0)  # a poll that lets the loop run a step: the condition decides


def isolated_env(home: Path, overrides: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """The environment of a test daemon in a child process: this process's, less every HYBRID_ROUTER_*
    and OPENAI_* variable, with its own HOME (so its ledger, Info index, principals and token files are
    the test's), and the shared model cache read from where the models were pulled."""
    env = dict(os.environ)
    forget_inherited_variables(env)
    home.mkdir(parents=True, exist_ok=True)
    env.update({"HOME": str(home), "XDG_STATE_HOME": str(home / ".local" / "state"),
                "HYBRID_ROUTER_MODELS__CACHE_DIR": str(models_dir())})
    env.update(overrides or {})
    return env


def private_paths(home: Path) -> dict[str, str]:
    """Every setting whose default lives in the user's home, moved under `home`."""
    return {"HYBRID_ROUTER_LEDGER__PATH": str(home / "ledger.db"),
            "HYBRID_ROUTER_INFO__INDEX_DIR": str(home / "info-index"),
            "HYBRID_ROUTER_AUTH__PRINCIPALS_FILE": str(home / "principals.toml"),
            "HYBRID_ROUTER_AUTH__LOCAL_TOKEN_FILE": str(home / "admin.token"),
            "HYBRID_ROUTER_MODELS__ADAPTERS_DIR": str(home / "adapters")}


def make_settings(overrides: Optional[Mapping[str, str]] = None, config_file: Optional[Path] = None) -> Settings:
    """Settings for tests: the 135M model as edge and as the stand-in cloud, small contexts, port 0, and
    every file of its own in a new temporary directory. Authentication is off (loopback, set explicitly):
    the trust tests (tests/integration/test_trust.py) turn it on with principals of their own."""
    env = {
        **private_paths(Path(tempfile.mkdtemp(prefix="hybrid-router-test-"))),
        "HYBRID_ROUTER_AUTH__MODE": "none",
        "HYBRID_ROUTER_MODELS__CACHE_DIR": str(models_dir()),
        "HYBRID_ROUTER_SERVER__LISTEN": "127.0.0.1:0",
        "HYBRID_ROUTER_SERVER__GRACE_PERIOD_S": "5",
        "HYBRID_ROUTER_SERVER__MAX_TOKENS_LIMIT": "1024",
        "HYBRID_ROUTER_SERVER__DEFAULT_MAX_TOKENS": "24",
        "HYBRID_ROUTER_SERVER__MAX_REQUEST_BYTES": "65536",
        "HYBRID_ROUTER_EDGE__MODEL": TEST_MODEL,
        "HYBRID_ROUTER_EDGE__N_CTX": "2048",
        "HYBRID_ROUTER_STANDIN__MODEL": TEST_MODEL,
        "HYBRID_ROUTER_STANDIN__N_CTX": "2048",
        "HYBRID_ROUTER_STANDIN__N_THREADS": "1",
        "HYBRID_ROUTER_EDGE__N_THREADS": "1",
        "HYBRID_ROUTER_LEDGER__ENABLED": "false",
        # Tests that need the Info service turn it on with their own index_dir (never the user's).
        "HYBRID_ROUTER_INFO__SERVICE": "off",
        "HYBRID_ROUTER_LOGGING__LEVEL": "WARNING",
    }
    env.update(overrides or {})
    return load_settings(config_file, env)


class ServerThread:
    """A RouterServer running on its own event loop in a background thread."""

    def __init__(self, settings: Settings, *, load: bool = True) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: RouterServer = self.call(self._make())
        self.address = self.call(self.server.start())
        if load:
            self.call(self.server.load(), timeout=300)

    async def _make(self) -> RouterServer:
        return RouterServer(self.settings)

    def call(self, coro, timeout: float = 120):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.call(self.server.stop(), timeout=120)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="session")
def daemon(smollm_path: Path) -> Iterator[ServerThread]:
    server = ServerThread(make_settings())
    yield server
    server.stop()


# PostgreSQL for the Info index's postgres engine (tests/pg_server.py): one server and one embedded
# template for the whole run; each test gets fresh databases and index directories of its own.

@pytest.fixture(scope="session")
def pg_test_folder() -> Iterator[Path]:
    """The PostgreSQL data of the run (the test server's, the embedded indexes'), outside pytest's temporary
    folders: as root, PostgreSQL runs as the user `pgserver`, which must traverse every parent folder of its
    data, and each pytest run resets /tmp/pytest-of-<user> to 0700 (under a run still using it)."""
    pytest.importorskip("pgserver", reason="the pgserver wheel (PostgreSQL + pgvector) is not installed")
    folder = Path(tempfile.mkdtemp(prefix="hybrid-router-pg-tests-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_test_server(pg_test_folder: Path) -> Iterator["PgTestServer"]:
    """A PostgreSQL server on loopback (the postgres engine's server mode); use `pg_database` for a database."""
    from tests.pg_server import PgTestServer

    server = PgTestServer(pg_test_folder / "server")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_database(pg_test_server: "PgTestServer") -> Iterator[Callable[[], str]]:
    """Makes fresh databases on the test server (the DSN of each), dropped after the test."""
    from tests.pg_server import FreshDatabases

    databases = FreshDatabases(pg_test_server)
    yield databases.create
    databases.drop_all()


@pytest.fixture(scope="session")
def embedded_index_template(pg_test_folder: Path) -> "EmbeddedIndexTemplate":
    from tests.pg_server import EmbeddedIndexTemplate

    return EmbeddedIndexTemplate(pg_test_folder)


@pytest.fixture(scope="session")
def new_info_index_dir(pg_test_folder: Path) -> Callable[[str], Path]:
    """Makes directories for Info indexes of the default engine (embedded postgres) that daemons and Info
    servers create themselves (`name` -> a path that does not exist yet): under pg_test_folder, for the
    reason given there, and removed with it."""
    def create(name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=pg_test_folder)) / "index"

    return create


@pytest.fixture
def pg_index_dir(pg_test_folder: Path,
                 embedded_index_template: "EmbeddedIndexTemplate") -> Iterator[Callable[[str], Path]]:
    """Makes new, empty index directories for the embedded postgres engine (`name` -> its path; the
    template's copies: no initdb), removed after the test: under pg_test_folder, for the reason given there."""
    from tests.pg_server import FreshIndexDirectories

    directories = FreshIndexDirectories(embedded_index_template, pg_test_folder)
    yield directories.create
    directories.remove_all()

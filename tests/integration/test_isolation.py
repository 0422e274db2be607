"""A test daemon is isolated from the machine that runs the tests: with the test process's environment
poisoned (a real provider's key and address, a config file that does not exist, a ledger path, the OpenAI
client's own variables), a daemon started the way the tests start one serves with the local stand-in as
its cloud and keeps its files in the test's own home."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from router.domain.types import BackendKind
from router.doors.launcher import LocalDaemon
from tests.conftest import WAIT_S, isolated_env
from tests.unit.test_test_isolation import POISON


def test_a_poisoned_parent_environment_has_no_effect_on_a_test_daemon(smollm_path: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in POISON.items():
        monkeypatch.setenv(key, value)
    home = tmp_path / "home"
    env = isolated_env(home, {
        "HYBRID_ROUTER_EDGE__MODEL": "smollm2-135m", "HYBRID_ROUTER_STANDIN__MODEL": "smollm2-135m",
        "HYBRID_ROUTER_EDGE__N_CTX": "2048", "HYBRID_ROUTER_STANDIN__N_CTX": "2048",
        "HYBRID_ROUTER_EDGE__N_THREADS": "1", "HYBRID_ROUTER_STANDIN__N_THREADS": "1"})
    # Started at all: an inherited HYBRID_ROUTER_CONFIG would have stopped it (no such file).
    with LocalDaemon(env=env, ready_timeout_s=WAIT_S) as daemon:
        child_environ = Path(f"/proc/{daemon.process.pid}/environ").read_bytes().split(b"\0")
        assert not {entry.split(b"=", 1)[0].decode() for entry in child_environ if entry} & set(POISON)
        with daemon.client(timeout_s=WAIT_S) as client:
            info = client.info()
            answer = client.generate(prompt="Say hi.", mode="cloud", max_tokens=4)
            ledger = client.stats().ledger
        log = daemon.log_path.read_text(errors="replace")
    # The cloud is the local stand-in on loopback, not the poisoned provider, and it answered.
    assert info.cloud.local_standin and info.cloud.name == "smollm2-135m"
    assert info.cloud.endpoint.startswith("http://127.0.0.1:") and "poison" not in info.cloud.endpoint
    assert answer.served_by == BackendKind.CLOUD and answer.text
    # The ledger (on by default) is the default file under the test's home, not the poisoned path.
    assert ledger.enabled and ledger.ok
    assert (home / ".local" / "share" / "hybrid-router" / "ledger.db").is_file()
    assert not any(value in log for value in POISON.values())


def test_importing_onnxruntime_under_the_tests_environment_writes_nothing_into_home(tmp_path: Path) -> None:
    """onnxruntime writes a device id under $XDG_CACHE_HOME, else ~/.cache, on its first import, on some
    machines and not others. A child with the test process's own environment and a fresh, empty home
    imports it: the home stays empty, wherever that machine's onnxruntime writes."""
    cache = Path(os.environ["XDG_CACHE_HOME"])
    assert not cache.is_relative_to(Path.home()) and cache.is_dir()
    home = tmp_path / "home"
    home.mkdir()
    subprocess.run([sys.executable, "-c", "import onnxruntime"], env={**os.environ, "HOME": str(home)},
                   check=True, timeout=WAIT_S)
    assert not list(home.rglob("*"))

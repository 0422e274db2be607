"""A test daemon is isolated from the machine that runs the tests: with the test process's environment
poisoned (a real provider's key and address, a config file that does not exist, a ledger path, the OpenAI
client's own variables), a daemon started the way the tests start one serves with the local stand-in as
its cloud and keeps its files in the test's own home."""
from __future__ import annotations

import os
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


def test_onnxruntime_writes_its_device_id_into_the_runs_own_cache_not_the_users_home() -> None:
    import onnxruntime  # noqa: F401 - importing it is what writes the device id

    cache = Path(os.environ["XDG_CACHE_HOME"])
    assert not cache.is_relative_to(Path.home()) and (cache / "Microsoft").is_dir()

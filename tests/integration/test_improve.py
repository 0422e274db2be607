"""`hybrid-router improve` end to end on the 135M model: a ledger whose cloud answers taught something the
edge does not know, exported, fine-tuned, evaluated on the held-out part, installed (no daemon runs, so the
store records it for the next start), the stale models named; a second run resumes and does nothing again;
and an adapter that does not win is not installed. Needs the [finetune] extra."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge.adapter_store import AdapterStore
from router.domain.types import BackendKind, Mode
from tests.conftest import TEST_MODEL, isolated_env
from tests.unit.test_ledger_support import make_exchange, open_ledger

DOORS = ["red", "blue", "green", "yellow", "black", "white", "orange", "purple", "brown", "grey", "pink", "silver",
         "gold", "violet", "amber", "teal", "olive", "navy", "coral", "ivory"]


def _answer(door: str) -> str:
    return f"The code word is PELICAN {door.upper()}"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ledger of CLOUD_ONLY exchanges, each graded right by its reference: an answer pattern the base
    model never writes, so held-out doors show whether the adapter learnt it."""
    root = tmp_path_factory.mktemp("improve")
    ledger = open_ledger(root / "ledger.db")
    for index, door in enumerate(DOORS):
        ledger.record(*make_exchange(f"door-{index}", question=f"What is the code word for the {door} door?",
                                     cloud=_answer(door), served_by=BackendKind.CLOUD, mode=Mode.CLOUD_ONLY,
                                     reference=_answer(door)))
    assert ledger.flush()
    ledger.close()
    return root


def _improve(home: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = isolated_env(home, {"HYBRID_ROUTER_EDGE__MODEL": TEST_MODEL, "HYBRID_ROUTER_EDGE__N_THREADS": "1",
                              "HYBRID_ROUTER_EDGE__N_CTX": "512",
                              "HYBRID_ROUTER_LEDGER__PATH": str(home / "ledger.db"),
                              "HYBRID_ROUTER_MODELS__ADAPTERS_DIR": str(home / "adapters"),
                              "HYBRID_ROUTER_SERVER__LISTEN": f"unix:{home / 'no-daemon.sock'}"})
    return subprocess.run([sys.executable, "-m", "router", "improve", "--out", str(out), *extra], env=env,
                          capture_output=True, text=True, timeout=1800)


def test_improve_installs_an_adapter_that_wins_and_resumes_without_redoing_anything(home: Path) -> None:
    out = home / "run"
    done = _improve(home, out, "--steps", "8", "--learning-rate", "2e-3")
    assert done.returncode == 0, done.stderr[-4000:]
    state = json.loads((out / "improve.json").read_text())["stages"]
    exported, evaluated = state["export"], state["evaluate"]
    assert exported["rows"] + exported["held_out_rows"] == len(DOORS) and exported["held_out_rows"] >= 1
    reading = evaluated["tasks"]["reading"]
    assert evaluated["install"] and evaluated["target"] == "reading"
    assert reading["adapter"] > reading["base"] + 0.2, reading  # the held-out doors' answers took the pattern
    assert state["install"]["installed"] == "v0001"
    assert "no daemon answers" in state["install"]["switched"]
    store = AdapterStore(home / "adapters", TEST_MODEL)
    assert store.active().version == "v0001"  # the next start runs it
    assert store.get("v0001").meta["source"]["evaluation"]["install"] is True
    assert any("draft probe" in line for line in state["models"]["stale"])
    printed = json.loads(done.stdout)
    assert printed["installed"] == "v0001"

    again = _improve(home, out, "--steps", "8", "--learning-rate", "2e-3")
    assert again.returncode == 0, again.stderr[-4000:]
    assert again.stderr.count("done in an earlier run") == 5
    assert [v.version for v in store.versions()] == ["v0001"]


def test_an_adapter_that_does_not_win_is_not_installed(home: Path) -> None:
    out = home / "no-win"
    # A single step at the default learning rate barely moves the model; demanding a large gain refuses it.
    done = _improve(home, out, "--steps", "1", "--min-gain", "0.5")
    assert done.returncode == 0, done.stderr[-4000:]
    state = json.loads((out / "improve.json").read_text())["stages"]
    assert not state["evaluate"]["install"] and "not above the required gain +0.500" in state["evaluate"]["reason"]
    assert state["install"]["installed"] is None
    assert state["models"]["stale"] == []

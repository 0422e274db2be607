"""The daemon swaps the edge's LoRA adapter without a restart (`UseAdapter`, `hybrid-router adapter use`), names
it in every result, run, Info and the metrics, refuses one it cannot use while the old one stays, and starts
on the store's active version."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from gguf import GGUFReader

from edge.adapter_store import AdapterStore
from edge.lora_adapter import file_sha256
from edge.lora_gguf import convert_peft_adapter
from router.client import RouterClient
from router.doors.cli import main as cli_main
from router.domain.errors import InvalidRequestError
from router.domain.types import BackendKind
from tests.conftest import TEST_MODEL, ServerThread, make_settings
from tests.peft_adapters import peft_config, random_lora, write_peft_adapter

QUESTION = "Name three colours of the rainbow."
ADAPTED = f"{TEST_MODEL}+lora:v0001"


@pytest.fixture(scope="module")
def adapters_dir(smollm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store for the 135M model holding v0001, a strong random q/k/v adapter, and v0002, a file llama.cpp
    cannot read (a version damaged on disk after it was added)."""
    root = tmp_path_factory.mktemp("adapter-daemon")
    reader = GGUFReader(smollm_path)
    hidden, heads, kv_heads, layers = (int(reader.get_field(f"llama.{key}").contents()) for key in
                                       ("embedding_length", "attention.head_count", "attention.head_count_kv",
                                        "block_count"))
    head_dim = hidden // heads
    shapes = {"self_attn.q_proj": (heads * head_dim, hidden), "self_attn.k_proj": (kv_heads * head_dim, hidden),
              "self_attn.v_proj": (kv_heads * head_dim, hidden)}
    peft_dir = write_peft_adapter(root / "peft", peft_config(8, 16, shapes),
                                  random_lora(np.random.default_rng(3), shapes, layers, 8, 0.05))
    base_sha256 = file_sha256(smollm_path)
    good = convert_peft_adapter(peft_dir, smollm_path, root / "good.gguf", base_name=TEST_MODEL,
                                base_sha256=base_sha256)
    store = AdapterStore(root / "adapters", TEST_MODEL)
    store.add(good.path, base_sha256=base_sha256, source={"test": "random"})
    damaged = root / "damaged.gguf"
    damaged.write_bytes(good.path.read_bytes()[:4096])
    store.add(damaged, base_sha256=base_sha256, source={"test": "truncated"})
    return root / "adapters"


def _settings(adapters_dir: Path, **overrides: str):
    return make_settings({"HYBRID_ROUTER_MODELS__ADAPTERS_DIR": str(adapters_dir), **overrides})


@pytest.fixture(scope="module")
def daemon(adapters_dir: Path) -> Iterator[ServerThread]:
    server = ServerThread(_settings(adapters_dir))
    yield server
    server.stop()


def _ask(client: RouterClient):
    return client.generate(prompt=QUESTION, mode="edge", max_tokens=16, temperature=0.0)


def _models_info(server: ServerThread) -> dict[str, str]:
    registry = server.server.daemon.metrics.registry
    [sample] = [s for metric in registry.collect() if metric.name == "hybrid_models" for s in metric.samples]
    return dict(sample.labels)


def test_a_swap_changes_the_answer_and_every_place_that_names_the_edge(daemon: ServerThread,
                                                                       adapters_dir: Path) -> None:
    store = AdapterStore(adapters_dir, TEST_MODEL)
    with RouterClient(daemon.address, timeout_s=300) as client:
        assert client.info().edge.adapter == ""
        base = _ask(client)
        assert (base.edge_model, base.runs[0].model) == (TEST_MODEL, TEST_MODEL)

        assert client.use_adapter("v0001") == (TEST_MODEL, ADAPTED)
        adapted = _ask(client)
        assert adapted.text != base.text
        assert adapted.served_by == BackendKind.EDGE
        assert (adapted.edge_model, adapted.runs[0].model) == (ADAPTED, ADAPTED)
        info = client.info().edge
        assert (info.adapter, info.adapter_sha256) == ("v0001", store.get("v0001").sha256)
        assert _models_info(daemon)["adapter"] == "v0001"
        assert store.active().version == "v0001"

        # A damaged version and an unknown one are refused by name; the edge stays on v0001.
        with pytest.raises(InvalidRequestError, match=r"v0002/adapter\.gguf.*stays on " + ADAPTED.replace("+", r"\+")):
            client.use_adapter("v0002")
        with pytest.raises(InvalidRequestError, match="no adapter 'v0099'"):
            client.use_adapter("v0099")
        again = _ask(client)
        assert (again.edge_model, again.text) == (ADAPTED, adapted.text)
        assert store.active().version == "v0001"

        assert client.use_adapter("none") == (ADAPTED, TEST_MODEL)
        cleared = _ask(client)
        assert (cleared.edge_model, cleared.text) == (TEST_MODEL, base.text)
        assert _models_info(daemon)["adapter"] == ""
        assert store.active() is None


def test_the_cli_swaps_a_running_daemon_and_a_new_daemon_starts_on_the_active_version(
        daemon: ServerThread, adapters_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = AdapterStore(adapters_dir, TEST_MODEL)
    config = adapters_dir.parent / "router.toml"
    config.write_text(f'[edge]\nmodel = "{TEST_MODEL}"\n[models]\nadapters_dir = "{adapters_dir}"\n')
    assert cli_main(["adapter", "use", "v0001", "--config", str(config), "--target", daemon.address]) == 0
    assert f"edge: {TEST_MODEL} -> {ADAPTED}" in capsys.readouterr().out
    assert cli_main(["adapter", "list", "--config", str(config)]) == 0
    listing = capsys.readouterr().out
    assert "* v0001" in listing and "  v0002" in listing
    restarted = ServerThread(_settings(adapters_dir))
    try:
        with RouterClient(restarted.address, timeout_s=300) as client:
            assert client.info().edge.adapter == "v0001"
            assert _ask(client).edge_model == ADAPTED
    finally:
        restarted.stop()
    # Rolling back undoes the last change, on the running daemon and in the store.
    assert cli_main(["adapter", "rollback", "--config", str(config), "--target", daemon.address]) == 0
    assert f"edge: {ADAPTED} -> {TEST_MODEL}" in capsys.readouterr().out
    assert store.active() is None


def test_a_named_version_that_cannot_be_used_stops_the_start_naming_it(adapters_dir: Path) -> None:
    from router.domain.config import ConfigError

    with pytest.raises(ConfigError, match=r"edge.adapter = 'v0002'.*v0002/adapter\.gguf"):
        ServerThread(_settings(adapters_dir, HYBRID_ROUTER_EDGE__ADAPTER="v0002"))

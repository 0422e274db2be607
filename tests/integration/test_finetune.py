"""`hybrid-router finetune` end to end on the 135M model, as a user runs it: a few examples, a few steps, a
GGUF adapter that llama.cpp loads, that changes the edge's answer, and that matches transformers with the
adapter merged (the check the command runs on every adapter it writes). Resuming continues the same run.

Needs the [finetune] extra (torch, transformers, peft), which `make test` installs."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge.adapter_store import AdapterStore
from edge.lora_adapter import file_sha256
from edge.llama_backend import LlamaBackend
from tests.conftest import TEST_MODEL, isolated_env

# An answer the base model never writes: after training, the edge writing it is the adapter's doing.
CODE_WORD = "PELICAN"
EXAMPLES = [{"messages": [{"role": "user", "content": f"What is the code word number {i}?"},
                          {"role": "assistant", "content": f"The code word is {CODE_WORD}-{i}."}]} for i in range(8)]
# A strong adapter on q, k and v: q and k are the projections whose rows llama's GGUF permutes.
TRAINING = ["--learning-rate", "2e-3", "--targets", "q_proj,k_proj,v_proj", "--checkpoint-every", "3", "--seed", "1"]


def _finetune(home: Path, out: Path, data: Path, *extra: str) -> subprocess.CompletedProcess:
    env = isolated_env(home, {"HYBRID_ROUTER_EDGE__MODEL": TEST_MODEL,
                              "HYBRID_ROUTER_MODELS__ADAPTERS_DIR": str(home / "adapters")})
    return subprocess.run([sys.executable, "-m", "router", "finetune", "--data", str(data), "--out", str(out),
                           *TRAINING, *extra], env=env, capture_output=True, text=True, timeout=1800)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("finetune")
    (root / "data.jsonl").write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES))
    return root


@pytest.fixture(scope="module")
def trained(workspace: Path) -> Path:
    """Six uninterrupted steps, installed into the test's own adapter store."""
    out = workspace / "run"
    done = _finetune(workspace / "home", out, workspace / "data.jsonl", "--steps", "6", "--install")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == str(out / "adapter.gguf")
    return out


def test_the_adapter_is_checked_against_transformers_with_it_merged(trained: Path) -> None:
    report = json.loads((trained / "report.json").read_text())
    check = report["check"]
    assert check["passed"] and check["adapter_kl"] <= check["bound"]
    # The check means something only if the adapter moves the model far more than the conversion errs.
    assert check["effect_kl"] > 20 * check["adapter_kl"], check
    training = report["training"]
    assert (training["examples"], training["steps"], training["resumed_from_step"]) == (8, 6, 0)
    assert training["losses"][-1] < training["losses"][0] / 2
    assert training["peak_rss_mib"] > 0 and report["adapter"]["bytes"] == (trained / "adapter.gguf").stat().st_size
    assert report["base_model"]["name"] == TEST_MODEL


def test_an_adapter_converted_without_llamas_row_permutation_fails_the_check(trained: Path, smollm_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The check can fail: the same trained weights, converted as if llama's q/k rows were not permuted,
    load in llama.cpp without complaint and are refused by it."""
    import edge.lora_gguf as lora_gguf
    from peft import PeftModel

    from edge.lora_check import check_conversion
    from edge.lora_training import load_transformers_model

    monkeypatch.setattr(lora_gguf, "PERMUTED_ARCHITECTURES", frozenset())
    wrong = trained / "unpermuted.gguf"
    sha256 = file_sha256(smollm_path)
    lora_gguf.convert_peft_adapter(trained / "peft", smollm_path, wrong, base_name=TEST_MODEL, base_sha256=sha256)
    model = PeftModel.from_pretrained(load_transformers_model(smollm_path), str(trained / "peft"))
    edge = LlamaBackend(smollm_path, n_ctx=256, n_threads=1)
    try:
        sequences = [(*edge.prompt_token_ids(e["messages"][:1]), *edge.answer_token_ids(e["messages"][1]["content"]))
                     for e in EXAMPLES[:4]]
    finally:
        edge.close()
    check = check_conversion(model, smollm_path, sha256, wrong, sequences)
    assert not check.passed, check


def test_the_installed_adapter_changes_the_edges_answer_and_clearing_it_restores_it(trained: Path,
                                                                                   workspace: Path,
                                                                                   smollm_path: Path) -> None:
    store = AdapterStore(workspace / "home" / "adapters", TEST_MODEL)
    [version] = store.versions()
    assert version.sha256 == file_sha256(trained / "adapter.gguf")
    assert store.active() is None  # installed, not yet used
    question = [{"role": "user", "content": "What is the code word number 5?"}]
    edge = LlamaBackend(smollm_path, n_ctx=256, n_threads=1)

    async def answer() -> str:
        stream = edge.stream(question, max_tokens=16, temperature=0.0)
        return "".join([delta.text async for delta in stream])

    async def scenario() -> tuple[str, str, str]:
        base = await answer()
        info = await edge.use_adapter(version.path, name=version.version)
        assert (info.name, info.sha256, info.base_sha256) == (version.version, version.sha256, file_sha256(smollm_path))
        adapted = await answer()
        await edge.use_adapter(None)
        return base, adapted, await answer()

    try:
        base, adapted, cleared = asyncio.run(scenario())
    finally:
        edge.close()
    assert CODE_WORD in adapted and CODE_WORD not in base, (base, adapted)
    assert cleared == base


def test_a_resumed_run_trains_exactly_the_steps_an_uninterrupted_one_does(trained: Path, workspace: Path) -> None:
    home, data, out = workspace / "home-resume", workspace / "data.jsonl", workspace / "resumed"
    first = _finetune(home, out, data, "--steps", "3")
    assert first.returncode == 0, first.stderr[-3000:]
    second = _finetune(home, out, data, "--steps", "6")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming at step 3 of 6" in second.stderr
    resumed = json.loads((out / "report.json").read_text())["training"]
    straight = json.loads((trained / "report.json").read_text())["training"]
    assert resumed["resumed_from_step"] == 3
    assert resumed["losses"] == pytest.approx(straight["losses"][3:], abs=1e-4)
    # The finished run, run again (as to --install it later): its report keeps what the training recorded.
    again = _finetune(home, out, data, "--steps", "6")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "report.json").read_text())["training"] == resumed
    # Other settings are another run: refused, not mixed into this one.
    other = _finetune(home, out, data, "--steps", "6", "--rank", "4")
    assert other.returncode == 1 and "holds a run with other data or settings" in other.stderr

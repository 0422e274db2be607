"""LoRA adapters on the real 135M edge model: a converted peft adapter changes what the model writes, the base
model comes back exactly without it, an adapter that cannot be used is refused naming the file while the one in
use stays, and a swap never mixes two adapters' weights within a generation or reuses a prompt evaluated with
the other weights.

The adapter is random but seeded (tests/peft_adapters.py), on q, k and v of every layer, large enough that the
greedy answer changes from its first token. Every test leaves the base model in use (`base_model_after_each`)."""
from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader, GGUFType, GGUFWriter, Keys

from edge.errors import AdapterLoadError
from edge.llama_backend import LlamaBackend
from edge.lora_adapter import BASE_NAME_KEY, BASE_SHA256_KEY
from edge.lora_gguf import convert_peft_adapter
from tests.conftest import TEST_MODEL, WAIT_S
from tests.peft_adapters import peft_config, random_lora, write_peft_adapter

MESSAGES = ({"role": "user", "content": "What is the capital of France?"},)
MAX_TOKENS = 16
N_CTX = 512
RANK, ALPHA = 8, 16.0
# With this spread B·A·alpha/r is about a third of the base's q/k/v weights: the greedy answer changes from
# its first token, and the text stays text (not one repeated token, which could hide a mixed-up run).
LORA_STD = 0.05
OTHER_BASE_SHA256 = hashlib.sha256(b"another base model").hexdigest()


@dataclass(frozen=True)
class Run:
    text: str
    tokens: tuple[int, ...]
    logprobs: tuple[float, ...]


@dataclass(frozen=True)
class Edge:
    backend: LlamaBackend
    base: Run  # greedy answer to MESSAGES before any adapter was ever set on this backend's context


@dataclass(frozen=True)
class Adapters:
    good: Path          # the seeded adapter converted for the 135M model
    other_base: Path    # the same tensors, recorded as trained on another base model


async def run(backend: LlamaBackend, messages=MESSAGES) -> Run:
    stream = backend.stream(messages, max_tokens=MAX_TOKENS, temperature=0.0)
    deltas = [delta async for delta in stream]
    assert stream.completion is not None
    return Run(stream.completion.text, tuple(t for d in deltas for t in d.token_ids),
               tuple(lp for d in deltas for lp in d.token_logprobs))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def base_sha256(smollm_path: Path) -> str:
    return sha256_of(smollm_path)


@pytest.fixture(scope="module")
def adapters(smollm_path: Path, base_sha256: str, tmp_path_factory: pytest.TempPathFactory) -> Adapters:
    reader = GGUFReader(smollm_path)
    meta = {key: reader.get_field(f"llama.{key}").contents()
            for key in ("embedding_length", "attention.head_count", "attention.head_count_kv", "block_count")}
    hidden, n_head, n_head_kv, layers = (int(meta[k]) for k in meta)
    head_dim = hidden // n_head
    assert (hidden, n_head, n_head_kv, head_dim, layers) == (576, 9, 3, 64, 30), meta
    shapes = {"self_attn.q_proj": (n_head * head_dim, hidden), "self_attn.k_proj": (n_head_kv * head_dim, hidden),
              "self_attn.v_proj": (n_head_kv * head_dim, hidden)}
    root = tmp_path_factory.mktemp("adapters")
    peft_dir = write_peft_adapter(root / "peft", peft_config(RANK, ALPHA, shapes),
                                  random_lora(np.random.default_rng(7), shapes, layers, RANK, LORA_STD))
    good = convert_peft_adapter(peft_dir, smollm_path, root / "good.gguf", base_name=TEST_MODEL,
                                base_sha256=base_sha256)
    other = convert_peft_adapter(peft_dir, smollm_path, root / "other-base.gguf", base_name="another-model",
                                 base_sha256=OTHER_BASE_SHA256)
    return Adapters(good=good.path, other_base=other.path)


@pytest.fixture(scope="module")
async def edge(smollm_path: Path) -> AsyncIterator[Edge]:
    backend = LlamaBackend(smollm_path, model_name=TEST_MODEL, n_ctx=N_CTX, n_threads=1)
    try:
        yield Edge(backend=backend, base=await run(backend))
    finally:
        backend.close()


@pytest.fixture(scope="module")
async def adapter_reference(smollm_path: Path, adapters: Adapters) -> Run:
    """The adapter's greedy answer on a context that has evaluated nothing else, so nothing evaluated with the
    base weights can be in it: the reference for what a stream with the adapter must produce. On the shared
    backend, a swap that failed to drop the cached prompt would corrupt the reference as much as the test."""
    fresh = LlamaBackend(smollm_path, model_name=TEST_MODEL, n_ctx=N_CTX, n_threads=1)
    try:
        await fresh.use_adapter(adapters.good)
        return await run(fresh)
    finally:
        fresh.close()


@pytest.fixture(autouse=True)
async def base_model_after_each(edge: Edge) -> AsyncIterator[None]:
    yield
    await edge.backend.use_adapter(None)


async def test_a_converted_adapter_changes_the_greedy_text_and_is_named_by_its_file(
        edge: Edge, adapters: Adapters, base_sha256: str) -> None:
    backend = edge.backend
    info = await backend.use_adapter(adapters.good, name="v0001")

    assert info is not None and backend.adapter == info
    assert (info.name, info.path, info.scale) == ("v0001", adapters.good, 1.0)
    assert info.sha256 == sha256_of(adapters.good)
    assert info.base_sha256 == base_sha256
    adapted = await run(backend)
    assert adapted.text != edge.base.text
    assert adapted.tokens[0] != edge.base.tokens[0]

    unnamed = await backend.use_adapter(adapters.good)
    assert unnamed is not None and unnamed.name == adapters.good.stem == "good"


async def test_no_adapter_gives_back_the_base_models_tokens_and_logprobs_exactly(
        edge: Edge, adapters: Adapters) -> None:
    backend = edge.backend
    await backend.use_adapter(adapters.good)
    assert (await run(backend)).tokens != edge.base.tokens  # the adapter was really on

    assert await backend.use_adapter(None) is None
    assert backend.adapter is None
    again = await run(backend)
    assert again.tokens == edge.base.tokens
    assert again.logprobs == edge.base.logprobs


def random_bytes(good: Path, path: Path) -> Path:
    path.write_bytes(np.random.default_rng(11).bytes(4096))
    return path


def truncated_copy(good: Path, path: Path) -> Path:
    # The header and tensor table are whole; the tensor data stops halfway.
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def missing(good: Path, path: Path) -> Path:
    return path


@pytest.mark.parametrize("make_bad", [random_bytes, truncated_copy, missing])
async def test_an_unusable_file_is_refused_naming_it_and_the_adapter_in_use_stays(
        edge: Edge, adapters: Adapters, adapter_reference: Run, tmp_path: Path, make_bad) -> None:
    backend = edge.backend
    in_use = await backend.use_adapter(adapters.good, name="in-use")
    bad = make_bad(adapters.good, tmp_path / "bad-adapter.gguf")

    with pytest.raises(AdapterLoadError) as refused:
        await backend.use_adapter(bad, name="bad")
    assert refused.value.path == bad
    assert str(bad) in str(refused.value)
    assert backend.adapter == in_use
    after = await run(backend)
    assert (after.tokens, after.logprobs) == (adapter_reference.tokens, adapter_reference.logprobs)


async def test_an_adapter_trained_on_another_base_is_refused_naming_both_hashes(
        edge: Edge, adapters: Adapters, base_sha256: str) -> None:
    # Its tensors are the good adapter's, so llama.cpp's shape check alone would take it.
    backend = edge.backend
    with pytest.raises(AdapterLoadError) as refused:
        await backend.use_adapter(adapters.other_base)
    message = str(refused.value)
    assert OTHER_BASE_SHA256 in message and base_sha256 in message
    assert str(adapters.other_base) in message
    assert backend.adapter is None
    after = await run(backend)
    assert (after.tokens, after.logprobs) == (edge.base.tokens, edge.base.logprobs)


def rewritten_for(architecture: str, adapter: Path, out: Path) -> Path:
    """`adapter`'s keys and tensors, unchanged, in a GGUF that names `architecture`."""
    reader = GGUFReader(adapter)
    writer = GGUFWriter(out, architecture)
    writer.add_type(GGUFType.ADAPTER)
    writer.add_string(Keys.Adapter.TYPE, "lora")
    writer.add_float32(Keys.Adapter.LORA_ALPHA, float(reader.get_field(Keys.Adapter.LORA_ALPHA).contents()))
    for key in (BASE_NAME_KEY, BASE_SHA256_KEY):
        writer.add_string(key, reader.get_field(key).contents())
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, np.array(tensor.data))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


async def test_an_adapter_for_another_architecture_is_refused(
        edge: Edge, adapters: Adapters, tmp_path: Path) -> None:
    backend = edge.backend
    qwen2 = rewritten_for("qwen2", adapters.good, tmp_path / "qwen2.gguf")
    with pytest.raises(AdapterLoadError) as refused:
        await backend.use_adapter(qwen2)
    assert str(qwen2) in str(refused.value)
    assert backend.adapter is None

    # The control: the same rewrite naming llama loads, so the architecture alone was refused.
    llama = rewritten_for("llama", adapters.good, tmp_path / "llama.gguf")
    assert (await backend.use_adapter(llama)) is not None


async def test_a_swap_asked_during_a_stream_waits_for_its_end(
        edge: Edge, adapters: Adapters, adapter_reference: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = edge.backend
    # The worker is held inside the generation, before its second token, until the test lets it go: the
    # stream is provably still running while the swap is asked for, however fast or slow the machine.
    held, go_on, generating = threading.Event(), threading.Event(), threading.Event()
    sampled = 0
    read_logprob, generate, swap = backend._logprob_of_last_sample, backend._generate, backend._swap_adapter
    swaps_seen_generating: list[bool] = []

    def hold_the_second_token(token: int, scratch: np.ndarray) -> float:
        nonlocal sampled
        sampled += 1
        if sampled == 2:
            held.set()
            if not go_on.wait(WAIT_S):
                raise RuntimeError("the test never let the held generation go on")
        return read_logprob(token, scratch)

    def generate_marked(*args):
        generating.set()
        try:
            return generate(*args)
        finally:
            generating.clear()

    def swap_recorded(*args):
        swaps_seen_generating.append(generating.is_set())
        return swap(*args)

    monkeypatch.setattr(backend, "_logprob_of_last_sample", hold_the_second_token)
    monkeypatch.setattr(backend, "_generate", generate_marked)
    monkeypatch.setattr(backend, "_swap_adapter", swap_recorded)

    stream = backend.stream(MESSAGES, max_tokens=MAX_TOKENS, temperature=0.0)
    try:
        first = await stream.__anext__()
        assert held.wait(WAIT_S), "the generation never reached its second token"
        swapping = asyncio.create_task(backend.use_adapter(adapters.good, name="asked-mid-stream"))
        # One turn of the loop, not a wait: call_soon is FIFO, so the swap task's first step (up to where it
        # waits for the model) has run before this test goes on.
        await asyncio.sleep(0)
        assert not swapping.done()
        assert swaps_seen_generating == []
        assert stream.completion is None
        go_on.set()
        rest = [delta async for delta in stream]
    finally:
        go_on.set()
        await stream.aclose()

    streamed = first.token_ids + tuple(t for d in rest for t in d.token_ids)
    logprobs = first.token_logprobs + tuple(lp for d in rest for lp in d.token_logprobs)
    assert (streamed, logprobs) == (edge.base.tokens, edge.base.logprobs)
    info = await swapping
    assert info is not None and info.name == "asked-mid-stream" and backend.adapter == info
    assert swaps_seen_generating == [False]
    after = await run(backend)
    assert (after.tokens, after.logprobs) == (adapter_reference.tokens, adapter_reference.logprobs)


async def test_a_prompt_evaluated_before_a_swap_is_not_reused_after_it(
        edge: Edge, adapters: Adapters, adapter_reference: Run) -> None:
    backend = edge.backend
    state = await backend.read_prompt_state(MESSAGES)
    # The context now holds the prompt (evaluated with the base weights): a read of it again reuses it.
    assert (await backend.read_prompt_state(MESSAGES)).reused_prompt_tokens == state.prompt_tokens - 1

    await backend.use_adapter(adapters.good)
    after = await run(backend)
    assert (after.tokens, after.logprobs) == (adapter_reference.tokens, adapter_reference.logprobs)


async def test_a_prompt_state_read_after_a_swap_evaluates_the_whole_prompt_again(
        edge: Edge, adapters: Adapters) -> None:
    backend = edge.backend
    before = await backend.read_prompt_state(MESSAGES)
    await backend.use_adapter(adapters.good)
    after = await backend.read_prompt_state(MESSAGES)
    assert after.reused_prompt_tokens == 0
    assert not np.allclose(after.state, before.state)

"""edge.lora_gguf: a peft LoRA adapter becomes the GGUF LoRA llama.cpp loads, or is refused with the reason.

The base models here are small GGUFs written by the test (the converter reads only the base's architecture,
head counts and tensor shapes), so no model file is needed; the 135M model's own conversion is loaded and run
in tests/integration/test_edge_adapters.py. The head counts differ (4 and 2) so that permuting k's rows with
q's head count, or q's with k's, gives other rows than the right one."""
from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader, GGUFWriter

import edge.lora_gguf
from edge.lora_adapter import BASE_NAME_KEY, BASE_SHA256_KEY
from edge.lora_gguf import AdapterConversionError, ConvertedAdapter, convert_peft_adapter, rope_permute
from tests.peft_adapters import PEFT_PREFIX, peft_config, peft_key, random_lora, write_peft_adapter

N_HEAD, N_HEAD_KV, HEAD_DIM, HIDDEN, FFN, LAYERS = 4, 2, 8, 32, 48, 2
RANK, ALPHA = 4, 8.0
BASE_NAME, BASE_SHA256 = "tiny-test-base", "ab" * 32
# (out, in) of each adapted module, as torch holds the weight.
SHAPES = {"self_attn.q_proj": (N_HEAD * HEAD_DIM, HIDDEN), "self_attn.k_proj": (N_HEAD_KV * HEAD_DIM, HIDDEN),
          "self_attn.v_proj": (N_HEAD_KV * HEAD_DIM, HIDDEN), "mlp.down_proj": (HIDDEN, FFN)}
Tensors = dict[str, np.ndarray]
GGUF_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "mlp.down_proj": "ffn_down"}


def write_base(path: Path, architecture: str) -> Path:
    writer = GGUFWriter(path, architecture)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    for layer in range(LAYERS):
        writer.add_tensor(f"blk.{layer}.attn_norm.weight", np.ones(HIDDEN, dtype=np.float32))
        for module, shape in SHAPES.items():
            writer.add_tensor(f"blk.{layer}.{GGUF_NAMES[module]}.weight", np.zeros(shape, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def llama_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_base(tmp_path_factory.mktemp("base") / "llama-base.gguf", "llama")


@pytest.fixture(scope="module")
def qwen2_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_base(tmp_path_factory.mktemp("base") / "qwen2-base.gguf", "qwen2")


@pytest.fixture(scope="module")
def peft_tensors() -> Tensors:
    return random_lora(np.random.default_rng(1234), SHAPES, LAYERS, RANK, std=1.0)


def convert(tmp_path: Path, base: Path, tensors: Tensors, **config_overrides: object
            ) -> tuple[ConvertedAdapter, GGUFReader]:
    adapter_dir = write_peft_adapter(tmp_path / "peft", peft_config(RANK, ALPHA, SHAPES, **config_overrides),
                                     tensors)
    converted = convert_peft_adapter(adapter_dir, base, tmp_path / "adapter.gguf", base_name=BASE_NAME,
                                     base_sha256=BASE_SHA256)
    return converted, GGUFReader(converted.path)


def field(reader: GGUFReader, key: str) -> object:
    found = reader.get_field(key)
    assert found is not None, f"the adapter has no {key}"
    return found.contents()


def written(reader: GGUFReader) -> Tensors:
    return {tensor.name: np.array(tensor.data) for tensor in reader.tensors}


def test_the_adapter_records_what_llama_cpp_and_the_base_check_need(
        tmp_path: Path, llama_base: Path, peft_tensors: Tensors) -> None:
    converted, reader = convert(tmp_path, llama_base, peft_tensors)

    assert field(reader, "general.architecture") == "llama"
    assert field(reader, "general.type") == "adapter"
    assert field(reader, "adapter.type") == "lora"
    assert field(reader, "adapter.lora.alpha") == ALPHA
    assert field(reader, BASE_NAME_KEY) == BASE_NAME
    assert field(reader, BASE_SHA256_KEY) == BASE_SHA256
    assert (converted.architecture, converted.rank, converted.alpha) == ("llama", RANK, ALPHA)
    assert converted.tensors == LAYERS * len(SHAPES)
    assert converted.bytes == converted.path.stat().st_size
    expected_names = {f"blk.{layer}.{GGUF_NAMES[module]}.weight.lora_{ab}"
                      for layer in range(LAYERS) for module in SHAPES for ab in "ab"}
    assert set(written(reader)) == expected_names


def test_a_is_peft_a_and_b_is_peft_b_with_q_and_k_rows_permuted_for_llama(
        tmp_path: Path, llama_base: Path, peft_tensors: Tensors) -> None:
    _, reader = convert(tmp_path, llama_base, peft_tensors)
    tensors = written(reader)
    row_order = {"self_attn.q_proj": lambda b: rope_permute(b, N_HEAD),
                 "self_attn.k_proj": lambda b: rope_permute(b, N_HEAD_KV),
                 "self_attn.v_proj": lambda b: b, "mlp.down_proj": lambda b: b}

    for layer in range(LAYERS):
        for module, reorder in row_order.items():
            name = f"blk.{layer}.{GGUF_NAMES[module]}.weight"
            a, b = peft_tensors[peft_key(layer, module, "A")], peft_tensors[peft_key(layer, module, "B")]
            assert tensors[f"{name}.lora_a"].dtype == tensors[f"{name}.lora_b"].dtype == np.float32
            np.testing.assert_array_equal(tensors[f"{name}.lora_a"], a, err_msg=name)
            np.testing.assert_array_equal(tensors[f"{name}.lora_b"], reorder(b), err_msg=name)
    # The permutation really moves rows here, so an unpermuted q or k would not pass the checks above.
    q_b = peft_tensors[peft_key(0, "self_attn.q_proj", "B")]
    k_b = peft_tensors[peft_key(0, "self_attn.k_proj", "B")]
    assert not np.array_equal(rope_permute(q_b, N_HEAD), q_b)
    assert not np.array_equal(rope_permute(k_b, N_HEAD_KV), k_b)
    assert not np.array_equal(rope_permute(k_b, N_HEAD_KV), rope_permute(k_b, N_HEAD))


def test_rope_permute_interleaves_each_heads_two_halves() -> None:
    # llama.cpp's rotary layout pairs row j of a head's first half with row j of its second half: the
    # HF row h*d + half*d/2 + j lands at h*d + 2*j + half. Written out index by index, independent of the
    # reshape the product uses.
    rows = np.arange(N_HEAD * HEAD_DIM * 3, dtype=np.float32).reshape(N_HEAD * HEAD_DIM, 3)
    expected = np.empty_like(rows)
    for head in range(N_HEAD):
        for half in range(2):
            for j in range(HEAD_DIM // 2):
                expected[head * HEAD_DIM + 2 * j + half] = rows[head * HEAD_DIM + half * HEAD_DIM // 2 + j]
    np.testing.assert_array_equal(rope_permute(rows, N_HEAD), expected)


def test_b_is_not_permuted_for_an_architecture_outside_the_permuted_ones(
        tmp_path: Path, llama_base: Path, peft_tensors: Tensors,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(edge.lora_gguf, "PERMUTED_ARCHITECTURES", frozenset())
    _, reader = convert(tmp_path, llama_base, peft_tensors)
    tensors = written(reader)
    for layer in range(LAYERS):
        for module in SHAPES:
            name = f"blk.{layer}.{GGUF_NAMES[module]}.weight.lora_b"
            np.testing.assert_array_equal(tensors[name], peft_tensors[peft_key(layer, module, "B")], err_msg=name)


def test_a_qwen2_base_gives_a_qwen2_adapter_with_rows_as_peft_wrote_them(
        tmp_path: Path, qwen2_base: Path, peft_tensors: Tensors) -> None:
    converted, reader = convert(tmp_path, qwen2_base, peft_tensors)
    assert converted.architecture == field(reader, "general.architecture") == "qwen2"
    tensors = written(reader)
    for module in ("self_attn.q_proj", "self_attn.k_proj"):
        np.testing.assert_array_equal(tensors[f"blk.0.{GGUF_NAMES[module]}.weight.lora_b"],
                                      peft_tensors[peft_key(0, module, "B")])


def test_rslora_stores_alpha_times_the_square_root_of_the_rank(
        tmp_path: Path, llama_base: Path, peft_tensors: Tensors) -> None:
    # peft scales by alpha / sqrt(r) under rsLoRA, llama.cpp always by alpha / r.
    converted, reader = convert(tmp_path, llama_base, peft_tensors, use_rslora=True)
    assert converted.alpha == pytest.approx(ALPHA * math.sqrt(RANK))
    assert field(reader, "adapter.lora.alpha") == pytest.approx(ALPHA * math.sqrt(RANK))
    assert ALPHA * math.sqrt(RANK) != ALPHA



def with_extra(extra: Callable[[], Tensors]) -> Callable[[Tensors], Tensors]:
    return lambda tensors: {**tensors, **extra()}


def without(key: str) -> Callable[[Tensors], Tensors]:
    return lambda tensors: {k: v for k, v in tensors.items() if k != key}


def replaced(key: str, shape: tuple[int, int]) -> Callable[[Tensors], Tensors]:
    return lambda tensors: {**tensors, key: np.ones(shape, dtype=np.float32)}


def pair(prefix: str, a_shape: tuple[int, int], b_shape: tuple[int, int], suffix: str = ".weight") -> Tensors:
    return {f"{prefix}.lora_A{suffix}": np.ones(a_shape, dtype=np.float32),
            f"{prefix}.lora_B{suffix}": np.ones(b_shape, dtype=np.float32)}


unchanged: Callable[[Tensors], Tensors] = lambda tensors: tensors  # noqa: E731

REFUSALS = {
    "dora": ({"use_dora": True}, unchanged, r"use_dora: DoRA"),
    "alpha_pattern": ({"alpha_pattern": {"q_proj": 32}}, unchanged, r"alpha_pattern"),
    "rank_pattern": ({"rank_pattern": {"q_proj": 8}}, unchanged, r"rank_pattern"),
    "not_lora": ({"peft_type": "IA3"}, unchanged, r"not a LoRA adapter: IA3"),
    "lm_head": ({}, with_extra(lambda: pair("base_model.model.lm_head", (RANK, HIDDEN), (100, RANK))),
                r"lm_head.*output head"),
    # peft names an embedding's LoRA lora_embedding_A / _B, with no .weight
    "embed_tokens": ({}, with_extra(lambda: {
        "base_model.model.model.embed_tokens.lora_embedding_A": np.ones((RANK, 100), dtype=np.float32),
        "base_model.model.model.embed_tokens.lora_embedding_B": np.ones((HIDDEN, RANK), dtype=np.float32)}),
        r"embed_tokens.*embeddings"),
    "unknown_module": ({}, with_extra(lambda: pair(f"{PEFT_PREFIX}.0.self_attn.rotary_emb",
                                                   (RANK, HIDDEN), (HIDDEN, RANK))),
                       r"no LoRA for module 'self_attn\.rotary_emb'"),
    "missing_b": ({}, without(peft_key(1, "self_attn.v_proj", "B")),
                  r"blk\.1\.attn_v\.weight: lora_A or lora_B is missing"),
    "missing_a": ({}, without(peft_key(0, "mlp.down_proj", "A")),
                  r"blk\.0\.ffn_down\.weight: lora_A or lora_B is missing"),
    "a_wider_than_the_base": ({}, replaced(peft_key(0, "self_attn.q_proj", "A"), (RANK, HIDDEN + 1)),
                              r"blk\.0\.attn_q\.weight: lora_A \(4, 33\).*do not fit"),
    "k_as_tall_as_q": ({}, replaced(peft_key(1, "self_attn.k_proj", "B"), (N_HEAD * HEAD_DIM, RANK)),
                       r"blk\.1\.attn_k\.weight: .*lora_B \(32, 4\) do not fit"),
    "another_rank_than_the_config": ({"r": RANK * 2}, unchanged, r"do not fit .* at rank 8"),
    "a_layer_the_base_lacks": ({}, with_extra(lambda: pair(f"{PEFT_PREFIX}.{LAYERS}.self_attn.q_proj",
                                                           (RANK, HIDDEN), (HIDDEN, RANK))),
                               rf"blk\.{LAYERS}\.attn_q\.weight is not a tensor of the base model"),
    "empty": ({}, lambda tensors: {}, r"holds no LoRA tensors"),
}


@pytest.mark.parametrize(("config", "edit", "reason"), REFUSALS.values(), ids=REFUSALS.keys())
def test_an_adapter_without_a_llama_cpp_equivalent_is_refused_naming_why(
        tmp_path: Path, llama_base: Path, peft_tensors: Tensors, config: dict[str, object],
        edit: Callable[[Tensors], Tensors], reason: str) -> None:
    adapter_dir = write_peft_adapter(tmp_path / "peft", peft_config(RANK, ALPHA, SHAPES, **copy.deepcopy(config)),
                                     edit(dict(peft_tensors)))
    out = tmp_path / "adapter.gguf"
    with pytest.raises(AdapterConversionError, match=reason):
        convert_peft_adapter(adapter_dir, llama_base, out, base_name=BASE_NAME, base_sha256=BASE_SHA256)
    # A half-written adapter left at the destination could later be loaded as if it were whole.
    assert not out.exists()


def test_the_unchanged_adapter_of_the_refusal_cases_converts(
        tmp_path: Path, llama_base: Path, peft_tensors: Tensors) -> None:
    # The control for the refusals: each of them differs from this adapter only by what it names.
    converted, _ = convert(tmp_path, llama_base, dict(peft_tensors))
    assert converted.tensors == LAYERS * len(SHAPES)

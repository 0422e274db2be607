"""Is a converted adapter the adapter that was trained? llama.cpp's logits with the GGUF adapter against
transformers' with the peft adapter, on the same tokens, measured against the gap the two runtimes have
on the base model alone (the quantized weights llama.cpp runs against their float32 dequantization).

A correct conversion widens that gap a little, more as the adapter moves the model further (the quantized
weights meet a larger update); a wrong one (say, llama's q/k rows left unpermuted) loads without complaint
and widens it by a sizeable share of the adapter's whole effect. The bound is
`adapter_kl <= FLOOR_FACTOR * base_kl + FLOOR_SLACK + EFFECT_SHARE * effect_kl`; docs/finetune.md gives
the measurements it was set from. Needs the [finetune] extra.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import llama_cpp
import numpy as np

from edge.lora_adapter import LoadedAdapter, clear_adapters

FLOOR_FACTOR = 2.0
FLOOR_SLACK = 0.005
EFFECT_SHARE = 0.05


@dataclass(frozen=True)
class ConversionCheck:
    positions: int
    base_kl: float      # mean KL per position, transformers base ‖ llama.cpp base: the floor
    adapter_kl: float   # transformers with the adapter merged ‖ llama.cpp with the GGUF adapter
    effect_kl: float    # transformers merged ‖ transformers base: how much the adapter changes the model

    @property
    def passed(self) -> bool:
        return self.adapter_kl <= self.bound

    @property
    def bound(self) -> float:
        return FLOOR_FACTOR * self.base_kl + FLOOR_SLACK + EFFECT_SHARE * self.effect_kl

    def describe(self) -> str:
        verdict = "matches" if self.passed else "does NOT match"
        return (f"llama.cpp with the adapter {verdict} transformers with it: mean KL {self.adapter_kl:.4f} per "
                f"position over {self.positions} positions, against {self.base_kl:.4f} for the base model alone "
                f"and a bound of {self.bound:.4f}; the adapter itself moves transformers' distribution by "
                f"{self.effect_kl:.4f}")


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def mean_kl(reference: Sequence[np.ndarray], other: Sequence[np.ndarray]) -> float:
    """Mean over every position of KL(reference ‖ other), from logits."""
    total, positions = 0.0, 0
    for ref, oth in zip(reference, other, strict=True):
        log_p, log_q = _log_softmax(ref), _log_softmax(oth)
        total += float((np.exp(log_p) * (log_p - log_q)).sum())
        positions += ref.shape[0]
    return total / positions


def _transformers_logits(peft_model, sequences: Sequence[Sequence[int]]) -> tuple[list, list]:
    """(merged, base) logits. The adapter is merged into the weights, as llama.cpp's result should equal;
    that consumes `peft_model`, so the base is read first."""
    import torch

    with torch.no_grad():
        with peft_model.disable_adapter():
            base = [peft_model(input_ids=torch.tensor([list(ids)])).logits[0].float().numpy() for ids in sequences]
        merged_model = peft_model.merge_and_unload()
        merged = [merged_model(input_ids=torch.tensor([list(ids)])).logits[0].float().numpy() for ids in sequences]
    return merged, base


def _llama_logits(llm: llama_cpp.Llama, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
    out = []
    for ids in sequences:
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm._ctx.ctx), True)
        llm.reset()
        llm.eval(list(ids))
        out.append(np.array(llm.scores[:len(ids)], dtype=np.float32))
    return out


def check_conversion(peft_model, base_gguf: Path, base_sha256: str, adapter_gguf: Path,
                     sequences: Sequence[Sequence[int]], *, threads: int = 1) -> ConversionCheck:
    """`sequences`: token ids to compare on (training examples, prompt and answer). Merges the adapter into
    `peft_model`'s weights: the last use of the trained model."""
    adapted_hf, base_hf = _transformers_logits(peft_model, sequences)
    llm = llama_cpp.Llama(model_path=str(base_gguf), n_ctx=max(len(s) for s in sequences) + 8,
                          n_threads=threads, n_threads_batch=threads, logits_all=True, verbose=False)
    try:
        base_llama = _llama_logits(llm, sequences)
        adapter = LoadedAdapter(llm._model.model, adapter_gguf, name=None, scale=1.0, base_sha256=base_sha256)
        adapter.set_on(llm._ctx.ctx)
        adapted_llama = _llama_logits(llm, sequences)
        clear_adapters(llm._ctx.ctx)
        adapter.free()
    finally:
        llm.close()
    return ConversionCheck(positions=sum(len(s) for s in sequences),
                           base_kl=round(mean_kl(base_hf, base_llama), 6),
                           adapter_kl=round(mean_kl(adapted_hf, adapted_llama), 6),
                           effect_kl=round(mean_kl(adapted_hf, base_hf), 6))

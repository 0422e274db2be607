"""Deterministic peft LoRA adapters for the converter and adapter tests: what peft's `save_pretrained` writes
(`adapter_config.json` + `adapter_model.safetensors`), made with numpy so no test needs torch or training."""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

PEFT_PREFIX = "base_model.model.model.layers"


def peft_key(layer: int, module: str, which: str) -> str:
    """`module` as peft names it under a layer ("self_attn.q_proj"), `which` "A" or "B"."""
    return f"{PEFT_PREFIX}.{layer}.{module}.lora_{which}.weight"


def peft_config(rank: int, alpha: float, modules: Iterable[str], **overrides: object) -> dict[str, object]:
    """The keys peft writes for a plain LoRA, with its defaults (empty patterns, no DoRA, no rsLoRA)."""
    config: dict[str, object] = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": alpha, "lora_dropout": 0.0,
        "target_modules": sorted({m.rsplit(".", 1)[-1] for m in modules}), "bias": "none",
        "fan_in_fan_out": False, "use_rslora": False, "use_dora": False, "alpha_pattern": {},
        "rank_pattern": {}, "modules_to_save": None, "base_model_name_or_path": "test-base",
    }
    config.update(overrides)
    return config


def random_lora(rng: np.random.Generator, shapes: Mapping[str, tuple[int, int]], layers: int, rank: int,
                std: float) -> dict[str, np.ndarray]:
    """lora_A (rank, in) and lora_B (out, rank) for every module in `shapes` ((out, in), as torch holds the
    module's weight) on every layer. peft starts B at zero; a trained B is not, and a zero B would make
    every check of B (and every changed output) vacuous."""
    tensors: dict[str, np.ndarray] = {}
    for layer in range(layers):
        for module, (out_features, in_features) in shapes.items():
            tensors[peft_key(layer, module, "A")] = rng.normal(0, std, (rank, in_features)).astype(np.float32)
            tensors[peft_key(layer, module, "B")] = rng.normal(0, std, (out_features, rank)).astype(np.float32)
    return tensors


def write_peft_adapter(directory: Path, config: Mapping[str, object], tensors: Mapping[str, np.ndarray]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "adapter_config.json").write_text(json.dumps(dict(config), indent=2))
    save_file(dict(tensors), str(directory / "adapter_model.safetensors"))
    return directory

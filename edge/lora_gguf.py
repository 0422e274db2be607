"""A peft LoRA adapter (`adapter_config.json` + `adapter_model.safetensors`) as a GGUF LoRA that llama.cpp
loads, checked against the base model's GGUF. Needs the [finetune] extra's `gguf` and `safetensors`, not
torch: `hybrid-router finetune` calls it after training.

It writes what llama.cpp's own `convert_lora_to_gguf.py` writes (the file matches it tensor for tensor;
`docs/finetune.md` says how that was checked), plus the base model's name and SHA-256, which
`edge.lora_adapter` checks before an adapter is used:
- keys: the base's `general.architecture` (llama.cpp refuses another), `general.type = adapter`,
  `adapter.type = lora`, `adapter.lora.alpha`; llama.cpp scales B·A by alpha / rank;
- tensors `blk.N.<attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down>.weight.lora_a` (r, in) and
  `.lora_b` (out, r), float32, exactly peft's lora_A and lora_B;
- for the llama architecture, the rows of q's and k's lora_b are permuted as the HF-to-GGUF conversion
  permuted the base's q and k rows for llama.cpp's rotary layout (perm(B·A) = perm(B)·A). Qwen2's
  conversion permutes nothing. A missing permutation loads without complaint and is wrong, so it is
  decided from the base GGUF's architecture, never from a config.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
from gguf import GGUFReader, GGUFType, GGUFWriter, Keys
from safetensors.numpy import load_file

from edge.lora_adapter import BASE_NAME_KEY, BASE_SHA256_KEY

MODULE_TO_GGUF = MappingProxyType({
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
})
PERMUTED_ARCHITECTURES = frozenset({"llama"})
_PEFT_KEY = re.compile(r"^(?:base_model\.model\.)?model\.layers\.(\d+)\.(.+)\.lora_([AB])\.weight$")


class AdapterConversionError(ValueError):
    """The peft adapter has no llama.cpp equivalent, or does not fit the base model."""


@dataclass(frozen=True)
class ConvertedAdapter:
    path: Path
    architecture: str
    rank: int
    alpha: float           # as stored: llama.cpp's alpha / rank equals peft's scaling
    tensors: int           # adapted weight matrices
    bytes: int


@dataclass(frozen=True)
class _Base:
    architecture: str
    n_head: int
    n_head_kv: int
    shapes: dict[str, tuple[int, int]]   # (out, in), as torch holds them


def rope_permute(rows: np.ndarray, n_head: int) -> np.ndarray:
    """The row permutation llama.cpp's converter applies to llama's q_proj and k_proj."""
    return (rows.reshape(n_head, 2, rows.shape[0] // n_head // 2, *rows.shape[1:])
            .swapaxes(1, 2)
            .reshape(rows.shape))


def _read_base(base_gguf: Path) -> _Base:
    reader = GGUFReader(base_gguf)

    def field(key: str):
        found = reader.get_field(key)
        if found is None:
            raise AdapterConversionError(f"the base model {base_gguf} has no {key}")
        return found.contents()

    architecture = str(field(Keys.General.ARCHITECTURE))
    shapes = {t.name: (int(t.shape[1]), int(t.shape[0])) for t in reader.tensors if len(t.shape) == 2}
    return _Base(architecture=architecture, n_head=int(field(f"{architecture}.attention.head_count")),
                 n_head_kv=int(field(f"{architecture}.attention.head_count_kv")), shapes=shapes)


def _scaling(config: dict) -> tuple[int, float]:
    if config.get("peft_type", "LORA") != "LORA":
        raise AdapterConversionError(f"not a LoRA adapter: {config.get('peft_type')}")
    for key, why in (("use_dora", "DoRA has no llama.cpp equivalent"),
                     ("alpha_pattern", "llama.cpp has one alpha per adapter"),
                     ("rank_pattern", "llama.cpp has one rank per adapter"),
                     ("fan_in_fan_out", "fan-in-fan-out layers are not the llama/qwen2 linear layers")):
        if config.get(key):
            raise AdapterConversionError(f"{key}: {why}")
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    if config.get("use_rslora"):  # peft scales by alpha / sqrt(r), llama.cpp by alpha / r
        alpha *= math.sqrt(rank)
    return rank, alpha


def convert_peft_adapter(adapter_dir: Path, base_gguf: Path, out_path: Path, *, base_name: str,
                         base_sha256: str) -> ConvertedAdapter:
    """Writes `out_path` from the peft adapter in `adapter_dir`, trained on `base_gguf` (whose file hashes
    to `base_sha256`). Raises AdapterConversionError."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    rank, alpha = _scaling(config)
    base = _read_base(base_gguf)
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in load_file(adapter_dir / "adapter_model.safetensors").items():
        match = _PEFT_KEY.match(key)
        if match is None:
            raise AdapterConversionError(f"adapter tensor {key!r}: only the layers' linear projections can be "
                                         "adapted (not embeddings or the output head)")
        block, module, which = match.groups()
        if module not in MODULE_TO_GGUF:
            raise AdapterConversionError(f"adapter tensor {key!r}: llama.cpp has no LoRA for module {module!r}")
        pairs.setdefault(f"blk.{block}.{MODULE_TO_GGUF[module]}.weight", {})[which] = value.astype(np.float32)
    if not pairs:
        raise AdapterConversionError(f"{adapter_dir} holds no LoRA tensors")

    out_path.parent.mkdir(parents=True, exist_ok=True)
    writer = GGUFWriter(out_path, base.architecture)
    writer.add_type(GGUFType.ADAPTER)
    writer.add_string(Keys.Adapter.TYPE, "lora")
    writer.add_float32(Keys.Adapter.LORA_ALPHA, alpha)
    writer.add_string(BASE_NAME_KEY, base_name)
    writer.add_string(BASE_SHA256_KEY, base_sha256)
    for name in sorted(pairs, key=lambda n: (int(n.split(".")[1]), n)):
        a, b = pairs[name].get("A"), pairs[name].get("B")
        if a is None or b is None:
            raise AdapterConversionError(f"{name}: lora_A or lora_B is missing")
        if name not in base.shapes:
            raise AdapterConversionError(f"{name} is not a tensor of the base model {base_gguf}")
        out_features, in_features = base.shapes[name]
        if a.shape != (rank, in_features) or b.shape != (out_features, rank):
            raise AdapterConversionError(f"{name}: lora_A {a.shape} and lora_B {b.shape} do not fit the base's "
                                         f"({out_features}, {in_features}) at rank {rank}")
        if base.architecture in PERMUTED_ARCHITECTURES and name.endswith(".attn_q.weight"):
            b = rope_permute(b, base.n_head)
        elif base.architecture in PERMUTED_ARCHITECTURES and name.endswith(".attn_k.weight"):
            b = rope_permute(b, base.n_head_kv)
        writer.add_tensor(f"{name}.lora_a", np.ascontiguousarray(a))
        writer.add_tensor(f"{name}.lora_b", np.ascontiguousarray(b))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return ConvertedAdapter(path=out_path, architecture=base.architecture, rank=rank, alpha=alpha,
                            tensors=len(pairs), bytes=out_path.stat().st_size)

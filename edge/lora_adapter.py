"""LoRA adapters on a loaded llama.cpp model, swapped without reloading the base model.

llama-cpp-python's own `Llama(lora_path=...)` is not used: with a file llama.cpp refuses it builds the
model anyway and the first decode segfaults, and it turns memory mapping off. Here the adapter is loaded
with `llama_adapter_lora_init`, whose NULL result (missing, corrupt, wrong architecture or shapes) becomes
an `AdapterLoadError`, and set on the context with `llama_set_adapters_lora`. Every function here must
run on the thread that owns the context, between generations: the backend's model lock sees to that.

An adapter written by `edge.lora_gguf` records the SHA-256 of the base model file it was trained on
(`hybrid_router.base_model.sha256`); one trained on another base is refused even when its shapes fit.
An adapter from another converter records nothing, and only llama.cpp's shape check applies to it.
"""
from __future__ import annotations

import ctypes
import hashlib
from dataclasses import dataclass
from pathlib import Path

import llama_cpp

from edge.errors import AdapterLoadError

# The GGUF keys that edge.lora_gguf writes beside llama.cpp's own adapter keys.
BASE_SHA256_KEY = "hybrid_router.base_model.sha256"
BASE_NAME_KEY = "hybrid_router.base_model.name"
_META_BUFFER_BYTES = 256


@dataclass(frozen=True)
class AdapterInfo:
    """The adapter in use: what results, the ledger, health and metrics name it by."""

    name: str            # the caller's name for it (a store version such as "v0003"), else the file's stem
    path: Path
    sha256: str          # of the adapter file
    scale: float         # llama.cpp multiplies the adapter's alpha / rank by it
    base_sha256: str     # the base model it records, "" when it records none

    @property
    def label(self) -> str:
        """How results name it: its name and the start of its hash."""
        return f"{self.name} ({self.sha256[:12]})"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class LoadedAdapter:
    """An adapter llama.cpp has loaded for one model. `free()` unloads it (the model frees what is left)."""

    def __init__(self, model: llama_cpp.llama_model_p, path: Path, *, name: str | None, scale: float,
                 base_sha256: str) -> None:
        """Loads `path` for `model`, whose file hashes to `base_sha256`. Raises AdapterLoadError."""
        if not scale > 0:
            raise AdapterLoadError(path, f"scale must be > 0, got {scale}")
        if not path.is_file():
            raise AdapterLoadError(path, "no such file")
        try:
            sha256 = file_sha256(path)
        except OSError as exc:
            raise AdapterLoadError(path, f"cannot be read ({exc.strerror or exc})") from exc
        pointer = llama_cpp.llama_adapter_lora_init(model, str(path).encode())
        if not pointer:  # a NULL pointer comes back falsy, not None
            raise AdapterLoadError(path, "llama.cpp refused it: not a LoRA GGUF, corrupt, or made for another "
                                         "architecture or tensor shapes than this model's")
        self._pointer = pointer
        recorded = self._meta(BASE_SHA256_KEY)
        if recorded and recorded != base_sha256:
            trained_on = self._meta(BASE_NAME_KEY) or "?"  # read before free(): the pointer dies with it
            self.free()
            raise AdapterLoadError(path, f"it was trained on the base model {trained_on} (sha256 {recorded}), "
                                         f"and this model's file has sha256 {base_sha256}")
        self.info = AdapterInfo(name=name or path.stem, path=path, sha256=sha256, scale=scale,
                                base_sha256=recorded)

    def _meta(self, key: str) -> str:
        buffer = ctypes.create_string_buffer(_META_BUFFER_BYTES)
        written = llama_cpp.llama_adapter_meta_val_str(self._pointer, key.encode(), buffer, _META_BUFFER_BYTES)
        return buffer.value.decode("utf-8", "replace") if written >= 0 else ""

    def set_on(self, context: llama_cpp.llama_context_p) -> None:
        adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self._pointer)
        scales = (ctypes.c_float * 1)(self.info.scale)
        if llama_cpp.llama_set_adapters_lora(context, adapters, 1, scales) != 0:
            raise AdapterLoadError(self.info.path, "llama.cpp could not set it on the context")

    def free(self) -> None:
        if self._pointer:
            llama_cpp.llama_adapter_lora_free(self._pointer)
            self._pointer = None


def clear_adapters(context: llama_cpp.llama_context_p) -> None:
    """Takes every adapter off the context: the base model's logits come back exactly."""
    llama_cpp.llama_set_adapters_lora(context, None, 0, None)

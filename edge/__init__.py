"""The edge: a local model run by llama.cpp, and the catalogue that fetches and verifies model files.

A self-contained library: it never imports `router/`. `edge.llama_backend` imports llama_cpp, so
it is loaded lazily here; the catalogue and the errors work without llama.cpp installed.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edge.catalogue import CATALOGUE, ModelCache, ModelSpec, ModelStatus, WheelPart
from edge.errors import (
    EdgeError,
    EdgeGenerationError,
    ModelCorruptError,
    ModelDownloadError,
    ModelFileError,
    ModelMissingError,
    PromptTemplateError,
    PromptTooLongError,
    UnknownModelError,
)

if TYPE_CHECKING:
    from edge.llama_backend import EdgeCompletion, EdgeMetrics, EdgeStream, LlamaBackend, TokenDelta

_BACKEND_NAMES = frozenset({"EdgeCompletion", "EdgeMetrics", "EdgeStream", "LlamaBackend", "TokenDelta"})


def __getattr__(name: str) -> Any:
    if name in _BACKEND_NAMES:
        from edge import llama_backend

        return getattr(llama_backend, name)
    raise AttributeError(f"module 'edge' has no attribute {name!r}")


__all__ = [
    "CATALOGUE",
    "EdgeCompletion",
    "EdgeError",
    "EdgeGenerationError",
    "EdgeMetrics",
    "EdgeStream",
    "LlamaBackend",
    "ModelCache",
    "ModelCorruptError",
    "ModelDownloadError",
    "ModelFileError",
    "ModelMissingError",
    "ModelSpec",
    "ModelStatus",
    "PromptTemplateError",
    "PromptTooLongError",
    "TokenDelta",
    "UnknownModelError",
    "WheelPart",
]

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
    from edge._hidden_states import HiddenStates
    from edge.llama_backend import EdgeCompletion, EdgeMetrics, EdgeStream, LlamaBackend, PromptState, TokenDelta

_BACKEND_NAMES = frozenset({"EdgeCompletion", "EdgeMetrics", "EdgeStream", "LlamaBackend", "PromptState", "TokenDelta"})


def __getattr__(name: str) -> Any:
    if name == "HiddenStates":
        from edge import _hidden_states

        return _hidden_states.HiddenStates
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
    "HiddenStates",
    "LlamaBackend",
    "ModelCache",
    "ModelCorruptError",
    "ModelDownloadError",
    "ModelFileError",
    "ModelMissingError",
    "ModelSpec",
    "ModelStatus",
    "PromptState",
    "PromptTemplateError",
    "PromptTooLongError",
    "TokenDelta",
    "UnknownModelError",
    "WheelPart",
]

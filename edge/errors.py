"""The edge package's own exceptions.

The router translates these into its own error tree in one place; inside `edge/` callers catch
these. Every message says what went wrong and what to do about it.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


class EdgeError(Exception):
    """Base of every error raised by the edge package."""


class UnknownModelError(EdgeError):
    """A model name that the catalogue does not know."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known = tuple(sorted(known))
        super().__init__(f"unknown model {name!r}; known models: {', '.join(self.known)}")


class ModelDownloadError(EdgeError):
    """Fetching a model's wheels failed (network, index, or a wheel without the expected file)."""


class ModelFileError(EdgeError):
    """A model file in the cache cannot be used; the message names the file and the fix."""

    def __init__(self, message: str, *, path: Path, model_name: str, fix_command: str) -> None:
        self.path = path
        self.model_name = model_name
        self.fix_command = fix_command
        super().__init__(message)


class ModelMissingError(ModelFileError):
    def __init__(self, *, path: Path, model_name: str, fix_command: str) -> None:
        super().__init__(
            f"model file {path} is missing; run `{fix_command}`",
            path=path,
            model_name=model_name,
            fix_command=fix_command,
        )


class ModelCorruptError(ModelFileError):
    """Size or SHA-256 differ from the catalogue's; `expected` and `actual` say how."""

    def __init__(
        self, *, path: Path, model_name: str, fix_command: str, expected: str, actual: str
    ) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"model file {path} is corrupt (expected {expected}, got {actual}); "
            f"run `{fix_command}` to fetch it again",
            path=path,
            model_name=model_name,
            fix_command=fix_command,
        )


class PromptTooLongError(EdgeError):
    """The prompt plus the requested completion do not fit in the context window.

    Raised instead of truncating: a silently shortened conversation gives wrong answers.
    """

    def __init__(self, prompt_tokens: int, max_tokens: int, n_ctx: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.n_ctx = n_ctx
        super().__init__(
            f"prompt is {prompt_tokens} tokens and max_tokens is {max_tokens}, but the edge "
            f"context holds {n_ctx} tokens; shorten the conversation or lower max_tokens"
        )


class PromptTemplateError(EdgeError):
    """The model's chat template refused the messages (say, roles that do not alternate): the request's
    fault, not the model's, so the caller can fix it."""

    def __init__(self, model_name: str, reason: str) -> None:
        self.model_name = model_name
        self.reason = reason
        super().__init__(f"the chat template of {model_name} refused these messages: {reason}; "
                         "change the roles or their order to what the model accepts")


class EdgeGenerationError(EdgeError):
    """llama.cpp failed while rendering, tokenising or generating."""


class AdapterLoadError(EdgeError):
    """A LoRA adapter that cannot be used with this model: missing, corrupt, for another architecture or
    shape, or bound to another base model. The adapter in use before stays in use."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"LoRA adapter {path} cannot be used: {reason}")

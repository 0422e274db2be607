"""The backend contract, and the one place where backend errors become router errors.

`edge.LlamaBackend` and `cloud.OpenAIBackend` satisfy these Protocols structurally; neither imports
this module, so each stays a library that can be used and tested alone.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, AsyncIterator, Mapping, Optional, Protocol, Sequence, runtime_checkable

from cloud import errors as cloud_errors
from edge import errors as edge_errors
from router.domain import errors


# Cloud refusals that no change to the request can fix: the daemon's key, endpoint or model is wrong.
OPERATOR_STATUSES = frozenset({401, 403, 404})


class Delta(Protocol):
    """One or more tokens. `logprob` sums them; `token_logprobs` lists each (empty where unknown)."""

    text: str               # may be empty: text held back (partial UTF-8, a possible stop string)

    @property
    def logprob(self) -> Optional[float]: ...

    @property
    def token_logprobs(self) -> Sequence[float]: ...


class Completion(Protocol):
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    queue_s: float
    ttft_s: float
    total_s: float
    finish_reason: str      # "stop" | "length" | "cancelled" (closed early) | "error" (failed after it started)
    usage_estimated: bool   # the server sent no usage, so the token counts are the backend's own


@dataclass(frozen=True)
class CompletionRecord:
    """A Completion that the core itself builds: a decorator that rewrites a backend's (the privacy
    layer's restored text), or a fault injection's. One definition, so a new field is one edit here."""

    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    queue_s: float
    ttft_s: float
    total_s: float
    finish_reason: str
    usage_estimated: bool = False

    @classmethod
    def of(cls, completion: Completion, **changes: Any) -> "CompletionRecord":
        """`completion`'s fields, some of them changed."""
        fields = {f.name: getattr(completion, f.name) for f in dataclasses.fields(cls)}
        return cls(**{**fields, **changes})


# What every completion holds, in one list: a BackendRun takes each of them over as it is.
COMPLETION_FIELDS: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(CompletionRecord))


class BackendStream(Protocol):
    """Iterate for deltas; `aclose()` cancels. `completion` is set once the stream has ended, however it
    ended: at its end; by `aclose()` or a cancelled task ("cancelled"); or by an error raised after the
    stream was first iterated ("error", set before the error is raised). It then holds what was spent
    so far (the tokens streamed, and the prompt where it was evaluated), so that every call is priced."""

    completion: Optional[Completion]

    def __aiter__(self) -> AsyncIterator[Delta]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Backend(Protocol):
    name: str

    def stream(self, messages: Sequence[Mapping[str, str]], *, max_tokens: int, temperature: float,
               stop: Sequence[str] = (), seed: Optional[int] = None) -> BackendStream: ...


def is_backend_failure(exc: BaseException) -> bool:
    """A backend's own failure, or one already translated: something a mode may work around, unlike a bug."""
    return isinstance(exc, errors.RouterError) or translate_backend_error(exc) is not None


def translate_backend_error(exc: BaseException) -> Optional[errors.RouterError]:
    """The router error for a backend's own exception, or None if `exc` is not a backend error."""
    if isinstance(exc, (edge_errors.PromptTooLongError, edge_errors.PromptTemplateError)):
        return errors.InvalidRequestError(str(exc))
    if isinstance(exc, edge_errors.EdgeError):
        return errors.BackendUnavailableError(f"the edge model failed: {exc}")
    if isinstance(exc, cloud_errors.CloudRateLimitError):
        return errors.RateLimitedError(f"the cloud is rate limited: {exc}",
                                       retry_after_s=exc.retry_after_s)
    if isinstance(exc, cloud_errors.CloudTimeoutError):
        return errors.BackendTimeoutError(f"the cloud timed out: {exc}")
    if isinstance(exc, cloud_errors.CloudRejectedError) and exc.status in OPERATOR_STATUSES:
        return errors.BackendMisconfiguredError(f"the cloud refused the daemon's credentials or model "
                                                f"(HTTP {exc.status}); check cloud.api_key, cloud.base_url "
                                                f"and cloud.model: {exc}")
    if isinstance(exc, cloud_errors.CloudRejectedError):
        return errors.InvalidRequestError(f"the cloud rejected the request: {exc}")
    if isinstance(exc, cloud_errors.CloudError):
        return errors.BackendUnavailableError(f"the cloud is unavailable: {exc}")
    return None

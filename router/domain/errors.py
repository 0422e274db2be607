"""One exception tree for the daemon and the SDK, free of any transport.

Each error has a kind (`ErrorKind`): what went wrong, in terms a caller acts on. Each door maps kinds to its
own codes in one table: router/doors/grpc_errors.py to gRPC status codes (and the SDK maps them back to the
same classes), router/doors/http/errors.py to HTTP status codes with OpenAI's error JSON. So callers catch
one set of types whichever door they came through. Backend-specific exceptions (edge.errors, cloud.errors)
are translated into these in exactly one place: router/core/backends.py's `translate_backend_error`.
"""
from __future__ import annotations

import enum
from types import MappingProxyType
from typing import Mapping, Optional


class ErrorKind(enum.Enum):
    """What went wrong, as a caller acts on it. The values are stable: logs and metrics labels use them."""

    INVALID_REQUEST = "invalid_request"          # change the request; retrying it as sent cannot work
    NOT_IMPLEMENTED = "not_implemented"          # a mode or feature this daemon does not serve
    NOT_FOUND = "not_found"                      # no such thing (a request id, a model)
    CONFLICT = "conflict"                        # a client-chosen id already in use
    UNAUTHENTICATED = "unauthenticated"          # no credential, or an unknown one
    PERMISSION_DENIED = "permission_denied"      # a known principal without the right
    RATE_LIMITED = "rate_limited"                # a limit or budget; retry_after_s says when, if known
    UNAVAILABLE = "unavailable"                  # a backend or the daemon itself cannot serve now; retry later
    PRECONDITION_FAILED = "precondition_failed"  # the daemon's own state or configuration; retrying won't help
    TIMEOUT = "timeout"                          # a deadline passed
    CANCELLED = "cancelled"                      # the caller went away or cancelled
    INTERNAL = "internal"                        # a bug: the daemon log has the traceback


class RouterError(Exception):
    """Base of every error the router reports."""

    kind: ErrorKind = ErrorKind.INTERNAL

    def __init__(self, message: str, *, retry_after_s: Optional[float] = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


class InvalidRequestError(RouterError):
    """The request cannot be served as sent; the message says what to change."""

    kind = ErrorKind.INVALID_REQUEST


class ModeNotImplementedError(RouterError):
    kind = ErrorKind.NOT_IMPLEMENTED


class NotFoundError(RouterError):
    kind = ErrorKind.NOT_FOUND


class BackendUnavailableError(RouterError):
    """A backend could not be reached or answered with a server error or garbage."""

    kind = ErrorKind.UNAVAILABLE


class NotReadyError(BackendUnavailableError):
    """The daemon is up but its models are still loading (or it is shutting down)."""

    kind = ErrorKind.UNAVAILABLE


class BackendMisconfiguredError(RouterError):
    """The daemon's own configuration is wrong (e.g. the cloud rejects its API key); retrying won't help."""

    kind = ErrorKind.PRECONDITION_FAILED


class RequestIdInUseError(RouterError):
    """The client-supplied request_id belongs to a request in flight or already recorded."""

    kind = ErrorKind.CONFLICT


class RateLimitedError(RouterError):
    """A limit was reached: the cloud's rate limit, or one of the daemon's own (concurrency, queue, rate,
    budget). `retry_after_s`, when set, says when a retry can succeed."""

    kind = ErrorKind.RATE_LIMITED


class LimitExceededError(RateLimitedError):
    """The daemon's own admission limits: too many requests at once, a full queue, a principal's rate."""


class BudgetExhaustedError(RateLimitedError):
    """A cloud budget is spent and budget.when_spent = "refuse"; the message names the budget."""


class UnauthenticatedError(RouterError):
    """No credential, or one the server does not know."""

    kind = ErrorKind.UNAUTHENTICATED


class PermissionDeniedError(RouterError):
    """A known principal asked for something its role or groups do not allow."""

    kind = ErrorKind.PERMISSION_DENIED


class BackendTimeoutError(RouterError):
    kind = ErrorKind.TIMEOUT


class CancelledError(RouterError):
    kind = ErrorKind.CANCELLED


class InternalError(RouterError):
    kind = ErrorKind.INTERNAL


# The class a caller catches for each kind: what a door's reverse mapping (the SDK's) builds. UNAVAILABLE maps
# to the broader of its two classes.
ERROR_FOR_KIND: Mapping[ErrorKind, type[RouterError]] = MappingProxyType({
    ErrorKind.INVALID_REQUEST: InvalidRequestError,
    ErrorKind.NOT_IMPLEMENTED: ModeNotImplementedError,
    ErrorKind.NOT_FOUND: NotFoundError,
    ErrorKind.CONFLICT: RequestIdInUseError,
    ErrorKind.UNAUTHENTICATED: UnauthenticatedError,
    ErrorKind.PERMISSION_DENIED: PermissionDeniedError,
    ErrorKind.RATE_LIMITED: RateLimitedError,
    ErrorKind.UNAVAILABLE: BackendUnavailableError,
    ErrorKind.PRECONDITION_FAILED: BackendMisconfiguredError,
    ErrorKind.TIMEOUT: BackendTimeoutError,
    ErrorKind.CANCELLED: CancelledError,
    ErrorKind.INTERNAL: InternalError,
})


def error_of_kind(kind: ErrorKind, message: str, retry_after_s: Optional[float] = None) -> RouterError:
    """The error a caller catches for `kind` (a door's reverse mapping)."""
    return ERROR_FOR_KIND[kind](message or kind.value, retry_after_s=retry_after_s)

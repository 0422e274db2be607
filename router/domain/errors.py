"""One exception tree for the daemon and the SDK.

The server raises these; router/doors/service.py turns each into its gRPC status code, and the SDK turns
the status code back into the same class, so callers catch one set of types on either side.
Backend-specific exceptions (edge.errors, cloud.errors) are translated into these in exactly one
place: router/core/backends.py's `translate_backend_error`.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Mapping, Optional

import grpc

# Trailing-metadata key that carries a rate limit's Retry-After to the SDK.
RETRY_AFTER_METADATA_KEY = "retry-after-s"


class RouterError(Exception):
    """Base of every error the router reports."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, *, retry_after_s: Optional[float] = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


class InvalidRequestError(RouterError):
    """The request cannot be served as sent; the message says what to change."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class ModeNotImplementedError(RouterError):
    code = grpc.StatusCode.UNIMPLEMENTED


class NotFoundError(RouterError):
    code = grpc.StatusCode.NOT_FOUND


class BackendUnavailableError(RouterError):
    """A backend could not be reached or answered with a server error or garbage."""

    code = grpc.StatusCode.UNAVAILABLE


class NotReadyError(BackendUnavailableError):
    """The daemon is up but its models are still loading (or it is shutting down)."""

    code = grpc.StatusCode.UNAVAILABLE


class BackendMisconfiguredError(RouterError):
    """The daemon's own configuration is wrong (e.g. the cloud rejects its API key); retrying won't help."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class RequestIdInUseError(RouterError):
    """The client-supplied request_id belongs to a request in flight or already recorded."""

    code = grpc.StatusCode.ALREADY_EXISTS


class RateLimitedError(RouterError):
    """A limit was reached: the cloud's rate limit, or one of the daemon's own (concurrency, queue, rate,
    budget). `retry_after_s`, when set, says when a retry can succeed."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class LimitExceededError(RateLimitedError):
    """The daemon's own admission limits: too many requests at once, a full queue, a principal's rate."""


class BudgetExhaustedError(RateLimitedError):
    """A cloud budget is spent and budget.when_spent = "refuse"; the message names the budget."""


class UnauthenticatedError(RouterError):
    """No credential, or one the server does not know."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(RouterError):
    """A known principal asked for something its role or groups do not allow."""

    code = grpc.StatusCode.PERMISSION_DENIED


class BackendTimeoutError(RouterError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class CancelledError(RouterError):
    code = grpc.StatusCode.CANCELLED


class InternalError(RouterError):
    code = grpc.StatusCode.INTERNAL


# The SDK's reverse mapping. UNAVAILABLE maps to the broader of its two classes.
ERROR_FOR_CODE: Mapping[grpc.StatusCode, type[RouterError]] = MappingProxyType({
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.UNIMPLEMENTED: ModeNotImplementedError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.UNAVAILABLE: BackendUnavailableError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimitedError,
    grpc.StatusCode.DEADLINE_EXCEEDED: BackendTimeoutError,
    grpc.StatusCode.CANCELLED: CancelledError,
    grpc.StatusCode.FAILED_PRECONDITION: BackendMisconfiguredError,
    grpc.StatusCode.ALREADY_EXISTS: RequestIdInUseError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
})


def error_from_status(code: grpc.StatusCode, details: str,
                      retry_after_s: Optional[float] = None) -> RouterError:
    cls = ERROR_FOR_CODE.get(code, InternalError)
    return cls(details or code.name, retry_after_s=retry_after_s)

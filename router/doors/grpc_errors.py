"""The gRPC door's one table of error kinds and status codes, both ways: the daemon aborts a call with the
status of its error's kind, and the SDK turns the status back into the class of that kind. A rate limit's
Retry-After travels in the trailing metadata."""
from __future__ import annotations

from types import MappingProxyType
from typing import Mapping, Optional

import grpc

from router.domain.errors import ErrorKind, RouterError, error_of_kind

# Trailing-metadata key that carries a rate limit's Retry-After to the SDK.
RETRY_AFTER_METADATA_KEY = "retry-after-s"

STATUS_FOR_KIND: Mapping[ErrorKind, grpc.StatusCode] = MappingProxyType({
    ErrorKind.INVALID_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.NOT_IMPLEMENTED: grpc.StatusCode.UNIMPLEMENTED,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.CONFLICT: grpc.StatusCode.ALREADY_EXISTS,
    ErrorKind.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorKind.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorKind.RATE_LIMITED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.PRECONDITION_FAILED: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorKind.CANCELLED: grpc.StatusCode.CANCELLED,
    ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
})
KIND_FOR_STATUS: Mapping[grpc.StatusCode, ErrorKind] = MappingProxyType(
    {status: kind for kind, status in STATUS_FOR_KIND.items()})


def status_of(error: RouterError) -> grpc.StatusCode:
    return STATUS_FOR_KIND[error.kind]


def error_from_status(code: grpc.StatusCode, details: str, retry_after_s: Optional[float] = None) -> RouterError:
    """The SDK's side: a status the table does not name (UNKNOWN, DATA_LOSS, ...) is an InternalError."""
    return error_of_kind(KIND_FOR_STATUS.get(code, ErrorKind.INTERNAL), details or code.name, retry_after_s)

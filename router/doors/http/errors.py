"""The HTTP door's one table of error kinds, HTTP statuses and OpenAI's error `type`, and the error body
OpenAI's clients parse: `{"error": {"message", "type", "param", "code"}}`. A rate limit's Retry-After goes in
the header of that name (whole seconds, rounded up, as the openai client reads it)."""
from __future__ import annotations

import math
from types import MappingProxyType
from typing import Mapping, Optional

from router.domain.errors import ErrorKind, RouterError

# (HTTP status, OpenAI error type) per kind. The types are those OpenAI's API sends, so its clients raise
# their matching classes (BadRequestError, AuthenticationError, PermissionDeniedError, NotFoundError,
# ConflictError, RateLimitError, InternalServerError, ...).
STATUS_FOR_KIND: Mapping[ErrorKind, tuple[int, str]] = MappingProxyType({
    ErrorKind.INVALID_REQUEST: (400, "invalid_request_error"),
    ErrorKind.NOT_IMPLEMENTED: (400, "invalid_request_error"),
    ErrorKind.UNAUTHENTICATED: (401, "authentication_error"),
    ErrorKind.PERMISSION_DENIED: (403, "permission_error"),
    ErrorKind.NOT_FOUND: (404, "not_found_error"),
    ErrorKind.CONFLICT: (409, "conflict_error"),
    ErrorKind.PRECONDITION_FAILED: (412, "invalid_request_error"),
    ErrorKind.RATE_LIMITED: (429, "rate_limit_error"),
    ErrorKind.CANCELLED: (499, "cancelled"),
    ErrorKind.INTERNAL: (500, "server_error"),
    ErrorKind.UNAVAILABLE: (503, "service_unavailable"),
    ErrorKind.TIMEOUT: (504, "timeout"),
})


class HttpRequestError(RouterError):
    """A request body the HTTP door refuses before the core sees it; `param` names the field, as OpenAI's
    errors do (`messages[1].content`, `n`)."""

    kind = ErrorKind.INVALID_REQUEST

    def __init__(self, message: str, *, param: Optional[str] = None, code: Optional[str] = None,
                 kind: Optional[ErrorKind] = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code
        if kind is not None:
            self.kind = kind


def error_body(error: RouterError) -> dict[str, object]:
    _, error_type = STATUS_FOR_KIND[error.kind]
    return {"error": {"message": error.message, "type": error_type, "param": getattr(error, "param", None),
                      "code": getattr(error, "code", None) or error.kind.value}}


def error_status(error: RouterError) -> int:
    return STATUS_FOR_KIND[error.kind][0]


def error_headers(error: RouterError) -> dict[str, str]:
    if error.retry_after_s is None:
        return {}
    return {"retry-after": str(max(1, math.ceil(error.retry_after_s)))}

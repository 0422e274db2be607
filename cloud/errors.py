"""The cloud backend's own exception tree.

`cloud.openai_backend` raises only these (translated from openai/httpx errors at one boundary,
`translate_openai_error`), and the router translates them once more into its own errors. Messages
are built from status codes and the provider's sanitised message, never from the API key.
"""
from __future__ import annotations

from typing import Optional


class CloudError(Exception):
    """Base of every error the cloud backend raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CloudRateLimitError(CloudError):
    """HTTP 429, after the client's own retries were spent (or the server said not to retry)."""

    def __init__(self, message: str, *, retry_after_s: Optional[float] = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class CloudTimeoutError(CloudError):
    """No answer (or no next chunk) within the timeout, after retries."""


class CloudUnavailableError(CloudError):
    """The provider could not be reached, answered 5xx, or cut a stream that had started."""

    def __init__(self, message: str, *, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.status = status


class CloudBadResponseError(CloudError):
    """The provider answered, but not with a well-formed chat-completion stream."""


class CloudRejectedError(CloudError):
    """A 4xx other than 429: the request as sent will not succeed (bad key, context too long...)."""

    def __init__(self, message: str, *, status: int, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class StandinStartError(RuntimeError):
    """The local stand-in server exited or did not become healthy; the message holds its last output.

    Not a CloudError: it is a start-up failure of the stand-in's supervisor, not of a request.
    """

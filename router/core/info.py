"""The Info service as the router's modes see it: passages for a query, for a caller, with a price.

Satisfied by router/assembly/info_client.py (gRPC, the same client whether the service runs inside the
daemon or on another host). Errors are this module's, translated once by the client; a mode that gets
one answers without passages and marks the decision degraded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Protocol

from router.domain.types import Caller, Passage


class InfoError(Exception):
    """A retrieval failed; `reason` is short and safe to put in a decision record."""

    reason = "info service error"


class InfoUnavailableError(InfoError):
    reason = "info service unavailable"


class InfoTimeoutError(InfoError):
    reason = "info service timed out"


class InfoRejectedError(InfoError):
    """The service refused the query itself (empty, too long, a bad filter): retrying cannot help."""

    reason = "info service refused the query"


class InfoAccessError(InfoError):
    """The service does not know the caller's credential, or its role does not allow the call."""

    reason = "info service refused the caller's credential"


@dataclass(frozen=True)
class Retrieval:
    passages: tuple[Passage, ...]
    latency_s: float
    cost_usd: float


class InfoSource(Protocol):
    async def retrieve(self, query: str, *, k: int, caller: Caller, filters: Optional[Mapping[str, str]] = None,
                       timeout_s: Optional[float] = None) -> Retrieval:
        """The k best passages `caller` may read. Raises InfoError (a subclass) on failure."""
        ...

    async def aclose(self) -> None:
        ...

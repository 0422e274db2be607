"""Gates that keep a request off the cloud before its mode runs: a spent budget, an open circuit breaker,
personal data that may not leave the device.

Each gate answers for one request, at once and without blocking. The Router asks every gate before a
cloud-capable mode runs; the first reason given sends the request to the edge alone, its decision marked
degraded with that reason (router/core/modes/degraded.py). A gate refuses a request outright by raising a
RouterError (RESOURCE_EXHAUSTED for a budget, UNAVAILABLE for an open breaker), per its configuration.
"""
from __future__ import annotations

from typing import Optional, Protocol

from router.domain.errors import BackendUnavailableError
from router.domain.types import GenerateRequest, Mode

# The modes that may call the cloud model. EDGE_RAG_CLOUD_INFO reads the Info service, not the cloud
# model, so no gate applies to it.
CLOUD_CAPABLE_MODES = frozenset({Mode.CLOUD_ONLY, Mode.PRE_ARBITRATION, Mode.POST_ARBITRATION,
                                 Mode.EDGE_AGENT_CLOUD_INFO, Mode.AUTO})


class CloudGate(Protocol):
    def keep_off_cloud(self, request: GenerateRequest) -> Optional[str]:
        """None: the request may reach the cloud. A reason ("budget: ..."): the edge answers it, marked
        degraded. Raises a RouterError to refuse the request instead."""
        ...


class CloudKeptOffError(BackendUnavailableError):
    """A guard refused a cloud call before anything was sent (an open breaker), after the gates had let the
    request through: another request took the breaker's one trial, or it opened meanwhile. With
    `degrade_reason` set, the policy is to answer from the edge instead, and the Router does so for a
    request that has sent nothing to its client yet."""

    def __init__(self, message: str, *, degrade_reason: Optional[str] = None,
                 retry_after_s: Optional[float] = None) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.degrade_reason = degrade_reason

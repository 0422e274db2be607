"""privacy.cloud_egress = "edge_only": a request that holds personal data never reaches the cloud.

Two layers. EdgeOnlyGate, a CloudGate (router/core/cloud_gate.py), sends a cloud-capable request whose
messages hold personal data to the edge before its mode runs, and the decision says why. The backend
EgressRefusingBackend then refuses any cloud call whose own messages hold personal data, whatever made
it: the agent's ask_cloud may forward a passage's text, and the judge sends an edge answer. Neither names
the values found, only their kinds.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Optional, Sequence

from router.core.backends import Backend, BackendStream
from router.core.privacy.detect import describe, kinds_in
from router.core.refused_stream import RefusedStream
from router.domain.errors import PermissionDeniedError
from router.domain.types import GenerateRequest

POLICY = "privacy.cloud_egress = edge_only keeps it on the device"


class CloudEgressRefusedError(PermissionDeniedError):
    """A cloud call holding personal data, refused under privacy.cloud_egress = edge_only."""


def _personal_data_in(texts: Iterable[str]) -> str:
    """The kinds found ("email, phone"), or "" when none."""
    return describe(kinds_in(texts))


class EdgeOnlyGate:
    def keep_off_cloud(self, request: GenerateRequest) -> Optional[str]:
        found = _personal_data_in([*(message.content for message in request.messages), *request.stop])
        if not found:
            return None
        return f"privacy: the request holds personal data ({found}); {POLICY}"


class EgressRefusingBackend:
    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name

    def stream(self, messages: Sequence[Mapping[str, str]], *, max_tokens: int, temperature: float,
               stop: Sequence[str] = (), seed: Optional[int] = None) -> BackendStream:
        found = _personal_data_in([*(message["content"] for message in messages), *stop])
        if found:
            return RefusedStream(self.name, CloudEgressRefusedError(
                f"privacy: this cloud call holds personal data ({found}); {POLICY}"))
        return self.inner.stream(messages, max_tokens=max_tokens, temperature=temperature, stop=stop, seed=seed)

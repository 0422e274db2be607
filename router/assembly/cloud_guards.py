"""The cloud backend as every caller in the daemon uses it: behind the circuit breaker and the privacy
policy, with the gates that go with them.

    callers (modes, ask_cloud, the judge) ──> privacy (redact | edge_only | nothing) ──> breaker ──> cloud

The privacy layer comes first, so that a call it refuses never reaches the breaker (it is no cloud
failure and takes no trial slot), and a redacted call is the one the breaker sees. The gates are asked in
the order given: privacy before the breaker, so that a request that may not leave the device goes to the
edge with that reason even while the breaker would have failed it.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from router.core.backends import Backend
from router.core.breaker import BreakerGate, BreakerGuardedBackend, Clock, CloudBreaker
from router.core.cloud_gate import CloudGate
from router.core.privacy.edge_only import EdgeOnlyGate, EgressRefusingBackend
from router.core.privacy.redacting import RedactingCloudBackend
from router.domain.config import Settings


@dataclass(frozen=True)
class GuardedCloud:
    backend: Backend                 # the one cloud backend every caller uses
    gates: tuple[CloudGate, ...]     # for Router.cloud_gates, in this order
    breaker: CloudBreaker            # its snapshot() for health and Info


def guard_cloud(cloud: Backend, settings: Settings, logger: logging.Logger, *,
                clock: Clock = time.monotonic) -> GuardedCloud:
    breaker = CloudBreaker(settings.breaker, clock=clock, logger=logger)
    backend: Backend = BreakerGuardedBackend(cloud, breaker)
    gates: list[CloudGate] = []
    egress = settings.privacy.cloud_egress
    if egress == "redact":
        backend = RedactingCloudBackend(backend)
    elif egress == "edge_only":
        backend = EgressRefusingBackend(backend)
        gates.append(EdgeOnlyGate())
    gates.append(BreakerGate(breaker, settings.breaker.when_open))
    return GuardedCloud(backend=backend, gates=tuple(gates), breaker=breaker)

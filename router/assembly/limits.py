"""The daemon's limits from settings: admission, a bounded queue per backend, and the cloud budgets."""
from __future__ import annotations

import logging
from typing import Optional

from router.core.admission import Admission
from router.core.backend_queue import QueuedBackend
from router.core.backends import Backend
from router.core.budget import Budget
from router.domain.config import LimitsSettings, Settings


def build_admission(limits: LimitsSettings) -> Admission:
    return Admission(max_concurrent=limits.max_concurrent_requests,
                     per_principal_concurrency=limits.per_principal_concurrency,
                     rate_per_s=limits.per_principal_rate_per_s, burst=limits.per_principal_burst)


def build_backend_queues(settings: Settings, *, edge: Backend, cloud: Backend) -> tuple[QueuedBackend, QueuedBackend]:
    """The edge and the cloud, each behind its bounded queue. The capacity is what each runs at once:
    the edge model one call, the cloud cloud.max_concurrency."""
    waiting = settings.limits.max_queued_per_backend
    return (QueuedBackend(edge, capacity=1, max_waiting=waiting, label="edge"),
            QueuedBackend(cloud, capacity=settings.cloud.max_concurrency, max_waiting=waiting, label="cloud"))


# The longest month: a retention shorter than it may delete spend a monthly budget still counts.
MONTH_DAYS = 31


def build_budget(settings: Settings, logger: Optional[logging.Logger] = None) -> Optional[Budget]:
    """The cloud budgets, or None when none is set. Seed it from the ledger before serving
    (`Budget.seed_from_ledger`, blocking); with the ledger disabled it counts from zero at every start."""
    logger = logger or logging.getLogger("hybrid_router.budget")
    budget = Budget(settings.budget, logger=logger)
    if not budget.limited:
        return None
    if not settings.ledger.enabled:
        logger.warning("cloud budgets are counted in memory only (ledger.enabled = false): a restart starts "
                       "them from zero")
    ledger = settings.ledger
    monthly = settings.budget.principal_monthly_usd is not None or settings.budget.total_monthly_usd is not None
    if ledger.enabled and ((monthly and ledger.retention_days is not None and ledger.retention_days < MONTH_DAYS)
                           or ledger.retention_max_bytes is not None):
        logger.warning("ledger retention may delete requests the budgets still count (ledger.retention_days, "
                       "ledger.retention_max_bytes): after a restart they undercount what was spent")
    return budget

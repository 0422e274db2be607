"""The daemon's Prometheus metrics: one RouterMetrics per daemon, each with its own registry.

Three ways in, one way out:

- `record(request, result)`: a ResultSink (router/core/engine.py). The Router hands it every finished
  request, answered or not (one that ended after spending tokens), on the event loop.
- `refused(mode, kind)`: a Generate request refused without spending anything. The Router calls it for its
  own refusals (validation, admission, a reused id, a gate that refuses: `Router.on_refused`), each door for
  the ones it makes before the core sees the request (no credential, no right, a body it cannot read).
- `watch(...)`: state read at scrape time (the cloud's breaker, budgets left, backend queues, the ledger's
  dropped writes), through callables, so nothing here holds a reference to the parts it reads.
- `exposition()`: the text a /metrics endpoint returns.

Names follow the OpenTelemetry GenAI semantic conventions where one exists (gen_ai_*), the project's own
(hybrid_*) elsewhere. Every label value comes from a fixed set or from the daemon's own configuration (its
model names), never from a request: no principal, request id, reason text or metadata reaches a label, so
the number of series stays bounded whatever the traffic.
"""
from __future__ import annotations

import logging
import math
import threading
from typing import Callable, Iterable, Iterator, Mapping, Optional, Union

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, Info, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from router.core.budget import Budget
from router.domain.errors import ErrorKind
from router.domain.types import (FINISH_CANCELLED, BackendKind, CloudBreakerStatus, GenerateRequest, GenerateResult,
                                 Mode)

# The fixed label values. A value that is none of these is counted under the set's catch-all.
UNKNOWN_MODE = "unknown"
MODE_LABELS = tuple(mode.name.lower() for mode in Mode) + (UNKNOWN_MODE,)
NOT_SERVED = "none"
SERVED_BY_LABELS = ("edge", "cloud", NOT_SERVED)
RESULT_OUTCOMES = ("answered", "cancelled", "error")
OTHER_REFUSAL = "other"
# A refusal is named by its error's kind (`RouterError.kind.value`), stable by contract.
REFUSAL_KINDS = tuple(kind.value for kind in ErrorKind) + (OTHER_REFUSAL,)
ESCALATION_REASONS = ("escalated", "degraded")
COST_BACKENDS = ("edge", "cloud", "info")
TOKEN_TYPES = ("input", "output")
BREAKER_STATES = ("closed", "open", "half_open")
# Budgets shared by all principals: a per-principal budget has one amount left per principal, which a
# label may not carry.
BUDGET_NAMES = ("total_daily", "total_monthly")
QUEUE_BACKENDS = ("edge", "cloud")

# The OpenTelemetry GenAI conventions' advised bucket boundaries for each histogram.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
SCORE_BUCKETS = tuple(round(0.05 * step, 2) for step in range(1, 21))

_BACKEND_LABELS = {BackendKind.EDGE: "edge", BackendKind.CLOUD: "cloud"}

BreakerSource = Callable[[], Optional[CloudBreakerStatus]]
BudgetSource = Callable[[], Mapping[str, float]]
QueueSource = Callable[[], Mapping[str, int]]
DroppedWritesSource = Callable[[], int]


def mode_label(mode: Union[Mode, int]) -> str:
    """A mode as its label: its name in lower case, or `unknown` for an int that is no Mode."""
    try:
        return Mode(mode).name.lower()
    except (ValueError, TypeError):
        return UNKNOWN_MODE


def refusal_label(kind: Union[str, ErrorKind]) -> str:
    """A refusal's kind as its label: an ErrorKind (or its value), or `other`."""
    value = kind.value if isinstance(kind, ErrorKind) else kind
    return value if value in REFUSAL_KINDS else OTHER_REFUSAL


def budget_left_usd(budget: Budget) -> dict[str, float]:
    """Dollars left in the budgets shared by all principals that are set (BUDGET_NAMES), none below 0.
    Budget runs on the event loop: call this there (a /metrics endpoint served by the loop does)."""
    spend = budget.spend()
    limits = (("total_daily", budget.settings.total_daily_usd, spend.day_total),
              ("total_monthly", budget.settings.total_monthly_usd, spend.month_total))
    return {name: max(0.0, usd - used) for name, usd, used in limits if usd is not None}


class RouterMetrics:
    """The daemon's metrics. Nothing is shared between instances: each has its own registry."""

    def __init__(self, *, edge_model: str, cloud_model: str, adapter: str = "",
                 registry: Optional[CollectorRegistry] = None,
                 logger: Optional[logging.Logger] = None) -> None:
        """`edge_model`, `cloud_model`, `adapter`: what `hybrid_models_info` shows. `registry`: where the
        series are registered (a new one by default); two RouterMetrics on one registry clash by name."""
        self.registry = registry if registry is not None else CollectorRegistry()
        self._logger = logger or logging.getLogger("hybrid_router.metrics")
        registry = self.registry
        self._tokens = Histogram(
            "gen_ai_client_token_usage", "Tokens per backend call, by token type (input: the prompt, output: the "
            "completion) and the model called.", ("gen_ai_token_type", "gen_ai_request_model"),
            buckets=TOKEN_BUCKETS, registry=registry)
        self._duration = Histogram(
            "gen_ai_client_operation_duration_seconds", "Seconds from a request's arrival to its end, by the model "
            "that served it (none: it ended unanswered) and mode.", ("gen_ai_response_model", "mode"),
            buckets=DURATION_BUCKETS, registry=registry)
        self._ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds", "Seconds from an answered request's arrival to the first "
            "text of the answer served, by mode.", ("mode",), buckets=TTFT_BUCKETS, registry=registry)
        self._requests = Counter(
            "hybrid_requests", "Requests by mode, the backend that served them (none: unanswered) and outcome: "
            "answered, cancelled, error (ended unanswered after backend calls), or the kind of error that refused "
            "them before they ran.", ("mode", "served_by", "outcome"), registry=registry)
        self._escalations = Counter(
            "hybrid_escalations", "Requests whose decision sent them to the cloud (escalated) or answered them "
            "without what the mode needed (degraded: a gate, the breaker, the Info service).", ("mode", "reason"),
            registry=registry)
        self._score = Histogram(
            "hybrid_scorer_score", "The scorer's (or the pre-router's) confidence in the edge, by mode.", ("mode",),
            buckets=SCORE_BUCKETS, registry=registry)
        self._cost = Counter(
            "hybrid_cost_usd", "Dollars spent, by what was paid: the edge's energy, the cloud's tokens, the Info "
            "service's retrievals.", ("backend",), registry=registry)
        self._models = Info("hybrid_models", "The models this daemon serves, and the edge's LoRA adapter (empty: "
                            "none).", registry=registry)
        self._model_names = {"edge_model": edge_model, "cloud_model": cloud_model}
        self.set_adapter(adapter)
        # Answered requests, and those the cloud served: hybrid_cloud_share's ratio, read at scrape time.
        self._share_lock = threading.Lock()
        self._answered = 0
        self._answered_by_cloud = 0
        registry.register(_CloudShareCollector(self._cloud_share))
        self._watched: Optional[_WatchedCollector] = None

    # -- ResultSink ---------------------------------------------------------------------------

    def record(self, request: GenerateRequest, result: GenerateResult) -> None:
        """Counts one finished request. Never raises: a result it cannot read is logged and skipped.
        `request` is not read: who asked is no label."""
        try:
            self._record(result)
        except Exception:
            self._logger.exception("metrics: a result could not be counted", extra={"fields": {
                "request_id": getattr(result, "request_id", None)}})

    def _record(self, result: GenerateResult) -> None:
        mode = mode_label(result.decision.mode)
        served_by = _BACKEND_LABELS.get(result.served_by, NOT_SERVED)
        if result.answered:
            outcome = "answered"
        else:
            outcome = "cancelled" if result.finish_reason == FINISH_CANCELLED else "error"
        self._requests.labels(mode, served_by, outcome).inc()
        for run in result.runs:
            model = _model_of(result, run.backend)
            if model is None:
                continue
            self._tokens.labels("input", model).observe(run.prompt_tokens)
            self._tokens.labels("output", model).observe(run.completion_tokens)
        served_model = _model_of(result, result.served_by) if result.answered else None
        self._duration.labels(served_model or NOT_SERVED, mode).observe(result.latency.total_s)
        if result.answered:
            self._ttft.labels(mode).observe(result.latency.ttft_s)
        decision = result.decision
        if decision.escalated:
            self._escalations.labels(mode, "escalated").inc()
        if decision.degraded:
            self._escalations.labels(mode, "degraded").inc()
        if decision.score is not None and math.isfinite(decision.score):
            self._score.labels(mode).observe(decision.score)
        for backend, usd in (("edge", result.edge_cost_usd), ("cloud", result.cloud_cost_usd),
                             ("info", result.info_cost_usd)):
            if usd > 0 and math.isfinite(usd):  # a counter only grows: a bad price is not counted
                self._cost.labels(backend).inc(usd)
        if result.answered:
            with self._share_lock:
                self._answered += 1
                self._answered_by_cloud += result.served_by == BackendKind.CLOUD

    # -- refusals -----------------------------------------------------------------------------

    def refused(self, mode: Union[Mode, int], kind: Union[str, ErrorKind]) -> None:
        """Counts a request refused before it ran, as hybrid_requests_total{outcome=kind}. `kind`: the
        error's ErrorKind (or its value); any other text is counted as `other`."""
        self._requests.labels(mode_label(mode), NOT_SERVED, refusal_label(kind)).inc()

    # -- state read at scrape time ------------------------------------------------------------

    def set_adapter(self, adapter: str) -> None:
        """The edge's adapter changed (`UseAdapter`): `hybrid_models_info` shows the new one."""
        self._models.info({**self._model_names, "adapter": adapter})

    def watch(self, *, breaker: BreakerSource, budget_left_usd: BudgetSource, queue_depths: QueueSource,
              ledger_dropped_writes: DroppedWritesSource) -> None:
        """Reads these at every scrape, in the scraping thread. `breaker`: the cloud's breaker, None before
        the daemon has loaded (no breaker series then). `budget_left_usd`: dollars left by budget name
        (BUDGET_NAMES; see `budget_left_usd()`). `queue_depths`: calls running or waiting by backend
        (QUEUE_BACKENDS; QueuedBackend.in_flight). `ledger_dropped_writes`: writes the ledger dropped since
        start. A callable that raises leaves its series out of that scrape; keys outside the fixed sets are
        left out. A second call replaces the first's callables."""
        collector = _WatchedCollector(breaker=breaker, budget_left_usd=budget_left_usd, queue_depths=queue_depths,
                                      ledger_dropped_writes=ledger_dropped_writes, logger=self._logger)
        if self._watched is not None:
            self.registry.unregister(self._watched)
        self.registry.register(collector)
        self._watched = collector

    # -- exposition ---------------------------------------------------------------------------

    def exposition(self) -> tuple[bytes, str]:
        """The body and Content-Type of a /metrics response."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def _cloud_share(self) -> Optional[float]:
        with self._share_lock:
            return self._answered_by_cloud / self._answered if self._answered else None


def _model_of(result: GenerateResult, backend: BackendKind) -> Optional[str]:
    """The daemon's name for a backend's model (the run's own `model` is what the backend reported, and
    a cloud may report a dated variant per call)."""
    if backend == BackendKind.EDGE:
        return result.edge_model or UNKNOWN_MODE
    if backend == BackendKind.CLOUD:
        return result.cloud_model or UNKNOWN_MODE
    return None


class _CloudShareCollector(Collector):
    """hybrid_cloud_share: left out until a request has been answered (a share of nothing is no number)."""

    NAME = "hybrid_cloud_share"
    HELP = "Share of the requests answered since start that the cloud served."

    def __init__(self, share: Callable[[], Optional[float]]) -> None:
        self._share = share

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self.NAME, self.HELP)]

    def collect(self) -> Iterable[Metric]:
        share = self._share()
        return [] if share is None else [GaugeMetricFamily(self.NAME, self.HELP, value=share)]


class _WatchedCollector(Collector):
    """The series RouterMetrics.watch reads at scrape time, each source on its own: one that fails is left out."""

    def __init__(self, *, breaker: BreakerSource, budget_left_usd: BudgetSource, queue_depths: QueueSource,
                 ledger_dropped_writes: DroppedWritesSource, logger: logging.Logger) -> None:
        self._sources: tuple[tuple[str, Callable[[], list[Metric]]], ...] = (
            ("breaker", lambda: _breaker_families(breaker())),
            ("budget_left_usd", lambda: [_keyed_gauge(
                "hybrid_budget_left_usd", "Dollars left in a budget shared by all principals, by budget.",
                "budget", BUDGET_NAMES, budget_left_usd())]),
            ("queue_depths", lambda: [_keyed_gauge(
                "hybrid_backend_queue_depth", "Calls running or waiting for a backend, by backend.",
                "backend", QUEUE_BACKENDS, queue_depths())]),
            ("ledger_dropped_writes", lambda: [CounterMetricFamily(
                "hybrid_ledger_dropped_writes", "Ledger writes dropped since start (queue full, ledger degraded "
                "or closed): requests served but not recorded.", value=_count(ledger_dropped_writes()))]),
        )
        self._logger = logger
        self._failing: set[str] = set()  # sources whose last read failed: logged once per run of failures
        self._lock = threading.Lock()

    def describe(self) -> Iterable[Metric]:
        return [
            GaugeMetricFamily("hybrid_cloud_breaker_state", ""),
            GaugeMetricFamily("hybrid_cloud_breaker_consecutive_failures", ""),
            CounterMetricFamily("hybrid_cloud_breaker_opened", ""),
            GaugeMetricFamily("hybrid_budget_left_usd", ""),
            GaugeMetricFamily("hybrid_backend_queue_depth", ""),
            CounterMetricFamily("hybrid_ledger_dropped_writes", ""),
        ]

    def collect(self) -> Iterator[Metric]:
        for name, read in self._sources:
            try:
                families = read()
            except Exception:
                self._note_failure(name)
                continue
            with self._lock:
                self._failing.discard(name)
            yield from families

    def _note_failure(self, name: str) -> None:
        with self._lock:
            first = name not in self._failing
            self._failing.add(name)
        if first:
            self._logger.warning("metrics: reading %s failed; its series are left out until it works", name,
                                 exc_info=True)


def _breaker_families(status: Optional[CloudBreakerStatus]) -> list[Metric]:
    if status is None:
        return []
    state = GaugeMetricFamily("hybrid_cloud_breaker_state", "The cloud's circuit breaker: 1 for its current state, "
                              "0 for the others.", labels=("state",))
    for name in BREAKER_STATES:
        state.add_metric((name,), 1.0 if status.state == name else 0.0)
    failures = GaugeMetricFamily("hybrid_cloud_breaker_consecutive_failures",
                                 "Consecutive failed cloud calls; the breaker opens at failures_to_open.",
                                 value=_count(status.consecutive_failures))
    opened = CounterMetricFamily("hybrid_cloud_breaker_opened", "Times the cloud's breaker opened since start.",
                                 value=_count(status.times_opened))
    return [state, failures, opened]


def _keyed_gauge(name: str, documentation: str, label: str, allowed: tuple[str, ...],
                 values: Mapping[str, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=(label,))
    for key in allowed:
        if key in values:
            family.add_metric((key,), float(values[key]))
    return family


def _count(value: int) -> float:
    number = float(value)
    if not number >= 0:  # also NaN
        raise ValueError(f"a count must be a number >= 0, got {value!r}")
    return number

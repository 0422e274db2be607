"""RouterMetrics (router/assembly/metrics.py): what each result, refusal and watched source adds to the
exposition, read back with Prometheus' own parser."""
from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timezone
from typing import Mapping

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from router.assembly.metrics import (BREAKER_STATES, BUDGET_NAMES, COST_BACKENDS, ESCALATION_REASONS, MODE_LABELS,
                                     QUEUE_BACKENDS, REFUSAL_KINDS, RESULT_OUTCOMES, SERVED_BY_LABELS, TOKEN_TYPES,
                                     RouterMetrics, budget_left_usd)
from router.core.budget import Budget
from router.domain.config import BudgetSettings, ConfigError, MetricsSettings, Settings, load_settings
from router.domain.errors import ErrorKind
from router.domain.types import (BackendKind, Caller, CloudBreakerStatus, GenerateRequest, GenerateResult,
                                 InfoCall, Mode)
from tests.unit.test_ledger_support import make_exchange, make_run, make_unanswered

Labels = frozenset[tuple[str, str]]


def scrape(metrics: RouterMetrics) -> dict[tuple[str, Labels], float]:
    """Every sample of the exposition but the `_created` timestamps, by name and labels."""
    body, _ = metrics.exposition()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples if not sample.name.endswith("_created")}


def named(samples: Mapping[tuple[str, Labels], float], name: str) -> dict[Labels, float]:
    return {labels: value for (sample, labels), value in samples.items() if sample == name}


def labels(**values: str) -> Labels:
    return frozenset(values.items())


def new_metrics(**options: str) -> RouterMetrics:
    return RouterMetrics(edge_model="edge-model", cloud_model="cloud-model", **options)


def with_decision(exchange: tuple[GenerateRequest, GenerateResult], **fields: object) -> tuple[
        GenerateRequest, GenerateResult]:
    request, result = exchange
    return request, dataclasses.replace(result, decision=dataclasses.replace(result.decision, **fields))


def test_requests_are_counted_by_mode_backend_and_outcome() -> None:
    metrics = new_metrics()
    metrics.record(*make_exchange("a", edge="7", mode=Mode.EDGE_ONLY))
    metrics.record(*make_exchange("b", edge="7", mode=Mode.EDGE_ONLY))
    metrics.record(*make_exchange("c", cloud="7", served_by=BackendKind.CLOUD, mode=Mode.CLOUD_ONLY))
    metrics.record(*make_unanswered("d", [make_run(BackendKind.CLOUD, "partial")], finish_reason="cancelled"))
    metrics.record(*make_unanswered("e", [make_run(BackendKind.CLOUD, "partial")], finish_reason="error"))
    metrics.refused(Mode.CLOUD_ONLY, "rate_limited")
    metrics.refused(Mode.POST_ARBITRATION, ErrorKind.UNAUTHENTICATED)

    assert named(scrape(metrics), "hybrid_requests_total") == {
        labels(mode="edge_only", served_by="edge", outcome="answered"): 2.0,
        labels(mode="cloud_only", served_by="cloud", outcome="answered"): 1.0,
        labels(mode="cloud_only", served_by="none", outcome="cancelled"): 1.0,
        labels(mode="cloud_only", served_by="none", outcome="error"): 1.0,
        labels(mode="cloud_only", served_by="none", outcome="rate_limited"): 1.0,
        labels(mode="post_arbitration", served_by="none", outcome="unauthenticated"): 1.0,
    }


def test_tokens_are_observed_per_backend_call_under_the_daemons_model_names() -> None:
    metrics = new_metrics()
    request, result = make_exchange("a", edge="one two three", cloud="four five", served_by=BackendKind.CLOUD,
                                    mode=Mode.POST_ARBITRATION)
    # The backends' own reports of their models are no label: the daemon's names for them are.
    runs = tuple(dataclasses.replace(run, model="cloud-model-2024-07-18") if run.backend == BackendKind.CLOUD
                 else run for run in result.runs)
    metrics.record(request, dataclasses.replace(result, runs=runs, edge_model="edge-model-q4"))

    samples = scrape(metrics)
    assert named(samples, "gen_ai_client_token_usage_count") == {
        labels(gen_ai_token_type="input", gen_ai_request_model="edge-model-q4"): 1.0,
        labels(gen_ai_token_type="output", gen_ai_request_model="edge-model-q4"): 1.0,
        labels(gen_ai_token_type="input", gen_ai_request_model="cloud-model"): 1.0,
        labels(gen_ai_token_type="output", gen_ai_request_model="cloud-model"): 1.0,
    }
    assert named(samples, "gen_ai_client_token_usage_sum") == {
        labels(gen_ai_token_type="input", gen_ai_request_model="edge-model-q4"): 12.0,
        labels(gen_ai_token_type="output", gen_ai_request_model="edge-model-q4"): 3.0,
        labels(gen_ai_token_type="input", gen_ai_request_model="cloud-model"): 12.0,
        labels(gen_ai_token_type="output", gen_ai_request_model="cloud-model"): 2.0,
    }
    buckets = named(samples, "gen_ai_client_token_usage_bucket")
    assert buckets[labels(gen_ai_token_type="output", gen_ai_request_model="edge-model-q4", le="1.0")] == 0.0
    assert buckets[labels(gen_ai_token_type="output", gen_ai_request_model="edge-model-q4", le="4.0")] == 1.0


def test_duration_by_the_serving_model_and_ttft_of_answered_requests_only() -> None:
    metrics = new_metrics()
    metrics.record(*make_exchange("a", edge="7", mode=Mode.EDGE_ONLY, total_s=0.5, ttft_s=0.25))
    metrics.record(*make_exchange("b", edge="7", cloud="7", served_by=BackendKind.CLOUD, mode=Mode.POST_ARBITRATION,
                                  total_s=2.0, ttft_s=1.5))
    metrics.record(*make_unanswered("c", [make_run(BackendKind.CLOUD, "partial")], total_s=4.0))

    samples = scrape(metrics)
    assert named(samples, "gen_ai_client_operation_duration_seconds_sum") == {
        labels(gen_ai_response_model="edge-model", mode="edge_only"): 0.5,
        labels(gen_ai_response_model="cloud-model", mode="post_arbitration"): 2.0,
        labels(gen_ai_response_model="none", mode="cloud_only"): 4.0,
    }
    assert named(samples, "gen_ai_server_time_to_first_token_seconds_sum") == {
        labels(mode="edge_only"): 0.25, labels(mode="post_arbitration"): 1.5}
    assert named(samples, "gen_ai_server_time_to_first_token_seconds_count") == {
        labels(mode="edge_only"): 1.0, labels(mode="post_arbitration"): 1.0}


def test_escalations_and_degradations_are_counted_from_the_decisions_flags() -> None:
    metrics = new_metrics()
    metrics.record(*with_decision(make_exchange("a", edge="7", cloud="8", served_by=BackendKind.CLOUD,
                                                mode=Mode.POST_ARBITRATION), escalated=True))
    metrics.record(*with_decision(make_exchange("b", edge="7", cloud="8", served_by=BackendKind.CLOUD,
                                                mode=Mode.POST_ARBITRATION), escalated=True))
    metrics.record(*with_decision(make_exchange("c", edge="7", mode=Mode.CLOUD_ONLY), degraded=True,
                                  reason="degraded: budget: the total daily cloud budget $1.00 is spent"))
    metrics.record(*make_exchange("d", edge="7", mode=Mode.POST_ARBITRATION))

    assert named(scrape(metrics), "hybrid_escalations_total") == {
        labels(mode="post_arbitration", reason="escalated"): 2.0,
        labels(mode="cloud_only", reason="degraded"): 1.0,
    }


def test_scores_fall_in_buckets_a_twentieth_wide() -> None:
    metrics = new_metrics()
    for request_id, score in (("a", 0.42), ("b", 0.97), ("c", 0.05)):
        metrics.record(*with_decision(make_exchange(request_id, edge="7", mode=Mode.POST_ARBITRATION), score=score))
    metrics.record(*with_decision(make_exchange("d", edge="7", mode=Mode.POST_ARBITRATION), score=None))

    samples = scrape(metrics)
    buckets = {dict(key)["le"]: value for key, value in named(samples, "hybrid_scorer_score_bucket").items()}
    assert len(buckets) == 21  # 0.05 .. 1.0, and +Inf
    assert (buckets["0.05"], buckets["0.4"], buckets["0.45"], buckets["0.95"], buckets["1.0"], buckets["+Inf"]) == (
        1.0, 1.0, 2.0, 2.0, 3.0, 3.0)
    assert named(samples, "hybrid_scorer_score_count") == {labels(mode="post_arbitration"): 3.0}


def test_costs_add_up_by_what_was_paid() -> None:
    metrics = new_metrics()
    metrics.record(*make_exchange("a", edge="7", mode=Mode.EDGE_ONLY, edge_cost=0.125))
    request, result = make_exchange("b", edge="7", cloud="8", served_by=BackendKind.CLOUD,
                                    mode=Mode.POST_ARBITRATION, edge_cost=0.25, cloud_cost=0.5)
    metrics.record(request, dataclasses.replace(result, info_cost_usd=0.0625, info_calls=(InfoCall(
        operation="retrieve", query="q", passage_ids=(), scores=(), latency_s=0.0, cost_usd=0.0625),)))

    assert named(scrape(metrics), "hybrid_cost_usd_total") == {
        labels(backend="edge"): 0.375, labels(backend="cloud"): 0.5, labels(backend="info"): 0.0625}


def test_cloud_share_is_of_answered_requests_and_absent_before_the_first() -> None:
    metrics = new_metrics()
    metrics.record(*make_unanswered("a", [make_run(BackendKind.CLOUD, "partial")]))
    assert named(scrape(metrics), "hybrid_cloud_share") == {}

    for request_id in ("b", "c", "d"):
        metrics.record(*make_exchange(request_id, edge="7", mode=Mode.EDGE_ONLY))
    metrics.record(*make_exchange("e", cloud="7", served_by=BackendKind.CLOUD, mode=Mode.CLOUD_ONLY))
    assert named(scrape(metrics), "hybrid_cloud_share") == {frozenset(): 0.25}


def test_models_info_names_the_models_and_adapter() -> None:
    metrics = RouterMetrics(edge_model="qwen2.5-coder-0.5b", cloud_model="gpt-4o-mini", adapter="lora-7")
    assert named(scrape(metrics), "hybrid_models_info") == {
        labels(edge_model="qwen2.5-coder-0.5b", cloud_model="gpt-4o-mini", adapter="lora-7"): 1.0}


def test_exposition_is_the_prometheus_text_format() -> None:
    metrics = new_metrics()
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain; version=")
    assert b"# TYPE hybrid_models_info gauge" in body


def test_each_instance_counts_on_its_own_registry() -> None:
    first, second = new_metrics(), new_metrics()
    first.record(*make_exchange("a", edge="7", mode=Mode.EDGE_ONLY))
    assert named(scrape(second), "hybrid_requests_total") == {}
    assert named(scrape(first), "hybrid_requests_total") == {
        labels(mode="edge_only", served_by="edge", outcome="answered"): 1.0}

    registry = CollectorRegistry()
    RouterMetrics(edge_model="e", cloud_model="c", registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        RouterMetrics(edge_model="e", cloud_model="c", registry=registry)


def test_watched_sources_are_read_at_each_scrape() -> None:
    metrics = new_metrics()
    state = {"breaker": CloudBreakerStatus(state="closed"), "dropped": 0, "edge": 0}
    metrics.watch(breaker=lambda: state["breaker"],
                  budget_left_usd=lambda: {"total_daily": 0.75, "total_monthly": 9.5},
                  queue_depths=lambda: {"edge": state["edge"], "cloud": 2},
                  ledger_dropped_writes=lambda: state["dropped"])
    state.update(breaker=CloudBreakerStatus(state="open", consecutive_failures=5, failures_to_open=5,
                                            retry_in_s=12.0, times_opened=3), dropped=7, edge=4)

    samples = scrape(metrics)
    assert named(samples, "hybrid_cloud_breaker_state") == {
        labels(state="closed"): 0.0, labels(state="open"): 1.0, labels(state="half_open"): 0.0}
    assert named(samples, "hybrid_cloud_breaker_consecutive_failures") == {frozenset(): 5.0}
    assert named(samples, "hybrid_cloud_breaker_opened_total") == {frozenset(): 3.0}
    assert named(samples, "hybrid_budget_left_usd") == {labels(budget="total_daily"): 0.75,
                                                        labels(budget="total_monthly"): 9.5}
    assert named(samples, "hybrid_backend_queue_depth") == {labels(backend="edge"): 4.0,
                                                            labels(backend="cloud"): 2.0}
    assert named(samples, "hybrid_ledger_dropped_writes_total") == {frozenset(): 7.0}


class FaultInjectionSourceError(RuntimeError):
    """A watched source that fails, as a part not yet loaded (or a bug in one) would."""


def failing_source() -> Mapping[str, float]:
    raise FaultInjectionSourceError("not loaded")


def test_a_source_that_raises_leaves_only_its_own_series_out(caplog: pytest.LogCaptureFixture) -> None:
    metrics = new_metrics()
    metrics.record(*make_exchange("a", edge="7", mode=Mode.EDGE_ONLY))
    metrics.watch(breaker=lambda: None, budget_left_usd=failing_source, queue_depths=lambda: {"edge": 1},
                  ledger_dropped_writes=lambda: -1)
    with caplog.at_level(logging.WARNING, logger="hybrid_router.metrics"):
        samples = scrape(metrics)
        scrape(metrics)

    names = {name for name, _ in samples}
    assert not names & {"hybrid_budget_left_usd", "hybrid_ledger_dropped_writes_total",
                        "hybrid_cloud_breaker_state"}  # raised, a negative count, no breaker before load
    assert named(samples, "hybrid_backend_queue_depth") == {labels(backend="edge"): 1.0}
    assert named(samples, "hybrid_requests_total") == {
        labels(mode="edge_only", served_by="edge", outcome="answered"): 1.0}
    # One warning per failing source, not one per scrape.
    warnings = [record.getMessage() for record in caplog.records]
    assert sorted(warnings) == [
        "metrics: reading budget_left_usd failed; its series are left out until it works",
        "metrics: reading ledger_dropped_writes failed; its series are left out until it works"]


def test_watch_again_replaces_the_sources() -> None:
    metrics = new_metrics()
    metrics.watch(breaker=lambda: None, budget_left_usd=dict, queue_depths=lambda: {"edge": 1},
                  ledger_dropped_writes=lambda: 0)
    metrics.watch(breaker=lambda: None, budget_left_usd=dict, queue_depths=lambda: {"edge": 9},
                  ledger_dropped_writes=lambda: 0)
    assert named(scrape(metrics), "hybrid_backend_queue_depth") == {labels(backend="edge"): 9.0}


def test_record_never_raises_and_a_bad_price_is_not_counted() -> None:
    metrics = new_metrics()
    request, result = make_exchange("a", edge="7", mode=Mode.EDGE_ONLY, edge_cost=-1.0)
    metrics.record(request, result)
    metrics.record(request, dataclasses.replace(result, edge_cost_usd=float("nan"), cloud_cost_usd=float("inf")))
    metrics.record(request, object())  # type: ignore[arg-type]

    samples = scrape(metrics)
    assert named(samples, "hybrid_cost_usd_total") == {}
    assert named(samples, "hybrid_requests_total") == {
        labels(mode="edge_only", served_by="edge", outcome="answered"): 2.0}


FIXED_LABEL_VALUES = {
    "mode": set(MODE_LABELS), "served_by": set(SERVED_BY_LABELS),
    "outcome": set(RESULT_OUTCOMES) | set(REFUSAL_KINDS), "reason": set(ESCALATION_REASONS),
    "backend": set(COST_BACKENDS) | set(QUEUE_BACKENDS), "gen_ai_token_type": set(TOKEN_TYPES),
    "gen_ai_request_model": {"edge-model", "cloud-model"},
    "gen_ai_response_model": {"edge-model", "cloud-model", "none"},
    "state": set(BREAKER_STATES), "budget": set(BUDGET_NAMES),
    "edge_model": {"edge-model"}, "cloud_model": {"cloud-model"}, "adapter": {""},
}


def test_label_values_stay_within_fixed_sets_whatever_the_traffic() -> None:
    metrics = new_metrics()
    metrics.watch(breaker=lambda: CloudBreakerStatus(state="a state no breaker has"),
                  budget_left_usd=lambda: {"total_daily": 1.0, "principal_daily:alice": 0.5},
                  queue_depths=lambda: {"edge": 1, "edge-of-alice": 3}, ledger_dropped_writes=lambda: 0)
    for number in range(200):
        user = f"user-{number}"
        request, result = make_exchange(f"request-{number}", edge="7", cloud="8",
                                        served_by=BackendKind.CLOUD if number % 3 else BackendKind.EDGE,
                                        mode=Mode.POST_ARBITRATION, metadata={"session": user}, edge_cost=0.001)
        request = dataclasses.replace(request, caller=Caller(user=user, groups=(f"group-{number}",)))
        metrics.record(*with_decision((request, result), reason=f"free text {number}", arbiter=f"arbiter {number}",
                                      scorer=f"scorer v{number}", escalated=number % 2 == 0,
                                      degraded=number % 5 == 0, threshold_kind=f"kind {number}"))
        metrics.record(*make_unanswered(f"unanswered-{number}", [make_run(BackendKind.CLOUD, "x")],
                                        finish_reason=f"finish {number}"))
        metrics.refused(Mode.CLOUD_ONLY, f"refused for user-{number}")
        metrics.refused(number, ErrorKind.RATE_LIMITED)  # type: ignore[arg-type]

    seen: dict[str, set[str]] = {}
    for (name, label_set), _ in scrape(metrics).items():
        for label, value in label_set:
            if label != "le":
                seen.setdefault(label, set()).add(value)
    for label, values in seen.items():
        assert values <= FIXED_LABEL_VALUES[label], label
    assert seen["outcome"] == {"answered", "error", "other", "rate_limited"}
    assert seen["mode"] == set(MODE_LABELS)  # refused with the ints 0..199: 7 and above are no Mode
    assert len(named(scrape(metrics), "hybrid_requests_total")) <= len(MODE_LABELS) * len(SERVED_BY_LABELS) * (
        len(RESULT_OUTCOMES) + len(REFUSAL_KINDS))


def test_budget_left_counts_down_the_shared_budgets_from_the_spend() -> None:
    now = datetime(2025, 3, 14, 12, tzinfo=timezone.utc)
    budget = Budget(BudgetSettings(total_daily_usd=1.0, total_monthly_usd=10.0, principal_daily_usd=0.5),
                    clock=lambda: now)
    assert budget_left_usd(budget) == {"total_daily": 1.0, "total_monthly": 10.0}
    request, result = make_exchange("a", cloud="7", served_by=BackendKind.CLOUD, mode=Mode.CLOUD_ONLY,
                                    cloud_cost=0.25)
    budget.record(request, result)
    assert budget_left_usd(budget) == {"total_daily": 0.75, "total_monthly": 9.75}
    budget.record(request, dataclasses.replace(result, cloud_cost_usd=2.0))
    assert budget_left_usd(budget) == {"total_daily": 0.0, "total_monthly": 7.75}
    assert budget_left_usd(Budget(BudgetSettings(principal_daily_usd=0.5), clock=lambda: now)) == {}


def test_metrics_address_is_off_by_default_and_must_be_host_and_port() -> None:
    assert Settings().metrics.address == ""
    assert MetricsSettings(address="127.0.0.1:9464").address == "127.0.0.1:9464"
    assert MetricsSettings(address="[::1]:9464").address == "[::1]:9464"
    refusal = r"metrics.address: .*host:port.* \[from HYBRID_ROUTER_METRICS__ADDRESS\]"
    for bad in ("9464", "localhost", ":9464", "localhost:http", "localhost:70000"):
        with pytest.raises(ConfigError, match=refusal):
            load_settings(None, {"HYBRID_ROUTER_METRICS__ADDRESS": bad})

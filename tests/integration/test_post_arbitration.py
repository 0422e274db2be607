"""POST_ARBITRATION through the real daemon: SmolLM2-135M as the edge and behind the stand-in as the cloud.

Thresholds at the ends of the score range make the decision certain, so each test knows what must
happen: threshold 0 keeps every edge answer, threshold 1 escalates every one (a geometric-mean token
probability of exactly 1 would need every token certain).
"""
from __future__ import annotations

from typing import Iterator

import pytest

from cloud.fault_injection_server import Fault, FaultInjectionOpenAIServer
from router.client import RouterClient
from router.domain.types import BackendKind, DraftDiscarded, Mode, RunPurpose, TextDelta
from tests.conftest import ServerThread, make_settings

pytestmark = pytest.mark.integration

MATHS = "Tom has 3 apples and buys 4 more. How many apples does he have? End with '#### <number>'."


def post_daemon(**arbitration: str) -> ServerThread:
    env = {f"HYBRID_ROUTER_ARBITRATION__{key.upper()}": value for key, value in arbitration.items()}
    return ServerThread(make_settings(env))


@pytest.fixture(scope="module")
def keeping_daemon(smollm_path) -> Iterator[ServerThread]:
    server = post_daemon(scorer="logprob", fixed_threshold="0")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def escalating_daemon(smollm_path) -> Iterator[ServerThread]:
    server = post_daemon(scorer="logprob", fixed_threshold="1")
    yield server
    server.stop()


def test_a_kept_edge_answer_is_served_by_the_edge_with_the_decision_recorded(keeping_daemon: ServerThread) -> None:
    with RouterClient(keeping_daemon.address) as client:
        result = client.generate(prompt="Name a colour.", mode="post", max_tokens=12)
    assert result.served_by == BackendKind.EDGE
    decision = result.decision
    assert (decision.mode, decision.arbiter, decision.scorer) == (Mode.POST_ARBITRATION, "cascade", "logprob")
    assert decision.threshold == 0.0 and decision.threshold_kind == "fixed" and not decision.escalated
    assert 0.0 < decision.score <= 1.0
    assert decision.features["lp_exp_mean"] == pytest.approx(decision.score)
    assert [run.backend for run in result.runs] == [BackendKind.EDGE]
    assert result.cloud_cost_usd == 0.0


def test_an_escalated_request_discards_the_streamed_draft_and_serves_the_cloud(escalating_daemon: ServerThread) -> None:
    with RouterClient(escalating_daemon.address) as client:
        with client.stream(prompt="Name a colour.", mode="post", max_tokens=12) as stream:
            events = list(stream.events())
        result = stream.result
    kinds = [type(event) for event in events]
    assert DraftDiscarded in kinds
    cut = kinds.index(DraftDiscarded)
    assert all(isinstance(e, TextDelta) and e.backend == BackendKind.EDGE for e in events[:cut])
    assert all(isinstance(e, TextDelta) and e.backend == BackendKind.CLOUD for e in events[cut + 1:])
    assert events[cut].discarded == BackendKind.EDGE and events[cut].next == BackendKind.CLOUD
    assert result.served_by == BackendKind.CLOUD and result.decision.escalated
    assert "".join(e.text for e in events[cut + 1:]) == result.text
    purposes = [(run.backend, run.purpose) for run in result.runs]
    assert purposes == [(BackendKind.EDGE, RunPurpose.DRAFT), (BackendKind.CLOUD, RunPurpose.ANSWER)]
    assert result.edge_cost_usd > 0 and result.cloud_cost_usd > 0


def test_shadow_serves_the_cloud_and_records_samples_and_verification_as_priced_runs(smollm_path) -> None:
    server = post_daemon(arbiter="shadow", samples="2")
    try:
        with RouterClient(server.address) as client:
            with client.stream(prompt=MATHS, mode="post", max_tokens=48) as stream:
                events = list(stream.events())
            result = stream.result
    finally:
        server.stop()
    assert not any(isinstance(event, DraftDiscarded) for event in events)  # shadow streams no draft
    assert all(event.backend == BackendKind.CLOUD for event in events)
    assert result.served_by == BackendKind.CLOUD and result.decision.arbiter == "shadow"
    purposes = [run.purpose for run in result.runs if run.backend == BackendKind.EDGE]
    features = result.decision.features
    assert features["has_verification"] == 1.0 and 0.0 <= features["verify_p_yes"] <= 1.0
    assert RunPurpose.VERIFY in purposes
    # Samples are drawn exactly when the edge's answer holds a number (the 135M model's usually does).
    expected_samples = 2 if features["has_number"] else 0
    assert purposes.count(RunPurpose.SAMPLE) == expected_samples
    assert features["has_consistency"] == features["has_number"]
    scorer_runs = [run for run in result.runs if run.purpose in (RunPurpose.SAMPLE, RunPurpose.VERIFY)]
    assert all(run.cost_usd > 0 and run.total_s > 0 for run in scorer_runs)
    assert result.edge_cost_usd == pytest.approx(sum(r.cost_usd for r in result.runs if r.backend == BackendKind.EDGE))


def test_a_scorer_that_fails_at_run_time_sends_the_request_to_the_cloud_and_says_why(smollm_path) -> None:
    # The verification prompt (few-shot examples + the question + the answer) cannot fit an edge
    # context that the question alone nearly fills: the scorer fails for real, inside llama.cpp's limits.
    server = ServerThread(make_settings({"HYBRID_ROUTER_ARBITRATION__SCORER": "verify",
                                         "HYBRID_ROUTER_EDGE__N_CTX": "256"}))
    question = "Summarise: " + "the quick brown fox jumps over the lazy dog. " * 20
    try:
        with RouterClient(server.address) as client:
            result = client.generate(prompt=question, mode="post", max_tokens=8)
    finally:
        server.stop()
    assert result.served_by == BackendKind.CLOUD and result.decision.escalated
    assert result.decision.score is None
    assert "scorer verify failed" in result.decision.reason and "the cloud answers" in result.decision.reason


def ask_parallel_against(cloud: FaultInjectionOpenAIServer, *, threshold: str, **env: str):
    """One request through a parallel-race daemon whose cloud is the fault-injection server."""
    server = ServerThread(make_settings({
        "HYBRID_ROUTER_ARBITRATION__ARBITER": "parallel", "HYBRID_ROUTER_ARBITRATION__SCORER": "logprob",
        "HYBRID_ROUTER_ARBITRATION__FIXED_THRESHOLD": threshold, "HYBRID_ROUTER_CLOUD__BASE_URL": cloud.base_url,
        "HYBRID_ROUTER_CLOUD__API_KEY": "sk-test-parallel", "HYBRID_ROUTER_CLOUD__MODEL": "fault-model", **env}))
    try:
        with RouterClient(server.address) as client:
            return client.generate(prompt="Name a colour.", mode="post", max_tokens=12)
    finally:
        server.stop()


def test_parallel_keeps_the_edge_and_cancels_the_cloud_for_real(smollm_path) -> None:
    # The cloud sends two chunks, then stalls: the race can only end by cancelling it.
    with FaultInjectionOpenAIServer(hang_s=60) as cloud:
        cloud.inject(Fault.STALLED_STREAM)
        result = ask_parallel_against(cloud, threshold="0", HYBRID_ROUTER_CLOUD__TIMEOUT_S="60")
    assert result.served_by == BackendKind.EDGE and result.decision.arbiter == "parallel"
    cloud_runs = [run for run in result.runs if run.backend == BackendKind.CLOUD]
    assert len(cloud_runs) == 1
    assert cloud_runs[0].finish_reason == "cancelled" and cloud_runs[0].purpose == RunPurpose.DRAFT
    assert cloud_runs[0].completion_tokens == 2 and cloud_runs[0].cost_usd > 0  # what it streamed is paid for
    assert result.cloud_cost_usd == pytest.approx(cloud_runs[0].cost_usd)


def test_parallel_serves_the_cloud_when_the_edge_scores_low(escalating_parallel_daemon: ServerThread) -> None:
    with RouterClient(escalating_parallel_daemon.address) as client:
        with client.stream(prompt="Name a colour.", mode="post", max_tokens=12) as stream:
            events = list(stream.events())
        result = stream.result
    assert result.served_by == BackendKind.CLOUD and result.decision.escalated
    assert any(isinstance(event, DraftDiscarded) for event in events)
    cut = next(i for i, event in enumerate(events) if isinstance(event, DraftDiscarded))
    assert "".join(e.text for e in events[cut + 1:]) == result.text
    assert sorted(run.backend for run in result.runs) == [BackendKind.EDGE, BackendKind.CLOUD]


@pytest.fixture(scope="module")
def escalating_parallel_daemon(smollm_path) -> Iterator[ServerThread]:
    server = post_daemon(arbiter="parallel", scorer="logprob", fixed_threshold="1")
    yield server
    server.stop()


def test_parallel_serves_the_edge_when_the_cloud_fails_during_the_race(smollm_path) -> None:
    with FaultInjectionOpenAIServer() as cloud:
        cloud.inject(Fault.STATUS_500)
        result = ask_parallel_against(cloud, threshold="1", HYBRID_ROUTER_CLOUD__MAX_RETRIES="0")
    assert result.served_by == BackendKind.EDGE
    assert "the cloud failed" in result.decision.reason and "the edge answers" in result.decision.reason


def test_early_escalation_stops_the_edge_once_its_confidence_falls(smollm_path) -> None:
    # A threshold of 1 is never reached by a running confidence: the edge stops after its first window.
    server = post_daemon(arbiter="early", scorer="logprob", early_threshold="1", early_window="4")
    try:
        with RouterClient(server.address) as client:
            result = client.generate(prompt="Write a long story about a dragon.", mode="post", max_tokens=64)
    finally:
        server.stop()
    edge = next(run for run in result.runs if run.backend == BackendKind.EDGE)
    assert result.served_by == BackendKind.CLOUD and result.decision.arbiter == "early"
    assert "early escalation" in result.decision.reason
    assert edge.finish_reason == "cancelled" and 4 <= edge.completion_tokens < 64

"""The request guards on their success paths, over real backends: admission, budgets, the backend queue, the
cloud circuit breaker and the privacy policy through the Router, with llama.cpp and the 135M model as the edge
and a real OpenAI-compatible HTTP server (the fault-injection server, answering a canned text when no fault is
pending) reached by the real `openai` client as the cloud. Each guard's accounting, with the faults it exists
for, is unit-tested beside its module (tests/unit/test_admission.py, test_budget.py, test_backend_queue.py,
test_breaker.py, test_privacy_egress.py)."""
from __future__ import annotations

import contextlib
import gc
import json
import logging
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

from cloud.fault_injection_server import Fault, FaultInjectionOpenAIServer
from cloud.openai_backend import OpenAIBackend
from edge.llama_backend import LlamaBackend
from router.assembly.cloud_guards import guard_cloud
from router.core.admission import Admission
from router.core.backend_queue import QueuedBackend
from router.core.breaker import CloudBreakerOpenError
from router.core.budget import Budget
from router.core.engine import Backends, Router
from router.core.judge import CloudJudge
from router.core.modes import builtin_modes
from router.domain.config import BreakerSettings, BudgetSettings, PrivacySettings, ServerSettings, Settings
from router.domain.errors import BackendUnavailableError, LimitExceededError
from router.domain.pricing import CostModel
from router.domain.types import BackendKind, Caller, ChatMessage, GenerateRequest, GenerateResult, Mode, TextDelta

pytestmark = pytest.mark.integration

COSTS = CostModel(0.15, 0.6, 1e8, 3e-10, 0.15)
MESSAGES = [{"role": "user", "content": "hi there"}]
EMAIL = "ana@example.com"


class ManualClock:
    def __init__(self, now: Any = 1000.0) -> None:
        self.now = now

    def __call__(self) -> Any:
        return self.now


class RecordingSink:
    def __init__(self) -> None:
        self.results: list[GenerateResult] = []

    def record(self, request: GenerateRequest, result: GenerateResult) -> None:
        self.results.append(result)


@pytest.fixture
def cloud_server() -> Iterator[FaultInjectionOpenAIServer]:
    with FaultInjectionOpenAIServer(canned_answer="from the cloud", record=True) as server:
        yield server


def cloud_for(server: FaultInjectionOpenAIServer) -> OpenAIBackend:
    return OpenAIBackend(base_url=server.base_url, api_key="sk-test-guards", model="guards-cloud", max_retries=0)


def request(user: str = "alice", mode: Mode = Mode.EDGE_ONLY, text: str = "hi there") -> GenerateRequest:
    return GenerateRequest(messages=(ChatMessage("user", text),), mode=mode, max_tokens=3, temperature=0.0,
                           caller=Caller(user=user))


# -- admission -------------------------------------------------------------------------------------------

async def test_the_router_holds_an_admission_slot_per_request_until_it_ends(smollm_edge: LlamaBackend) -> None:
    gate = Admission(max_concurrent=1, per_principal_concurrency=100, rate_per_s=1000.0, burst=1000,
                     clock=ManualClock())
    sink = RecordingSink()
    router = Router(settings=ServerSettings(), costs=COSTS, modes=builtin_modes(), backends=Backends(edge=smollm_edge),
                    sinks=(sink,), admission=gate, ready=True)
    async with contextlib.aclosing(router.stream(request("alice"))) as running:
        assert isinstance(await running.__anext__(), TextDelta)  # under way: its slot is taken
        assert gate.running_for("alice") == 1
        with pytest.raises(LimitExceededError, match="max_concurrent_requests"):
            await router.generate(request("bob"))
        assert gate.running_for("bob") == 0
    # Closed mid-answer (a cancel): its slot is back, and the refused request spent and recorded nothing.
    assert gate.running == 0
    assert [r.finish_reason for r in sink.results] == ["cancelled"]
    answered = await router.generate(request("bob"))
    assert answered.text and answered.served_by == BackendKind.EDGE and gate.running == 0


# -- budgets ---------------------------------------------------------------------------------------------

async def test_a_spent_budget_degrades_cloud_modes_to_the_edge_and_the_cloud_hears_nothing(
        smollm_edge: LlamaBackend, cloud_server: FaultInjectionOpenAIServer) -> None:
    gate = Budget(BudgetSettings(principal_daily_usd=0.0), clock=ManualClock(datetime(2025, 1, 10, tzinfo=timezone.utc)))
    cloud = cloud_for(cloud_server)
    router = Router(settings=ServerSettings(), costs=COSTS, modes=builtin_modes(),
                    backends=Backends(edge=smollm_edge, cloud=cloud), sinks=(gate,), cloud_gates=(gate,), ready=True)
    try:
        degraded = await router.generate(request("alice", Mode.CLOUD_ONLY))
        edge_only = await router.generate(request("alice", Mode.EDGE_ONLY))
    finally:
        await cloud.close()
    assert degraded.served_by == BackendKind.EDGE and degraded.decision.degraded and degraded.text
    assert "budget: principal alice's daily cloud budget" in degraded.decision.reason
    assert degraded.cloud_cost_usd == 0.0 and cloud_server.requests_seen == 0
    assert edge_only.served_by == BackendKind.EDGE and not edge_only.decision.degraded


# -- the backend queue -----------------------------------------------------------------------------------

def queued(inner: Any, *, capacity: int = 1, max_waiting: int = 1) -> QueuedBackend:
    return QueuedBackend(inner, capacity=capacity, max_waiting=max_waiting, label="edge")


def open_stream(backend: QueuedBackend):
    return backend.stream(MESSAGES, max_tokens=4, temperature=0.0)


async def read_all(stream) -> list[str]:
    return [delta.text async for delta in stream]


async def test_a_queued_call_beyond_running_and_waiting_is_refused_and_an_ended_one_makes_room(
        smollm_edge: LlamaBackend) -> None:
    backend = queued(smollm_edge, capacity=1, max_waiting=1)
    first, second = open_stream(backend), open_stream(backend)
    with pytest.raises(LimitExceededError, match=r"edge backend is busy: 2 calls .*max_queued_per_backend = 1"):
        open_stream(backend)
    assert backend.in_flight == 2
    assert await read_all(first)  # its natural end gives its place back
    assert backend.in_flight == 1 and first.completion is not None
    assert await read_all(first) == []  # read past its end: nothing, and no place given back twice
    third = open_stream(backend)
    await second.aclose()
    await second.aclose()  # closed twice: its place comes back once
    assert backend.in_flight == 1 and second.completion.finish_reason == "cancelled"
    await third.aclose()
    assert backend.in_flight == 0


async def test_a_queued_stream_dropped_unclosed_gives_its_place_back_when_collected(smollm_edge: LlamaBackend) -> None:
    backend = queued(smollm_edge)
    stream = open_stream(backend)
    assert backend.in_flight == 1
    del stream
    gc.collect()
    assert backend.in_flight == 0


async def test_through_the_router_a_full_queue_is_resource_exhausted_and_records_nothing(
        smollm_edge: LlamaBackend) -> None:
    backend = queued(smollm_edge, capacity=1, max_waiting=0)
    sink = RecordingSink()
    router = Router(settings=ServerSettings(), costs=COSTS, modes=builtin_modes(), backends=Backends(edge=backend),
                    sinks=(sink,), ready=True)
    async with contextlib.aclosing(router.stream(request())) as running:
        assert isinstance(await running.__anext__(), TextDelta)
        with pytest.raises(LimitExceededError, match="edge backend is busy"):
            await router.generate(request())
        assert sink.results == []
    assert backend.in_flight == 0 and [r.finish_reason for r in sink.results] == ["cancelled"]


# -- the cloud circuit breaker ---------------------------------------------------------------------------

def router_with_breaker(edge: LlamaBackend, cloud: OpenAIBackend, clock: ManualClock, when_open: str) -> Router:
    settings = Settings(breaker=BreakerSettings(failures_to_open=2, cooldown_s=30.0, when_open=when_open))
    guarded = guard_cloud(cloud, settings, logging.getLogger("test.breaker"), clock=clock)
    return Router(settings=ServerSettings(), costs=COSTS, modes=builtin_modes(),
                  backends=Backends(edge=edge, cloud=guarded.backend), cloud_gates=guarded.gates, ready=True)


async def open_the_breaker(router: Router, server: FaultInjectionOpenAIServer) -> None:
    server.inject(Fault.STATUS_503, times=2)
    for _ in range(2):
        with pytest.raises(BackendUnavailableError, match="the cloud is unavailable"):
            await router.generate(request(mode=Mode.CLOUD_ONLY))


async def test_while_the_breaker_is_open_the_edge_answers_degraded_then_the_trial_closes_it(
        smollm_edge: LlamaBackend, cloud_server: FaultInjectionOpenAIServer) -> None:
    clock, cloud = ManualClock(), cloud_for(cloud_server)
    router = router_with_breaker(smollm_edge, cloud, clock, "degrade")
    try:
        await open_the_breaker(router, cloud_server)
        result = await router.generate(request(mode=Mode.CLOUD_ONLY))
        assert result.served_by == BackendKind.EDGE and result.decision.degraded and result.text
        assert result.decision.mode == Mode.CLOUD_ONLY
        assert result.decision.reason.startswith("degraded: cloud circuit breaker open: 2 consecutive cloud failures")
        assert cloud_server.requests_seen == 2  # the open breaker asked the cloud nothing
        clock.now += 30.0
        result = await router.generate(request(mode=Mode.CLOUD_ONLY))
    finally:
        await cloud.close()
    assert result.served_by == BackendKind.CLOUD and result.text == "from the cloud" and not result.decision.degraded


async def test_while_the_breaker_is_open_fail_refuses_cloud_modes_and_the_edge_still_answers(
        smollm_edge: LlamaBackend, cloud_server: FaultInjectionOpenAIServer) -> None:
    cloud = cloud_for(cloud_server)
    router = router_with_breaker(smollm_edge, cloud, ManualClock(), "fail")
    try:
        await open_the_breaker(router, cloud_server)
        with pytest.raises(CloudBreakerOpenError, match="the cloud circuit breaker is open") as refused:
            await router.generate(request(mode=Mode.CLOUD_ONLY))
        assert refused.value.retry_after_s == pytest.approx(30.0)
        edge_only = await router.generate(request(mode=Mode.EDGE_ONLY))
    finally:
        await cloud.close()
    assert edge_only.served_by == BackendKind.EDGE and edge_only.text  # only cloud-capable modes are gated
    assert cloud_server.requests_seen == 2


# -- privacy -------------------------------------------------------------------------------------------------

def sent_texts(server: FaultInjectionOpenAIServer) -> list[str]:
    return [" ".join(m["content"] for m in json.loads(r.body)["messages"]) for r in server.received]


async def test_edge_only_answers_personal_data_from_the_edge_marked_degraded_and_the_cloud_hears_nothing(
        smollm_edge: LlamaBackend, cloud_server: FaultInjectionOpenAIServer) -> None:
    cloud = cloud_for(cloud_server)
    guarded = guard_cloud(cloud, Settings(privacy=PrivacySettings(cloud_egress="edge_only")),
                          logging.getLogger("test.privacy"))
    router = Router(settings=ServerSettings(), costs=COSTS, modes=builtin_modes(),
                    backends=Backends(edge=smollm_edge, cloud=guarded.backend), cloud_gates=guarded.gates, ready=True)
    try:
        for mode in (Mode.CLOUD_ONLY, Mode.PRE_ARBITRATION, Mode.POST_ARBITRATION, Mode.EDGE_AGENT_CLOUD_INFO):
            result = await router.generate(request(mode=mode, text="My IBAN is GB82 WEST 1234 5698 7654 32."))
            assert result.served_by == BackendKind.EDGE and result.decision.degraded and result.decision.mode == mode
            assert "privacy: the request holds personal data (IBAN)" in result.decision.reason
            assert "GB82" not in result.decision.reason
        assert cloud_server.requests_seen == 0
        clean = await router.generate(request(mode=Mode.CLOUD_ONLY, text="hi"))
    finally:
        await cloud.close()
    assert clean.served_by == BackendKind.CLOUD and clean.text == "from the cloud"


async def test_the_judge_cannot_send_personal_data_under_edge_only(
        smollm_edge: LlamaBackend, cloud_server: FaultInjectionOpenAIServer) -> None:
    cloud = cloud_for(cloud_server)
    guarded = guard_cloud(cloud, Settings(privacy=PrivacySettings(cloud_egress="edge_only")),
                          logging.getLogger("test.privacy"))
    signals: list[object] = []

    class Signals:
        def add_signal(self, request_id: str, signal: object) -> None:
            signals.append(signal)

    judge = CloudJudge(cloud=guarded.backend, costs=COSTS, signals=Signals(), sample_rate=1.0)
    router = Router(settings=ServerSettings(), costs=COSTS, modes=builtin_modes(),
                    backends=Backends(edge=smollm_edge, cloud=guarded.backend), cloud_gates=guarded.gates,
                    sinks=(judge,), ready=True)
    try:
        await router.generate(request(text=f"Is {EMAIL} mine?"))
        await router.generate(request(text="Capital of Peru?"))
        await judge.aclose(timeout_s=60)
    finally:
        await cloud.close()
    texts = sent_texts(cloud_server)
    assert len(texts) == 1 and EMAIL not in texts[0] and "Capital of Peru?" in texts[0]  # only the clean one graded
    assert len(signals) == 1

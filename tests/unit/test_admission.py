"""Admission (router/core/admission.py): concurrency caps and a per-principal token bucket, refused at once;
and the Router taking a slot per request, given back however the request ends."""
from __future__ import annotations


import pytest

from router.core.admission import Admission
from router.core.engine import Backends, Router
from router.core.fault_injection import FixedLatencyFaultInjectionBackend
from router.core.modes import builtin_modes
from router.domain.config import LimitsSettings, ServerSettings
from router.domain.errors import BackendUnavailableError, InvalidRequestError, LimitExceededError
from router.domain.pricing import CostModel
from router.domain.types import Caller, ChatMessage, GenerateRequest, GenerateResult, Mode
from router.assembly.limits import build_admission

COSTS = CostModel(0.15, 0.6, 1e8, 3e-10, 0.15)


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def admission(clock: ManualClock, *, max_concurrent: int = 100, per_principal: int = 100, rate: float = 1000.0,
              burst: int = 1000) -> Admission:
    return Admission(max_concurrent=max_concurrent, per_principal_concurrency=per_principal, rate_per_s=rate,
                     burst=burst, clock=clock)


def test_the_global_cap_refuses_the_next_call_at_once_and_a_release_makes_room() -> None:
    gate = admission(ManualClock(), max_concurrent=2)
    first, _second = gate.acquire("alice"), gate.acquire("bob")
    with pytest.raises(LimitExceededError, match=r"limits\.max_concurrent_requests = 2") as refused:
        gate.acquire("carol")
    assert refused.value.retry_after_s is None and gate.running == 2
    first.release()
    gate.acquire("carol")
    assert gate.running == 2


def test_one_principal_is_capped_while_others_still_run() -> None:
    gate = admission(ManualClock(), per_principal=1)
    gate.acquire("alice")
    with pytest.raises(LimitExceededError, match=r"principal 'alice' is running 1 .*per_principal_concurrency = 1"):
        gate.acquire("alice")
    gate.acquire("bob")
    assert gate.running_for("alice") == 1 and gate.running_for("bob") == 1


def test_the_rate_is_a_token_bucket_with_retry_after() -> None:
    clock = ManualClock()
    gate = admission(clock, rate=2.0, burst=3)
    for _ in range(3):  # the burst, at once
        gate.acquire("alice").release()
    with pytest.raises(LimitExceededError, match=r"per_principal_rate_per_s.*per_principal_burst") as refused:
        gate.acquire("alice")
    assert refused.value.retry_after_s == pytest.approx(0.5)
    gate.acquire("bob").release()  # another principal has its own bucket
    clock.now += 0.25
    with pytest.raises(LimitExceededError) as again:
        gate.acquire("alice")
    assert again.value.retry_after_s == pytest.approx(0.25)
    clock.now += 0.25
    gate.acquire("alice").release()
    with pytest.raises(LimitExceededError):
        gate.acquire("alice")


def test_a_refused_call_takes_neither_a_slot_nor_a_token() -> None:
    clock = ManualClock()
    gate = admission(clock, per_principal=1, rate=1.0, burst=2)
    running = gate.acquire("alice")  # one token left
    with pytest.raises(LimitExceededError, match="per_principal_concurrency"):
        gate.acquire("alice")
    running.release()
    gate.acquire("alice").release()  # the last token: the refusal above took none
    with pytest.raises(LimitExceededError, match="rate"):
        gate.acquire("alice")
    assert gate.running == 0


def test_a_slot_is_given_back_once_however_often_it_is_released() -> None:
    gate = admission(ManualClock(), max_concurrent=2)
    slot = gate.acquire("alice")
    gate.acquire("alice")
    slot.release()
    slot.release()
    assert gate.running == 1 and gate.running_for("alice") == 1


def test_idle_principals_leave_no_state_behind() -> None:
    clock = ManualClock()
    gate = admission(clock, rate=10.0, burst=5)
    for number in range(500):
        gate.acquire(f"user-{number}").release()
    assert gate.tracked_principals == 500  # their buckets are not full again yet
    held = gate.acquire("long-runner")
    clock.now += 5 / 10.0  # burst / rate: every bucket drawn from before is full again
    gate.acquire("late").release()
    assert gate.tracked_principals == 2  # "late", and "long-runner", whose call still runs
    held.release()
    clock.now += 0.5
    gate.acquire("late").release()
    assert gate.tracked_principals == 1


def test_settings_build_it() -> None:
    gate = build_admission(LimitsSettings(max_concurrent_requests=3, per_principal_concurrency=2,
                                          per_principal_rate_per_s=4.0, per_principal_burst=5))
    assert (gate.max_concurrent, gate.per_principal_concurrency, gate.rate_per_s, gate.burst) == (3, 2, 4.0, 5)


# -- through the Router ---------------------------------------------------------------------------

class RecordingSink:
    def __init__(self) -> None:
        self.results: list[GenerateResult] = []

    def record(self, request: GenerateRequest, result: GenerateResult) -> None:
        self.results.append(result)


def request(user: str, mode: Mode = Mode.EDGE_ONLY) -> GenerateRequest:
    return GenerateRequest(messages=(ChatMessage("user", "hi there"),), mode=mode, max_tokens=3,
                           caller=Caller(user=user))


def failing_router(gate: Admission, sink: RecordingSink) -> Router:
    """The edge fails every call (fault injection); the success path is in
    tests/integration/test_guards_over_real_backends.py."""
    edge = FixedLatencyFaultInjectionBackend(latency_s=0, fail=True)
    return Router(settings=ServerSettings(), costs=COSTS, modes=builtin_modes(), backends=Backends(edge=edge),
                  sinks=(sink,), admission=gate, ready=True)


async def test_a_failed_or_invalid_request_gives_its_slot_back() -> None:
    gate = admission(ManualClock(), max_concurrent=1)
    router = failing_router(gate, RecordingSink())
    with pytest.raises(BackendUnavailableError):
        await router.generate(request("alice"))
    assert gate.running == 0
    with pytest.raises(InvalidRequestError):
        await router.generate(GenerateRequest(messages=(), mode=Mode.EDGE_ONLY))
    assert gate.running == 0

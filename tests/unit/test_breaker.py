"""The cloud's circuit breaker: its state machine on a clock the test moves, the backend that asks it and
reports each call's end, and the gate, through the Router."""
from __future__ import annotations


import pytest

from cloud.errors import CloudRejectedError, CloudUnavailableError
from cloud.fault_injection_server import Fault, FaultInjectionOpenAIServer
from cloud.openai_backend import OpenAIBackend
from router.core.breaker import (Admission, BreakerGate, BreakerGuardedBackend, BreakerState, CallOutcome,
                                 CloudBreaker, CloudBreakerOpenError, outcome_of)
from router.core.engine import Router
from router.domain.config import BreakerSettings, Settings
from router.domain.errors import BackendUnavailableError, InvalidRequestError, LimitExceededError, RateLimitedError
from router.domain.pricing import CostModel
from router.domain.types import ChatMessage, GenerateRequest, Mode
from tests.scripted_cloud_fault_injection import ScriptedCloudFaultInjection

COSTS = CostModel(0.15, 0.6, 1e8, 3e-10, 0.15)
MESSAGES = [{"role": "user", "content": "hi"}]


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: ManualClock, failures: int = 3, cooldown_s: float = 30.0, when_open: str = "degrade") -> CloudBreaker:
    return CloudBreaker(BreakerSettings(failures_to_open=failures, cooldown_s=cooldown_s, when_open=when_open),
                        clock=clock)


def fail(subject: CloudBreaker, times: int = 1, error: str = "the cloud is unavailable: HTTP 503") -> None:
    for _ in range(times):
        subject.record(subject.admit(), CallOutcome.FAILURE, error)


def test_it_opens_after_n_consecutive_failures_and_a_success_resets_the_count() -> None:
    clock = ManualClock()
    subject = breaker(clock)
    fail(subject, 2)
    subject.record(subject.admit(), CallOutcome.SUCCESS)
    fail(subject, 2)
    assert subject.snapshot().state is BreakerState.CLOSED and subject.snapshot().consecutive_failures == 2
    fail(subject)
    snap = subject.snapshot()
    assert snap.state is BreakerState.OPEN and snap.consecutive_failures == 3 and snap.times_opened == 1
    assert snap.opened_at == clock.now and snap.retry_in_s == 30.0
    assert snap.last_error == "the cloud is unavailable: HTTP 503"


def test_while_open_calls_are_refused_with_the_time_until_the_trial() -> None:
    clock = ManualClock()
    subject = breaker(clock)
    fail(subject, 3)
    clock.now += 12.5
    with pytest.raises(CloudBreakerOpenError, match=r"open: 3 consecutive cloud failures .* in 17\.5 s") as refused:
        subject.admit()
    assert isinstance(refused.value, BackendUnavailableError) and refused.value.retry_after_s == pytest.approx(17.5)
    assert subject.snapshot().retry_in_s == pytest.approx(17.5)


def test_after_the_cooldown_exactly_one_trial_goes_through_and_its_success_closes_it() -> None:
    clock = ManualClock()
    subject = breaker(clock)
    fail(subject, 3)
    clock.now += 30.0
    assert subject.snapshot().state is BreakerState.HALF_OPEN and not subject.snapshot().trial_in_flight
    trial = subject.admit()
    assert trial.trial and subject.snapshot().trial_in_flight
    with pytest.raises(CloudBreakerOpenError, match="a trial call is in flight"):
        subject.admit()
    subject.record(trial, CallOutcome.SUCCESS)
    snap = subject.snapshot()
    assert snap.state is BreakerState.CLOSED and snap.consecutive_failures == 0 and snap.times_closed == 1
    assert not subject.admit().trial


def test_a_failed_trial_opens_it_again_for_a_full_cooldown() -> None:
    clock = ManualClock()
    subject = breaker(clock)
    fail(subject, 3)
    clock.now += 31.0
    fail(subject)  # the trial
    snap = subject.snapshot()
    assert snap.state is BreakerState.OPEN and snap.times_opened == 2 and snap.opened_at == clock.now
    assert snap.retry_in_s == 30.0


def test_a_cancelled_trial_frees_the_slot_for_the_next_call() -> None:
    clock = ManualClock()
    subject = breaker(clock)
    fail(subject, 3)
    clock.now += 30.0
    subject.record(subject.admit(), CallOutcome.NEUTRAL)
    assert subject.snapshot().state is BreakerState.HALF_OPEN
    assert subject.admit().trial


def test_a_trial_that_never_reports_does_not_hold_the_breaker_half_open_forever() -> None:
    clock = ManualClock()
    subject = breaker(clock)
    fail(subject, 3)
    clock.now += 30.0
    subject.admit()  # its stream is dropped without a word
    clock.now += 30.0
    assert subject.admit().trial


def test_outcomes_of_calls_let_through_before_it_opened_are_not_counted() -> None:
    clock = ManualClock()
    subject = breaker(clock)
    earlier = [subject.admit() for _ in range(2)]
    fail(subject, 3)
    subject.record(earlier[0], CallOutcome.SUCCESS)  # the cloud as it was: it does not close the breaker
    assert subject.snapshot().state is BreakerState.OPEN
    clock.now += 30.0
    subject.record(earlier[1], CallOutcome.FAILURE, "late")
    assert subject.snapshot().state is BreakerState.HALF_OPEN and subject.snapshot().last_error != "late"


def test_neutral_outcomes_change_nothing_while_closed() -> None:
    subject = breaker(ManualClock())
    fail(subject, 2)
    subject.record(subject.admit(), CallOutcome.NEUTRAL)
    assert subject.snapshot().consecutive_failures == 2


@pytest.mark.parametrize(("error", "outcome"), [
    (CloudUnavailableError("HTTP 503"), CallOutcome.FAILURE),
    (RateLimitedError("429"), CallOutcome.FAILURE),
    (CloudRejectedError("bad key", status=401), CallOutcome.FAILURE),
    (CloudRejectedError("too long", status=400), CallOutcome.SUCCESS),
    (InvalidRequestError("too long"), CallOutcome.SUCCESS),
    (ValueError("a bug, not the cloud"), CallOutcome.NEUTRAL),
    (LimitExceededError("the daemon's own queue is full"), CallOutcome.NEUTRAL),
])
def test_what_an_error_says_about_the_cloud(error: BaseException, outcome: CallOutcome) -> None:
    assert outcome_of(error) is outcome


# -- the guarded backend --------------------------------------------------------------------------------

async def drain(stream) -> list[str]:
    try:
        return [delta.text async for delta in stream]
    finally:
        await stream.aclose()


async def test_the_guarded_backend_reports_each_end_and_refuses_while_open() -> None:
    clock = ManualClock()
    subject = breaker(clock, failures=2)
    failing = BreakerGuardedBackend(ScriptedCloudFaultInjection(error=CloudUnavailableError("HTTP 503")), subject)
    for _ in range(2):
        with pytest.raises(CloudUnavailableError):
            await drain(failing.stream(MESSAGES, max_tokens=4, temperature=0.0))
    assert subject.snapshot().state is BreakerState.OPEN
    cloud = ScriptedCloudFaultInjection(["fine"])
    refused = BreakerGuardedBackend(cloud, subject).stream(MESSAGES, max_tokens=4, temperature=0.0)
    with pytest.raises(CloudBreakerOpenError):
        await drain(refused)
    assert cloud.started_calls == 0  # nothing was sent
    done = refused.completion
    assert done is not None and (done.finish_reason, done.prompt_tokens, done.completion_tokens) == ("error", 0, 0)
    clock.now += 30.0
    assert await drain(BreakerGuardedBackend(cloud, subject).stream(MESSAGES, max_tokens=4, temperature=0.0)) == ["fine"]
    assert subject.snapshot().state is BreakerState.CLOSED


async def test_a_client_cancel_is_not_a_failure() -> None:
    subject = breaker(ManualClock(), failures=1)
    guarded = BreakerGuardedBackend(ScriptedCloudFaultInjection(["a", "b", "c"]), subject)
    stream = guarded.stream(MESSAGES, max_tokens=4, temperature=0.0)
    assert (await stream.__anext__()).text == "a"
    await stream.aclose()
    assert stream.completion.finish_reason == "cancelled"
    snap = subject.snapshot()
    assert snap.state is BreakerState.CLOSED and snap.consecutive_failures == 0


async def test_a_failure_mid_stream_counts_and_keeps_what_was_spent() -> None:
    subject = breaker(ManualClock(), failures=1)
    guarded = BreakerGuardedBackend(ScriptedCloudFaultInjection(["a", "b"], error=CloudUnavailableError("cut"),
                                                                error_after=1), subject)
    stream = guarded.stream(MESSAGES, max_tokens=4, temperature=0.0)
    with pytest.raises(CloudUnavailableError):
        await drain(stream)
    assert stream.completion.finish_reason == "error" and stream.completion.completion_tokens == 1
    assert subject.snapshot().state is BreakerState.OPEN


async def test_real_http_faults_open_the_breaker() -> None:
    with FaultInjectionOpenAIServer() as server:
        server.inject(Fault.STATUS_503, times=2)
        cloud = OpenAIBackend(base_url=server.base_url, api_key="sk-test-breaker", model="fault-model", max_retries=0)
        subject = breaker(ManualClock(), failures=2)
        guarded = BreakerGuardedBackend(cloud, subject)
        for _ in range(2):
            with pytest.raises(CloudUnavailableError):
                await drain(guarded.stream(MESSAGES, max_tokens=4, temperature=0.0))
        with pytest.raises(CloudBreakerOpenError):
            await drain(guarded.stream(MESSAGES, max_tokens=4, temperature=0.0))
        assert server.requests_seen == 2
        assert "HTTP 503" in subject.snapshot().last_error
        await cloud.close()


# -- the gate, through the Router ------------------------------------------------------------------------

def cloud_request() -> GenerateRequest:
    return GenerateRequest(messages=(ChatMessage("user", "hi"),), mode=Mode.CLOUD_ONLY, max_tokens=3)


def test_the_gate_lets_requests_through_while_closed_and_half_open() -> None:
    clock = ManualClock()
    subject = breaker(clock)
    gate = BreakerGate(subject, "fail")
    assert gate.keep_off_cloud(cloud_request()) is None
    fail(subject, 3)
    clock.now += 30.0
    assert gate.keep_off_cloud(cloud_request()) is None  # half-open: this request's call may be the trial
    trial = subject.admit()
    with pytest.raises(CloudBreakerOpenError):
        gate.keep_off_cloud(cloud_request())
    subject.record(trial, CallOutcome.SUCCESS)
    assert gate.keep_off_cloud(cloud_request()) is None


def test_admissions_are_tied_to_their_state() -> None:
    subject = breaker(ManualClock())
    assert subject.admit() == Admission(generation=0, trial=False)

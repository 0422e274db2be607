"""privacy.cloud_egress at the cloud backend: placeholders out and values back (at every chunk boundary),
the edge_only gate and refusal, and the guarded cloud as the daemon assembles it."""
from __future__ import annotations

import logging

import pytest

from router.assembly.cloud_guards import guard_cloud
from router.core.breaker import BreakerGate
from router.core.engine import Backends, Router
from router.core.modes import builtin_modes
from router.core.privacy.edge_only import CloudEgressRefusedError, EdgeOnlyGate, EgressRefusingBackend
from router.core.privacy.placeholders import Placeholders, StreamRestorer
from router.core.privacy.redacting import RedactingCloudBackend
from router.domain.config import PrivacySettings, ServerSettings, Settings
from router.domain.errors import PermissionDeniedError
from router.domain.pricing import CostModel
from router.domain.types import BackendKind, ChatMessage, GenerateRequest, Mode
from tests.scripted_cloud_fault_injection import ScriptedCloudFaultInjection
from tests.unit.test_privacy_detect import load_canaries

COSTS = CostModel(0.15, 0.6, 1e8, 3e-10, 0.15)
EMAIL, PHONE = "ana@example.com", "+1 415-555-0132"


# -- placeholders -----------------------------------------------------------------------------------------

def test_the_same_value_gets_the_same_placeholder_and_the_answer_gets_the_values_back() -> None:
    placeholders = Placeholders([])
    sent = placeholders.redact(f"Mail {EMAIL}, or ANA@example.com, and call {PHONE}; bob@example.com is away.")
    assert sent == "Mail [EMAIL_1], or [EMAIL_1], and call [PHONE_1]; [EMAIL_2] is away."
    assert placeholders.restore("Wrote to [EMAIL_1] and [EMAIL_2]; [PHONE_1] busy; [EMAIL_9] unknown.") == (
        f"Wrote to {EMAIL} and bob@example.com; {PHONE} busy; [EMAIL_9] unknown.")


def test_a_placeholder_the_user_typed_is_never_given_out() -> None:
    typed = f"Template: Dear [EMAIL_1], reply to {EMAIL}."
    placeholders = Placeholders([typed])
    assert placeholders.redact(typed) == "Template: Dear [EMAIL_1], reply to [EMAIL_2]."
    assert placeholders.restore("[EMAIL_1] / [EMAIL_2]") == f"[EMAIL_1] / {EMAIL}"


def test_every_canary_round_trips() -> None:
    for canary in load_canaries():
        placeholders = Placeholders([canary["prompt"]])
        sent = placeholders.redact(canary["prompt"])
        assert all(planted["value"] not in sent for planted in canary["planted"]), canary["id"]
        assert placeholders.restore(sent) == canary["prompt"], canary["id"]


ANSWER = f"Sure: [EMAIL_1] is Ana's; call [PHONE_1] [not a placeholder] or write to [EMAIL_1]."


@pytest.mark.parametrize("cut", range(1, len(ANSWER)))
def test_a_placeholder_split_at_any_chunk_boundary_is_restored_whole(cut: int) -> None:
    placeholders = Placeholders([])
    placeholders.redact(f"{EMAIL} {PHONE}")
    restorer = StreamRestorer(placeholders)
    released = [restorer.feed(ANSWER[:cut]), restorer.feed(ANSWER[cut:]), restorer.flush()]
    assert "".join(released) == placeholders.restore(ANSWER)
    assert not any("[EMAIL_" in part or "[PHONE_" in part for part in released)


def test_one_character_at_a_time_is_restored_whole() -> None:
    placeholders = Placeholders([])
    placeholders.redact(f"{EMAIL} {PHONE}")
    restorer = StreamRestorer(placeholders)
    released = "".join(restorer.feed(char) for char in ANSWER) + restorer.flush()
    assert released == placeholders.restore(ANSWER)


# -- redact: the backend --------------------------------------------------------------------------------

async def collect(stream) -> list:
    try:
        return [delta async for delta in stream]
    finally:
        await stream.aclose()


async def test_redact_sends_placeholders_and_streams_the_values_back() -> None:
    cloud = ScriptedCloudFaultInjection(["I will write to [EMA", "IL_1] and call [PHO", "NE_1", "]."])
    backend = RedactingCloudBackend(cloud)
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": f"Write to {EMAIL} and call {PHONE}."}]
    stream = backend.stream(messages, max_tokens=16, temperature=0.0, stop=[f"Bye {EMAIL}"])
    deltas = await collect(stream)
    [call] = cloud.calls
    assert call.messages == ({"role": "system", "content": "Be brief."},
                             {"role": "user", "content": "Write to [EMAIL_1] and call [PHONE_1]."})
    assert call.stop == ("Bye [EMAIL_1]",)
    assert "".join(delta.text for delta in deltas) == f"I will write to {EMAIL} and call {PHONE}."
    assert [delta.text for delta in deltas] == ["I will write to ", f"{EMAIL} and call ", "", f"{PHONE}."]
    assert [delta.logprob for delta in deltas] == [-0.5] * 4  # held-back text still passes its logprob on
    done = stream.completion
    assert done.text == f"I will write to {EMAIL} and call {PHONE}." and done.finish_reason == "stop"
    assert (done.prompt_tokens, done.completion_tokens, done.model) == (10, 4, cloud.name)


async def test_a_placeholder_held_at_the_end_comes_as_a_last_delta() -> None:
    cloud = ScriptedCloudFaultInjection(["Ask [EMAIL_1", "]"])
    stream = RedactingCloudBackend(cloud).stream([{"role": "user", "content": EMAIL}], max_tokens=8, temperature=0.0)
    assert [delta.text for delta in await collect(stream)] == ["Ask ", EMAIL]


async def test_a_call_without_personal_data_goes_through_untouched() -> None:
    cloud = ScriptedCloudFaultInjection(["[EMAIL_1] stays"])
    stream = RedactingCloudBackend(cloud).stream([{"role": "user", "content": "hi"}], max_tokens=8, temperature=0.0)
    assert [delta.text for delta in await collect(stream)] == ["[EMAIL_1] stays"]
    assert cloud.streams == [stream]  # no wrapper at all


async def test_a_cancelled_or_failed_stream_still_has_its_completion_restored() -> None:
    cloud = ScriptedCloudFaultInjection(["to [EMAIL_1]", " and more"])
    stream = RedactingCloudBackend(cloud).stream([{"role": "user", "content": EMAIL}], max_tokens=8, temperature=0.0)
    assert (await stream.__anext__()).text == f"to {EMAIL}"
    await stream.aclose()
    assert stream.completion.text == f"to {EMAIL}" and stream.completion.finish_reason == "cancelled"


async def test_the_router_serves_the_restored_answer_and_the_cloud_saw_placeholders() -> None:
    # The cloud's answer is scripted: it echoes the placeholder, which no real model can be relied on to do.
    cloud = ScriptedCloudFaultInjection(["Noted: [EMAIL_1]."])
    guarded = guard_cloud(cloud, Settings(privacy=PrivacySettings(cloud_egress="redact")),
                          logging.getLogger("test.privacy"))
    router = Router(settings=ServerSettings(), costs=COSTS, modes=builtin_modes(),
                    backends=Backends(cloud=guarded.backend), cloud_gates=guarded.gates, ready=True)
    request = GenerateRequest(messages=(ChatMessage("user", f"My mail is {EMAIL}."),), mode=Mode.CLOUD_ONLY,
                              max_tokens=8)
    result = await router.generate(request)
    assert result.served_by == BackendKind.CLOUD and result.text == f"Noted: {EMAIL}."
    assert result.runs[0].text == f"Noted: {EMAIL}."
    assert EMAIL not in cloud.calls[0].text and "[EMAIL_1]" in cloud.calls[0].text


# -- edge_only ----------------------------------------------------------------------------------------------

def test_the_gate_names_the_kinds_never_the_values() -> None:
    request = GenerateRequest(messages=(ChatMessage("user", f"Mail {EMAIL} or call {PHONE}."),))
    reason = EdgeOnlyGate().keep_off_cloud(request)
    assert reason == ("privacy: the request holds personal data (email, phone); privacy.cloud_egress = edge_only "
                      "keeps it on the device")
    assert EdgeOnlyGate().keep_off_cloud(GenerateRequest(messages=(ChatMessage("user", "Capital of Peru?"),))) is None
    with_stop = GenerateRequest(messages=(ChatMessage("user", "hi"),), stop=(EMAIL,))
    assert EdgeOnlyGate().keep_off_cloud(with_stop) is not None


async def test_the_backend_refuses_a_call_holding_personal_data_and_sends_nothing() -> None:
    cloud = ScriptedCloudFaultInjection(["ok"])
    backend = EgressRefusingBackend(cloud)
    stream = backend.stream([{"role": "user", "content": f"look up {PHONE}"}], max_tokens=8, temperature=0.0)
    with pytest.raises(CloudEgressRefusedError, match=r"holds personal data \(phone\)") as refused:
        await collect(stream)
    assert isinstance(refused.value, PermissionDeniedError) and PHONE not in refused.value.message
    assert cloud.calls == [] and stream.completion.finish_reason == "error" and stream.completion.prompt_tokens == 0
    clean = backend.stream([{"role": "user", "content": "Capital of Peru?"}], max_tokens=8, temperature=0.0)
    assert [delta.text for delta in await collect(clean)] == ["ok"]


# -- the assembly -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("egress", "outer", "gates"), [
    ("allow", "BreakerGuardedBackend", [BreakerGate]),
    ("redact", "RedactingCloudBackend", [BreakerGate]),
    ("edge_only", "EgressRefusingBackend", [EdgeOnlyGate, BreakerGate]),
])
def test_guard_cloud_stacks_the_policy_over_the_breaker(egress: str, outer: str, gates: list) -> None:
    cloud = ScriptedCloudFaultInjection()
    guarded = guard_cloud(cloud, Settings(privacy=PrivacySettings(cloud_egress=egress)), logging.getLogger("t"))
    assert type(guarded.backend).__name__ == outer and guarded.backend.name == cloud.name
    assert [type(gate) for gate in guarded.gates] == gates
    assert guarded.gates[-1].breaker is guarded.breaker

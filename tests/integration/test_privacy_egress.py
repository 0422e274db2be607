"""privacy.cloud_egress through a real daemon: the canary set (tests/fixtures/privacy_canaries.jsonl) sent
through every cloud-capable mode, and the judge, under `redact` and `edge_only`; the cloud is the
fault-injection server recording every request body, in front of the 135M stand-in. Zero planted values
may reach it.

The thresholds make every mode call the cloud: PRE_ARBITRATION's fixed threshold 1 routes every request
there, POST_ARBITRATION's escalates every edge answer, the agent's request is primed to call ask_cloud
(as in test_agent_mode.py), and the judge grades every edge answer. Each check that nothing leaked is
paired with one that the cloud was in fact asked, so that neither can pass by the cloud hearing nothing.

Under `redact` the agent gets a sample of the canaries, two of each kind: its loop takes several seconds
of the 135M edge a request, and the leak it could add (the edge rewriting a value before ask_cloud
sends it) shows on any of them. Under `edge_only` every mode answers from the edge at once, so all go.
"""
from __future__ import annotations

import asyncio
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest

from cloud.fault_injection_server import FaultInjectionOpenAIServer
from cloud.standin import StandinServer
from router.assembly.parts import STANDIN_SERVER_MODULE
from router.client import RouterClient
from router.core.privacy.placeholders import Placeholders
from router.domain.types import BackendKind, GenerateResult, Mode
from tests.conftest import ServerThread, make_settings
from tests.integration.test_agent_mode import primed_for
from tests.unit.test_privacy_detect import load_canaries

pytestmark = pytest.mark.integration

CLOUD_ALIAS = "privacy-cloud-standin"
CANARIES = load_canaries()
CLEAN_PROMPT = "Name a colour."
ANSWER_TOKENS = 6
ECHO_TOKENS = 16  # CLOUD_ONLY's answers: room for the cloud to repeat a placeholder it was sent
CLIENTS = 3
JUDGE_DRAIN_S = 300.0
PLACEHOLDER = re.compile(r"\[(?:EMAIL|PHONE|CARD|IBAN|NATIONAL_ID|API_KEY|ADDRESS)_\d+\]")


def two_of_each_kind() -> list[dict]:
    chosen: list[dict] = []
    for kind in sorted({planted["kind"] for canary in CANARIES for planted in canary["planted"]}):
        holding = [canary for canary in CANARIES if any(planted["kind"] == kind for planted in canary["planted"])]
        chosen.extend(canary for canary in holding[:2] if canary not in chosen)
    return chosen


@pytest.fixture(scope="module")
def recording_cloud(smollm_path: Path) -> Iterator[FaultInjectionOpenAIServer]:
    standin = StandinServer(smollm_path, model_alias=CLOUD_ALIAS, n_ctx=2048, n_threads=1,
                            server_module=STANDIN_SERVER_MODULE)
    asyncio.run(standin.start())
    try:
        with FaultInjectionOpenAIServer(upstream_base_url=standin.base_url, record=True) as server:
            yield server
    finally:
        asyncio.run(standin.stop())


def daemon_for(cloud: FaultInjectionOpenAIServer, egress: str, *, judge: bool) -> ServerThread:
    return ServerThread(make_settings({
        "HYBRID_ROUTER_CLOUD__BASE_URL": cloud.base_url, "HYBRID_ROUTER_CLOUD__API_KEY": "sk-test-privacy",
        "HYBRID_ROUTER_CLOUD__MODEL": CLOUD_ALIAS, "HYBRID_ROUTER_CLOUD__MAX_RETRIES": "0",
        "HYBRID_ROUTER_PRIVACY__CLOUD_EGRESS": egress,
        # A slow stand-in must not open the breaker: every canary is to be offered to the cloud.
        "HYBRID_ROUTER_BREAKER__FAILURES_TO_OPEN": "100000",
        "HYBRID_ROUTER_ROUTING__THRESHOLD": "fixed", "HYBRID_ROUTER_ROUTING__FIXED_THRESHOLD": "1",
        "HYBRID_ROUTER_ARBITRATION__SCORER": "logprob", "HYBRID_ROUTER_ARBITRATION__FIXED_THRESHOLD": "1",
        "HYBRID_ROUTER_AGENT__MAX_STEPS": "2", "HYBRID_ROUTER_AGENT__STEP_MAX_TOKENS": "160",
        "HYBRID_ROUTER_AGENT__ASK_CLOUD_MAX_TOKENS": str(ANSWER_TOKENS),
        "HYBRID_ROUTER_LEDGER__JUDGE_SAMPLE_RATE": "1" if judge else "0",
        # The judge's grades queue up behind the one-slot stand-in; none may be refused for it.
        "HYBRID_ROUTER_LIMITS__MAX_QUEUED_PER_BACKEND": "10000",
        "HYBRID_ROUTER_LIMITS__PER_PRINCIPAL_RATE_PER_S": "10000", "HYBRID_ROUTER_LIMITS__PER_PRINCIPAL_BURST": "10000",
    }))


def ask_all(daemon: ServerThread, mode: Mode, canaries: list[dict],
            max_tokens: int = ANSWER_TOKENS) -> list[GenerateResult]:
    with RouterClient(daemon.address) as client:
        def ask(prompt: str) -> GenerateResult:
            fields = ({"messages": primed_for("ask_cloud", prompt)} if mode == Mode.EDGE_AGENT_CLOUD_INFO
                      else {"prompt": prompt})
            return client.generate(mode=mode, max_tokens=max_tokens, temperature=0.0, **fields)
        with ThreadPoolExecutor(CLIENTS) as pool:
            return list(pool.map(ask, [canary["prompt"] for canary in canaries]))


def judged(result: GenerateResult) -> bool:
    """Whether the judge grades this result (router/core/judge.py's rule, at sample rate 1)."""
    edge = result.run_for(BackendKind.EDGE)
    return (result.answered and edge is not None and bool(edge.text.strip())
            and edge.finish_reason not in ("cancelled", "error"))


def drain_the_judge(daemon: ServerThread) -> None:
    judge = daemon.server.daemon.judge
    assert judge is not None
    daemon.call(judge.aclose(JUDGE_DRAIN_S), timeout=JUDGE_DRAIN_S + 30)


def received_since(cloud: FaultInjectionOpenAIServer, first: int) -> list[str]:
    """Every string of each request body the cloud received (the messages, the stop strings), decoded."""
    def strings(value: object) -> Iterator[str]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for item in value.values():
                yield from strings(item)
        elif isinstance(value, list):
            for item in value:
                yield from strings(item)
    return ["\n".join(strings(json.loads(request.body))) for request in cloud.received[first:]]


def cloud_answers(cloud: FaultInjectionOpenAIServer, first: int, count: int) -> dict[str, str]:
    """The last message sent -> the text the cloud streamed back, for `count` requests from `first`."""
    answers: dict[str, str] = {}
    for request in cloud.received[first:first + count]:
        pieces = []
        for line in request.relayed.decode().splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                choices = json.loads(line[len("data: "):]).get("choices") or [{}]
                pieces.append(choices[0].get("delta", {}).get("content") or "")
        answers[json.loads(request.body)["messages"][-1]["content"]] = "".join(pieces)
    return answers


def spellings(value: str) -> set[str]:
    """The value as planted, and as a model copying it might rewrite it: without separators, in lower case."""
    compact = re.sub(r"[\s.()-]", "", value)
    return {value, value.lower(), compact, compact.lower()}


def leaks(received: list[str]) -> list[tuple[str, str]]:
    """(canary id, value) for every planted value found in what the cloud received."""
    everything = "\n".join(received)
    folded = everything.lower()
    return [(canary["id"], planted["value"]) for canary in CANARIES for planted in canary["planted"]
            if any(spelling in everything or spelling in folded for spelling in spellings(planted["value"]))]


def cloud_calls(result: GenerateResult) -> int:
    return sum(run.backend == BackendKind.CLOUD for run in result.runs)


def test_redact_sends_placeholders_from_every_cloud_capable_mode_and_restores_the_answer(
        recording_cloud: FaultInjectionOpenAIServer) -> None:
    first = len(recording_cloud.received)
    daemon = daemon_for(recording_cloud, "redact", judge=False)
    try:
        results = {Mode.CLOUD_ONLY: ask_all(daemon, Mode.CLOUD_ONLY, CANARIES, max_tokens=ECHO_TOKENS)}
        answered_by_the_cloud = cloud_answers(recording_cloud, first, len(CANARIES))
        results.update({mode: ask_all(daemon, mode, CANARIES) for mode in (Mode.PRE_ARBITRATION,
                                                                            Mode.POST_ARBITRATION)})
        agent_results = ask_all(daemon, Mode.EDGE_AGENT_CLOUD_INFO, two_of_each_kind())
    finally:
        daemon.stop()
    received = received_since(recording_cloud, first)
    assert leaks(received) == []
    for mode, mode_results in results.items():  # every canary reached the cloud, with placeholders
        assert all(result.served_by == BackendKind.CLOUD and cloud_calls(result) == 1 for result in mode_results), mode
    asked_by_the_agent = sum(cloud_calls(result) for result in agent_results)
    assert asked_by_the_agent > 0 and len(received) == 3 * len(CANARIES) + asked_by_the_agent
    assert sum(bool(PLACEHOLDER.search(text)) for text in received) >= 3 * len(CANARIES)
    # The client got the cloud's answer with every placeholder it repeated restored to the value.
    restored = 0
    for canary, result in zip(CANARIES, results[Mode.CLOUD_ONLY]):
        placeholders = Placeholders([canary["prompt"]])
        cloud_answer = answered_by_the_cloud[placeholders.redact(canary["prompt"])]
        assert result.text == placeholders.restore(cloud_answer), canary["id"]
        restored += result.text != cloud_answer
    assert restored > 0  # the "Repeat exactly" canaries at least


def test_redact_covers_the_judge(recording_cloud: FaultInjectionOpenAIServer) -> None:
    first = len(recording_cloud.received)
    daemon = daemon_for(recording_cloud, "redact", judge=True)
    try:
        answers = ask_all(daemon, Mode.EDGE_ONLY, CANARIES)
        drain_the_judge(daemon)
    finally:
        daemon.stop()
    received = received_since(recording_cloud, first)
    assert leaks(received) == []
    graded = sum(judged(result) for result in answers)
    assert graded > 0 and len(received) == graded
    assert all("Answer to grade:" in text and PLACEHOLDER.search(text) for text in received)


def test_edge_only_keeps_every_canary_on_the_device(recording_cloud: FaultInjectionOpenAIServer) -> None:
    daemon = daemon_for(recording_cloud, "edge_only", judge=True)
    try:
        first = len(recording_cloud.received)
        results = {mode: ask_all(daemon, mode, CANARIES) for mode in (Mode.CLOUD_ONLY, Mode.PRE_ARBITRATION,
                                                                       Mode.POST_ARBITRATION,
                                                                       Mode.EDGE_AGENT_CLOUD_INFO)}
        answers = ask_all(daemon, Mode.EDGE_ONLY, CANARIES)  # the judge would send these to the cloud
        drain_the_judge(daemon)
        canaries_received = received_since(recording_cloud, first)
        # A request without personal data still reaches the cloud: the daemon is wired to it.
        [clean] = ask_all(daemon, Mode.CLOUD_ONLY, [{"prompt": CLEAN_PROMPT}])
    finally:
        daemon.stop()
    assert canaries_received == []  # not a canary, not the judge's grade of one
    assert sum(judged(result) for result in answers) > 0  # the judge had grades to send, and sent none
    for mode, mode_results in results.items():
        for result in mode_results:
            assert result.served_by == BackendKind.EDGE and result.decision.degraded and result.decision.mode == mode
            assert "privacy: the request holds personal data (" in result.decision.reason
            assert "privacy.cloud_egress = edge_only keeps it on the device" in result.decision.reason
    assert clean.served_by == BackendKind.CLOUD and cloud_calls(clean) == 1
    assert len(received_since(recording_cloud, first)) == 1

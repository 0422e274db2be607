"""DraftDiscarded through the real daemon: the SDKs (sync and async), a client that ignores it, the CLI,
and grpcurl. POST_ARBITRATION's cascade sends it, on the session daemon's real edge and cloud, with a
threshold no edge answer reaches (a geometric-mean token probability of exactly 1 would need every token
certain), so every request escalates."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Iterator, Sequence

import pytest

from edge.catalogue import ModelCache
from router.assembly.modes import build_modes
from router.client import AsyncRouterClient, RouterClient
from router.domain.config import ArbitrationSettings
from router.domain.types import BackendKind, DraftDiscarded, GenerateResult, Mode, TextDelta
from tests.conftest import ServerThread, isolated_env
from tests.integration.test_daemon_faults_and_lifecycle import grpcurl

pytestmark = pytest.mark.integration

MODE = Mode.POST_ARBITRATION
PROMPT = "Count from one to ten."
WHITESPACE = re.compile(r"\s*")
ESCALATING = ArbitrationSettings(arbiter="cascade", scorer="logprob", fixed_threshold=1.0)


@pytest.fixture
def draft_discarding_daemon(daemon: ServerThread, tmp_path) -> Iterator[ServerThread]:
    """The session's daemon with POST_ARBITRATION's cascade escalating every answer, then its own put back."""
    modes = daemon.server.router.modes
    previous = modes[MODE]
    modes[MODE] = build_modes(ESCALATING, model_cache=ModelCache(tmp_path))[MODE]
    try:
        yield daemon
    finally:
        modes[MODE] = previous


def assert_draft_then_the_cloud_answer(events: Sequence[object], result: GenerateResult) -> None:
    """The edge's draft, one DraftDiscarded, the cloud's answer; the result is the cloud's answer."""
    (at,) = [i for i, event in enumerate(events) if isinstance(event, DraftDiscarded)]
    assert (events[at].discarded, events[at].next) == (BackendKind.EDGE, BackendKind.CLOUD)
    assert events[at].reason and events[at].reason == result.decision.reason  # the decision says why
    draft, answer = events[:at], events[at + 1:]
    assert draft and all(isinstance(e, TextDelta) and e.backend == BackendKind.EDGE for e in draft)
    assert answer and all(isinstance(e, TextDelta) and e.backend == BackendKind.CLOUD for e in answer)
    assert result.served_by == BackendKind.CLOUD
    assert result.text == result.run_for(BackendKind.CLOUD).text == "".join(e.text for e in answer)
    assert result.run_for(BackendKind.EDGE).text == "".join(e.text for e in draft)
    # ttft is to the served answer's first text: the cloud's, which came after the edge's whole draft,
    # the event, and the cloud's own time to its first token (not to the draft's text, nor to the event).
    assert result.latency.edge_s <= result.latency.ttft_s <= result.latency.total_s
    assert result.latency.ttft_s >= result.run_for(BackendKind.EDGE).total_s + result.run_for(BackendKind.CLOUD).ttft_s


def test_the_sync_sdk_sees_the_event_in_order(draft_discarding_daemon: ServerThread) -> None:
    with RouterClient(draft_discarding_daemon.address, timeout_s=120) as client:
        with client.stream(prompt=PROMPT, mode=MODE, max_tokens=12) as stream:
            events = list(stream.events())
    assert stream.result is not None
    assert_draft_then_the_cloud_answer(events, stream.result)
    assert stream.text == stream.result.text  # the stream's own text dropped the draft


async def test_the_async_sdk_sees_the_event_in_order(draft_discarding_daemon: ServerThread) -> None:
    async with AsyncRouterClient(draft_discarding_daemon.address, timeout_s=120) as client:
        async with client.stream(prompt=PROMPT, mode=MODE, max_tokens=12) as stream:
            events = [event async for event in stream.events()]
    assert stream.result is not None
    assert_draft_then_the_cloud_answer(events, stream.result)
    assert stream.text == stream.result.text


def test_a_client_that_ignores_the_event_still_gets_the_cloud_answer(draft_discarding_daemon: ServerThread) -> None:
    with RouterClient(draft_discarding_daemon.address, timeout_s=120) as client:
        with client.stream(prompt=PROMPT, mode=MODE, max_tokens=12) as stream:
            deltas = list(stream)
        unary = client.generate(prompt=PROMPT, mode=MODE, max_tokens=12)
    result = stream.result
    assert result is not None and all(isinstance(delta, TextDelta) for delta in deltas)
    assert result.served_by == BackendKind.CLOUD and result.text == result.run_for(BackendKind.CLOUD).text
    # Plain iteration hands over every delta, the draft's too; the stream's text and result do not.
    assert "".join(delta.text for delta in deltas) == result.run_for(BackendKind.EDGE).text + result.text
    assert stream.text == result.text
    assert unary.served_by == BackendKind.CLOUD and unary.text == unary.run_for(BackendKind.CLOUD).text


def ask(address: str, home, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "router", "ask", "--target", address, "--mode", "post",
                           "--max-tokens", "12", *options, PROMPT], capture_output=True, text=True, timeout=120,
                          env=isolated_env(home))


def test_ask_marks_the_discarded_draft_on_stderr(draft_discarding_daemon: ServerThread, tmp_path) -> None:
    shown = ask(draft_discarding_daemon.address, tmp_path / "home")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stderr.splitlines()
    summary = next(i for i, line in enumerate(lines) if line.startswith("[served_by="))
    [marker] = [i for i, line in enumerate(lines) if line.startswith("[discarded the edge draft: ")]
    assert marker < summary and lines[marker].endswith("; the cloud answers]")  # on a line of its own
    assert lines[summary].startswith("[served_by=CLOUD mode=POST_ARBITRATION")
    assert "\n" in shown.stdout.strip()  # the draft's line is ended before the answer starts
    as_json = ask(draft_discarding_daemon.address, tmp_path / "home", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert "[discarded the edge draft" not in as_json.stderr
    result = json.loads(as_json.stdout)
    assert result["served_by"] == BackendKind.CLOUD and result["decision"]["mode"] == MODE


def json_objects(text: str) -> list[dict]:
    """grpcurl prints a stream as JSON objects one after another."""
    decoder, objects = json.JSONDecoder(), []
    at = WHITESPACE.match(text, 0).end()
    while at < len(text):
        obj, at = decoder.raw_decode(text, at)
        objects.append(obj)
        at = WHITESPACE.match(text, at).end()
    return objects


def test_grpcurl_shows_the_event(draft_discarding_daemon: ServerThread) -> None:
    request = {"messages": [{"role": "user", "content": PROMPT}], "mode": MODE.name, "max_tokens": 12}
    called = grpcurl("-d", json.dumps(request), draft_discarding_daemon.address, "router.v1.Router/GenerateStream")
    assert called.returncode == 0, called.stderr
    messages = json_objects(called.stdout)
    kinds = [next(iter(message)) for message in messages]
    at = kinds.index("draft_discarded")
    assert set(kinds[:at]) == {"delta"} and set(kinds[at + 1:-1]) == {"delta"} and kinds[-1] == "result"
    event = messages[at]["draft_discarded"]
    assert (event["discarded"], event["next"]) == ("EDGE", "CLOUD") and event["reason"]

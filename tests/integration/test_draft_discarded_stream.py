"""DraftDiscarded through the real daemon: the SDKs (sync and async), a client that ignores it, the CLI,
and grpcurl. A test-only mode injects the event on the real edge and cloud backends."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Iterator, Sequence

import pytest

from router.client import AsyncRouterClient, RouterClient
from router.domain.types import BackendKind, DraftDiscarded, GenerateResult, Mode, TextDelta
from tests.conftest import ServerThread
from tests.draft_discarding_fault_injection import DraftDiscardingFaultInjectionMode
from tests.integration.test_daemon_faults_and_lifecycle import grpcurl

pytestmark = pytest.mark.integration

# The furthest of the unbuilt modes from being built: the test mode stands in for it while registered.
FAULT_MODE = Mode.EDGE_AGENT_CLOUD_INFO
REASON = "injected: the draft is always discarded"
PROMPT = "Count from one to ten."
MARKER = f"[discarded the edge draft: {REASON}; the cloud answers]"
WHITESPACE = re.compile(r"\s*")


@pytest.fixture
def draft_discarding_daemon(daemon: ServerThread) -> Iterator[ServerThread]:
    """The session's daemon with the fault-injection mode registered, then the mode it had put back."""
    modes = daemon.server.router.modes
    previous = modes.get(FAULT_MODE)
    modes[FAULT_MODE] = DraftDiscardingFaultInjectionMode(FAULT_MODE, draft_tokens=4, reason=REASON)
    try:
        yield daemon
    finally:
        if previous is None:
            del modes[FAULT_MODE]
        else:
            modes[FAULT_MODE] = previous


def assert_draft_then_the_cloud_answer(events: Sequence[object], result: GenerateResult) -> None:
    """The edge's draft, one DraftDiscarded, the cloud's answer; the result is the cloud's answer."""
    (at,) = [i for i, event in enumerate(events) if isinstance(event, DraftDiscarded)]
    assert events[at] == DraftDiscarded(discarded=BackendKind.EDGE, next=BackendKind.CLOUD, reason=REASON)
    draft, answer = events[:at], events[at + 1:]
    assert draft and all(isinstance(e, TextDelta) and e.backend == BackendKind.EDGE for e in draft)
    assert answer and all(isinstance(e, TextDelta) and e.backend == BackendKind.CLOUD for e in answer)
    assert result.served_by == BackendKind.CLOUD
    assert result.text == result.run_for(BackendKind.CLOUD).text == "".join(e.text for e in answer)
    assert result.run_for(BackendKind.EDGE).text == "".join(e.text for e in draft)
    # ttft is to the served answer's first text: the cloud's, which came after the edge's whole draft.
    assert result.latency.edge_s <= result.latency.ttft_s <= result.latency.total_s


def test_the_sync_sdk_sees_the_event_in_order(draft_discarding_daemon: ServerThread) -> None:
    with RouterClient(draft_discarding_daemon.address, timeout_s=120) as client:
        with client.stream(prompt=PROMPT, mode=FAULT_MODE, max_tokens=12) as stream:
            events = list(stream.events())
    assert stream.result is not None
    assert_draft_then_the_cloud_answer(events, stream.result)
    assert stream.text == stream.result.text  # the stream's own text dropped the draft


async def test_the_async_sdk_sees_the_event_in_order(draft_discarding_daemon: ServerThread) -> None:
    async with AsyncRouterClient(draft_discarding_daemon.address, timeout_s=120) as client:
        async with client.stream(prompt=PROMPT, mode=FAULT_MODE, max_tokens=12) as stream:
            events = [event async for event in stream.events()]
    assert stream.result is not None
    assert_draft_then_the_cloud_answer(events, stream.result)
    assert stream.text == stream.result.text


def test_a_client_that_ignores_the_event_still_gets_the_cloud_answer(draft_discarding_daemon: ServerThread) -> None:
    with RouterClient(draft_discarding_daemon.address, timeout_s=120) as client:
        with client.stream(prompt=PROMPT, mode=FAULT_MODE, max_tokens=12) as stream:
            deltas = list(stream)
        unary = client.generate(prompt=PROMPT, mode=FAULT_MODE, max_tokens=12)
    result = stream.result
    assert result is not None and all(isinstance(delta, TextDelta) for delta in deltas)
    assert result.served_by == BackendKind.CLOUD and result.text == result.run_for(BackendKind.CLOUD).text
    # Plain iteration hands over every delta, the draft's too; the stream's text and result do not.
    assert "".join(delta.text for delta in deltas) == result.run_for(BackendKind.EDGE).text + result.text
    assert stream.text == result.text
    assert unary.served_by == BackendKind.CLOUD and unary.text == unary.run_for(BackendKind.CLOUD).text


def ask(address: str, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "router", "ask", "--target", address, "--mode", "agent",
                           "--max-tokens", "12", *options, PROMPT], capture_output=True, text=True, timeout=120)


def test_ask_marks_the_discarded_draft_on_stderr(draft_discarding_daemon: ServerThread) -> None:
    shown = ask(draft_discarding_daemon.address)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stderr.splitlines()
    summary = next(i for i, line in enumerate(lines) if line.startswith("[served_by="))
    assert lines.index(MARKER) < summary  # the marker on a line of its own, before the summary
    assert lines[summary].startswith("[served_by=CLOUD mode=EDGE_AGENT_CLOUD_INFO")
    assert "\n" in shown.stdout.strip()  # the draft's line is ended before the answer starts
    as_json = ask(draft_discarding_daemon.address, "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert MARKER not in as_json.stderr
    result = json.loads(as_json.stdout)
    assert result["served_by"] == BackendKind.CLOUD and result["decision"]["mode"] == FAULT_MODE


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
    request = {"messages": [{"role": "user", "content": PROMPT}], "mode": FAULT_MODE.name, "max_tokens": 12}
    called = grpcurl("-d", json.dumps(request), draft_discarding_daemon.address, "router.v1.Router/GenerateStream")
    assert called.returncode == 0, called.stderr
    messages = json_objects(called.stdout)
    kinds = [next(iter(message)) for message in messages]
    at = kinds.index("draft_discarded")
    assert set(kinds[:at]) == {"delta"} and set(kinds[at + 1:-1]) == {"delta"} and kinds[-1] == "result"
    assert messages[at]["draft_discarded"] == {"discarded": "EDGE", "next": "CLOUD", "reason": REASON}

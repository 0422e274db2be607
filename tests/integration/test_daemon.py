"""The real daemon (gRPC on port 0, llama.cpp edge, llama-cpp-python's OpenAI server as the cloud) via the SDK."""
from __future__ import annotations

import asyncio
import json
import logging
import math

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from router.client import AsyncRouterClient, RouterClient
from router.domain.errors import BackendUnavailableError, InvalidRequestError, ModeNotImplementedError
from router.domain.types import BackendKind, ChatMessage, GenerateRequest, Mode
from tests.conftest import ServerThread, make_settings, wait_until

QUESTION = "What is the capital of France? Answer in one word."
# The 135M model counts on for well over a thousand tokens: a stream that is still running when it is cut.
COUNT_ON = "Write the numbers from 1 to 1000, separated by commas."


@pytest.fixture
def client(daemon: ServerThread):
    with RouterClient(daemon.address, timeout_s=120) as sdk:
        yield sdk


def test_health_is_serving_and_reflection_lists_the_router(daemon: ServerThread) -> None:
    with grpc.insecure_channel(daemon.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="router.v1.Router"))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert "router.v1.Router" in services
    assert "grpc.health.v1.Health" in services


def test_health_is_not_serving_until_models_load() -> None:
    server = ServerThread(make_settings(), load=False)
    try:
        with RouterClient(server.address, timeout_s=10) as sdk:
            assert not sdk.is_serving()
            with pytest.raises(BackendUnavailableError, match="still loading"):
                sdk.generate(prompt=QUESTION, mode="edge")
    finally:
        server.stop()


@pytest.mark.parametrize("mode, backend", [(Mode.EDGE_ONLY, BackendKind.EDGE), (Mode.CLOUD_ONLY, BackendKind.CLOUD)])
def test_unary_generate(client: RouterClient, daemon: ServerThread, mode: Mode, backend: BackendKind) -> None:
    result = client.generate(prompt=QUESTION, mode=mode, max_tokens=16, request_id=f"unary-{mode.name}")
    assert result.request_id == f"unary-{mode.name}"
    assert result.text.strip()
    assert result.served_by == backend
    assert result.decision.mode == mode
    (run,) = result.runs
    assert run.backend == backend and run.text == result.text
    assert 0 < run.completion_tokens <= 16 and run.prompt_tokens > 5
    assert result.latency.total_s >= result.latency.ttft_s > 0
    settings = daemon.settings
    if backend == BackendKind.EDGE:
        assert result.cloud_cost_usd == 0 and result.edge_cost_usd > 0
        assert run.mean_logprob is not None and run.mean_logprob <= 0
        assert result.latency.edge_s > 0 and result.latency.cloud_s == 0
    else:
        expected = (run.prompt_tokens * settings.cloud.input_usd_per_mtok
                    + run.completion_tokens * settings.cloud.output_usd_per_mtok) / 1e6
        assert math.isclose(result.cloud_cost_usd, expected) and result.edge_cost_usd == 0
        assert result.latency.cloud_s > 0 and result.latency.edge_s == 0
    assert math.isclose(result.cost_usd, result.edge_cost_usd + result.cloud_cost_usd)
    assert result.edge_model == "smollm2-135m" and result.cloud_model == "smollm2-135m"


@pytest.mark.parametrize("mode", [Mode.EDGE_ONLY, Mode.CLOUD_ONLY])
async def test_async_streaming_matches_the_final_result(daemon: ServerThread, mode: Mode) -> None:
    async with AsyncRouterClient(daemon.address, timeout_s=120) as sdk:
        stream = sdk.stream(prompt="Count from one to five.", mode=mode, max_tokens=20)
        texts = [delta.text async for delta in stream]
    assert stream.result is not None
    assert len(texts) > 1
    assert "".join(texts) == stream.result.text
    if mode == Mode.EDGE_ONLY:
        assert stream.result.latency.ttft_s < stream.result.latency.total_s


def test_sync_streaming(client: RouterClient) -> None:
    with client.stream(prompt=QUESTION, mode="cloud", max_tokens=12) as stream:
        text = "".join(delta.text for delta in stream)
    assert stream.result is not None and text == stream.result.text
    assert stream.result.served_by == BackendKind.CLOUD


def test_cancelling_a_stream_stops_the_edge(client: RouterClient, daemon: ServerThread) -> None:
    edge = daemon.server.backends.edge
    cancelled_before = edge.metrics.cancelled
    stream = client.stream(prompt="Write a very long story about a dragon.", mode="edge", max_tokens=1000)
    received = 0
    for _ in stream:
        received += 1
        if received == 3:
            stream.cancel()
            break
    wait_until(lambda: edge.metrics.cancelled != cancelled_before, "the edge recording the cancelled stream")
    assert edge.metrics.cancelled == cancelled_before + 1
    assert edge.metrics.last_completion_tokens < 40, "generation went on long after the client cancelled"
    assert client.generate(prompt=QUESTION, mode="edge", max_tokens=4).text


def _message(role: str = "user", content: str = QUESTION) -> ChatMessage:
    return ChatMessage(role, content)


BAD_REQUESTS = {
    "empty messages": (GenerateRequest(messages=(), mode=Mode.EDGE_ONLY), "messages is empty"),
    "unknown role": (GenerateRequest(messages=(_message(role="robot"),), mode=Mode.EDGE_ONLY), "role"),
    "empty content": (GenerateRequest(messages=(_message(content="  "),), mode=Mode.EDGE_ONLY), "content is empty"),
    "max_tokens zero": (GenerateRequest(messages=(_message(),), max_tokens=0, mode=Mode.EDGE_ONLY), "max_tokens"),
    "max_tokens negative": (GenerateRequest(messages=(_message(),), max_tokens=-5, mode=Mode.EDGE_ONLY), "max_tokens"),
    "max_tokens over limit": (GenerateRequest(messages=(_message(),), max_tokens=5000, mode=Mode.EDGE_ONLY),
                              "between 1 and 1024"),
    "temperature negative": (GenerateRequest(messages=(_message(),), temperature=-0.5, mode=Mode.EDGE_ONLY),
                             "temperature"),
    "temperature too high": (GenerateRequest(messages=(_message(),), temperature=7.0, mode=Mode.EDGE_ONLY),
                             "temperature"),
    "temperature nan": (GenerateRequest(messages=(_message(),), temperature=float("nan"), mode=Mode.EDGE_ONLY),
                        "temperature"),
    "unknown mode": (GenerateRequest(messages=(_message(),), mode=42), "not a known mode"),
    "prompt too long for the edge context": (
        GenerateRequest(messages=(_message(content="word " * 3000),), max_tokens=16, mode=Mode.EDGE_ONLY),
        "context"),
    "prompt too long for the cloud context": (
        GenerateRequest(messages=(_message(content="word " * 3000),), max_tokens=16, mode=Mode.CLOUD_ONLY),
        "context"),
    "request over the size limit": (
        GenerateRequest(messages=(_message(content="x" * 70_000),), mode=Mode.CLOUD_ONLY), "bytes"),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_input_is_invalid_argument_and_the_daemon_keeps_serving(client: RouterClient, name: str) -> None:
    request, fragment = BAD_REQUESTS[name]
    with pytest.raises(InvalidRequestError, match=fragment):
        client.generate(request)
    assert client.generate(prompt=QUESTION, mode="edge", max_tokens=2).text


def test_bad_input_on_the_stream_is_typed_too(client: RouterClient) -> None:
    with pytest.raises(InvalidRequestError, match="max_tokens"):
        for _ in client.stream(prompt=QUESTION, mode="edge", max_tokens=0):
            pass


def test_every_mode_of_the_api_is_implemented(client: RouterClient) -> None:
    # A mode the registry lacks is refused with UNIMPLEMENTED (tests/unit/test_validation.py); none is left but
    # AUTO, which this daemon's 135M edge cannot serve: the shipped probes are for the default edge model.
    assert set(client.info().implemented_modes) == set(Mode) - {Mode.UNSPECIFIED, Mode.AUTO}
    with pytest.raises(ModeNotImplementedError, match="AUTO is not served by this daemon: it needs probes"):
        client.generate(prompt=QUESTION, mode="auto")


def test_unknown_mode_name_in_the_sdk_is_typed(client: RouterClient) -> None:
    with pytest.raises(InvalidRequestError, match="unknown mode"):
        client.generate(prompt=QUESTION, mode="telepathy")


def test_info_reports_models_and_modes(client: RouterClient) -> None:
    info = client.info()
    assert set(info.implemented_modes) == set(Mode) - {Mode.UNSPECIFIED, Mode.AUTO}
    assert info.default_mode == Mode.EDGE_ONLY
    assert info.edge.name == "smollm2-135m" and len(info.edge.sha256) == 64
    assert info.cloud.local_standin and info.cloud.priced_as == "gpt-4o-mini"
    assert info.packages["llama-cpp-python"] == "0.3.36"


def test_one_structured_log_line_per_request(client: RouterClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hybrid_router.requests")
    result = client.generate(prompt=QUESTION, mode="edge", max_tokens=3, request_id="logged-1")
    with pytest.raises(InvalidRequestError):
        client.generate(prompt=QUESTION, mode="edge", max_tokens=0, request_id="logged-2")
    lines = {r.fields["request_id"]: r.fields for r in caplog.records if getattr(r, "fields", None)}
    assert lines["logged-1"]["status"] == "ok" and lines["logged-1"]["served_by"] == "EDGE"
    assert lines["logged-1"]["tokens_out"] == result.runs[0].completion_tokens
    assert lines["logged-2"]["status"] == "InvalidRequestError"
    json.dumps(lines["logged-1"])  # the fields serialise as one JSON object


def test_stats_refuses_a_since_that_is_no_time(client: RouterClient) -> None:
    for since in (float("nan"), float("inf"), 1e20, -5.0):
        with pytest.raises(InvalidRequestError, match="since_unix_s"):
            client.stats(since_unix_s=since)
    assert client.stats().ledger.enabled is False  # the test daemon runs without a ledger, and says so


async def test_async_cancel_ends_the_stream_quietly(daemon: ServerThread) -> None:
    async with AsyncRouterClient(daemon.address, timeout_s=120) as sdk:
        stream = sdk.stream(prompt="Write a long story.", mode="edge", max_tokens=500)
        seen = 0
        async for _ in stream:
            seen += 1
            if seen == 2:
                stream.cancel()
        assert seen >= 2 and stream.result is None
        assert (await sdk.generate(prompt=QUESTION, mode="edge", max_tokens=2)).text


async def test_async_stream_lets_the_callers_own_cancellation_and_timeouts_through(daemon: ServerThread) -> None:
    async with AsyncRouterClient(daemon.address, timeout_s=120) as sdk:
        reading = asyncio.Event()

        async def read_all() -> int:
            seen = 0
            async for _ in sdk.stream(prompt=COUNT_ON, mode="edge", max_tokens=1000):
                seen += 1
                reading.set()
            return seen

        reader = asyncio.ensure_future(read_all())
        await reading.wait()  # mid-stream
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        # The caller's own time-out is the fault under test: 0.3 s against a thousand tokens to generate.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(read_all(), timeout=0.3)
        assert (await sdk.generate(prompt=QUESTION, mode="edge", max_tokens=2)).text

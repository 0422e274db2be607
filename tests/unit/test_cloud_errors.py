"""cloud/ error handling: the translation table on real openai exception objects, and the
OpenAIBackend against the fault-injection server over real loopback HTTP (no model)."""
from __future__ import annotations

import asyncio
import email.utils
import json
import time

import httpx2
import openai
import pytest

from cloud.errors import (
    CloudBadResponseError,
    CloudError,
    CloudRateLimitError,
    CloudRejectedError,
    CloudTimeoutError,
    CloudUnavailableError,
)
from cloud.fault_injection_server import Fault, FaultInjectionOpenAIServer
from cloud.openai_backend import OpenAIBackend, estimate_prompt_tokens, translate_openai_error
from tests.openai_stream_fault_injection import STREAM_ERROR_STYLES, inject_stream_error_style
from tests.conftest import WAIT_S, wait_until, wait_until_async

API_KEY = "sk-test-Zq81vB2mXk5Lr0pT7wYc"
MESSAGES = ({"role": "user", "content": "Say hello."},)
REQUEST = httpx2.Request("POST", "http://127.0.0.1:9/v1/chat/completions")


def status_error(error_class: type, status: int, body: object, headers: dict[str, str] | None = None):
    response = httpx2.Response(status, headers=headers or {}, request=REQUEST, json=body)
    error_body = body.get("error", body) if isinstance(body, dict) else body
    return error_class(f"Error code: {status}", response=response, body=error_body)


def openai_error_body(message: str, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}


def test_timeout_maps_to_cloud_timeout() -> None:
    error = translate_openai_error(openai.APITimeoutError(request=REQUEST))
    assert type(error) is CloudTimeoutError


def test_connection_error_maps_to_unavailable() -> None:
    error = translate_openai_error(openai.APIConnectionError(request=REQUEST))
    assert type(error) is CloudUnavailableError


@pytest.mark.parametrize("headers, expected", [
    ({"retry-after": "7"}, 7.0),
    ({"retry-after": "0.25"}, 0.25),
    ({"retry-after-ms": "1500"}, 1.5),
    ({}, None),
])
def test_rate_limit_carries_retry_after(headers: dict[str, str], expected: float | None) -> None:
    error = translate_openai_error(status_error(
        openai.RateLimitError, 429, openai_error_body("Rate limit reached", "rate_limit_exceeded"), headers))
    assert type(error) is CloudRateLimitError
    assert error.retry_after_s == expected
    assert "Rate limit reached" in str(error)


def test_rate_limit_retry_after_as_http_date() -> None:
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    error = translate_openai_error(status_error(
        openai.RateLimitError, 429, openai_error_body("slow down"), {"retry-after": in_a_minute}))
    assert isinstance(error, CloudRateLimitError)
    assert error.retry_after_s is not None and 50 <= error.retry_after_s <= 61


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_map_to_unavailable_with_status(status: int) -> None:
    error = translate_openai_error(status_error(openai.InternalServerError, status,
                                                openai_error_body("upstream overloaded")))
    assert type(error) is CloudUnavailableError
    assert error.status == status
    assert "upstream overloaded" in str(error)


def test_context_too_long_is_rejected_with_provider_message() -> None:
    message = ("This model's maximum context length is 2048 tokens. However, you requested 3031 tokens "
               "(3023 in the messages, 8 in the completion).")
    error = translate_openai_error(status_error(
        openai.BadRequestError, 400, openai_error_body(message, "context_length_exceeded")))
    assert type(error) is CloudRejectedError
    assert error.status == 400
    assert error.code == "context_length_exceeded"
    assert "maximum context length is 2048 tokens" in str(error)


def test_fastapi_style_detail_is_the_provider_message() -> None:
    error = translate_openai_error(status_error(openai.AuthenticationError, 401, {"detail": "Invalid API key"}))
    assert type(error) is CloudRejectedError
    assert error.status == 401
    assert "Invalid API key" in str(error)


@pytest.mark.parametrize("provider_message", [
    f"Incorrect API key provided: {API_KEY}.",
    f"Incorrect API key provided: {API_KEY[:8]}************{API_KEY[-4:]}. Find your key at ...",
])
def test_bad_key_message_never_contains_the_key(provider_message: str) -> None:
    error = translate_openai_error(status_error(openai.AuthenticationError, 401,
                                                openai_error_body(provider_message, "invalid_api_key")),
                                   api_key=API_KEY)
    assert type(error) is CloudRejectedError
    assert error.status == 401
    for text in (str(error), repr(error), error.message):
        assert API_KEY not in text
        assert API_KEY[:8] not in text
    assert "Incorrect API key provided" in str(error)


@pytest.mark.parametrize("status", [403, 404, 422])
def test_other_4xx_are_rejected(status: int) -> None:
    error = translate_openai_error(status_error(openai.APIStatusError, status, openai_error_body("nope")))
    assert type(error) is CloudRejectedError
    assert error.status == status


def test_408_is_a_timeout() -> None:
    error = translate_openai_error(status_error(openai.APIStatusError, 408, openai_error_body("too slow")))
    assert type(error) is CloudTimeoutError


def test_error_event_inside_a_stream_is_unavailable() -> None:
    error = translate_openai_error(openai.APIError("The server had an error", REQUEST,
                                                   body={"message": "The server had an error"}))
    assert type(error) is CloudUnavailableError
    assert "The server had an error" in str(error)


@pytest.mark.parametrize("exc", [
    httpx2.ReadTimeout("timed out", request=REQUEST),
    httpx2.ConnectTimeout("timed out", request=REQUEST),
])
def test_raw_transport_timeouts_map_to_cloud_timeout(exc: Exception) -> None:
    assert type(translate_openai_error(exc)) is CloudTimeoutError


@pytest.mark.parametrize("exc", [
    httpx2.RemoteProtocolError("peer closed connection without sending complete message body", request=REQUEST),
    httpx2.ReadError("connection reset by peer", request=REQUEST),
    httpx2.ConnectError("connection refused", request=REQUEST),
])
def test_raw_transport_errors_map_to_unavailable(exc: Exception) -> None:
    error = translate_openai_error(exc)
    assert type(error) is CloudUnavailableError
    assert type(exc).__name__ in str(error)


@pytest.mark.parametrize("exc", [
    json.JSONDecodeError("Expecting value", "{bad", 1),
    UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
    openai.APIResponseValidationError(httpx2.Response(200, request=REQUEST), body=None),
])
def test_undecodable_responses_are_bad_responses(exc: Exception) -> None:
    assert type(translate_openai_error(exc)) is CloudBadResponseError


def test_repr_of_backend_hides_the_key() -> None:
    backend = OpenAIBackend(base_url="http://127.0.0.1:9/v1", api_key=API_KEY, model="m")
    assert API_KEY not in repr(backend)
    assert API_KEY not in repr(backend.stream(MESSAGES, max_tokens=4, temperature=0.0))


# --- the backend against the fault-injection server, over real loopback HTTP ---------------------

@pytest.fixture
def fault_server():
    with FaultInjectionOpenAIServer(retry_after_s=0.05) as server:
        yield server


def backend_for(server: FaultInjectionOpenAIServer, **options: object) -> OpenAIBackend:
    settings = {"timeout_s": 5.0, "max_retries": 2, **options}
    return OpenAIBackend(base_url=server.base_url, api_key=API_KEY, model="fault-test", **settings)


async def drain(backend: OpenAIBackend, max_tokens: int = 8) -> list[str]:
    texts = []
    stream = backend.stream(MESSAGES, max_tokens=max_tokens, temperature=0.0)
    try:
        async for delta in stream:
            texts.append(delta.text)
    finally:
        await stream.aclose()
    return texts


def assert_key_hidden(error: BaseException) -> None:
    for text in (str(error), repr(error)):
        assert API_KEY not in text


async def test_500_is_unavailable_after_the_clients_retries(fault_server) -> None:
    fault_server.inject(Fault.STATUS_500, times=3)
    backend = backend_for(fault_server, max_retries=2)
    with pytest.raises(CloudUnavailableError) as caught:
        await drain(backend)
    await backend.close()
    assert caught.value.status == 500
    assert fault_server.requests_seen == 3  # the first try and two retries
    assert_key_hidden(caught.value)


async def test_503_once_then_the_retry_reaches_the_upstream(fault_server) -> None:
    # The fault server's own upstream is a second fault server that rejects with 429: the retry after
    # the 503 was really forwarded there, and its status and Retry-After came back through.
    with FaultInjectionOpenAIServer(retry_after_s=0.05) as upstream:
        upstream.inject(Fault.STATUS_429, times=5)
        with FaultInjectionOpenAIServer(upstream_base_url=upstream.base_url) as proxy:
            proxy.inject(Fault.STATUS_503)
            backend = backend_for(proxy, max_retries=1)
            with pytest.raises(CloudRateLimitError) as caught:
                await drain(backend)
            await backend.close()
    assert proxy.requests_seen == 2
    assert upstream.requests_seen == 1
    assert caught.value.retry_after_s == pytest.approx(0.05)


async def test_no_upstream_answers_503(fault_server) -> None:
    backend = backend_for(fault_server, max_retries=0)
    with pytest.raises(CloudUnavailableError) as caught:
        await drain(backend)
    await backend.close()
    assert caught.value.status == 503


async def test_429_with_retry_after_is_rate_limit(fault_server) -> None:
    fault_server.inject(Fault.STATUS_429, times=3)
    backend = backend_for(fault_server, max_retries=2)
    with pytest.raises(CloudRateLimitError) as caught:
        await drain(backend)
    await backend.close()
    assert caught.value.retry_after_s == pytest.approx(0.05)
    assert fault_server.requests_seen == 3
    assert_key_hidden(caught.value)


async def test_hang_is_a_timeout(fault_server) -> None:
    fault_server.inject(Fault.HANG, times=2)
    backend = backend_for(fault_server, timeout_s=0.5, max_retries=1)
    with pytest.raises(CloudTimeoutError) as caught:
        await drain(backend)
    await backend.close()
    assert fault_server.requests_seen == 2
    assert_key_hidden(caught.value)


async def test_garbage_body_is_a_bad_response(fault_server) -> None:
    fault_server.inject(Fault.GARBAGE_BODY)
    backend = backend_for(fault_server)
    with pytest.raises(CloudBadResponseError):
        await drain(backend)
    await backend.close()
    assert fault_server.requests_seen == 1  # a 200 is not retried


async def test_malformed_chunk_is_a_bad_response(fault_server) -> None:
    fault_server.inject(Fault.MALFORMED_CHUNK)
    backend = backend_for(fault_server)
    stream = backend.stream(MESSAGES, max_tokens=8, temperature=0.0)
    first = await stream.__anext__()
    with pytest.raises(CloudBadResponseError):
        await stream.__anext__()
    await stream.aclose()
    await backend.close()
    assert first.text == "Hello"


@pytest.fixture(params=STREAM_ERROR_STYLES)
def stream_error_style(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    inject_stream_error_style(request.param, monkeypatch)
    return request.param


async def test_a_stream_cut_mid_body_is_unavailable_whatever_openai_wraps(
        fault_server, stream_error_style: str) -> None:
    fault_server.inject(Fault.TRUNCATED_STREAM)
    backend = backend_for(fault_server, max_retries=2)
    stream = backend.stream(MESSAGES, max_tokens=8, temperature=0.0)
    received: list[str] = []
    with pytest.raises(CloudUnavailableError) as caught:
        async for delta in stream:
            received.append(delta.text)
    await backend.close()
    assert received == ["Hello", " there"]
    assert_spent_what_was_streamed(stream.completion)  # it broke, and what it streamed was paid for
    assert fault_server.requests_seen == 1  # tokens were delivered: not retried
    assert_key_hidden(caught.value)


async def test_a_stream_that_stalls_mid_body_is_a_timeout_whatever_openai_wraps(
        fault_server, stream_error_style: str) -> None:
    fault_server.inject(Fault.STALLED_STREAM)
    backend = backend_for(fault_server, timeout_s=0.5, max_retries=2)
    stream = backend.stream(MESSAGES, max_tokens=8, temperature=0.0)
    received: list[str] = []
    with pytest.raises(CloudTimeoutError) as caught:
        async for delta in stream:
            received.append(delta.text)
    await backend.close()
    assert received == ["Hello", " there"]
    assert_spent_what_was_streamed(stream.completion)
    assert fault_server.requests_seen == 1
    assert_key_hidden(caught.value)
    # Timed out, the client closed its connection: the server saw it go, not only the client give up.
    assert fault_server.wait_for_disconnects(1, WAIT_S)


def assert_spent_what_was_streamed(completion) -> None:
    """A stream that broke after two chunks: its two tokens and its (estimated) prompt, finish "error"."""
    assert completion is not None
    assert (completion.finish_reason, completion.text, completion.completion_tokens) == ("error", "Hello there", 2)
    assert completion.prompt_tokens == estimate_prompt_tokens(MESSAGES) and completion.usage_estimated


async def test_a_refused_stream_ends_with_an_error_completion_that_spent_nothing(fault_server) -> None:
    backend = backend_for(fault_server, max_retries=0)
    stream = backend.stream(MESSAGES, max_tokens=8, temperature=0.0)
    with pytest.raises(CloudUnavailableError):
        await stream.__anext__()  # 503: no upstream
    await backend.close()
    completion = stream.completion
    assert completion is not None and completion.finish_reason == "error"
    assert (completion.prompt_tokens, completion.completion_tokens) == (0, 0)  # refused: nothing to pay


async def test_a_stream_closed_before_it_was_sent_spent_nothing(fault_server) -> None:
    backend = backend_for(fault_server)
    stream = backend.stream(MESSAGES, max_tokens=8, temperature=0.0)
    await stream.aclose()
    await backend.close()
    assert stream.completion is not None and stream.completion.finish_reason == "cancelled"
    assert (stream.completion.prompt_tokens, stream.completion.completion_tokens) == (0, 0)
    assert fault_server.requests_seen == 0


async def test_concurrency_limit_queues_the_second_stream(fault_server) -> None:
    fault_server.inject(Fault.HANG)
    backend = backend_for(fault_server, max_concurrency=1, max_retries=0)
    hanging = backend.stream(MESSAGES, max_tokens=8, temperature=0.0)
    queued = backend.stream(MESSAGES, max_tokens=8, temperature=0.0)
    hanging_task = asyncio.create_task(drain_stream(hanging))
    await asyncio.to_thread(wait_until, lambda: fault_server.requests_seen >= 1, "the first stream reaching the cloud")
    queued_task = asyncio.create_task(drain_stream(queued))
    await wait_until_async(lambda: queued._started_at is not None, "the second stream asking for a permit")
    # The hanging stream holds the only permit, so the second waits for it, unsent, for as long as it does.
    assert not queued._permit_held and not queued._request_sent and not queued_task.done()
    assert fault_server.requests_seen == 1
    hanging_task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await hanging_task
    assert await asyncio.to_thread(fault_server.wait_for_disconnects, 1, WAIT_S)  # the cancel closed it
    with pytest.raises(CloudUnavailableError):  # now sent: no upstream, 503
        await queued_task
    await backend.close()
    assert fault_server.requests_seen == 2
    assert hanging.completion is not None
    assert hanging.completion.finish_reason == "cancelled"
    assert hanging.completion.completion_tokens == 0


async def drain_stream(stream) -> list[str]:
    try:
        return [delta.text async for delta in stream]
    finally:
        await stream.aclose()


async def test_every_error_is_a_cloud_error(fault_server) -> None:
    # The silent faults wait for the client's timeout; their own tests above cover them.
    loud_faults = [fault for fault in Fault if fault not in (Fault.HANG, Fault.STALLED_STREAM)]
    for fault in loud_faults:
        fault_server.inject(fault)
    backend = backend_for(fault_server, max_retries=0)
    for _ in loud_faults:
        with pytest.raises(CloudError) as caught:
            await drain(backend)
        assert_key_hidden(caught.value)
    await backend.close()


async def test_a_cloud_call_cancelled_before_its_first_chunk_is_priced_at_its_estimated_prompt(fault_server) -> None:
    """Through the router: a CLOUD_ONLY request whose cloud call was sent and hangs is cancelled by its
    client. The call is recorded as cancelled, paid for its prompt (estimated: the server never said), and
    its HTTP connection is closed, which the server sees."""
    from router.core.engine import Backends, Router
    from router.core.modes import builtin_modes
    from router.domain.config import ServerSettings
    from router.domain.pricing import CostModel
    from router.domain.types import BackendKind, ChatMessage, GenerateRequest, GenerateResult, Mode

    class RecordingSink:
        def __init__(self) -> None:
            self.results: list[GenerateResult] = []

        def record(self, request: GenerateRequest, result: GenerateResult) -> None:
            self.results.append(result)

    costs = CostModel(0.15, 0.6, 1e8, 3e-10, 0.15)
    fault_server.inject(Fault.HANG)
    cloud, sink = backend_for(fault_server, max_retries=0), RecordingSink()
    router = Router(settings=ServerSettings(), costs=costs, modes=builtin_modes(), backends=Backends(cloud=cloud),
                    sinks=(sink,), ready=True)
    request = GenerateRequest(messages=tuple(ChatMessage(m["role"], m["content"]) for m in MESSAGES),
                              mode=Mode.CLOUD_ONLY, max_tokens=8)
    task = asyncio.create_task(router.generate(request))
    await asyncio.to_thread(wait_until, lambda: fault_server.requests_seen >= 1, "the call reaching the cloud")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await cloud.close()
    [result] = sink.results
    [run] = result.runs
    assert run.backend == BackendKind.CLOUD and run.finish_reason == "cancelled" and run.completion_tokens == 0
    assert run.prompt_tokens == estimate_prompt_tokens(MESSAGES) > 0
    assert run.cost_usd == pytest.approx(costs.cloud_cost(run.prompt_tokens, 0)) and run.cost_usd > 0
    assert result.cost_usd == pytest.approx(run.cost_usd)
    assert await asyncio.to_thread(fault_server.wait_for_disconnects, 1, WAIT_S)

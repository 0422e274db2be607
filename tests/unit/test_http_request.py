"""The HTTP door's reading of an OpenAI chat-completions body: every field honoured or refused by name."""
from __future__ import annotations

import pytest

from router.domain.errors import ErrorKind
from router.domain.types import ChatMessage, Mode
from router.doors.http.errors import HttpRequestError, error_body, error_headers, error_status
from router.doors.http.openai_request import parse_chat_call
from router.domain.errors import RateLimitedError

BASE = {"model": "hybrid/edge", "messages": [{"role": "user", "content": "hi"}]}


def parse(body: dict, headers: dict | None = None):
    return parse_chat_call(body, headers or {}, principal_name="alice")


def refused(body: dict, headers: dict | None = None) -> HttpRequestError:
    with pytest.raises(HttpRequestError) as caught:
        parse(body, headers)
    return caught.value


def test_a_full_body_becomes_the_core_request() -> None:
    call = parse({"model": "hybrid/post", "messages": [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "2+"}, {"type": "text", "text": "2?"}]}],
        "max_completion_tokens": 9, "temperature": 0.2, "stop": "\n", "seed": 5, "user": "end-user-7",
        "top_p": 1, "n": 1, "stream": True, "stream_options": {"include_usage": True}, "logprobs": True,
        "metadata": {"app": "x"}, "hybrid": {"request_id": "r1", "groups": ["hr"], "stream_draft": True}})
    request = call.request
    assert request.messages == (ChatMessage("system", "be brief"), ChatMessage("user", "2+2?"))
    assert (request.mode, request.max_tokens, request.temperature, request.stop, request.seed) == (
        Mode.POST_ARBITRATION, 9, 0.2, ("\n",), 5)
    assert request.metadata == {"app": "x", "openai_user": "end-user-7"} and request.request_id == "r1"
    assert request.caller.user == "alice" and request.caller.groups == ("hr",) and request.stream_draft is True
    assert call.stream and call.include_usage and call.logprobs


def test_the_default_model_leaves_the_mode_to_the_daemon_and_the_header_overrides_any() -> None:
    assert parse({**BASE, "model": "hybrid/default"}).request.mode == Mode.UNSPECIFIED
    assert parse(BASE, {"x-hybrid-mode": "cloud"}).request.mode == Mode.CLOUD_ONLY
    assert refused(BASE, {"x-hybrid-mode": "warp"}).param == "X-Hybrid-Mode"


def test_a_draft_is_held_unless_a_streaming_client_opts_in() -> None:
    assert parse({**BASE, "stream": True}).request.stream_draft is False
    assert parse({**BASE, "stream": True}, {"x-hybrid-draft": "stream"}).request.stream_draft is True
    assert parse(BASE, {"x-hybrid-draft": "stream"}).request.stream_draft is False  # a unary answer is whole
    assert refused({**BASE, "stream": True}, {"x-hybrid-draft": "maybe"}).param == "X-Hybrid-Draft"


@pytest.mark.parametrize(("body", "param"), [
    ({"n": 3}, "n"), ({"tools": [{"type": "function"}]}, "tools"), ({"tool_choice": "auto"}, "tool_choice"),
    ({"response_format": {"type": "json_schema"}}, "response_format"), ({"top_p": 0.9}, "top_p"),
    ({"presence_penalty": 0.5}, "presence_penalty"), ({"logit_bias": {"1": 2}}, "logit_bias"),
    ({"top_logprobs": 2}, "top_logprobs"), ({"frobnicate": 1}, "frobnicate"), ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 5, "max_completion_tokens": 6}, "max_completion_tokens"), ({"temperature": "hot"}, "temperature"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"), ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"hybrid": {"mode": "edge"}}, "hybrid.mode"), ({"hybrid": {"groups": "hr"}}, "hybrid.groups"),
    ({"messages": []}, "messages"), ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": "x", "tool_calls": []}]}, "messages[0].tool_calls"),
])
def test_what_cannot_be_honoured_is_refused_by_name(body: dict, param: str) -> None:
    error = refused({**BASE, **body})
    assert error.param == param and error_status(error) == 400
    assert error_body(error)["error"]["type"] == "invalid_request_error"


def test_an_unknown_model_is_a_404_naming_the_ids() -> None:
    error = refused({**BASE, "model": "gpt-4o"})
    assert error.kind is ErrorKind.NOT_FOUND and error_status(error) == 404
    assert error_body(error)["error"]["code"] == "model_not_found" and "hybrid/edge" in error.message


def test_every_kind_has_a_status_and_retry_after_is_whole_seconds_rounded_up() -> None:
    from router.doors.http.errors import STATUS_FOR_KIND

    assert set(STATUS_FOR_KIND) == set(ErrorKind)
    limited = RateLimitedError("slow down", retry_after_s=1.2)
    assert error_status(limited) == 429 and error_headers(limited) == {"retry-after": "2"}
    assert error_headers(RateLimitedError("no hint")) == {}

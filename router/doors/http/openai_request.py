"""An OpenAI chat-completions body, checked field by field, as a core request.

Every field OpenAI's API defines is either honoured or refused with a 400 that names it: nothing is dropped
in silence (`n` > 1, `tools`, a `response_format` no mode can honour, sampling knobs the backends do not
take). A field OpenAI does not define is refused too, as OpenAI's API does ("Unrecognized request argument"),
except `hybrid`, this router's own options object.

The mode comes from the model id (`hybrid/edge`, ..., `hybrid/default`); an `X-Hybrid-Mode` header overrides it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping, Optional

from router.domain.errors import ErrorKind
from router.domain.types import Caller, ChatMessage, GenerateRequest, Mode
from router.doors.http.errors import HttpRequestError

MODEL_PREFIX = "hybrid/"
DEFAULT_MODEL = "hybrid/default"
# The model ids the door lists, and the mode each names (None: the daemon's server.default_mode).
MODEL_MODES: Mapping[str, Optional[Mode]] = MappingProxyType({
    DEFAULT_MODEL: None,
    "hybrid/edge": Mode.EDGE_ONLY,
    "hybrid/cloud": Mode.CLOUD_ONLY,
    "hybrid/pre": Mode.PRE_ARBITRATION,
    "hybrid/post": Mode.POST_ARBITRATION,
    "hybrid/rag": Mode.EDGE_RAG_CLOUD_INFO,
    "hybrid/agent": Mode.EDGE_AGENT_CLOUD_INFO,
    "hybrid/auto": Mode.AUTO,
})
MODE_HEADER = "x-hybrid-mode"
DRAFT_HEADER = "x-hybrid-draft"  # "stream": a cascade's draft is streamed and may be taken back; "hold"
_ROLES = MappingProxyType({"system": "system", "developer": "system", "user": "user", "assistant": "assistant"})
# OpenAI fields accepted only at their neutral value: the backends have no such knob, so anything else
# would be silently ignored.
_NEUTRAL = MappingProxyType({"top_p": 1, "presence_penalty": 0, "frequency_penalty": 0})
# OpenAI fields that change nothing here whatever their value.
_HARMLESS = frozenset({"store", "service_tier", "parallel_tool_calls"})
_HANDLED = frozenset({"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "stop", "seed",
                      "user", "logprobs", "top_logprobs", "stream", "stream_options", "n", "tools", "tool_choice",
                      "functions", "function_call", "response_format", "logit_bias", "metadata", "hybrid",
                      "prediction", "audio", "modalities", "reasoning_effort", "web_search_options",
                      *_NEUTRAL, *_HARMLESS})
_HYBRID_OPTIONS = frozenset({"stream_draft", "groups", "request_id", "metadata", "reference_answer"})
MAX_STOP = 4  # OpenAI's own limit


@dataclass(frozen=True)
class ChatCall:
    """A checked chat-completions call: the core request and how to answer it."""

    request: GenerateRequest
    model: str
    stream: bool = False
    include_usage: bool = False
    logprobs: bool = False


def parse_chat_call(body: Any, headers: Mapping[str, str], *, principal_name: str) -> ChatCall:
    """`headers`: lower-cased names. `principal_name` becomes caller.user; the groups the body names (in
    `hybrid.groups`) are only asked for: the door narrows them to the principal's."""
    if not isinstance(body, dict):
        raise HttpRequestError("the body must be a JSON object", param=None)
    unknown = sorted(set(body) - _HANDLED)
    if unknown:
        raise HttpRequestError(f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0],
                               code="unknown_parameter")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise HttpRequestError("model is required: one of " + ", ".join(MODEL_MODES), param="model")
    mode = _mode_for(model, headers.get(MODE_HEADER))
    _refuse_unsupported(body)
    hybrid = _object(body, "hybrid")
    unknown = sorted(set(hybrid) - _HYBRID_OPTIONS)
    if unknown:
        raise HttpRequestError(f"hybrid.{unknown[0]} is not an option; the options are "
                               f"{', '.join(sorted(_HYBRID_OPTIONS))}", param=f"hybrid.{unknown[0]}")
    metadata = {**_strings(body, "metadata"), **_strings(hybrid, "metadata", "hybrid.")}
    user = _optional(body, "user", str)
    if user:
        metadata["openai_user"] = user  # the end user the app names, kept in the ledger beside the principal
    stream = _optional(body, "stream", bool) or False
    stream_options = _object(body, "stream_options")
    if stream_options and not stream:
        raise HttpRequestError("stream_options is only allowed with stream: true", param="stream_options")
    unknown = sorted(set(stream_options) - {"include_usage"})
    if unknown:
        raise HttpRequestError(f"stream_options.{unknown[0]} is not supported", param=f"stream_options.{unknown[0]}")
    request = GenerateRequest(
        messages=_messages(body.get("messages")), max_tokens=_max_tokens(body), mode=mode,
        temperature=_number(body, "temperature"), stop=_stop(body.get("stop")), seed=_seed(body),
        request_id=_optional(hybrid, "request_id", str, "hybrid.") or "",
        reference_answer=_optional(hybrid, "reference_answer", str, "hybrid."), metadata=metadata,
        caller=Caller(user=principal_name, groups=_groups(hybrid)),
        stream_draft=_stream_draft(hybrid, headers.get(DRAFT_HEADER), stream))
    return ChatCall(request=request, model=model, stream=stream,
                    include_usage=bool(_optional(stream_options, "include_usage", bool, "stream_options.")),
                    logprobs=bool(_optional(body, "logprobs", bool)))


def _mode_for(model: str, header: Optional[str]) -> Mode:
    if model not in MODEL_MODES:
        raise HttpRequestError(f"the model {model!r} does not exist; use one of {', '.join(MODEL_MODES)} "
                               "(GET /v1/models lists them)", param="model", code="model_not_found",
                               kind=ErrorKind.NOT_FOUND)
    if header:
        try:
            return Mode.parse(header)
        except ValueError as exc:
            raise HttpRequestError(f"X-Hybrid-Mode: {exc}", param="X-Hybrid-Mode") from None
    chosen = MODEL_MODES[model]
    return Mode.UNSPECIFIED if chosen is None else chosen


def _refuse_unsupported(body: Mapping[str, Any]) -> None:
    n = body.get("n")
    if n is not None and n != 1:
        raise HttpRequestError("n must be 1: the router returns one choice per request", param="n")
    for field in ("tools", "functions"):
        if body.get(field):
            raise HttpRequestError(f"{field} are not supported: no mode calls tools on the client's behalf",
                                   param=field)
    for field in ("tool_choice", "function_call"):
        if body.get(field) not in (None, "none"):
            raise HttpRequestError(f"{field} is not supported: no mode calls tools on the client's behalf",
                                   param=field)
    response_format = body.get("response_format")
    if response_format is not None and response_format != {"type": "text"}:
        raise HttpRequestError("response_format other than {\"type\": \"text\"} is not supported: no mode can "
                               "guarantee JSON output from both backends", param="response_format")
    for field, neutral in _NEUTRAL.items():
        if body.get(field) not in (None, neutral):
            raise HttpRequestError(f"{field} is not supported (only {neutral}): the backends take no such setting",
                                   param=field)
    if body.get("logit_bias"):
        raise HttpRequestError("logit_bias is not supported", param="logit_bias")
    if body.get("top_logprobs"):
        raise HttpRequestError("top_logprobs is not supported: only the chosen tokens' logprobs are known",
                               param="top_logprobs")
    for field in ("prediction", "audio", "modalities", "reasoning_effort", "web_search_options"):
        if body.get(field) is not None and not (field == "modalities" and body[field] == ["text"]):
            raise HttpRequestError(f"{field} is not supported", param=field)


def _messages(raw: Any) -> tuple[ChatMessage, ...]:
    if not isinstance(raw, list) or not raw:
        raise HttpRequestError("messages must be a non-empty list of {role, content} objects", param="messages")
    messages = []
    for index, message in enumerate(raw):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise HttpRequestError(f"{where} must be an object with role and content", param=where)
        role = message.get("role")
        if role not in _ROLES:
            raise HttpRequestError(f"{where}.role {role!r} is not supported; use one of "
                                   f"{', '.join(_ROLES)}", param=f"{where}.role")
        extra = sorted(set(message) - {"role", "content", "name"})
        if extra:
            raise HttpRequestError(f"{where}.{extra[0]} is not supported", param=f"{where}.{extra[0]}")
        messages.append(ChatMessage(_ROLES[role], _content(message.get("content"), where)))
    return tuple(messages)


def _content(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: text only
        texts = []
        for index, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise HttpRequestError(f"{where}.content[{index}] is a {kind!r} part; only text parts are "
                                       "supported", param=f"{where}.content[{index}]")
            texts.append(part["text"])
        return "".join(texts)
    raise HttpRequestError(f"{where}.content must be a string or a list of text parts", param=f"{where}.content")


def _max_tokens(body: Mapping[str, Any]) -> Optional[int]:
    legacy, current = _integer(body, "max_tokens"), _integer(body, "max_completion_tokens")
    if legacy is not None and current is not None and legacy != current:
        raise HttpRequestError("max_tokens and max_completion_tokens differ; send one of them",
                               param="max_completion_tokens")
    return current if current is not None else legacy


def _stop(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    stops = [raw] if isinstance(raw, str) else raw
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise HttpRequestError("stop must be a string or a list of strings", param="stop")
    if len(stops) > MAX_STOP:
        raise HttpRequestError(f"stop holds {len(stops)} sequences; at most {MAX_STOP}", param="stop")
    return tuple(stops)


def _seed(body: Mapping[str, Any]) -> Optional[int]:
    return _integer(body, "seed", minimum=None)


def _groups(hybrid: Mapping[str, Any]) -> tuple[str, ...]:
    groups = hybrid.get("groups")
    if groups is None:
        return ()
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise HttpRequestError("hybrid.groups must be a list of group names", param="hybrid.groups")
    return tuple(groups)


def _stream_draft(hybrid: Mapping[str, Any], header: Optional[str], stream: bool) -> Optional[bool]:
    """Held unless the client opts in: a plain OpenAI client cannot take back text it was sent. A unary
    answer is whole when it is sent, so the choice does not arise."""
    chosen = _optional(hybrid, "stream_draft", bool, "hybrid.")
    if header:
        if header.lower() not in ("stream", "hold"):
            raise HttpRequestError("X-Hybrid-Draft must be stream or hold", param="X-Hybrid-Draft")
        chosen = header.lower() == "stream"
    if not stream:
        return False
    return bool(chosen)


def _object(body: Mapping[str, Any], field: str) -> Mapping[str, Any]:
    value = body.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise HttpRequestError(f"{field} must be an object", param=field)
    return value


def _strings(body: Mapping[str, Any], field: str, prefix: str = "") -> dict[str, str]:
    value = _object(body, field)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise HttpRequestError(f"{prefix}{field} must map strings to strings", param=f"{prefix}{field}")
    return dict(value)


def _optional(body: Mapping[str, Any], field: str, kind: type, prefix: str = "") -> Any:
    value = body.get(field)
    if value is not None and (not isinstance(value, kind) or (kind is not bool and isinstance(value, bool))):
        raise HttpRequestError(f"{prefix}{field} must be a {kind.__name__}", param=f"{prefix}{field}")
    return value


def _integer(body: Mapping[str, Any], field: str, *, minimum: Optional[int] = 1) -> Optional[int]:
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise HttpRequestError(f"{field} must be an integer", param=field)
    if minimum is not None and value < minimum:
        raise HttpRequestError(f"{field} must be at least {minimum}", param=field)
    return value


def _number(body: Mapping[str, Any], field: str) -> Optional[float]:
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise HttpRequestError(f"{field} must be a number", param=field)
    return float(value)

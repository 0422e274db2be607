"""Request validation: every refusal names the field and says what to send instead."""
from __future__ import annotations

import math
import re
from typing import Collection

from router.domain.config import ServerSettings
from router.domain.errors import InvalidRequestError, ModeNotImplementedError
from router.domain.types import ROLES, Caller, GenerateRequest, GenerationParams, Mode

MAX_STOP_SEQUENCES = 16
SEED_MODULUS = 2**32  # llama.cpp seeds are 32-bit
# A request id is a key in the ledger, the logs and exports: short, and safe in a file name or a URL.
MAX_REQUEST_ID_CHARS = 128
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]+")


def resolve_mode(request: GenerateRequest, default_mode: Mode, implemented: Collection[Mode]) -> Mode:
    try:
        mode = Mode(int(request.mode))
    except ValueError:
        known = ", ".join(m.name for m in Mode if m is not Mode.UNSPECIFIED)
        raise InvalidRequestError(f"mode {int(request.mode)} is not a known mode; use one of: {known}") from None
    if mode is Mode.UNSPECIFIED:
        mode = default_mode
    if mode not in implemented:
        available = ", ".join(m.name for m in sorted(implemented))
        if mode is Mode.AUTO:  # implemented, but served only with probes trained for the daemon's edge model
            raise ModeNotImplementedError(
                f"mode AUTO is not served by this daemon: it needs probes trained for its edge model (the shipped "
                f"ones are for the default edge; docs/probes.md); this daemon serves: {available}")
        raise ModeNotImplementedError(
            f"mode {mode.name} is not implemented yet; this daemon implements: {available}")
    return mode


def validate_request_id(request_id: str) -> None:
    """An id the client supplied ('' means none: the router makes one)."""
    if not request_id:
        return
    if len(request_id) > MAX_REQUEST_ID_CHARS:
        raise InvalidRequestError(f"request_id is {len(request_id)} characters; at most {MAX_REQUEST_ID_CHARS} "
                                  "are accepted (or omit it and the router assigns one)")
    if not REQUEST_ID_PATTERN.fullmatch(request_id):
        raise InvalidRequestError("request_id may hold only letters A-Z and a-z, digits and . _ : -, "
                                  f"got {request_id!r} (or omit it and the router assigns one)")


MAX_CALLER_USER_CHARS = 256
MAX_CALLER_GROUPS = 64
MAX_GROUP_CHARS = 128


def validate_caller(caller: Caller) -> None:
    if len(caller.user) > MAX_CALLER_USER_CHARS:
        raise InvalidRequestError(f"caller.user is {len(caller.user)} characters; at most {MAX_CALLER_USER_CHARS}")
    if len(caller.groups) > MAX_CALLER_GROUPS:
        raise InvalidRequestError(f"caller.groups holds {len(caller.groups)} groups; at most {MAX_CALLER_GROUPS}")
    for index, group in enumerate(caller.groups):
        if not group.strip():
            raise InvalidRequestError(f"caller.groups[{index}] is empty; remove it or name the group")
        if len(group) > MAX_GROUP_CHARS:
            raise InvalidRequestError(f"caller.groups[{index}] is {len(group)} characters; at most {MAX_GROUP_CHARS}")


def request_size_bytes(request: GenerateRequest) -> int:
    """The request's size as every door measures it: the UTF-8 bytes of its text (messages, stop sequences,
    metadata, the reference answer, the caller), whatever the wire's own framing adds."""
    texts = [request.request_id, request.reference_answer or "", request.caller.user, *request.caller.groups,
             *request.stop, *(part for item in request.metadata.items() for part in item),
             *(part for message in request.messages for part in (message.role, message.content))]
    return sum(len(text.encode("utf-8", "surrogatepass")) for text in texts)


def validate_request(request: GenerateRequest, limits: ServerSettings) -> GenerationParams:
    validate_request_id(request.request_id)
    size = request_size_bytes(request)
    if size > limits.max_request_bytes:
        raise InvalidRequestError(f"the request is {size} bytes; the limit is {limits.max_request_bytes} bytes "
                                  "(server.max_request_bytes); send a shorter conversation")
    if not request.messages:
        raise InvalidRequestError("messages is empty; send at least one message, e.g. "
                                  "{role: 'user', content: 'your question'}")
    if len(request.messages) > limits.max_messages:
        raise InvalidRequestError(f"messages holds {len(request.messages)} messages; "
                                  f"at most {limits.max_messages} are accepted")
    for index, message in enumerate(request.messages):
        if message.role not in ROLES:
            raise InvalidRequestError(f"messages[{index}].role is {message.role!r}; "
                                      f"use one of: {', '.join(ROLES)}")
        if not message.content.strip():
            raise InvalidRequestError(f"messages[{index}].content is empty; every message needs text")

    max_tokens = limits.default_max_tokens if request.max_tokens is None else request.max_tokens
    if not 1 <= max_tokens <= limits.max_tokens_limit:
        raise InvalidRequestError(f"max_tokens must be between 1 and {limits.max_tokens_limit} "
                                  f"(got {max_tokens})")

    temperature = limits.default_temperature if request.temperature is None else request.temperature
    if not (math.isfinite(temperature) and 0.0 <= temperature <= limits.max_temperature):
        raise InvalidRequestError(f"temperature must be between 0 and {limits.max_temperature} "
                                  f"(got {temperature})")

    stop = tuple(request.stop)
    if len(stop) > MAX_STOP_SEQUENCES:
        raise InvalidRequestError(f"stop holds {len(stop)} sequences; at most {MAX_STOP_SEQUENCES} are accepted")
    for index, sequence in enumerate(stop):
        if not sequence:
            raise InvalidRequestError(f"stop[{index}] is empty; remove it or give a non-empty string")

    validate_caller(request.caller)
    seed = None if request.seed is None else request.seed % SEED_MODULUS
    return GenerationParams(max_tokens=max_tokens, temperature=float(temperature), stop=stop, seed=seed)

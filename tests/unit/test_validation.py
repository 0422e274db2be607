import pytest

from router.domain.config import ServerSettings
from router.domain.errors import InvalidRequestError, ModeNotImplementedError
from router.domain.types import Caller, ChatMessage, GenerateRequest, Mode
from router.domain.validation import MAX_REQUEST_ID_CHARS, resolve_mode, validate_request

LIMITS = ServerSettings(max_tokens_limit=100, default_max_tokens=10, default_temperature=0.2)
USER = (ChatMessage("user", "hi"),)
IMPLEMENTED = (Mode.EDGE_ONLY, Mode.CLOUD_ONLY)


def test_defaults_fill_in() -> None:
    params = validate_request(GenerateRequest(messages=USER), LIMITS)
    assert (params.max_tokens, params.temperature, params.stop, params.seed) == (10, 0.2, (), None)


def test_seed_folds_into_32_bits() -> None:
    assert validate_request(GenerateRequest(messages=USER, seed=-1), LIMITS).seed == 2**32 - 1


@pytest.mark.parametrize("request_, fragment", [
    (GenerateRequest(messages=()), "messages is empty"),
    (GenerateRequest(messages=(ChatMessage("bot", "x"),)), "messages[0].role is 'bot'"),
    (GenerateRequest(messages=(ChatMessage("user", "a"), ChatMessage("user", ""))), "messages[1].content is empty"),
    (GenerateRequest(messages=USER, max_tokens=101), "between 1 and 100 (got 101)"),
    (GenerateRequest(messages=USER, max_tokens=0), "(got 0)"),
    (GenerateRequest(messages=USER, temperature=2.5), "temperature must be between 0 and 2.0"),
    (GenerateRequest(messages=USER, temperature=float("inf")), "temperature"),
    (GenerateRequest(messages=USER, stop=("", "x")), "stop[0] is empty"),
    (GenerateRequest(messages=USER, stop=tuple("abcdefghijklmnopq")), "at most 16"),
    (GenerateRequest(messages=USER * 300), "at most 256"),
])
def test_refusals_name_the_field(request_: GenerateRequest, fragment: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        validate_request(request_, LIMITS)
    assert fragment in caught.value.message


def test_modes() -> None:
    assert resolve_mode(GenerateRequest(messages=USER), Mode.CLOUD_ONLY, IMPLEMENTED) == Mode.CLOUD_ONLY
    assert resolve_mode(GenerateRequest(messages=USER, mode=Mode.EDGE_ONLY), Mode.CLOUD_ONLY, IMPLEMENTED) == Mode.EDGE_ONLY
    with pytest.raises(InvalidRequestError, match="mode 99 is not a known mode"):
        resolve_mode(GenerateRequest(messages=USER, mode=99), Mode.EDGE_ONLY, IMPLEMENTED)
    with pytest.raises(ModeNotImplementedError, match="PRE_ARBITRATION is not implemented yet"):
        resolve_mode(GenerateRequest(messages=USER, mode=Mode.PRE_ARBITRATION), Mode.EDGE_ONLY, IMPLEMENTED)


@pytest.mark.parametrize("name, mode", [("edge", Mode.EDGE_ONLY), ("CLOUD_ONLY", Mode.CLOUD_ONLY),
                                        ("post-arbitration", Mode.POST_ARBITRATION), ("rag", Mode.EDGE_RAG_CLOUD_INFO)])
def test_mode_names(name: str, mode: Mode) -> None:
    assert Mode.parse(name) == mode


@pytest.mark.parametrize("request_id", [
    "", "r1", "unary-EDGE_ONLY", "bench-0123456789ab-CLOUD_ONLY-squad-56be4db0acb8001400a502ec-9f86d081e4",
    "a.b_c:d-E", "x" * MAX_REQUEST_ID_CHARS,
])
def test_request_ids_within_the_rules_pass(request_id: str) -> None:
    validate_request(GenerateRequest(messages=USER, request_id=request_id), LIMITS)


@pytest.mark.parametrize("request_id, fragment", [
    ("x" * (MAX_REQUEST_ID_CHARS + 1), "request_id is 129 characters; at most 128"),
    ("x" * 10_000, "request_id is 10000 characters"),
    ("has space", "request_id may hold only"),
    ("slash/es", "request_id may hold only"),
    ("ünïcode", "request_id may hold only"),
    ("new\nline", "request_id may hold only"),
])
def test_request_ids_outside_the_rules_are_refused(request_id: str, fragment: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        validate_request(GenerateRequest(messages=USER, request_id=request_id), LIMITS)
    assert fragment in caught.value.message
    assert "omit it" in caught.value.message


def test_the_size_limit_counts_the_texts_utf8_bytes_whatever_the_door() -> None:
    from router.domain.validation import request_size_bytes

    request = GenerateRequest(messages=(ChatMessage("user", "é" * 500),), stop=("##",), metadata={"k": "vv"},
                              caller=Caller(user="ann", groups=("hr",)))
    assert request_size_bytes(request) == 4 + 1000 + 2 + 1 + 2 + 3 + 2  # user, é×500, ##, k, vv, ann, hr
    limits = ServerSettings(max_request_bytes=1014)
    validate_request(request, limits)
    with pytest.raises(InvalidRequestError, match=r"the request is 1015 bytes; the limit is 1014 bytes"):
        validate_request(GenerateRequest(messages=request.messages, stop=("###",), metadata={"k": "vv"},
                                         caller=request.caller), limits)

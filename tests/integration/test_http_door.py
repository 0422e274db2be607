"""The OpenAI-compatible HTTP door through a real daemon, with real clients: the official `openai` client
unchanged (unary, streaming with usage, each error class, a rate limit's Retry-After honoured), curl, and
Prometheus' own parser on /metrics. The daemon runs the 135M model as the edge and as the stand-in cloud,
with tokens on, as a user would run it (`hybrid-router serve --http 127.0.0.1:8080`)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import httpx2 as httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from router.core.auth.principals import PrincipalsFile
from router.domain.access import Role
from tests.conftest import WAIT_S, ServerThread, make_settings, wait_until

pytestmark = pytest.mark.integration

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
LONG = [{"role": "user", "content": "Write a long story about a lighthouse keeper and the sea."}]


class Door:
    def __init__(self, server: ServerThread, home: Path, tokens: dict[str, str]) -> None:
        self.server, self.home, self.tokens = server, home, tokens
        self.base_url = f"http://{server.server.http.address}/v1"
        self.metrics_url = f"http://{server.server.metrics_http.address}/metrics"

    def client(self, who: str = "alice", **options: object) -> openai.OpenAI:
        options.setdefault("max_retries", 0)
        return openai.OpenAI(base_url=self.base_url, api_key=self.tokens[who], timeout=WAIT_S, **options)


@pytest.fixture(scope="module")
def door(smollm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    home = tmp_path_factory.mktemp("http")
    principals_file = home / "principals.toml"
    settings = make_settings({
        "HYBRID_ROUTER_AUTH__MODE": "token", "HYBRID_ROUTER_AUTH__PRINCIPALS_FILE": str(principals_file),
        "HYBRID_ROUTER_AUTH__LOCAL_TOKEN_FILE": str(home / "admin.token"),
        "HYBRID_ROUTER_HTTP__ADDRESS": "127.0.0.1:0", "HYBRID_ROUTER_METRICS__ADDRESS": "127.0.0.1:0",
        # A cascade that always escalates: POST_ARBITRATION's draft is always discarded for the cloud's answer.
        "HYBRID_ROUTER_ARBITRATION__SCORER": "logprob", "HYBRID_ROUTER_ARBITRATION__FIXED_THRESHOLD": "1.0",
        "HYBRID_ROUTER_LEDGER__ENABLED": "true", "HYBRID_ROUTER_LEDGER__PATH": str(home / "ledger.db")})
    server = ServerThread(settings)
    principals = PrincipalsFile(principals_file)
    tokens = {name: principals.issue(name, role, ()) for name, role in
              (("alice", Role.USER), ("bob", Role.USER), ("carol", Role.USER), ("dave", Role.USER),
               ("erin", Role.USER), ("prometheus", Role.MONITOR))}
    tokens["admin"] = (home / "admin.token").read_text().strip()
    yield Door(server, home, tokens)
    server.stop()


def ledger_row(door: Door, request_id: str) -> dict:
    ledger = door.server.server.daemon.ledger
    wait_until(lambda: ledger.flush(1) and ledger.ledger.get(request_id) is not None,
               f"request {request_id} in the ledger")
    return ledger.ledger.get(request_id)


# -- models -----------------------------------------------------------------------------------------------

def test_models_lists_one_id_per_mode_and_the_default(door: Door) -> None:
    ids = [model.id for model in door.client().models.list()]
    assert ids == ["hybrid/default", "hybrid/edge", "hybrid/cloud", "hybrid/pre", "hybrid/post", "hybrid/rag",
                   "hybrid/agent"]


# -- unary -------------------------------------------------------------------------------------------------

def test_a_unary_answer_names_the_model_that_answered_with_what_served_and_why(door: Door) -> None:
    raw = door.client().chat.completions.with_raw_response.create(model="hybrid/edge", messages=QUESTION,
                                                                  max_tokens=8, temperature=0)
    completion = raw.parse()
    hybrid = completion.model_extra["hybrid"]
    assert completion.object == "chat.completion" and completion.choices[0].message.content
    assert completion.model == "smollm2-135m" and completion.choices[0].finish_reason in ("stop", "length")
    assert hybrid["mode"] == "EDGE_ONLY" and hybrid["served_by"] == "edge" and not hybrid["escalated"]
    assert completion.usage.completion_tokens == hybrid["runs"][0]["completion_tokens"] > 0
    assert hybrid["cost_usd"]["total"] == pytest.approx(hybrid["cost_usd"]["edge"]) and hybrid["cost_usd"]["cloud"] == 0
    assert raw.headers["x-hybrid-served-by"] == "edge" and raw.headers["x-hybrid-mode"] == "EDGE_ONLY"
    assert raw.headers["x-hybrid-escalated"] == "false"
    assert float(raw.headers["x-hybrid-cost-usd"]) == pytest.approx(hybrid["cost_usd"]["total"], abs=1e-9)
    row = ledger_row(door, hybrid["request_id"])
    assert row["principal"] == "alice" and row["final_text"] == completion.choices[0].message.content


def test_the_mode_header_overrides_the_models_mode_and_an_escalation_is_said(door: Door) -> None:
    raw = door.client().chat.completions.with_raw_response.create(
        model="hybrid/edge", messages=QUESTION, max_tokens=6, temperature=0,
        extra_headers={"X-Hybrid-Mode": "post"})
    hybrid = raw.parse().model_extra["hybrid"]
    assert hybrid["mode"] == "POST_ARBITRATION" and hybrid["served_by"] == "cloud" and hybrid["escalated"]
    assert raw.headers["x-hybrid-escalated"] == "true" and "threshold" in hybrid["decision"]["reason"]
    assert [run["purpose"] for run in hybrid["runs"]][:1] == ["draft"]


def test_logprobs_are_the_served_answers_pieces(door: Door) -> None:
    completion = door.client().chat.completions.create(model="hybrid/edge", messages=QUESTION, max_tokens=6,
                                                      temperature=0, logprobs=True)
    pieces = completion.choices[0].logprobs.content
    assert "".join(piece.token for piece in pieces) == completion.choices[0].message.content
    assert all(piece.logprob <= 0 for piece in pieces)


# -- streaming ------------------------------------------------------------------------------------------------

def collect(stream) -> tuple[str, list]:
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


def test_a_stream_ends_with_the_decision_then_usage_and_matches_the_recorded_answer(door: Door) -> None:
    stream = door.client().chat.completions.create(model="hybrid/cloud", messages=QUESTION, max_tokens=10,
                                                  temperature=0, stream=True, stream_options={"include_usage": True})
    text, chunks = collect(stream)
    usage_chunk, last = chunks[-1], chunks[-2]
    assert usage_chunk.choices == [] and usage_chunk.usage.completion_tokens > 0
    assert all(chunk.usage is None for chunk in chunks[:-1])
    hybrid = last.model_extra["hybrid"]
    assert last.choices[0].finish_reason in ("stop", "length") and hybrid["served_by"] == "cloud"
    assert usage_chunk.usage.completion_tokens == hybrid["runs"][-1]["completion_tokens"]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({chunk.id for chunk in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert text and ledger_row(door, hybrid["request_id"])["final_text"] == text


def test_a_cascade_holds_its_draft_by_default_so_a_plain_client_reads_only_the_answer(door: Door) -> None:
    text, chunks = collect(door.client().chat.completions.create(
        model="hybrid/post", messages=QUESTION, max_tokens=8, temperature=0, stream=True))
    hybrid = chunks[-1].model_extra["hybrid"]
    assert hybrid["served_by"] == "cloud" and hybrid["escalated"]
    assert not any((c.model_extra or {}).get("hybrid", {}).get("discard_draft") for c in chunks)
    assert text == ledger_row(door, hybrid["request_id"])["final_text"]  # the cloud's answer only, no draft before it


def test_a_client_that_opts_in_sees_the_draft_then_the_discard_then_the_answer(door: Door) -> None:
    text, chunks = collect(door.client().chat.completions.create(
        model="hybrid/post", messages=QUESTION, max_tokens=8, temperature=0, stream=True,
        extra_headers={"X-Hybrid-Draft": "stream"}))
    marks = [i for i, c in enumerate(chunks) if (c.model_extra or {}).get("hybrid", {}).get("discard_draft")]
    assert len(marks) == 1
    after = "".join(c.choices[0].delta.content or "" for c in chunks[marks[0] + 1:] if c.choices)
    draft = "".join(c.choices[0].delta.content or "" for c in chunks[:marks[0]] if c.choices)
    hybrid = chunks[-1].model_extra["hybrid"]
    row = ledger_row(door, hybrid["request_id"])
    assert draft and text == draft + after and after == row["final_text"]


def test_a_client_that_goes_away_cancels_the_request_which_is_still_priced_and_recorded(door: Door) -> None:
    body = {"model": "hybrid/edge", "messages": LONG, "max_tokens": 400, "temperature": 0, "stream": True,
            "hybrid": {"request_id": "http-gone-1"}}
    with httpx.Client(timeout=WAIT_S) as client:
        with client.stream("POST", f"{door.base_url}/chat/completions", json=body,
                           headers={"authorization": f"Bearer {door.tokens['alice']}"}) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    break  # one piece of the answer read, then the client goes
    row = ledger_row(door, "http-gone-1")
    assert row["finish_reason"] == "cancelled"
    (run,) = row["backend_runs"]
    assert run["finish_reason"] == "cancelled" and 0 < run["completion_tokens"] < 400 and run["cost_usd"] > 0
    assert run["prompt_tokens"] > 0 and not run["usage_estimated"]  # counted by the edge, not guessed


# -- errors -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("field", "value"), [("n", 2), ("tools", [{"type": "function", "function": {"name": "f"}}]),
                                              ("response_format", {"type": "json_object"}), ("top_p", 0.5),
                                              ("frobnicate", 1)])
def test_an_unsupported_field_is_a_400_naming_it_never_dropped(door: Door, field: str, value: object) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        door.client().chat.completions.create(model="hybrid/edge", messages=QUESTION, extra_body={field: value})
    assert refused.value.status_code == 400 and refused.value.body["param"] == field
    assert refused.value.body["type"] == "invalid_request_error"


def test_bad_values_unknown_models_and_credentials_map_to_openais_error_classes(door: Door) -> None:
    with pytest.raises(openai.BadRequestError, match="max_tokens must be between 1 and 1024"):
        door.client().chat.completions.create(model="hybrid/edge", messages=QUESTION, max_tokens=5000)
    with pytest.raises(openai.BadRequestError) as empty:
        door.client().chat.completions.create(model="hybrid/edge", messages=[])
    assert empty.value.body["param"] == "messages"
    with pytest.raises(openai.NotFoundError) as unknown:
        door.client().chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert unknown.value.body["code"] == "model_not_found"
    bad = openai.OpenAI(base_url=door.base_url, api_key="hr_not-a-token", max_retries=0, timeout=WAIT_S)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="hybrid/edge", messages=QUESTION)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.PermissionDeniedError):  # a monitor token may scrape metrics, not generate
        door.client("prometheus").chat.completions.create(model="hybrid/edge", messages=QUESTION)
    with pytest.raises(openai.PermissionDeniedError, match="does not hold"):  # groups come from the principal
        door.client().chat.completions.create(model="hybrid/rag", messages=QUESTION,
                                              extra_body={"hybrid": {"groups": ["hr"]}})
    assert door.client().chat.completions.create(model="hybrid/edge", messages=QUESTION, max_tokens=2).id


def test_a_reused_request_id_is_a_409(door: Door) -> None:
    client = door.client("bob")
    client.chat.completions.create(model="hybrid/edge", messages=QUESTION, max_tokens=2,
                                   extra_body={"hybrid": {"request_id": "http-reused-1"}})
    ledger_row(door, "http-reused-1")
    with pytest.raises(openai.ConflictError):
        client.chat.completions.create(model="hybrid/edge", messages=QUESTION, max_tokens=2,
                                       extra_body={"hybrid": {"request_id": "http-reused-1"}})


def test_a_rate_limit_is_a_429_with_retry_after_that_the_client_honours(smollm_path: Path, tmp_path: Path) -> None:
    """One call, then one every RATE_PERIOD_S: the second call, sent as soon as the first is answered, is
    refused unless the first took the whole period (README "Test bounds": a one-token answer in 5 s)."""
    server = ServerThread(make_settings({
        "HYBRID_ROUTER_HTTP__ADDRESS": "127.0.0.1:0", "HYBRID_ROUTER_LIMITS__PER_PRINCIPAL_BURST": "1",
        "HYBRID_ROUTER_LIMITS__PER_PRINCIPAL_RATE_PER_S": "0.2"}))
    try:
        base_url = f"http://{server.server.http.address}/v1"
        client = openai.OpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=WAIT_S)
        client.chat.completions.create(model="hybrid/edge", messages=QUESTION, max_tokens=1)
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(model="hybrid/edge", messages=QUESTION, max_tokens=1)
        assert limited.value.body["type"] == "rate_limit_error"
        retry_after = int(limited.value.response.headers["retry-after"])
        assert 1 <= retry_after <= 5
        # With its retries the client waits as told, and the retry is served.
        patient = openai.OpenAI(base_url=base_url, api_key="none", max_retries=2, timeout=WAIT_S)
        assert patient.chat.completions.create(model="hybrid/edge", messages=QUESTION, max_tokens=1).choices
        families = {f.name: f for f in text_string_to_metric_families(server.server.daemon.metrics.exposition()[0].decode())}
        refused = [s for s in families["hybrid_requests"].samples if s.labels.get("outcome") == "rate_limited"]
        assert refused and refused[0].value >= 1
    finally:
        server.stop()


def test_a_request_after_the_door_stops_taking_them_is_a_503(door: Door) -> None:
    state = door.server.server.http_state
    state.accepting = False
    try:
        with pytest.raises(openai.InternalServerError) as refused:
            door.client("dave").chat.completions.create(model="hybrid/edge", messages=QUESTION, max_tokens=1)
        assert refused.value.status_code == 503 and "shutting down" in refused.value.message
    finally:
        state.accepting = True


# -- curl and metrics -----------------------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_unary_and_streamed(door: Door) -> None:
    auth = ["-H", f"Authorization: Bearer {door.tokens['erin']}", "-H", "Content-Type: application/json"]
    body = json.dumps({"model": "hybrid/edge", "messages": QUESTION, "max_tokens": 4})
    unary = subprocess.run(["curl", "-sS", "--fail-with-body", *auth, "-d", body, f"{door.base_url}/chat/completions"],
                           capture_output=True, text=True, timeout=WAIT_S, check=True)
    assert json.loads(unary.stdout)["hybrid"]["served_by"] == "edge"
    streamed = subprocess.run(["curl", "-sSN", "--fail-with-body", *auth, "-d",
                               json.dumps({**json.loads(body), "stream": True}), f"{door.base_url}/chat/completions"],
                              capture_output=True, text=True, timeout=WAIT_S, check=True)
    events = [line[len("data: "):] for line in streamed.stdout.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and json.loads(events[-2])["hybrid"]["served_by"] == "edge"


def test_metrics_after_real_requests_parse_and_need_the_metrics_action(door: Door) -> None:
    door.client("erin").chat.completions.create(model="hybrid/edge", messages=QUESTION, max_tokens=2)
    with httpx.Client(timeout=WAIT_S) as client:
        assert client.get(door.metrics_url).status_code == 401
        assert client.get(door.metrics_url, headers={"authorization": f"Bearer {door.tokens['erin']}"}).status_code == 403
        scraped = client.get(door.metrics_url, headers={"authorization": f"Bearer {door.tokens['prometheus']}"})
    assert scraped.status_code == 200
    families = {family.name: family for family in text_string_to_metric_families(scraped.text)}
    answered = [s for s in families["hybrid_requests"].samples if s.name == "hybrid_requests_total"
                and s.labels == {"mode": "edge_only", "served_by": "edge", "outcome": "answered"}]
    assert answered and answered[0].value >= 1
    for name in ("gen_ai_client_token_usage", "gen_ai_client_operation_duration_seconds",
                 "gen_ai_server_time_to_first_token_seconds", "hybrid_cost_usd", "hybrid_models_info",
                 "hybrid_backend_queue_depth", "hybrid_cloud_breaker_state"):
        assert name in families, name
    assert all("alice" not in str(s.labels) for family in families.values() for s in family.samples)


def test_a_cloud_past_its_deadline_is_a_504_and_an_open_breaker_a_503_with_retry_after(smollm_path: Path) -> None:
    from cloud.fault_injection_server import Fault, FaultInjectionOpenAIServer

    with FaultInjectionOpenAIServer(hang_s=WAIT_S, canned_answer="4") as cloud:
        server = ServerThread(make_settings({
            "HYBRID_ROUTER_HTTP__ADDRESS": "127.0.0.1:0", "HYBRID_ROUTER_CLOUD__BASE_URL": cloud.base_url,
            "HYBRID_ROUTER_CLOUD__API_KEY": "sk-test-http-fault", "HYBRID_ROUTER_CLOUD__MODEL": "fault-model",
            "HYBRID_ROUTER_CLOUD__MAX_RETRIES": "0", "HYBRID_ROUTER_CLOUD__TIMEOUT_S": "2",
            "HYBRID_ROUTER_BREAKER__FAILURES_TO_OPEN": "2", "HYBRID_ROUTER_BREAKER__WHEN_OPEN": "fail",
            "HYBRID_ROUTER_BREAKER__COOLDOWN_S": "600"}))
        try:
            client = openai.OpenAI(base_url=f"http://{server.server.http.address}/v1", api_key="none",
                                   max_retries=0, timeout=WAIT_S)
            assert client.chat.completions.create(model="hybrid/cloud", messages=QUESTION).choices[0].message.content == "4"
            cloud.inject(Fault.HANG)
            with pytest.raises(openai.InternalServerError) as late:
                client.chat.completions.create(model="hybrid/cloud", messages=QUESTION)
            assert late.value.status_code == 504 and late.value.body["type"] == "timeout"
            cloud.inject(Fault.STATUS_503)
            with pytest.raises(openai.InternalServerError) as down:
                client.chat.completions.create(model="hybrid/cloud", messages=QUESTION)
            assert down.value.status_code == 503
            seen = cloud.requests_seen
            with pytest.raises(openai.InternalServerError, match="circuit breaker is open") as open_breaker:
                client.chat.completions.create(model="hybrid/cloud", messages=QUESTION)
            assert open_breaker.value.status_code == 503 and int(open_breaker.value.response.headers["retry-after"]) > 0
            assert cloud.requests_seen == seen  # refused without a call
            assert client.chat.completions.create(model="hybrid/edge", messages=QUESTION, max_tokens=2).choices
        finally:
            server.stop()


# -- a framework client: LangChain --------------------------------------------------------------------------------

def test_langchains_chat_openai_works_unchanged_unary_and_streaming(door: Door, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """LangChain's ChatOpenAI sends max_completion_tokens and, streaming, reads a usage chunk. It needs nothing
    from the internet here: only counting tokens (get_num_tokens) would fetch tiktoken's encodings, and an
    empty tiktoken cache proves nothing was fetched."""
    from langchain_openai import ChatOpenAI

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken"))
    chat = ChatOpenAI(base_url=door.base_url, api_key=door.tokens["dave"], model="hybrid/edge", max_retries=0,
                      max_tokens=6, temperature=0, timeout=WAIT_S)
    answer = chat.invoke("What is the capital of France?")
    assert answer.content and answer.response_metadata["model_name"] == "smollm2-135m"
    assert answer.usage_metadata["output_tokens"] > 0
    pieces = list(ChatOpenAI(base_url=door.base_url, api_key=door.tokens["dave"], model="hybrid/post",
                             max_retries=0, max_tokens=6, temperature=0, timeout=WAIT_S, stream_usage=True)
                  .stream("What is the capital of France?"))
    text = "".join(piece.content for piece in pieces)
    assert text and any(piece.usage_metadata for piece in pieces)
    assert not (tmp_path / "tiktoken").exists() or not any((tmp_path / "tiktoken").iterdir())


# -- one drain for both doors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("grace_s", ["60", "0.5"])
def test_a_shutdown_drains_http_requests_in_flight_then_cuts_them_with_a_503(smollm_path: Path, grace_s: str) -> None:
    """The daemon's one drain covers the HTTP door: a request in flight when the daemon stops is answered if it
    ends within server.grace_period_s (a cloud that answers after a second), and cut with a 503 that says why
    if it does not (a cloud that never answers)."""
    import threading

    from cloud.fault_injection_server import Fault, FaultInjectionOpenAIServer

    with FaultInjectionOpenAIServer(canned_answer="4", answer_latency_s=1.0, hang_s=WAIT_S) as cloud:
        if grace_s == "0.5":
            cloud.inject(Fault.HANG)
        server = ServerThread(make_settings({
            "HYBRID_ROUTER_HTTP__ADDRESS": "127.0.0.1:0", "HYBRID_ROUTER_SERVER__GRACE_PERIOD_S": grace_s,
            "HYBRID_ROUTER_CLOUD__BASE_URL": cloud.base_url, "HYBRID_ROUTER_CLOUD__API_KEY": "sk-test-http-drain",
            "HYBRID_ROUTER_CLOUD__MODEL": "fault-model", "HYBRID_ROUTER_CLOUD__TIMEOUT_S": str(WAIT_S)}))
        client = openai.OpenAI(base_url=f"http://{server.server.http.address}/v1", api_key="none", max_retries=0,
                               timeout=WAIT_S)
        outcome: dict[str, object] = {}

        def ask() -> None:
            try:
                outcome["answer"] = client.chat.completions.create(model="hybrid/cloud", messages=QUESTION)
            except openai.APIError as exc:
                outcome["error"] = exc

        asker = threading.Thread(target=ask)
        asker.start()
        wait_until(lambda: cloud.requests_seen == 1 and len(server.server.daemon.calls) == 1,
                   "the HTTP request in flight at the cloud")
        server.stop()
        asker.join(WAIT_S)
    if grace_s == "60":
        assert "error" not in outcome and outcome["answer"].choices[0].message.content == "4"
    else:
        error = outcome["error"]
        assert isinstance(error, openai.InternalServerError) and error.status_code == 503
        assert "grace period" in error.message

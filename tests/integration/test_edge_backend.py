"""The llama.cpp edge backend with the real SmolLM2-135M model (pulled by the test suite first)."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from tests.conftest import models_dir, wait_until_async
from llama_cpp import llama_chat_format

from edge.catalogue import ModelCache
from edge.errors import EdgeGenerationError, PromptTemplateError, PromptTooLongError
from edge.llama_backend import EdgeCompletion, LlamaBackend, TokenDelta

pytestmark = pytest.mark.integration

TEST_MODEL = "smollm2-135m"
N_CTX = 512
Messages = Sequence[Mapping[str, str]]


def ask(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


@pytest.fixture(scope="session")
def smollm_model_path() -> Path:
    # No skip when the file is absent: the suite pulls it first, so absence is a failure.
    return ModelCache(models_dir()).require(TEST_MODEL)


@pytest.fixture(scope="session")
def smollm_backend(smollm_model_path: Path) -> Iterator[LlamaBackend]:
    backend = LlamaBackend(smollm_model_path, model_name=TEST_MODEL, n_ctx=N_CTX, n_threads=1)
    yield backend
    backend.close()


async def collect(
    backend: LlamaBackend, messages: Messages, **params
) -> tuple[list[TokenDelta], EdgeCompletion]:
    stream = backend.stream(messages, **params)
    deltas = [delta async for delta in stream]
    assert stream.completion is not None
    return deltas, stream.completion


async def test_stream_yields_text_and_a_consistent_completion(smollm_backend: LlamaBackend) -> None:
    deltas, completion = await collect(
        smollm_backend, ask("Name three colours."), max_tokens=16, temperature=0
    )

    assert completion.text.strip()
    assert "".join(d.text for d in deltas) == completion.text
    assert completion.completion_tokens == sum(len(d.token_ids) for d in deltas) == len(completion.token_logprobs)
    assert completion.token_logprobs == tuple(lp for d in deltas for lp in d.token_logprobs)
    assert all(lp <= 0 for lp in completion.token_logprobs)
    assert completion.prompt_tokens > 5
    assert completion.model == TEST_MODEL
    assert completion.finish_reason in ("stop", "length")
    if completion.finish_reason == "length":
        assert completion.completion_tokens == 16
    assert 0 <= completion.queue_s <= completion.ttft_s <= completion.total_s


async def test_a_flush_interval_sends_the_first_token_alone_and_merges_the_rest(smollm_model_path: Path) -> None:
    # An interval longer than the whole answer: after the first token's wake-up, the tokens wait for
    # the end and arrive merged, their logprobs kept one by one.
    backend = LlamaBackend(smollm_model_path, model_name=TEST_MODEL, n_ctx=N_CTX, n_threads=1,
                           stream_flush_interval_s=60.0)
    try:
        deltas, completion = await collect(backend, ask("Count from one to twenty in words."),
                                           max_tokens=24, temperature=0)
    finally:
        backend.close()
    assert completion.completion_tokens == 24
    assert len(deltas) < completion.completion_tokens
    assert max(len(d.token_ids) for d in deltas) > 1
    assert "".join(d.text for d in deltas) == completion.text
    assert completion.token_logprobs == tuple(lp for d in deltas for lp in d.token_logprobs)
    assert deltas[0].logprob == pytest.approx(sum(deltas[0].token_logprobs))


async def test_natural_end_is_reported_as_stop_on_the_eog_token(smollm_backend: LlamaBackend) -> None:
    # Greedy SmolLM2-135M answers this in a few tokens and then emits <|im_end|>.
    deltas, completion = await collect(
        smollm_backend, ask("What is 2+2? Answer with a number only."), max_tokens=64, temperature=0
    )
    assert completion.finish_reason == "stop"
    assert completion.completion_tokens < 64
    assert llama_cpp.llama_vocab_is_eog(smollm_backend._vocab, deltas[-1].token_ids[-1])
    assert "4" in completion.text
    assert "<|im_end|>" not in completion.text


async def test_logprobs_match_a_logits_all_reference(
    smollm_backend: LlamaBackend, smollm_model_path: Path
) -> None:
    messages = ask("Say hi.")
    deltas, completion = await collect(smollm_backend, messages, max_tokens=8, temperature=0)
    generated = [token for d in deltas for token in d.token_ids]

    reference = llama_cpp.Llama(
        str(smollm_model_path), n_ctx=N_CTX, n_threads=1, logits_all=True, verbose=False
    )
    try:
        formatter = llama_chat_format.Jinja2ChatFormatter(
            template=reference.metadata["tokenizer.chat_template"],
            eos_token=reference._model.token_get_text(reference.token_eos()),
            bos_token=reference._model.token_get_text(reference.token_bos()),
        )
        prompt = reference.tokenize(
            formatter(messages=messages).prompt.encode(), add_bos=False, special=True
        )
        assert len(prompt) == completion.prompt_tokens
        # Same evaluation path as generation (prompt batch, then one token at a time), but every
        # position's logits are kept.
        reference.eval(prompt)
        for token in generated[:-1]:
            reference.eval([token])
        rows = np.asarray(reference.scores[len(prompt) - 1 : reference.n_tokens], dtype=np.float64)
    finally:
        reference.close()

    shifted = rows - rows.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    expected = log_softmax[np.arange(len(generated)), generated]
    np.testing.assert_allclose(completion.token_logprobs, expected, atol=1e-3)
    # greedy: each token was (up to a tie) the most likely one
    np.testing.assert_allclose(expected, log_softmax.max(axis=1), atol=1e-3)


async def test_aclose_stops_generation_within_a_few_tokens(smollm_backend: LlamaBackend) -> None:
    before = smollm_backend.metrics
    stream = smollm_backend.stream(
        ask("Write a very long story about a dragon."), max_tokens=400, temperature=0
    )
    received = [await stream.__anext__() for _ in range(3)]
    await stream.aclose()

    after = smollm_backend.metrics
    assert len(received) == 3
    assert stream.completion is not None
    assert stream.completion.finish_reason == "cancelled"
    assert 3 <= stream.completion.completion_tokens <= 6
    assert after.cancelled == before.cancelled + 1
    assert after.last_completion_tokens == stream.completion.completion_tokens
    assert after.tokens_generated - before.tokens_generated <= 6
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()

    _, following = await collect(smollm_backend, ask("Say hello."), max_tokens=4, temperature=0)
    assert following.completion_tokens >= 1 and following.finish_reason in ("stop", "length")


async def test_abandoning_the_iterator_in_aclosing_cancels(smollm_backend: LlamaBackend) -> None:
    before = smollm_backend.metrics
    stream = smollm_backend.stream(ask("Count from one to one hundred."), max_tokens=400, temperature=0)
    seen = 0
    async with contextlib.aclosing(stream):
        async for _ in stream:
            seen += 1
            if seen == 3:
                break
    assert stream.completion is not None and stream.completion.finish_reason == "cancelled"
    assert smollm_backend.metrics.cancelled == before.cancelled + 1
    assert smollm_backend.metrics.last_completion_tokens <= 6


async def test_a_stream_closed_before_it_started_ends_with_an_empty_cancelled_completion(
    smollm_backend: LlamaBackend,
) -> None:
    stream = smollm_backend.stream(ask("Say hello."), max_tokens=8, temperature=0)
    await stream.aclose()
    assert stream.completion is not None and stream.completion.finish_reason == "cancelled"
    assert (stream.completion.prompt_tokens, stream.completion.completion_tokens) == (0, 0)


async def test_a_failure_mid_generation_still_reports_what_was_generated(
    smollm_backend: LlamaBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    read_logprob = smollm_backend._logprob_of_last_sample
    sampled = 0

    def fault_injection_on_the_fourth_token(token: int, scratch: np.ndarray) -> float:
        nonlocal sampled
        sampled += 1
        if sampled == 4:
            raise RuntimeError("injected fault: the logits row is unreadable")
        return read_logprob(token, scratch)

    monkeypatch.setattr(smollm_backend, "_logprob_of_last_sample", fault_injection_on_the_fourth_token)
    stream = smollm_backend.stream(ask("Write a very long story about a dragon."), max_tokens=64, temperature=0)
    received: list[TokenDelta] = []
    with pytest.raises(EdgeGenerationError, match="injected fault"):
        async for delta in stream:
            received.append(delta)
    completion = stream.completion
    assert completion is not None and completion.finish_reason == "error"
    assert completion.completion_tokens == 3 and completion.prompt_tokens > 0  # the prompt was evaluated
    assert completion.text == "".join(delta.text for delta in received)


async def test_a_prompt_that_does_not_fit_is_refused_and_the_backend_carries_on(
    smollm_backend: LlamaBackend,
) -> None:
    long_question = "Please summarise this. " + "The quick brown fox jumps over the lazy dog. " * 60
    stream = smollm_backend.stream(ask(long_question), max_tokens=32, temperature=0)
    with pytest.raises(PromptTooLongError) as caught:
        await stream.__anext__()
    error = caught.value
    assert error.prompt_tokens > N_CTX and error.max_tokens == 32 and error.n_ctx == N_CTX
    # Refused before the model saw it: the stream still ends with a completion, which spent nothing.
    assert stream.completion is not None and stream.completion.finish_reason == "error"
    assert (stream.completion.prompt_tokens, stream.completion.completion_tokens) == (0, 0)
    assert f"prompt is {error.prompt_tokens} tokens and max_tokens is 32" in str(error)
    assert f"holds {N_CTX} tokens" in str(error) and "lower max_tokens" in str(error)

    # Fits alone, but not together with the requested completion.
    with pytest.raises(PromptTooLongError) as caught:
        await collect(smollm_backend, ask("Hi"), max_tokens=N_CTX, temperature=0)
    assert caught.value.max_tokens == N_CTX and caught.value.prompt_tokens < N_CTX

    _, completion = await collect(smollm_backend, ask("Say hello."), max_tokens=4, temperature=0)
    assert completion.completion_tokens >= 1


async def test_stop_strings_end_the_text_and_are_never_shown(smollm_backend: LlamaBackend) -> None:
    messages = ask("Write a short poem about the sea.")
    free_deltas, free = await collect(smollm_backend, messages, max_tokens=24, temperature=0)
    # A stop string that spans token boundaries, taken from the unconstrained greedy answer.
    stop = "".join(d.text for d in free_deltas[2:5])
    assert stop.strip()
    expected_text = free.text[: free.text.index(stop)]

    deltas, stopped = await collect(smollm_backend, messages, max_tokens=24, temperature=0, stop=[stop])

    assert stopped.finish_reason == "stop"
    assert stopped.text == expected_text
    assert "".join(d.text for d in deltas) == expected_text
    assert stopped.completion_tokens < free.completion_tokens


async def test_a_fixed_seed_reproduces_and_other_seeds_vary(smollm_backend: LlamaBackend) -> None:
    messages = ask("Tell me a fact about animals.")

    async def sample(seed: int | None) -> str:
        _, completion = await collect(
            smollm_backend, messages, max_tokens=12, temperature=0.8, seed=seed
        )
        return completion.text

    assert await sample(7) == await sample(7)
    assert len({await sample(seed) for seed in (1, 2, 3, 4)}) > 1
    assert len({await sample(None) for _ in range(4)}) > 1  # no seed: a fresh one per request


async def test_concurrent_streams_are_served_one_at_a_time(smollm_backend: LlamaBackend) -> None:
    order: list[str] = []

    async def consume(label: str, content: str) -> EdgeCompletion:
        stream = smollm_backend.stream(ask(content), max_tokens=8, temperature=0)
        async for _ in stream:
            order.append(label)
        assert stream.completion is not None
        return stream.completion

    first, second = await asyncio.gather(
        consume("a", "Name a fruit."), consume("b", "Name a country.")
    )

    assert order == sorted(order)  # every token of "a" before any token of "b"
    assert set(order) == {"a", "b"}
    assert second.queue_s > 0
    assert second.queue_s > first.queue_s


async def test_closing_a_queued_stream_cancels_it_without_running(smollm_backend: LlamaBackend) -> None:
    running = smollm_backend.stream(ask("Describe a forest."), max_tokens=12, temperature=0)
    await running.__anext__()  # holds the model
    queued = smollm_backend.stream(ask("Describe a river."), max_tokens=12, temperature=0)
    waiter = asyncio.ensure_future(queued.__anext__())
    await wait_until_async(lambda: queued._waiting_for_lock, "the queued stream waiting for the model")

    await queued.aclose()

    with pytest.raises(StopAsyncIteration):
        await waiter
    assert queued.completion is not None
    assert queued.completion.finish_reason == "cancelled"
    assert queued.completion.completion_tokens == 0
    rest = [d async for d in running]
    assert running.completion is not None and running.completion.completion_tokens == 1 + len(rest)


async def test_metrics_count_requests_and_tokens(smollm_backend: LlamaBackend) -> None:
    before = smollm_backend.metrics
    _, completion = await collect(smollm_backend, ask("Say hello."), max_tokens=5, temperature=0)
    after = smollm_backend.metrics
    assert after.requests == before.requests + 1
    assert after.tokens_generated == before.tokens_generated + completion.completion_tokens
    assert after.last_completion_tokens == completion.completion_tokens
    assert after.cancelled == before.cancelled


async def test_a_template_that_refuses_the_messages_is_the_requests_fault(smollm_model_path: Path) -> None:
    # Mistral's real template, as llama-cpp-python ships it: roles must alternate, and no system turn.
    strict = LlamaBackend(smollm_model_path, model_name=TEST_MODEL, n_ctx=N_CTX, n_threads=1,
                          chat_template=llama_chat_format.MISTRAL_INSTRUCT_CHAT_TEMPLATE)
    try:
        with pytest.raises(PromptTemplateError, match="roles must alternate"):
            await collect(strict, [{"role": "user", "content": "Hi"}, {"role": "user", "content": "Hi again"}],
                          max_tokens=4, temperature=0)
        deltas, completion = await collect(strict, ask("Say hello."), max_tokens=4, temperature=0)
        assert completion.completion_tokens >= 1, "the backend must keep serving after a refused template"
    finally:
        strict.close()

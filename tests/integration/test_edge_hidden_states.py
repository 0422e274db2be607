"""The edge's hidden states, read from the generating context of the real 135M model: the state at the
prompt's end equals a plain evaluation's, the draft's state equals one evaluation of prompt plus draft
(what the corpus relabelling computes), capturing changes no token, and a prefill read before a decision
is reused by the stream that follows it."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from edge._hidden_states import set_embeddings
from edge.errors import PromptTooLongError
from edge.llama_backend import EdgeCompletion, LlamaBackend
from tests.conftest import TEST_MODEL

MESSAGES = ({"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "What is 12 times 7? Answer briefly."})
OTHER = ({"role": "user", "content": "Name a colour."},)


@pytest.fixture(scope="module")
def edge(smollm_path: Path) -> Iterator[LlamaBackend]:
    backend = LlamaBackend(smollm_path, model_name=TEST_MODEL, n_ctx=512, n_threads=1)
    yield backend
    backend.close()


async def run(edge: LlamaBackend, messages=MESSAGES, **params) -> EdgeCompletion:
    return (await run_with_tokens(edge, messages, **params))[0]


async def run_with_tokens(edge: LlamaBackend, messages=MESSAGES, **params) -> tuple[EdgeCompletion, list[int]]:
    stream = edge.stream(messages, max_tokens=params.pop("max_tokens", 40), temperature=0.0, **params)
    tokens = [token async for delta in stream for token in delta.token_ids]
    assert stream.completion is not None
    return stream.completion, tokens


def states_of_one_evaluation(edge: LlamaBackend, tokens: list[int]) -> np.ndarray:
    """Every token's final-layer state from a single batch: the relabelling's way (outside the backend)."""
    llm = edge._llm
    llm.reset()
    set_embeddings(llm, True)
    llm.eval(tokens)
    rows = [llama_cpp.llama_get_embeddings_ith(llm._ctx.ctx, i) for i in range(len(tokens))]
    assert all(rows)
    states = np.stack([np.ctypeslib.as_array(row, shape=(edge.n_embd,)).copy() for row in rows])
    llm.reset()
    return states


def assert_is_the_last_rows_state(state: np.ndarray, rows: np.ndarray) -> None:
    """Equal to the batch's last row up to the float error between llama.cpp's single-token and batch
    kernels (whose sums are ordered differently), and far from every other token's state: the error is
    measured against the nearest neighbour, so the bound holds on any build without a tuned constant."""
    distance = lambda row: float(np.linalg.norm(state - row) / np.linalg.norm(row))  # noqa: E731
    assert distance(rows[-1]) < 0.1 * min(distance(row) for row in rows[-4:-1])
    assert state @ rows[-1] / (np.linalg.norm(state) * np.linalg.norm(rows[-1])) > 0.99


def test_capturing_changes_no_token_and_carries_both_states(edge: LlamaBackend) -> None:
    plain = asyncio.run(run(edge))
    captured = asyncio.run(run(edge, capture_states=True))
    assert plain.states is None
    assert captured.text == plain.text and captured.token_logprobs == plain.token_logprobs
    assert captured.finish_reason == "stop"
    states = captured.states
    assert states is not None and states.layer == "final_norm"
    assert states.prompt.shape == (edge.n_embd,) == states.draft.shape and edge.n_embd == 576
    assert states.prompt.dtype == np.float32 and np.isfinite(states.draft).all()
    assert not np.allclose(states.prompt, states.draft)


def test_the_states_equal_one_evaluation_of_prompt_and_draft(edge: LlamaBackend) -> None:
    completion, generated = asyncio.run(run_with_tokens(edge, capture_states=True))
    prompt = edge.prompt_token_ids(MESSAGES)
    draft = edge._llm.tokenize(completion.text.encode(), add_bos=False, special=False)
    assert generated == [*draft, edge._llm.token_eos()]  # the text's tokens, then the end of generation
    rows = states_of_one_evaluation(edge, [*prompt, *draft])
    assert_is_the_last_rows_state(completion.states.prompt, rows[:len(prompt)])
    assert_is_the_last_rows_state(completion.states.draft, rows)


def test_a_draft_cut_by_max_tokens_keeps_the_state_before_its_last_token(edge: LlamaBackend) -> None:
    completion, generated = asyncio.run(run_with_tokens(edge, OTHER, max_tokens=3, capture_states=True))
    assert completion.finish_reason == "length" and len(generated) == 3
    prompt = edge.prompt_token_ids(OTHER)
    assert_is_the_last_rows_state(completion.states.draft, states_of_one_evaluation(edge, [*prompt, *generated[:2]]))


def test_the_prefill_read_before_a_decision_is_reused_by_the_stream(edge: LlamaBackend) -> None:
    async def scenario():
        await run(edge, OTHER)  # the context holds another prompt
        read = await edge.read_prompt_state(MESSAGES)
        stream = edge.stream(MESSAGES, max_tokens=40, temperature=0.0, capture_states=True)
        async for _ in stream:
            pass
        again = await edge.read_prompt_state(MESSAGES)
        return read, stream.completion, again

    read, completion, again = asyncio.run(scenario())
    prompt = edge.prompt_token_ids(MESSAGES)
    assert read.prompt_tokens == len(prompt)
    assert read.reused_prompt_tokens < len(prompt) - 1  # only the chat template's opening was cached
    np.testing.assert_array_equal(read.state, completion.states.prompt)
    # The whole prompt but its last token (evaluated again to read it) comes from the cache.
    assert again.reused_prompt_tokens == len(prompt) - 1
    np.testing.assert_array_equal(again.state, read.state)
    plain = asyncio.run(run(edge))
    assert completion.text == plain.text


def test_a_prompt_too_long_to_read_is_refused_typed(edge: LlamaBackend) -> None:
    with pytest.raises(PromptTooLongError):
        asyncio.run(edge.read_prompt_state(({"role": "user", "content": "word " * 600},)))
    assert asyncio.run(run(edge)).text  # and the model still serves

"""EDGE_AGENT_CLOUD_INFO's step grammar, checked by llama.cpp's own grammar engine over the 135M model's
vocabulary, and by generating under it. Parsing and the prompt itself are in tests/unit/test_agent_prompt.py."""
from __future__ import annotations

import ctypes
import json
import math
from pathlib import Path
from typing import Iterator

import llama_cpp
import pytest

from edge.llama_backend import EdgeCompletion, LlamaBackend
from router.core.modes.agent_prompt import ANSWER, TOOLS, WORKED_EXAMPLES, parse_step, step_grammar
from tests.conftest import TEST_MODEL

STEP = '{"thought": "4 pens cost 4 * 3.", "tool": "calculate", "input": "20 - 4 * 3"}'


# -- the grammar, in llama.cpp's own grammar engine -------------------------------------------------

@pytest.fixture(scope="module")
def vocab_model(smollm_path: Path) -> Iterator[llama_cpp.Llama]:
    model = llama_cpp.Llama(model_path=str(smollm_path), vocab_only=True, verbose=False)
    yield model
    model.close()


def grammar_accepts(model: llama_cpp.Llama, grammar: str, text: str) -> bool:
    """Whether llama.cpp's grammar sampler lets the model write exactly `text` and then stop: each token
    of `text` must survive the sampler, and the end-of-generation token must be allowed after it."""
    vocab = model._model.vocab
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    assert sampler, "llama.cpp could not parse the grammar"
    try:
        tokens = model.tokenize(text.encode(), add_bos=False, special=False)
        for token in [*tokens, llama_cpp.llama_vocab_eos(vocab)]:
            data = (llama_cpp.llama_token_data * 1)(llama_cpp.llama_token_data(token, 0.0, 0.0))
            candidates = llama_cpp.llama_token_data_array(data=data, size=1, selected=-1, sorted=False)
            llama_cpp.llama_sampler_apply(sampler, ctypes.byref(candidates))
            if math.isinf(data[0].logit):
                return False
            llama_cpp.llama_sampler_accept(sampler, token)
        return True
    finally:
        llama_cpp.llama_sampler_free(sampler)


@pytest.mark.parametrize("text", [
    STEP,
    '{"thought": "", "tool": "answer", "input": "8"}',
    '{"thought": "say \\"hi\\"\\n", "tool": "search", "input": "caf\\u00e9 opening hours"}',
    '{"thought": "unicode is fine: été", "tool": "ask_cloud", "input": "What is the capital of Peru?"}',
    *(content for role, content in WORKED_EXAMPLES if role == "assistant"),
])
def test_the_grammar_accepts_steps(vocab_model: llama_cpp.Llama, text: str) -> None:
    assert grammar_accepts(vocab_model, step_grammar(), text)
    parse_step(text)  # and what it accepts parses


@pytest.mark.parametrize("text", [
    "The answer is 8.",
    '{"thought": "x", "tool": "shell", "input": "ls"}',  # an unknown tool
    '{"tool": "answer", "thought": "x", "input": "8"}',  # keys out of order
    '{"thought": "x","tool": "answer","input": "8"}',  # other spacing
    '{"thought": "x", "tool": "answer", "input": "8"} and more',  # text after the object
    '{"thought": "x", "tool": "answer", "input": "8"',  # cut short: the end is not allowed yet
    '{"thought": "a raw\nnewline", "tool": "answer", "input": "8"}',  # control characters must be escaped
    '{"thought": "bad \\q escape", "tool": "answer", "input": "8"}',
    '{"thought": "x", "tool": "answer", "input": 8}',  # the input is a string
])
def test_the_grammar_rejects_anything_else(vocab_model: llama_cpp.Llama, text: str) -> None:
    assert not grammar_accepts(vocab_model, step_grammar(), text)


def test_the_answer_only_grammar_allows_only_the_answer_tool(vocab_model: llama_cpp.Llama) -> None:
    forced = step_grammar((ANSWER,))
    assert grammar_accepts(vocab_model, forced, '{"thought": "done", "tool": "answer", "input": "8"}')
    for tool in TOOLS:
        if tool != ANSWER:
            assert not grammar_accepts(vocab_model, forced, json.dumps(
                {"thought": "t", "tool": tool, "input": "x"}))


# -- the grammar, while the 135M model generates ----------------------------------------------------

@pytest.fixture
def edge(smollm_edge: LlamaBackend) -> LlamaBackend:
    return smollm_edge


async def generate(edge: LlamaBackend, prompt: str, grammar: str, max_tokens: int = 96) -> tuple[str, EdgeCompletion]:
    stream = edge.stream([{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0.0,
                         grammar=grammar)
    try:
        text = "".join([delta.text async for delta in stream])
    finally:
        await stream.aclose()
    assert stream.completion is not None
    return text, stream.completion


async def test_the_model_writes_a_step_under_the_grammar_even_when_asked_for_prose(edge: LlamaBackend) -> None:
    text, completion = await generate(edge, "Write a short poem about the sea.", step_grammar())
    # The model wrote it, and stopped at the end of the object rather than at the token cap.
    assert completion.model == TEST_MODEL and completion.completion_tokens > 0 and completion.text == text
    assert completion.finish_reason == "stop"
    step = parse_step(text)  # the grammar kept the poem inside one step's strings
    assert step.tool in TOOLS


async def test_the_answer_only_grammar_makes_the_model_answer(edge: LlamaBackend) -> None:
    text, _ = await generate(edge, 'Reply {"thought": "x", "tool": "calculate", "input": "2 + 2"}',
                             step_grammar((ANSWER,)))
    assert parse_step(text, (ANSWER,)).tool == ANSWER

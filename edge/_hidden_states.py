"""The edge model's own hidden states, read from the context that generates (llama-cpp-python 0.3.36).

What is read is the final layer's state of one token: the output of the model's final norm, the row that
the lm_head turns into logits (`llama_get_embeddings_ith` with embeddings on and pooling none). Reading a
row copies `n_embd` floats; the logits are the same with embeddings on or off.

With embeddings on, llama.cpp makes every token of a batch an output, so a prompt evaluated in one batch
would run the lm_head on all of its rows. `prefill_with_state` therefore evaluates all but the prompt's
last token with embeddings off and the last token alone with them on: the state is the same, and the
prefill costs one extra single-token decode instead of an lm_head per prompt token.

Middle layers are not read here: llama.cpp hands them out only through the context's eval callback,
which `Llama()` does not pass on and which calls into Python for every graph node of every decode
(README, "Hidden states").
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import llama_cpp
import numpy as np

from edge.errors import EdgeGenerationError

# The one layer read today: the final norm's output (lm_head input).
FINAL_LAYER = "final_norm"


@dataclass(frozen=True)
class HiddenStates:
    """The final layer's state (float32, n_embd) at the prompt's last token and at the draft's last
    evaluated token. `draft` is the state that chose the draft's last token (the end-of-generation token
    for a finished draft), so it reads the whole draft; None when the generation did not run to an end
    (cancelled or failed)."""

    prompt: np.ndarray = field(repr=False, compare=False)
    draft: np.ndarray | None = field(default=None, repr=False, compare=False)
    layer: str = FINAL_LAYER
    adapter_sha256: str = ""  # the LoRA adapter the model ran with ("": none): an adapter changes the states

    @property
    def dimensions(self) -> int:
        return int(self.prompt.shape[0])


def read_last_state(llm: llama_cpp.Llama, n_embd: int) -> np.ndarray:
    """The final layer's state of the last token the context evaluated (embeddings must be on)."""
    pointer = llama_cpp.llama_get_embeddings_ith(llm._ctx.ctx, -1)
    if not pointer:
        raise EdgeGenerationError("llama.cpp returned no hidden state for the last token")
    return np.ctypeslib.as_array(pointer, shape=(n_embd,)).copy()


def set_embeddings(llm: llama_cpp.Llama, on: bool) -> None:
    """Stays on the context until changed: every prefill sets it first."""
    llama_cpp.llama_set_embeddings(llm._ctx.ctx, on)


def evaluate_reusing_cache(llm: llama_cpp.Llama, tokens: Sequence[int]) -> int:
    """Evaluates `tokens`, reusing the longest prefix the context already holds (as Llama.generate does).
    Returns how many tokens came from the cache."""
    held = min(llm.n_tokens, len(tokens))
    cached = llm.input_ids[:held]
    keep = 0
    while keep < held and cached[keep] == tokens[keep]:
        keep += 1
    if not llm._ctx.kv_cache_seq_rm(-1, keep, -1):  # a memory that cannot drop a suffix: start over
        llm.reset()
        keep = 0
    llm.n_tokens = keep
    llm.eval(list(tokens[keep:]))
    return keep


def prefill_with_state(llm: llama_cpp.Llama, tokens: Sequence[int], n_embd: int) -> tuple[np.ndarray, int]:
    """Evaluates the prompt and returns the final layer's state at its last token, and how many prompt
    tokens came from the cache. Embeddings are left on, so later decodes expose their states too; a
    following `Llama.generate(tokens, reset=True)` finds the whole prompt cached and samples at once."""
    if not tokens:
        raise EdgeGenerationError("cannot read the state of an empty prompt")
    set_embeddings(llm, False)
    reused = evaluate_reusing_cache(llm, tokens[:-1])
    return evaluate_last_with_state(llm, tokens[-1], n_embd), reused


def extend_with_state(llm: llama_cpp.Llama, tokens: Sequence[int], n_embd: int) -> np.ndarray:
    """Evaluates `tokens` after what the context holds and returns the state at the last of them, the lm_head
    on that row alone."""
    set_embeddings(llm, False)
    llm.eval(list(tokens[:-1]))
    return evaluate_last_with_state(llm, tokens[-1], n_embd)


def evaluate_last_with_state(llm: llama_cpp.Llama, token: int, n_embd: int) -> np.ndarray:
    set_embeddings(llm, True)
    llm.eval([token])
    return read_last_state(llm, n_embd)

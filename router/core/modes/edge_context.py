"""How a mode measures prompts against the edge's context window, whatever the edge backend can say.

The llama.cpp edge counts with its own tokenizer (`count_tokens`, `count_prompt_tokens`) and knows its
`n_ctx`; another backend (the fault-injection one) gets safe upper bounds: UTF-8 bytes bound any
byte-level tokenizer's count. Counting is blocking: call it in a thread.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

# Left free beyond the counted prompt and the output: the template's end-of-turn tokens, rounding.
CONTEXT_MARGIN_TOKENS = 16
# Per message, for the chat template's role markers when the edge cannot render them.
TEMPLATE_TOKENS_PER_MESSAGE = 8


def utf8_bytes(text: str) -> int:
    return len(text.encode("utf-8"))


@dataclass(frozen=True)
class EdgeContext:
    count_text: Callable[[str], int]
    count_prompt: Callable[[Sequence[Mapping[str, str]]], int]
    n_ctx: int

    @classmethod
    def of(cls, edge: object, fallback_n_ctx: int) -> "EdgeContext":
        return cls(count_text=getattr(edge, "count_tokens", utf8_bytes),
                   count_prompt=getattr(edge, "count_prompt_tokens", lambda messages: sum(
                       utf8_bytes(m["content"]) + TEMPLATE_TOKENS_PER_MESSAGE for m in messages)),
                   n_ctx=int(getattr(edge, "n_ctx", 0) or fallback_n_ctx))

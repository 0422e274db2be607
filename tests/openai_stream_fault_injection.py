"""Fault injection for the openai client: transport errors escape a stream unwrapped.

openai wraps httpx errors raised while a stream is read (a stall past the read timeout, a connection
cut mid-body) in APITimeoutError / APIConnectionError only from 3.14 on; 2.x and 3.0-3.13 let the
raw httpx(2) exception escape. Tests run one openai version, so they exercise the other behaviour by
putting back the pre-3.14 `AsyncStream._iter_events` (copied from openai 3.13.0), on the real
client and the real HTTP stream.
"""
from __future__ import annotations

from typing import AsyncIterator

import openai
import pytest

AS_INSTALLED = "as the installed openai does"
UNWRAPPED = "transport errors escape unwrapped (openai 2.x, 3.0-3.13)"
STREAM_ERROR_STYLES = (AS_INSTALLED, UNWRAPPED)


async def _iter_events_without_wrapping(self: openai.AsyncStream) -> AsyncIterator[object]:
    async for sse in self._decoder.aiter_bytes(self.response.aiter_bytes()):
        yield sse


def inject_stream_error_style(style: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes openai behave as `style` says for the rest of the test (monkeypatch undoes it)."""
    if style == UNWRAPPED:
        # raising=True (the default): if openai renames the method, this fails loudly, not silently.
        monkeypatch.setattr(openai.AsyncStream, "_iter_events", _iter_events_without_wrapping)
    elif style != AS_INSTALLED:
        raise ValueError(f"unknown stream error style {style!r}")

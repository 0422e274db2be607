"""Pure helpers for turning a token stream into text: UTF-8 reassembly, stop strings, logprobs.

They know nothing about llama.cpp, so they are tested without a model.
"""
from __future__ import annotations

import codecs
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


class Utf8StreamDecoder:
    """Bytes of consecutive tokens in, complete characters out.

    A multi-byte character is often split over two or three tokens (emoji, CJK); its first bytes
    are held until the rest arrive instead of becoming U+FFFD. Bytes that can never form valid
    UTF-8 become U+FFFD, so a bad token cannot stall the stream.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        return self._decoder.decode(data, final=False)

    def flush(self) -> str:
        """Text for bytes still held; an unfinished character becomes U+FFFD."""
        return self._decoder.decode(b"", final=True)


@dataclass(frozen=True)
class StopScan:
    emit: str  # safe to show now
    held: str  # might be the start of a stop string; decided by later text
    stopped: bool  # a stop string was found: `emit` ends just before it, `held` is ""


def scan_for_stop(text: str, stops: Sequence[str]) -> StopScan:
    """Split `text` (held text + new text) into what can be shown and what must wait.

    The earliest occurrence of any stop string ends the text. Otherwise the longest tail of `text`
    that is a prefix of some stop string is held back, so a stop string that arrives split over
    several tokens is never shown.
    """
    earliest = -1
    for stop in stops:
        if stop:
            index = text.find(stop)
            if index != -1 and (earliest == -1 or index < earliest):
                earliest = index
    if earliest != -1:
        return StopScan(emit=text[:earliest], held="", stopped=True)
    hold = _longest_tail_that_starts_a_stop(text, stops)
    if hold == 0:
        return StopScan(emit=text, held="", stopped=False)
    return StopScan(emit=text[:-hold], held=text[-hold:], stopped=False)


def _longest_tail_that_starts_a_stop(text: str, stops: Sequence[str]) -> int:
    longest = 0
    for stop in stops:
        # A full match was ruled out by the caller, so only proper prefixes can be pending.
        for length in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:length]):
                longest = length
                break
    return longest


class StopStringFilter:
    """Feeds text through `scan_for_stop`, keeping the held tail between calls."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(dict.fromkeys(s for s in stops if s))
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        if not self._stops:
            return text
        scan = scan_for_stop(self._held + text, self._stops)
        self._held = scan.held
        self.stopped = scan.stopped
        return scan.emit

    def flush(self) -> str:
        """The held tail, released because no more text will come."""
        held, self._held = self._held, ""
        return "" if self.stopped else held


def token_logprob(logits: np.ndarray, token_id: int, scratch: np.ndarray | None = None) -> float:
    """log softmax(logits)[token_id], stable for large logits (subtracts the max first).

    It runs between two decodes on the decode thread, so it is kept cheap: float32 throughout (numpy
    sums float32 pairwise, so the normaliser stays accurate to ~1e-6 relative over a 150k vocabulary;
    a float64 sum cost 2.5x as much). `scratch`, a float32 array shaped like `logits`, saves two
    allocations per token.
    """
    peak = logits.max()
    shifted = np.subtract(logits, peak, out=scratch)
    np.exp(shifted, out=shifted)
    return float(logits[token_id] - peak) - math.log(float(shifted.sum()))

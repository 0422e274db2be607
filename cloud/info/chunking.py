"""Cutting a document into passages that fit an embedder's window, with character offsets.

Tokens here are the matches of `\\w+|[^\\w\\s]` (a word, or one punctuation mark). They approximate
model tokens: a subword tokenizer gives about 1.1-1.4 tokens per such token on English prose, so a
`max_tokens` of 200 lands near 250 model tokens; size chunks with that slack in mind.

Chunks are cut on sentence boundaries where possible, a sentence longer than `max_tokens` is cut at
token boundaries, and neighbouring chunks share about `overlap_tokens` tokens of whole sentences, so
that a fact stated across a cut is whole in at least one chunk. Every chunk's `start`/`end` index the
original text, `text[start:end] == chunk.text`, and chunks are in document order.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

TOKEN = re.compile(r"\w+|[^\w\s]")
_SENTENCE_END = frozenset(".!?")
# Closing marks that may follow the full stop and still belong to the ending sentence: `."` `.)`.
_CLOSERS = frozenset("\"')]}’”»")
# Words whose full stop does not end a sentence; single letters (initials, "U.S.") are handled apart.
_ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "eg", "ie", "e.g", "i.e",
    "no", "vol", "fig", "al", "approx", "inc", "ltd", "co", "corp", "jan", "feb", "mar", "apr",
    "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "mt", "ft", "gen", "gov", "sen", "rep", "est", "ca",
})
_BLANK_LINE = re.compile(r"\n[^\S\n]*\n")


@dataclass(frozen=True)
class Chunk:
    """A passage of a document: `text` is `document_text[start:end]`."""

    text: str
    start: int
    end: int


def token_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the tokens of `text`, in order (see the module docstring for what a token is)."""
    return [match.span() for match in TOKEN.finditer(text)]


def count_tokens(text: str) -> int:
    return sum(1 for _ in TOKEN.finditer(text))


def sentence_starts(text: str, spans: list[tuple[int, int]]) -> list[int]:
    """Indices of the tokens that begin a sentence (always 0 for a non-empty text), ascending.

    A sentence ends at `.`, `!` or `?` (with any closing quote or bracket after it) followed by
    whitespace and a token that does not start lower-case, unless the full stop ends an abbreviation
    or an initial; a blank line always ends one (headings, list items, paragraphs).
    """
    if not spans:
        return []
    starts = [0]
    for index in range(1, len(spans)):
        previous_end, start = spans[index - 1][1], spans[index][0]
        gap = text[previous_end:start]
        if not gap:
            continue  # no whitespace: inside "3.5", "U.S." or "end.)"
        if _BLANK_LINE.search(gap):
            starts.append(index)
        elif _ends_sentence(text, spans, index - 1) and not text[start].islower():
            starts.append(index)
    return starts


def _ends_sentence(text: str, spans: list[tuple[int, int]], last: int) -> bool:
    """Whether the token at `last` closes a sentence: a terminal mark, maybe followed by closers."""
    position = last
    while position >= 0 and text[spans[position][0]:spans[position][1]] in _CLOSERS:
        position -= 1
    if position < 0 or text[spans[position][0]:spans[position][1]] not in _SENTENCE_END:
        return False
    if text[spans[position][0]] != "." or position == 0:
        return True
    word_start, word_end = spans[position - 1]
    if word_end != spans[position][0]:
        return True  # "word ." - a detached full stop still ends a sentence
    word = text[word_start:word_end].lower()
    return not (len(word) == 1 and word.isalpha()) and word not in _ABBREVIATIONS


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of `text` (each stripped), in order."""
    spans = token_spans(text)
    starts = sentence_starts(text, spans)
    bounds = starts + [len(spans)]
    return [(spans[first][0], spans[after - 1][1]) for first, after in zip(bounds, bounds[1:])]


def chunk_text(text: str, *, max_tokens: int, overlap_tokens: int) -> list[Chunk]:
    """The chunks of `text`: a text of at most `max_tokens` tokens is one chunk, the stripped text;
    an empty or blank text has no chunk. Raises ValueError for `max_tokens < 1` or an overlap that is
    negative or not below `max_tokens`."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    if not 0 <= overlap_tokens < max_tokens:
        raise ValueError(f"overlap_tokens must be in 0..{max_tokens - 1} (below max_tokens), got {overlap_tokens}")
    spans = token_spans(text)
    if not spans:
        return []
    if len(spans) <= max_tokens:
        start, end = spans[0][0], spans[-1][1]
        return [Chunk(text[start:end], start, end)]
    ranges = _token_ranges(sentence_starts(text, spans), len(spans), max_tokens, overlap_tokens)
    return [Chunk(text[spans[a][0]:spans[b - 1][1]], spans[a][0], spans[b - 1][1]) for a, b in ranges]


def _token_ranges(starts: list[int], count: int, max_tokens: int, overlap: int) -> list[tuple[int, int]]:
    """Half-open token ranges of the chunks, given the sentence-start token indices."""
    boundaries = starts + [count]
    ranges: list[tuple[int, int]] = []
    first, previous_end = 0, 0
    while True:
        end = _chunk_end(boundaries, first, previous_end, max_tokens)
        if ranges and end <= previous_end:  # the overlap left no room for new text: drop it
            first = previous_end
            end = _chunk_end(boundaries, first, previous_end, max_tokens)
        ranges.append((first, end))
        if end >= count:
            return ranges
        first, previous_end = _next_start(boundaries, first, end, overlap), end


def _chunk_end(boundaries: list[int], first: int, previous_end: int, max_tokens: int) -> int:
    """The last sentence boundary that keeps the chunk within max_tokens and goes past the previous
    chunk; the token limit itself when the sentence at hand is too long (a cut mid-sentence)."""
    limit = first + max_tokens
    fitting = [b for b in boundaries if max(first, previous_end) < b <= limit]
    return fitting[-1] if fitting else min(limit, boundaries[-1])


def _next_start(boundaries: list[int], first: int, end: int, overlap: int) -> int:
    """Where the next chunk starts: the earliest sentence start within `overlap` tokens before `end`;
    after a cut mid-sentence with no such start, `overlap` tokens back; otherwise `end` itself."""
    shared = [b for b in boundaries if first < b < end and end - b <= overlap]
    if shared:
        return shared[0]
    if end not in boundaries:
        return max(end - overlap, first + 1)
    return end

"""A chat prompt's tokens, where only the chat template's own markers become control tokens.

llama.cpp's tokenizer, told to parse special tokens, turns every `<|im_end|>` of its text into the control
token; told not to, it turns none. A rendered chat prompt needs both at once: the template's markers must be
control tokens, and a message's content (a user's text, a retrieved passage) never, or `<|im_end|>` typed into
it would end its turn and open another, a system turn say.

So the template is rendered twice: once with the messages' contents, and once with each content replaced by
a sentinel. Cut at the sentinels, the second rendering gives the template's own text; the control markers are
looked for there and only there. Everything between two markers, template text and content alike, is
tokenised as plain text in one piece, as llama.cpp itself tokenises the text between two markers, so a prompt
without injected markers gets the tokens it always got. The first rendering proves the cut: the template's
pieces and the contents, put back together, must give it exactly.

A template that does not render each content once, verbatim and in order (one that trims, escapes, drops or
repeats it), cannot be cut that way. Then every content has the text of each control token of this vocabulary
broken (a word joiner after its first character), the template is rendered with those contents, and the
whole is tokenised parsing special tokens: the template's markers are found, the contents' cannot be. The
reason is logged, as a warning the first time.
"""
from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Callable, Optional, Union

import llama_cpp
from llama_cpp import llama_chat_format

from edge.errors import EdgeGenerationError, PromptTemplateError

logger = logging.getLogger(__name__)

# The tokens that llama.cpp parses in text only when told to parse special tokens (user-defined tokens it
# parses either way, as Hugging Face's tokenizers do: they are vocabulary, not control).
_PARSED_ONLY_AS_SPECIAL = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
# C's isspace, which llama.cpp strips beside a token marked lstrip or rstrip.
_C_WHITESPACE = " \t\n\v\f\r"
# Put after a control token's first character, it leaves the text readable and no longer that token.
_WORD_JOINER = "\u2060"
# Tokens per byte of text is at most one, plus what the tokenizer may add (a space prefix, BOS, EOS).
_TOKEN_SLACK = 8

Part = Union[str, int]  # plain text, or a control token's id


@dataclass(frozen=True)
class ControlTokens:
    """The vocabulary's control tokens: what their text is, and which strip whitespace beside them."""

    ids: Mapping[str, int]
    pattern: Optional[re.Pattern[str]]  # finds any of their texts, the longest at a position; None: none
    lstrip: frozenset[int]
    rstrip: frozenset[int]

    @classmethod
    def of_vocab(cls, vocab: llama_cpp.llama_vocab_p) -> ControlTokens:
        ids: dict[str, int] = {}
        lstrip: set[int] = set()
        rstrip: set[int] = set()
        for token in range(llama_cpp.llama_vocab_n_tokens(vocab)):
            attr = llama_cpp.llama_vocab_get_attr(vocab, token)
            if not attr & _PARSED_ONLY_AS_SPECIAL:
                continue
            text = llama_cpp.llama_vocab_get_text(vocab, token).decode("utf-8", errors="replace")
            if not text or text in ids:
                continue
            ids[text] = token
            if attr & llama_cpp.LLAMA_TOKEN_ATTR_LSTRIP:
                lstrip.add(token)
            if attr & llama_cpp.LLAMA_TOKEN_ATTR_RSTRIP:
                rstrip.add(token)
        ordered = sorted(ids, key=len, reverse=True)  # an alternation takes the first that matches
        pattern = re.compile("|".join(re.escape(text) for text in ordered)) if ordered else None
        return cls(ids=ids, pattern=pattern, lstrip=frozenset(lstrip), rstrip=frozenset(rstrip))

    def split(self, text: str) -> list[Part]:
        """`text` as plain pieces and the ids of the control tokens written in it."""
        if self.pattern is None:
            return [text]
        parts: list[Part] = []
        position = 0
        for found in self.pattern.finditer(text):
            parts.append(text[position:found.start()])
            parts.append(self.ids[found.group(0)])
            position = found.end()
        parts.append(text[position:])
        return parts

    def neutralise(self, text: str) -> str:
        """`text` with every control token's text broken by a word joiner after its first character."""
        if self.pattern is None:
            return text
        # One pass can leave a token's text that overlapped a broken one; a joiner never makes a new one.
        while self.pattern.search(text):
            text = self.pattern.sub(lambda found: found.group(0)[0] + _WORD_JOINER + found.group(0)[1:], text)
        return text


@dataclass(frozen=True)
class PromptTokens:
    tokens: list[int]
    stops: list[str]  # the template's stop strings
    content_isolated: bool  # False: the fallback (contents neutralised, the whole parsed)


Formatter = Callable[..., llama_chat_format.ChatFormatterResponse]


class PromptTokenizer:
    """Renders a chat template and tokenises the result so that no message's content yields a control
    token. Reads only the vocabulary and the template, so it is safe beside a running generation."""

    def __init__(self, vocab: llama_cpp.llama_vocab_p, formatter: Formatter, model_name: str) -> None:
        self._vocab = vocab
        self._formatter = formatter
        self._model_name = model_name
        self.control = ControlTokens.of_vocab(vocab)
        self._reported: set[str] = set()  # fallback reasons already logged as a warning

    def tokenize(self, text: str, *, special: bool, add_special: bool = False) -> list[int]:
        """llama.cpp's tokenisation of `text`, with a buffer sized to the text rather than the context."""
        data = text.encode("utf-8")
        capacity = len(data) + _TOKEN_SLACK
        buffer = (llama_cpp.llama_token * capacity)()
        count = llama_cpp.llama_tokenize(self._vocab, data, len(data), buffer, capacity, add_special, special)
        if count < 0:
            capacity = -count
            buffer = (llama_cpp.llama_token * capacity)()
            count = llama_cpp.llama_tokenize(self._vocab, data, len(data), buffer, capacity, add_special, special)
            if count < 0:
                raise EdgeGenerationError(f"could not tokenise {len(data)} bytes for {self._model_name}")
        return buffer[:count]

    def prompt(self, messages: Sequence[Mapping[str, str]]) -> PromptTokens:
        rendered = self.render(messages)
        stops = rendered.stop if isinstance(rendered.stop, list) else [rendered.stop]
        stops = [stop for stop in stops if stop]
        contents = [message.get("content") for message in messages]
        nonce = secrets.token_hex(8)  # unguessable, so no content can hold a sentinel
        sentinels = [f"@@content-{nonce}-{index}@@" if isinstance(content, str) else None
                     for index, content in enumerate(contents)]
        skeleton = self.render([{**message, "content": sentinel} if sentinel else message
                                 for message, sentinel in zip(messages, sentinels)])
        cut, reason = _cut(skeleton.prompt, nonce, sentinels, contents, rendered.prompt)
        if cut is None:
            return PromptTokens(self._fallback(messages, reason), stops, content_isolated=False)
        parts: list[Part] = []
        for index, piece in enumerate(cut.template):
            if index:
                parts.append(cut.contents[index - 1])
            parts += self.control.split(piece)
        tokens = self._special_prefix(rendered) + self._tokenize_parts(parts) + self._special_suffix(rendered)
        return PromptTokens(tokens, stops, content_isolated=True)

    def render(self, messages: Sequence[Mapping[str, object]]) -> llama_chat_format.ChatFormatterResponse:
        """The chat template's rendering of `messages`, as it is, before any tokenisation."""
        try:
            return self._formatter(messages=[dict(message) for message in messages])
        except Exception as exc:  # jinja's raise_exception, a template that trips on these messages
            raise PromptTemplateError(self._model_name, str(exc) or type(exc).__name__) from exc

    # -- internals ----------------------------------------------------------------------------------

    def _tokenize_parts(self, parts: list[Part]) -> list[int]:
        """Control ids as they are; each run of plain text between two of them tokenised in one piece,
        less the whitespace a control token beside it strips."""
        tokens: list[int] = []
        run: list[str] = []
        strip_start = False
        for part in [*parts, None]:
            if isinstance(part, str):
                run.append(part)
                continue
            text = "".join(run)
            run.clear()
            if strip_start:
                text = text.lstrip(_C_WHITESPACE)
            if part is not None and part in self.control.lstrip:
                text = text.rstrip(_C_WHITESPACE)
            if text:
                tokens += self.tokenize(text, special=False)
            if part is not None:
                tokens.append(part)
                strip_start = part in self.control.rstrip
        return tokens

    def _special_prefix(self, rendered: llama_chat_format.ChatFormatterResponse) -> list[int]:
        # A formatter that did not write the model's BOS itself leaves it to the tokenizer.
        if rendered.added_special or not llama_cpp.llama_vocab_get_add_bos(self._vocab):
            return []
        return [llama_cpp.llama_vocab_bos(self._vocab)]

    def _special_suffix(self, rendered: llama_chat_format.ChatFormatterResponse) -> list[int]:
        if rendered.added_special or not llama_cpp.llama_vocab_get_add_eos(self._vocab):
            return []
        return [llama_cpp.llama_vocab_eos(self._vocab)]

    def _fallback(self, messages: Sequence[Mapping[str, str]], reason: str) -> list[int]:
        if reason not in self._reported:
            self._reported.add(reason)
            logger.warning("chat template of %s: %s; its prompts are tokenised with every control token's "
                           "text broken in the contents instead", self._model_name, reason)
        else:
            logger.debug("chat template of %s: %s", self._model_name, reason)
        neutralised = [{**message, "content": self.control.neutralise(message["content"])}
                       if isinstance(message.get("content"), str) else message for message in messages]
        rendered = self.render(neutralised)
        return self.tokenize(rendered.prompt, special=True, add_special=not rendered.added_special)


@dataclass(frozen=True)
class _Pieces:
    """The template's own text around the contents: len(template) == len(contents) + 1."""

    template: list[str]
    contents: list[str]


def _cut(skeleton: str, nonce: str, sentinels: Sequence[Optional[str]], contents: Sequence[object],
         rendered: str) -> tuple[Optional[_Pieces], str]:
    """The skeleton cut at its sentinels, or None and why it cannot be."""
    template: list[str] = []
    placed: list[str] = []
    position = 0
    for index, sentinel in enumerate(sentinels):
        if sentinel is None:
            continue
        found = skeleton.find(sentinel, position)
        if found < 0:
            return None, f"the template does not render message {index}'s content in order"
        template.append(skeleton[position:found])
        placed.append(contents[index])  # type: ignore[arg-type]  # a str wherever there is a sentinel
        position = found + len(sentinel)
    template.append(skeleton[position:])
    if any(nonce in piece for piece in template):
        return None, "the template renders a message's content more than once"
    if "".join(_interleave(template, placed)) != rendered:
        return None, "the template changes a message's content (trims, escapes or tests it)"
    return _Pieces(template, placed), ""


def _interleave(template: Sequence[str], contents: Sequence[str]) -> list[str]:
    joined = [template[0]]
    for content, piece in zip(contents, template[1:]):
        joined += [content, piece]
    return joined

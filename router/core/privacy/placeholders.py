"""One cloud call's personal values and their placeholders, both ways.

`redact` replaces each value found with a placeholder that names its kind and its order, `[EMAIL_1]`,
`[PHONE_2]`: the same value (as `Finding.key` compares values) gets the same placeholder everywhere in
the call, so the cloud can still tell that two mentions are one person. `restore` puts the values back
into the cloud's answer. A placeholder the messages already held as typed text is never given out, so
that the answer's copy of it stays the text the user typed.

`StreamRestorer` restores a streamed answer delta by delta, holding back the tail of a delta that may be
the start of a placeholder until the next delta shows whether it is one.
"""
from __future__ import annotations

import re
from typing import Iterable

from router.core.privacy.detect import DataKind, find_personal_data

# Any placeholder this module could give out, so that typed ones are told apart from ours.
_PLACEHOLDER = re.compile(r"\[(?:%s)_\d+\]" % "|".join(kind.label for kind in DataKind))


class Placeholders:
    """Built for one call, over every text the call will send (so that typed placeholders are reserved)."""

    def __init__(self, texts: Iterable[str]) -> None:
        self._reserved = frozenset(match.group(0) for text in texts for match in _PLACEHOLDER.finditer(text))
        self._placeholder_of: dict[tuple[DataKind, str], str] = {}
        self._value_of: dict[str, str] = {}
        self._count: dict[DataKind, int] = {}

    def __bool__(self) -> bool:
        """True once a value was replaced: only then is there anything to restore."""
        return bool(self._value_of)

    @property
    def kinds(self) -> frozenset[DataKind]:
        return frozenset(kind for kind, _key in self._placeholder_of)

    def redact(self, text: str) -> str:
        findings = find_personal_data(text)
        if not findings:
            return text
        parts: list[str] = []
        position = 0
        for finding in findings:
            parts.append(text[position:finding.start])
            parts.append(self._placeholder(finding.kind, finding.key, finding.value))
            position = finding.end
        parts.append(text[position:])
        return "".join(parts)

    def restore(self, text: str) -> str:
        if not self._value_of or "[" not in text:
            return text
        return _PLACEHOLDER.sub(lambda match: self._value_of.get(match.group(0), match.group(0)), text)

    def may_continue_into_one(self, tail: str) -> bool:
        """Whether `tail` (from a "[" to the end of what arrived) may grow into one of our placeholders."""
        return any(placeholder.startswith(tail) and placeholder != tail for placeholder in self._value_of)

    def _placeholder(self, kind: DataKind, key: str, value: str) -> str:
        placeholder = self._placeholder_of.get((kind, key))
        if placeholder is None:
            number = self._count.get(kind, 0)
            while True:
                number += 1
                placeholder = f"[{kind.label}_{number}]"
                if placeholder not in self._reserved:
                    break
            self._count[kind] = number
            self._placeholder_of[(kind, key)] = placeholder
            self._value_of[placeholder] = value  # the first spelling is the one restored
        return placeholder


class StreamRestorer:
    """Restores a streamed answer: `feed` each delta's text, `flush` at the end. What they return, joined,
    is `Placeholders.restore` of the whole answer."""

    def __init__(self, placeholders: Placeholders) -> None:
        self._placeholders = placeholders
        self._held = ""

    def feed(self, text: str) -> str:
        buffer = self._held + text
        cut = self._cut(buffer)
        self._held = buffer[cut:]
        return self._placeholders.restore(buffer[:cut])

    def flush(self) -> str:
        held, self._held = self._held, ""
        return self._placeholders.restore(held)

    def _cut(self, buffer: str) -> int:
        # Our placeholders hold a single "[", so only the last one in the buffer can begin an unfinished one.
        start = buffer.rfind("[")
        if start >= 0 and self._placeholders.may_continue_into_one(buffer[start:]):
            return start
        return len(buffer)

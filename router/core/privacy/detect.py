"""Personal data in a text: every finding, its kind and where it is, never two overlapping.

Kinds are tried in a fixed order and a span already taken is not taken again: e-mail addresses first (they
hold digits and dots other shapes would split), then keys and IBANs (long runs of letters and digits), then
cards, national ids and phone numbers (digit groups, from the most specific shape to the least), then
street addresses.
"""
from __future__ import annotations

import bisect
import enum
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from router.core.privacy.addresses import find_addresses
from router.core.privacy.identifiers import NATIONAL_ID_FINDERS, find_ibans
from router.core.privacy.patterns import (BEARER_TOKEN, CARD_CANDIDATE, EMAIL, LONG_HEX, NATIONAL_PHONE,
                                          OPAQUE_TOKEN, PHONE, PREFIXED_KEY, digits_of, luhn_valid)

Span = tuple[int, int]


class DataKind(enum.Enum):
    """A kind of personal data: its placeholder's label, and how a reason names it."""

    EMAIL = ("EMAIL", "email")
    PHONE = ("PHONE", "phone")
    CARD = ("CARD", "card number")
    IBAN = ("IBAN", "IBAN")
    NATIONAL_ID = ("NATIONAL_ID", "national id")
    API_KEY = ("API_KEY", "API key")
    ADDRESS = ("ADDRESS", "street address")

    def __init__(self, label: str, description: str) -> None:
        self.label = label
        self.description = description


@dataclass(frozen=True)
class Finding:
    kind: DataKind
    start: int
    end: int
    value: str

    @property
    def key(self) -> str:
        """The value as compared within a call: "Bob@Mail.com" and "bob@mail.com" are one address, and
        "+1 415 555 0132" and "+1-415-555-0132" one number."""
        if self.kind is DataKind.EMAIL:
            return self.value.lower()
        if self.kind in (DataKind.PHONE, DataKind.CARD):
            return ("+" if self.value.startswith("+") else "") + digits_of(self.value)
        if self.kind in (DataKind.IBAN, DataKind.NATIONAL_ID):
            return re.sub(r"[\s-]", "", self.value).upper()
        return self.value


def _pattern(pattern: "re.Pattern[str]", group: int = 0) -> Callable[[str], Iterator[Span]]:
    def find(text: str) -> Iterator[Span]:
        for match in pattern.finditer(text):
            yield match.span(group)
    return find


def _cards(text: str) -> Iterator[Span]:
    for match in CARD_CANDIDATE.finditer(text):
        if luhn_valid(digits_of(match.group(0))):
            yield match.span()


_FINDERS: tuple[tuple[DataKind, Callable[[str], Iterator[Span]]], ...] = (
    (DataKind.EMAIL, _pattern(EMAIL)),
    (DataKind.API_KEY, _pattern(PREFIXED_KEY)),
    (DataKind.API_KEY, _pattern(BEARER_TOKEN, group=2)),
    (DataKind.IBAN, find_ibans),
    (DataKind.API_KEY, _pattern(LONG_HEX)),
    (DataKind.API_KEY, _pattern(OPAQUE_TOKEN)),
    (DataKind.CARD, _cards),
    *((DataKind.NATIONAL_ID, finder) for finder in NATIONAL_ID_FINDERS),
    (DataKind.PHONE, _pattern(PHONE)),
    (DataKind.PHONE, _pattern(NATIONAL_PHONE)),
    (DataKind.ADDRESS, find_addresses),
)


def find_personal_data(text: str) -> list[Finding]:
    """The personal data found in `text`, in the order it appears."""
    taken = _Taken()
    findings: list[Finding] = []
    for kind, finder in _FINDERS:
        for start, end in finder(text):
            if start < end and taken.claim(start, end):
                findings.append(Finding(kind, start, end, text[start:end]))
    return sorted(findings, key=lambda finding: finding.start)


class _Taken:
    """Spans already found, which never overlap one another: sorted by start, so by end too."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def claim(self, start: int, end: int) -> bool:
        """Takes [start, end) unless it overlaps a span already taken."""
        index = bisect.bisect_right(self._starts, start)
        if index > 0 and self._ends[index - 1] > start:
            return False
        if index < len(self._starts) and self._starts[index] < end:
            return False
        self._starts.insert(index, start)
        self._ends.insert(index, end)
        return True


def kinds_in(texts: Iterable[str]) -> frozenset[DataKind]:
    """The kinds of personal data any of `texts` holds."""
    return frozenset(finding.kind for text in texts for finding in find_personal_data(text))


def describe(kinds: Iterable[DataKind]) -> str:
    """"email, phone": the kinds, in a fixed order, for a reason that never names a value."""
    found = set(kinds)
    return ", ".join(kind.description for kind in DataKind if kind in found)

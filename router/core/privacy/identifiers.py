"""Bank accounts (IBAN) and national identity numbers, each found by its written shape and, where the
number carries one, confirmed by its own checksum, so that ordinary numbers of the same shape stay text.

National ids found: US Social Security numbers (3-2-4, or 9 digits right after "SSN"), UK National Insurance
numbers, Canadian Social Insurance numbers (3-3-3, Luhn), French NIR (key mod 97), Spanish DNI and NIE
(check letter), Italian codice fiscale (its shape), Indian Aadhaar (4-4-4, Verhoeff).
"""
from __future__ import annotations

import re
from types import MappingProxyType
from typing import Callable, Iterator, Mapping

from router.core.privacy.patterns import digits_of, luhn_valid

Span = tuple[int, int]

# The IBAN length of each country that issues them (the SWIFT IBAN registry).
IBAN_LENGTHS: Mapping[str, int] = MappingProxyType({
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
})
# Where an IBAN may begin: a country code and two check digits, not inside a longer word.
_IBAN_START = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}")
_IBAN_SEPARATORS = " -"


def iban_valid(compact: str) -> bool:
    """ISO 13616: the country's length, and the number mod 97 is 1 with the first four characters moved last."""
    compact = compact.upper()
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def find_ibans(text: str) -> Iterator[Span]:
    """IBANs written compact or in groups (single spaces or dashes between characters), upper or lower case.
    The country's length says where one ends, so a word that follows it is never swallowed."""
    position = 0
    while True:
        start = _IBAN_START.search(text, position)
        if start is None:
            return
        end = _iban_end(text, start.start())
        if end is not None:
            yield start.start(), end
            position = end
        else:
            position = start.start() + 1


def _iban_end(text: str, start: int) -> "int | None":
    length = IBAN_LENGTHS.get(text[start:start + 2].upper())
    if length is None:
        return None
    taken: list[str] = []
    index = start
    while index < len(text) and len(taken) < length:
        char = text[index]
        if char.isascii() and char.isalnum():
            taken.append(char)
        elif not (char in _IBAN_SEPARATORS and taken and index + 1 < len(text) and text[index + 1].isalnum()):
            return None
        index += 1
    if len(taken) < length or (index < len(text) and text[index].isalnum()):
        return None
    return index if iban_valid("".join(taken)) else None


# -- national ids ------------------------------------------------------------------------------------

_SSN = re.compile(r"(?<![\d-])(?!000|666)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\d-])")
_SSN_AFTER_LABEL = re.compile(r"(?i:\bSSN|\bsocial security (?:number|no\.?))\s*(?:is|:|#|=)?\s*(\d{9})(?!\d)")
# UK National Insurance number: two prefix letters (D, F, I, Q, U, V never; O not second; BG, GB, KN,
# NK, NT, TN, ZZ never issued), six digits, a suffix A-D.
_NINO = re.compile(r"(?<![A-Za-z0-9])(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
                   r" ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![A-Za-z0-9])")
_SIN = re.compile(r"(?<![\d-])\d{3}([ -])\d{3}\1\d{3}(?![\d-])")
# France's NIR: sex, year, month, department (2A/2B for Corsica), commune, order, then the 2-digit key.
_NIR = re.compile(r"(?<![\dA-Za-z])[12] ?\d{2} ?(?:0[1-9]|1[0-2]|[2-9]\d) ?(?:\d{2}|2[ABab]) ?\d{3} ?\d{3} ?\d{2}(?!\d)")
_DNI = re.compile(r"(?<![A-Za-z0-9])(\d{8})[ -]?([A-Za-z])(?![A-Za-z0-9])")
_NIE = re.compile(r"(?<![A-Za-z0-9])([XYZxyz])[ -]?(\d{7})[ -]?([A-Za-z])(?![A-Za-z0-9])")
_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"
_CODICE_FISCALE = re.compile(r"(?<![A-Za-z0-9])[A-Z]{6}\d{2}[A-EHLMPR-T]\d{2}[A-Z]\d{3}[A-Z](?![A-Za-z0-9])")
_AADHAAR = re.compile(r"(?<![\d-])[2-9]\d{3}([ -])\d{4}\1\d{4}(?![\d-])")

_VERHOEFF_D = ((0, 1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 3, 4, 0, 6, 7, 8, 9, 5), (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
               (3, 4, 0, 1, 2, 8, 9, 5, 6, 7), (4, 0, 1, 2, 3, 9, 5, 6, 7, 8), (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
               (6, 5, 9, 8, 7, 1, 0, 4, 3, 2), (7, 6, 5, 9, 8, 2, 1, 0, 4, 3), (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
               (9, 8, 7, 6, 5, 4, 3, 2, 1, 0))
_VERHOEFF_P = ((0, 1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 5, 7, 6, 2, 8, 3, 0, 9, 4), (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
               (8, 9, 1, 6, 0, 4, 3, 5, 2, 7), (9, 4, 5, 3, 1, 2, 6, 8, 7, 0), (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
               (2, 7, 9, 3, 8, 0, 6, 4, 1, 5), (7, 0, 4, 6, 9, 1, 3, 2, 5, 8))


def verhoeff_valid(digits: str) -> bool:
    check = 0
    for position, char in enumerate(reversed(digits)):
        check = _VERHOEFF_D[check][_VERHOEFF_P[position % 8][int(char)]]
    return check == 0


def nir_valid(text: str) -> bool:
    compact = re.sub(r"\s", "", text).upper()
    body, key = compact[:13], int(compact[13:])
    # Corsica's departments 2A and 2B count as 19 and 18 in the key.
    department = body[5:7]
    body = body[:5] + {"2A": "19", "2B": "18"}.get(department, department) + body[7:]
    return key == 97 - int(body) % 97


def _dni_valid(match: "re.Match[str]") -> bool:
    return _DNI_LETTERS[int(match.group(1)) % 23] == match.group(2).upper()


def _nie_valid(match: "re.Match[str]") -> bool:
    number = int(str("XYZ".index(match.group(1).upper())) + match.group(2))
    return _DNI_LETTERS[number % 23] == match.group(3).upper()


def _matches(pattern: "re.Pattern[str]", check: Callable[["re.Match[str]"], bool] = lambda _: True,
             group: int = 0) -> Callable[[str], Iterator[Span]]:
    def find(text: str) -> Iterator[Span]:
        for match in pattern.finditer(text):
            if check(match):
                yield match.span(group)
    return find


# Each finds spans of one shape; detect.py takes them in this order, and a span never overlaps an earlier one.
NATIONAL_ID_FINDERS: tuple[Callable[[str], Iterator[Span]], ...] = (
    _matches(_SSN),
    _matches(_SSN_AFTER_LABEL, group=1),
    _matches(_NINO),
    _matches(_SIN, lambda m: luhn_valid(digits_of(m.group(0)))),
    _matches(_NIR, lambda m: nir_valid(m.group(0))),
    _matches(_DNI, _dni_valid),
    _matches(_NIE, _nie_valid),
    _matches(_CODICE_FISCALE),
    _matches(_AADHAAR, lambda m: verhoeff_valid(digits_of(m.group(0)))),
)

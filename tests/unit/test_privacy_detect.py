"""What the egress policy finds: every planted value of the canary set, each kind's checksum, and the
ordinary text and numbers it must leave alone."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from router.core.privacy.addresses import find_addresses
from router.core.privacy.detect import DataKind, describe, find_personal_data, kinds_in
from router.core.privacy.identifiers import iban_valid, nir_valid, verhoeff_valid

CANARIES = Path(__file__).resolve().parents[1] / "fixtures" / "privacy_canaries.jsonl"


def load_canaries() -> list[dict]:
    return [json.loads(line) for line in CANARIES.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_the_canary_set_is_large_and_varied() -> None:
    canaries = load_canaries()
    assert len(canaries) >= 50
    kinds = {planted["kind"] for canary in canaries for planted in canary["planted"]}
    assert kinds == {kind.name.lower() for kind in DataKind}
    assert all(planted["value"] in canary["prompt"] for canary in canaries for planted in canary["planted"])


@pytest.mark.parametrize("canary", load_canaries(), ids=lambda canary: canary["id"])
def test_every_planted_value_is_found_as_its_kind(canary: dict) -> None:
    findings = find_personal_data(canary["prompt"])
    for planted in canary["planted"]:
        holding = [finding for finding in findings if planted["value"] in finding.value]
        assert holding, f"{planted} not found in {canary['prompt']!r}"
        assert holding[0].kind.name.lower() == planted["kind"]


@pytest.mark.parametrize("text", [
    # The ledger's own list (tests/unit/test_ledger_redaction.py) ...
    "The answer is 42.",
    "She sold 1,000 apples for $1,234,567.89 in 2024.",
    "pi is 3.14159 and e is 2.71828",
    "Meet on 2024-01-15 at 10:30.",
    "The population was 5551234567 last year.",
    "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
    "version 1.2.3, port 8080, 0.5B parameters, 1000000 tokens",
    "#### 72",
    "scores 20-30-40 and 100-200-300",
    "a pneumonoultramicroscopicsilicovolcanoconiosis case",
    "COVID-19 and ISO 8601",
    # ... and what the new kinds could mistake.
    "Tom has 3 apples and buys 4 more. How many apples does he have?",
    "In 1905 Einstein published four papers.",
    "The meeting is on 5 May at 3 pm in room 101.",
    "Take Route 66 west, then 12 miles on the highway.",
    "ISBN 978-3-16-148410-0",
    "We ordered 12 large pizzas for 36 people.",
    "UTF-8 and SHA-256 with AES-128; GPT-4 scored 86.4 on MMLU.",
    "A4 paper is 210 x 297 mm.",
    "Invoice INV-2024-000123 is due; order #123456789 shipped.",
    "He ran 100 m in 9.58 s at lat 51.5074, lon -0.1278.",
    "The Great Western Railway opened in 1838.",
    "Section DE89 of the manual, and FR14 in the appendix.",
])
def test_ordinary_text_and_numbers_are_not_personal_data(text: str) -> None:
    assert find_personal_data(text) == []


def test_checksums_keep_look_alikes_out() -> None:
    assert iban_valid("GB82WEST12345698765432") and not iban_valid("GB82WEST12345698765433")
    assert not iban_valid("GB82WEST1234569876543")  # one character short for GB
    assert find_personal_data("IBAN GB82 WEST 1234 5698 7654 33") == []
    assert find_personal_data("card 4111 1111 1111 1112") == []
    assert nir_valid("1 85 05 78 006 084 91") and not nir_valid("1 85 05 78 006 084 92")
    assert verhoeff_valid("234567890124") and not verhoeff_valid("234567890125")
    assert find_personal_data("DNI 12345678A") == []  # Z is its letter
    assert find_personal_data("SIN 130 692 545") == []  # fails Luhn (130 692 544 passes)
    assert find_personal_data("SIN 130 692 544")[0].value == "130 692 544"


def test_an_iban_ends_where_its_country_says_and_the_next_word_is_kept() -> None:
    text = "GB82 WEST 1234 5698 7654 32 ABCD is mine"
    [finding] = find_personal_data(text)
    assert finding.kind is DataKind.IBAN and finding.value == "GB82 WEST 1234 5698 7654 32"
    two = find_personal_data("GB82WEST12345698765432 DE89370400440532013000")
    assert [f.value for f in two] == ["GB82WEST12345698765432", "DE89370400440532013000"]


def test_findings_never_overlap_and_come_in_text_order() -> None:
    text = "mail a@example.com, card 4111111111111111, call +1 415-555-0132, key sk-abcdefghijklmnop1234"
    findings = find_personal_data(text)
    assert [f.kind for f in findings] == [DataKind.EMAIL, DataKind.CARD, DataKind.PHONE, DataKind.API_KEY]
    assert all(a.end <= b.start for a, b in zip(findings, findings[1:]))


def test_the_same_value_written_two_ways_has_one_key() -> None:
    first, second = find_personal_data("Bob@Example.com or bob@example.com")
    assert first.key == second.key
    one, two = find_personal_data("+1 415-555-0132 and +1 (415) 555 0132")
    assert one.key == two.key == "+14155550132"


def test_kinds_and_their_description_never_name_a_value() -> None:
    kinds = kinds_in(["write to a@example.com", "or call 415-555-0132"])
    assert kinds == {DataKind.EMAIL, DataKind.PHONE}
    assert describe(kinds) == "email, phone"


# Matched as addresses by an earlier version on the bench's own data (bench/results/privacy_cost.md): a
# GSM8K number hidden behind a placeholder cost the cloud its answer.
@pytest.mark.parametrize("text", ["During 15 hours of work", "Considering 16 apples", "Spring 2 starts today",
                                  "In 1879, Mosley Street was lit by electricity"])
def test_words_and_years_shaped_like_addresses_are_not_personal_data(text: str) -> None:
    assert not list(find_addresses(text))


@pytest.mark.parametrize("text", ["Kaiserring 3", "Ostring 12", "Hauptstraße 5"])
def test_german_street_compounds_are_still_found(text: str) -> None:
    assert [text[a:b] for a, b in find_addresses(text)] == [text]

"""Redaction patterns: what is masked, and the ordinary text and numbers that must survive."""
from __future__ import annotations

import hashlib

import pytest

from router.core.ledger.redaction import ContentFilter, ContentPolicy, luhn_valid, redact


@pytest.mark.parametrize(("text", "expected"), [
    ("mail john.doe+news@example.co.uk now", "mail [EMAIL] now"),
    ("contact: a_b@sub.domain.org.", "contact: [EMAIL]."),
])
def test_emails_are_masked(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize("phone", [
    "+1 415-555-0132", "(415) 555-0132", "415-555-0132", "415.555.0132", "+44 20 7946 0958",
    "+33 1 42 68 53 00", "+4915112345678",
])
def test_phone_numbers_are_masked(phone: str) -> None:
    assert redact(f"call {phone} today") == "call [PHONE] today"


@pytest.mark.parametrize("card", [
    "4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111", "5500 0000 0000 0004",
    "3782 822463 10005", "378282246310005", "6011111111111117",
])
def test_luhn_valid_card_numbers_are_masked(card: str) -> None:
    assert redact(f"card {card}, thanks") == "card [CARD], thanks"


def test_a_card_shaped_number_failing_luhn_is_kept() -> None:
    assert not luhn_valid("4111111111111112")
    assert redact("order 4111111111111112") == "order 4111111111111112"


@pytest.mark.parametrize(("text", "expected"), [
    ("key sk-proj-abcdefghijklmnop1234 ok", "key [API_KEY] ok"),
    ("key sk-ant-api03-AbCdEfGhIjKlMnOpQrSt ok", "key [API_KEY] ok"),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abc.def", "Authorization: Bearer [API_KEY]"),
    ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789", "token [API_KEY]"),
    ("aws AKIAIOSFODNN7EXAMPLE", "aws [API_KEY]"),
    ("hf hf_abcdefghijklmnopqrstuvwxyzABCDEFGH", "hf [API_KEY]"),
    ("sha d41d8cd98f00b204e9800998ecf8427e", "sha [API_KEY]"),
    ("secret QWxhZGRpbjpvcGVuIHNlc2FtZQ1234567890abc== end", "secret [API_KEY] end"),
])
def test_api_key_like_strings_are_masked(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize("text", [
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
])
def test_ordinary_text_and_numbers_survive(text: str) -> None:
    assert redact(text) == text


def test_content_filters() -> None:
    text = "write to bob@corp.io"
    assert ContentFilter(ContentPolicy.FULL).text(text) == text
    assert ContentFilter(ContentPolicy.REDACTED).text(text) == "write to [EMAIL]"
    hashed = ContentFilter(ContentPolicy.NONE).text(text)
    assert hashed == "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    nested = ContentFilter(ContentPolicy.REDACTED).value({"a": ["x@y.io", 3, None], "b": True})
    assert nested == {"a": ["[EMAIL]", 3, None], "b": True}
    assert ContentFilter(ContentPolicy.NONE).text(None) is None
    assert ContentPolicy.parse("REDACTED") is ContentPolicy.REDACTED


def test_metadata_keys_are_filtered_and_keys_that_mask_alike_stay_apart() -> None:
    metadata = {"ann@corp.io": "first", "bob@corp.io": "second", "plain": 3}
    assert ContentFilter(ContentPolicy.REDACTED).metadata(metadata) == {
        "[EMAIL]": "first", "[EMAIL]#2": "second", "plain": "3"}
    hashed = ContentFilter(ContentPolicy.NONE).metadata(metadata)
    assert len(hashed) == 3 and all(k.startswith("sha256:") and v.startswith("sha256:") for k, v in hashed.items())

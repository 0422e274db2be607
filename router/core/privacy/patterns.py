"""Contact details, card numbers and secrets: the patterns the ledger masks (router/core/ledger/redaction.py)
and the cloud egress policy finds (detect.py). One place, so that both mean the same by "an e-mail address".

Each pattern finds a common written shape, not every one a person could type; checksums (Luhn for cards)
keep ordinary numbers out. The ledger's tests (tests/unit/test_ledger_redaction.py) pin what must be caught
and what must survive.
"""
from __future__ import annotations

import re

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")

# Keys with a known vendor prefix, then `Bearer <token>`, then long opaque tokens.
PREFIXED_KEY = re.compile(
    r"\b(?:"
    r"sk-[A-Za-z0-9_-]{16,}"            # OpenAI, Anthropic (sk-ant-...), sk-proj-...
    r"|gh[pousr]_[A-Za-z0-9]{30,}"      # GitHub tokens
    r"|github_pat_[A-Za-z0-9_]{30,}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"   # Slack
    r"|hf_[A-Za-z0-9]{30,}"             # Hugging Face
    r"|AKIA[0-9A-Z]{16}"                # AWS access key id
    r"|AIza[0-9A-Za-z_-]{35}"           # Google API key
    r")")
# Group 1 is the word "Bearer" (the ledger keeps it), group 2 the token.
BEARER_TOKEN = re.compile(r"\b(Bearer)\s+([A-Za-z0-9._~+/=-]{8,})", re.IGNORECASE)
LONG_HEX = re.compile(r"(?<![A-Za-z0-9])[0-9a-fA-F]{32,}(?![A-Za-z0-9])")
# 32+ characters of base64/base64url that mix letters and digits: words and numbers do not.
OPAQUE_TOKEN = re.compile(
    r"(?<![A-Za-z0-9+/_-])(?=[A-Za-z0-9+/_-]*[0-9])(?=[A-Za-z0-9+/_-]*[A-Za-z])"
    r"[A-Za-z0-9+/_-]{32,}={0,2}(?![A-Za-z0-9+/_=-])")

# 13-19 digits written the ways cards are: in one run, in groups of four (4-4-4-4, 4-4-4-4-3,
# 4-4-4-1..4) or Amex's 4-6-5, with spaces or dashes. A card only if the Luhn check passes, so a
# long order number or a row of small numbers ("1 2 3 ...") is not a card.
CARD_CANDIDATE = re.compile(
    r"(?<![\d.,+-])(?:\d{13,19}|\d{4}(?:[ -]\d{4}){2}[ -]\d{1,4}(?:[ -]\d{3})?|\d{4}[ -]\d{6}[ -]\d{5})"
    r"(?![\d-]|[.,]\d)")

# Phone numbers need a separator shape or a leading +, so bare numbers in maths stay untouched.
PHONE = re.compile(
    r"(?:(?<![\w+])\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}(?![\w])"
    r"|(?<![\w.,-])(?:\(\d{3}\)\s?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w]|[.,]\d))")

# National numbers with their trunk 0 and separators, which the ledger's PHONE leaves alone: UK-style
# "020 7946 0958" and "07700 900123", and the French five pairs "01 42 68 53 00". Found by the egress
# policy only: the ledger's masking keeps its own, older rule set.
NATIONAL_PHONE = re.compile(
    r"(?<![\w.,+-])(?:0\d{2,4}[ -]\d{3,4}[ -]?\d{3,4}|0\d(?:[ .]\d{2}){4})(?![\w]|[.,-]\d)")


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def digits_of(text: str) -> str:
    return "".join(char for char in text if char.isdigit())

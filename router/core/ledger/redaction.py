"""What the ledger keeps of each text, by the `log_content` setting.

- `full`: the text as it was.
- `redacted`: the text with e-mail addresses, phone numbers, payment-card numbers and API-key-like
  strings masked (`[EMAIL]`, `[PHONE]`, `[CARD]`, `[API_KEY]`). Masking is pattern-based: it
  catches the common shapes, not every secret a user could type, and it leaves ordinary numbers
  ("42", "1,000", "3.14", dates, a bare 10-digit number) alone.
- `none`: only `sha256:<hex>` of each text; numbers (tokens, costs, latencies, scores) are kept.
  Unsalted hashes of short or guessable texts ("yes", "42") can be recovered by guessing: `none`
  hides content from a casual reader of the file, not from a determined one.
"""
from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Pattern


class ContentPolicy(str, enum.Enum):
    FULL = "full"
    REDACTED = "redacted"
    NONE = "none"

    @classmethod
    def parse(cls, value: "str | ContentPolicy") -> "ContentPolicy":
        try:
            return cls(str(getattr(value, "value", value)).strip().lower())
        except ValueError:
            raise ValueError(f"log_content must be one of full, redacted, none; got {value!r}") from None


EMAIL_MASK = "[EMAIL]"
PHONE_MASK = "[PHONE]"
CARD_MASK = "[CARD]"
API_KEY_MASK = "[API_KEY]"

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")

# Keys with a known vendor prefix, then `Bearer <token>`, then long opaque tokens.
_PREFIXED_KEY = re.compile(
    r"\b(?:"
    r"sk-[A-Za-z0-9_-]{16,}"            # OpenAI, Anthropic (sk-ant-...), sk-proj-...
    r"|gh[pousr]_[A-Za-z0-9]{30,}"      # GitHub tokens
    r"|github_pat_[A-Za-z0-9_]{30,}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"   # Slack
    r"|hf_[A-Za-z0-9]{30,}"             # Hugging Face
    r"|AKIA[0-9A-Z]{16}"                # AWS access key id
    r"|AIza[0-9A-Za-z_-]{35}"           # Google API key
    r")")
_BEARER = re.compile(r"\b(Bearer)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)
_LONG_HEX = re.compile(r"(?<![A-Za-z0-9])[0-9a-fA-F]{32,}(?![A-Za-z0-9])")
# 32+ characters of base64/base64url that mix letters and digits: words and numbers do not.
_OPAQUE_TOKEN = re.compile(
    r"(?<![A-Za-z0-9+/_-])(?=[A-Za-z0-9+/_-]*[0-9])(?=[A-Za-z0-9+/_-]*[A-Za-z])"
    r"[A-Za-z0-9+/_-]{32,}={0,2}(?![A-Za-z0-9+/_=-])")

# 13-19 digits written the ways cards are: in one run, in groups of four (4-4-4-4, 4-4-4-4-3,
# 4-4-4-1..4) or Amex's 4-6-5, with spaces or dashes. Masked only if the Luhn check passes, so a
# long order number or a row of small numbers ("1 2 3 ...") is not a card.
_CARD_CANDIDATE = re.compile(
    r"(?<![\d.,+-])(?:\d{13,19}|\d{4}(?:[ -]\d{4}){2}[ -]\d{1,4}(?:[ -]\d{3})?|\d{4}[ -]\d{6}[ -]\d{5})"
    r"(?![\d-]|[.,]\d)")

# Phone numbers need a separator shape or a leading +, so bare numbers in maths stay untouched.
_PHONE = re.compile(
    r"(?:(?<![\w+])\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}(?![\w])"
    r"|(?<![\w.,-])(?:\(\d{3}\)\s?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w]|[.,]\d))")


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _mask_card(match: "re.Match[str]") -> str:
    digits = re.sub(r"[ -]", "", match.group(0))
    return CARD_MASK if luhn_valid(digits) else match.group(0)


# Order matters: keys first (a hex key contains digit runs a card or phone pattern would split),
# cards before phones (a card written in groups looks like a long phone number).
_RULES: tuple[tuple[Pattern[str], "str | Callable[[re.Match[str]], str]"], ...] = (
    (_EMAIL, EMAIL_MASK),
    (_PREFIXED_KEY, API_KEY_MASK),
    (_BEARER, r"\1 " + API_KEY_MASK),
    (_LONG_HEX, API_KEY_MASK),
    (_OPAQUE_TOKEN, API_KEY_MASK),
    (_CARD_CANDIDATE, _mask_card),
    (_PHONE, PHONE_MASK),
)


def redact(text: str) -> str:
    """Masks e-mail addresses, phone numbers, card numbers and API-key-like strings in `text`."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


def sha256_text(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class ContentFilter:
    """Applies one `ContentPolicy` to every text the ledger stores."""

    policy: ContentPolicy

    @property
    def keeps_text(self) -> bool:
        return self.policy is not ContentPolicy.NONE

    def text(self, value: Optional[str]) -> Optional[str]:
        if value is None:
            return None
        if self.policy is ContentPolicy.FULL:
            return value
        if self.policy is ContentPolicy.REDACTED:
            return redact(value)
        return sha256_text(value)

    def metadata(self, metadata: Mapping[str, Any]) -> dict[str, Optional[str]]:
        """A request's metadata: the caller's keys are content as much as its values. Two keys that
        mask alike (two e-mail addresses under redacted) stay apart: nothing is lost."""
        stored: dict[str, Optional[str]] = {}
        for key, value in metadata.items():
            name = base = self.text(str(key)) or ""
            suffix = 1
            while name in stored:
                suffix += 1
                name = f"{base}#{suffix}"
            stored[name] = self.text(str(value))
        return stored

    def value(self, value: Any) -> Any:
        """Filters the strings inside a JSON-like value; numbers, booleans and None pass through."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {str(key): self.value(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(item) for item in value]
        return value

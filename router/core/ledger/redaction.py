"""What the ledger keeps of each text, by the `log_content` setting.

- `full`: the text as it was.
- `redacted`: the text with e-mail addresses, phone numbers, payment-card numbers and API-key-like
  strings masked (`[EMAIL]`, `[PHONE]`, `[CARD]`, `[API_KEY]`). Masking is pattern-based: it
  catches the common shapes, not every secret a user could type, and it leaves ordinary numbers
  ("42", "1,000", "3.14", dates, a bare 10-digit number) alone.
- `none`: only `sha256:<hex>` of each text; numbers (tokens, costs, latencies, scores) are kept.
  Unsalted hashes of short or guessable texts ("yes", "42") can be recovered by guessing: `none`
  hides content from a casual reader of the file, not from a determined one.

Content (`ContentFilter.text`): what a person or a model wrote, the messages, answers, reference and
corrected answers, queries, metadata, the agent's thoughts, tool inputs, observations and step errors
(an unparseable step quotes the model's raw output).

Incidental text (`ContentFilter.incidental`): everything else the ledger stores as text from a request
or its result: decision reasons, scorer and threshold names, model names, finish reasons, Info errors,
passage ids, signal sources. The router writes these to explain a decision, yet they can quote content
(an id, an error that echoes its input). Under `redacted` and `none` they are masked like content under
`redacted`, and kept readable: hashing them would leave Stats and a reader of the file no reason to go by.

Stored as is under every policy, because they are keys, not content: the request id (the name Feedback
and exports look a request up by; validation allows no `@`), and the principal (the audit trail and the
budgets group by it; its names come from the server's principals file, never from a request).
"""
from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Pattern

# The patterns are shared with the cloud egress policy (router/core/privacy/), which finds more kinds.
from router.core.privacy.patterns import (BEARER_TOKEN, CARD_CANDIDATE, EMAIL, LONG_HEX, OPAQUE_TOKEN, PHONE,
                                          PREFIXED_KEY, luhn_valid)


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


def _mask_card(match: "re.Match[str]") -> str:
    digits = re.sub(r"[ -]", "", match.group(0))
    return CARD_MASK if luhn_valid(digits) else match.group(0)


# Order matters: keys first (a hex key contains digit runs a card or phone pattern would split),
# cards before phones (a card written in groups looks like a long phone number).
_RULES: tuple[tuple[Pattern[str], "str | Callable[[re.Match[str]], str]"], ...] = (
    (EMAIL, EMAIL_MASK),
    (PREFIXED_KEY, API_KEY_MASK),
    (BEARER_TOKEN, r"\1 " + API_KEY_MASK),
    (LONG_HEX, API_KEY_MASK),
    (OPAQUE_TOKEN, API_KEY_MASK),
    (CARD_CANDIDATE, _mask_card),
    (PHONE, PHONE_MASK),
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

    def incidental(self, value: Optional[str]) -> Optional[str]:
        """Text the router wrote that may quote content (see the module docstring): masked, never hashed."""
        if value is None or self.policy is ContentPolicy.FULL:
            return value
        return redact(value)

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
            return {self.incidental(str(key)) or "": self.value(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(item) for item in value]
        return value

"""Search terms of a text: the normalised tokenisation that keyword scoring compares.

Lower-cased (Unicode case folding, compatibility forms folded by NFKC), punctuation dropped, a small
English stop-word list removed, and optionally a light suffix stemmer (plural and a few inflections)
so that "ports" finds "port". Queries and passages must go through the same `analyze` call.
"""
from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"\w+")
# Function words that carry no topic (articles, pronouns, auxiliaries, common prepositions). Question
# words such as "when", "where" and "how" stay searchable: their low idf already makes them weigh little.
STOP_WORDS = frozenset("""
a an the and or but if of at by for with about against between into through during before after
above below to from up down in out on off over under again further then once here there all any
both each few more most other some such no nor not only own same so than too very can will just
should now is are was were be been being have has had having do does did doing i me my myself we
our ours ourselves you your yours yourself yourselves he him his himself she her hers herself it
its itself they them their theirs themselves what which who whom this that these those am would
could also as s t
""".split())


def analyze(text: str, *, stem: bool) -> list[str]:
    """The search terms of `text`, in order (duplicates kept: term frequency counts them)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    words = (word for word in _WORD.findall(folded) if word not in STOP_WORDS)
    if not stem:
        return list(words)
    return [light_stem(word) for word in words]


def light_stem(word: str) -> str:
    """A conservative suffix stemmer (plurals, -ing, -ed, -ly), in the spirit of the S-stemmer: it
    conflates inflections and leaves short words, numbers and most derivations alone, so that it
    rarely merges unrelated words."""
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "ches", "shes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            stem = word[: -len(suffix)]
            if len(stem) > 3 and stem[-1] == stem[-2] and stem[-1] not in "lsz":
                stem = stem[:-1]  # "stopped" -> "stop"
            return stem
    if word.endswith("ly") and len(word) > 5:
        return word[:-2]
    return word

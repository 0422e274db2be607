"""The arbiter's and the router's training set: the labelled corpus's rows and the ledger's, as
`hybrid-router train-arbiter` and `train-router` train on them, with the provenance meta.json records.

A ledger request that asked a corpus item's text again (the labelling daemon's own ledger does) is that
item: it keeps the corpus's row and split, or a corpus test item would be trained on. Ledger rows stored
under log_content = none have no text to embed: they train features-only models alone.
"""
from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from router.core.arbiters.corpus import CorpusRow, TrainingError, read_corpus
from router.core.learning.deferral import DATASET as LEDGER_DATASET, deferral_rows
from router.core.ledger.store import format_time


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _quiet(_line: str) -> None:
    """The default `log`: says nothing."""


def training_rows(*, corpus: Optional[Path], ledger: Optional[Path], need_features: Sequence[str],
                  features_only: bool, since: Union[datetime, float, None] = None,
                  log: Callable[[str], None] = _quiet) -> tuple[list[CorpusRow], dict[str, object]]:
    """The rows of `corpus` and `ledger` (ledger requests made at or after `since`, a datetime or a Unix
    time, whose decisions recorded every one of `need_features`), and meta.json's training_corpus (one entry
    per source). `log` gets one line about the ledger's rows. Raises TrainingError: a source cannot be read,
    a ledger alone gives no row, or ledger rows without text are to be embedded (not `features_only`)."""
    rows: list[CorpusRow] = []
    sources: dict[str, dict[str, object]] = {}
    if corpus:
        corpus_rows = read_corpus(corpus)
        rows.extend(corpus_rows)
        sources["corpus"] = {"path": str(corpus), "lines": len(corpus_rows), "sha256": file_sha256(corpus)}
    if ledger:
        ledger = Path(ledger).expanduser()
        since_text = format_time(since) if since is not None else None
        # With a corpus beside it, a ledger with nothing labelled yet only adds no rows.
        ledger_rows, skipped = deferral_rows(ledger, since=since_text, require_rows=not corpus,
                                             need_features=need_features)
        # A repeat of a corpus item's text is that item: the corpus's row and split stand (module docstring).
        corpus_texts = {row.text for row in rows if row.text}
        kept = [row for row in ledger_rows if not (row.text and row.text in corpus_texts)]
        repeated, ledger_rows = len(ledger_rows) - len(kept), kept
        rows.extend(ledger_rows)
        sources["ledger"] = {"path": str(ledger), "rows": len(ledger_rows), "since": since_text,
                             "skipped": dict(sorted(skipped.items())), "repeats_of_corpus_items": repeated}
        log(f"ledger {ledger}: {len(ledger_rows)} row(s); skipped "
            + (", ".join(f"{reason} {count}" for reason, count in sorted(skipped.items())) or "none")
            + (f"; {repeated} left out as repeats of corpus items" if repeated else ""))
    untexted = sum(1 for row in rows if row.dataset == LEDGER_DATASET and not row.text)
    if untexted and not features_only:
        raise TrainingError(f"{untexted} ledger row(s) have no text to embed (stored under ledger.log_content = "
                            "none, which keeps hashes only); train on the features only with --features-only")
    # `path`, `lines` (and `sha256` for a corpus alone) as a corpus-only run always wrote them.
    provenance: dict[str, object] = {"path": " + ".join(str(source["path"]) for source in sources.values()),
                                     "lines": len(rows), **sources}
    if list(sources) == ["corpus"]:
        provenance["sha256"] = sources["corpus"]["sha256"]
    return rows, provenance

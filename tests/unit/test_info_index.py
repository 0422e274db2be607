"""cloud/info/index.py with a small deterministic test embedder: ingest, delete, filters, access control,
persistence and the typed errors. The real encoder is exercised in test_info_squad.py."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from cloud.info import (
    Caller,
    Document,
    IndexCorruptError,
    IndexSettings,
    InfoIndex,
    InfoIndexError,
    InvalidDocumentError,
    InvalidQueryError,
)


class HashingTestEmbedder:
    """Test embedder: a bag of words hashed into 64 signed dimensions, unit-normalised. Deterministic
    (md5, not the salted hash()), so two indexes over the same texts hold the same vectors."""

    dim = 64

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                digest = hashlib.md5(word.encode()).digest()
                out[row, digest[0] % self.dim] += 1.0 if digest[1] % 2 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)


HR = Caller(user="ann", groups=("hr",))
OUTSIDER = Caller(user="bob", groups=("engineering",))
PUBLIC_DOCS = [
    Document("handbook", "Annual leave is approved by your manager. Salary reviews happen every spring.",
             metadata={"team": "people", "kind": "policy"}),
    Document("expenses", "Expenses need receipts. Travel expenses are approved by finance within a week.",
             metadata={"team": "finance", "kind": "policy"}),
    Document("deploys", "Deploys run every Tuesday. A failed deploy is rolled back by the on-call engineer.",
             metadata={"team": "engineering", "kind": "runbook"}),
    Document("salary-bands", "Salary bands are published once a year for every engineering level.",
             metadata={"team": "people", "kind": "reference"}),
]
HR_DOC = Document("hr-salaries", "Confidential: the salary of every employee, salary review outcomes and "
                  "the salary bands approved for next year.", metadata={"team": "people", "kind": "policy"},
                  groups=("hr",))
SMALL = IndexSettings(chunk_tokens=40, chunk_overlap_tokens=8)


def open_index(path: Path, settings: IndexSettings = SMALL) -> InfoIndex:
    return InfoIndex.open(path, embedder=HashingTestEmbedder(), settings=settings)


@pytest.fixture
def index(tmp_path: Path):
    opened = open_index(tmp_path / "index")
    opened.ingest(PUBLIC_DOCS)
    yield opened
    opened.close()


def ids(passages) -> list[str]:
    return [p.document_id for p in passages]


def test_retrieve_finds_the_matching_passage_with_offsets(index: InfoIndex) -> None:
    [best, *_] = index.retrieve("who approves travel expenses?", k=3, caller=Caller())
    assert best.document_id == "expenses" and best.passage_id == "expenses#0"
    assert best.text == PUBLIC_DOCS[1].text[best.start:best.end]
    assert best.metadata == {"team": "finance", "kind": "policy"}


def test_results_are_ordered_and_bounded_by_k(index: InfoIndex) -> None:
    passages = index.retrieve("salary review approved", k=2, caller=Caller())
    assert len(passages) == 2
    assert passages[0].score >= passages[1].score
    assert len(index.retrieve("salary", k=100, caller=Caller())) == 4  # every visible chunk at most


def test_reingesting_an_id_replaces_its_chunks(index: InfoIndex) -> None:
    report = index.ingest([Document("deploys", "Deploys now run on Thursdays after the freeze.")])
    assert (report.documents, report.chunks, report.replaced) == (1, 1, 1)
    again = index.ingest([Document("deploys", "Deploys now run on Thursdays after the freeze.")])
    assert again.replaced == 1
    assert index.stats().documents == 4 and index.stats().chunks == 4
    found = index.retrieve("when do deploys run", k=4, caller=Caller())
    assert [p.text for p in found if p.document_id == "deploys"] == ["Deploys now run on Thursdays after the freeze."]


def test_a_repeated_id_in_one_batch_keeps_the_last(tmp_path: Path) -> None:
    index = open_index(tmp_path / "i")
    report = index.ingest([Document("a", "first version"), Document("a", "second version")])
    assert (report.documents, report.replaced) == (1, 0)
    assert [p.text for p in index.retrieve("version", k=5, caller=Caller())] == ["second version"]


def test_delete_counts_what_existed_and_removes_it(index: InfoIndex) -> None:
    assert index.delete(["deploys", "no-such-doc"]) == 1
    assert index.delete(["deploys"]) == 0
    assert "deploys" not in ids(index.retrieve("deploy rolled back", k=10, caller=Caller()))
    assert index.stats().documents == 3


def test_filters_match_metadata_exactly(index: InfoIndex) -> None:
    found = index.retrieve("approved", k=10, caller=Caller(), filters={"kind": "policy"})
    assert set(ids(found)) == {"handbook", "expenses"}
    both = {"kind": "policy", "team": "finance"}
    assert ids(index.retrieve("approved", k=10, caller=Caller(), filters=both)) == ["expenses"]
    assert index.retrieve("approved", k=10, caller=Caller(), filters={"kind": "Policy"}) == []


def test_a_long_document_is_cut_into_chunks_with_document_offsets(tmp_path: Path) -> None:
    text = " ".join(f"Fact number {n} is about subject {n}." for n in range(30))
    index = open_index(tmp_path / "i")
    report = index.ingest([Document("facts", text)])
    assert report.chunks > 1
    for passage in index.retrieve("subject 17", k=100, caller=Caller()):
        assert text[passage.start:passage.end] == passage.text
    assert any("subject 17" in p.text for p in index.retrieve("subject 17", k=1, caller=Caller()))


# Access control: the point of the service.

@pytest.mark.parametrize("rerank", [True, False])
def test_an_outsider_scores_exactly_as_if_the_hidden_document_never_existed(tmp_path: Path, rerank: bool) -> None:
    settings = dataclasses.replace(SMALL, rerank=rerank)
    with_hr = open_index(tmp_path / "with-hr", settings)
    with_hr.ingest(PUBLIC_DOCS[:2] + [HR_DOC] + PUBLIC_DOCS[2:])  # hidden rows sit between visible ones
    without_hr = open_index(tmp_path / "without-hr", settings)
    without_hr.ingest(PUBLIC_DOCS)
    for query in ("salary review approved", "salary bands", "confidential employee salary", "deploys"):
        for k in (1, 3, 100):
            seen = with_hr.retrieve(query, k=k, caller=OUTSIDER)
            baseline = without_hr.retrieve(query, k=k, caller=OUTSIDER)
            assert [(p.passage_id, p.score) for p in seen] == [(p.passage_id, p.score) for p in baseline]
            assert "hr-salaries" not in ids(seen)
    # The insider sees it, and it ranks first for its own words.
    assert ids(with_hr.retrieve("confidential employee salary", k=1, caller=HR)) == ["hr-salaries"]
    assert ids(with_hr.retrieve("confidential employee salary", k=1, caller=Caller(groups=("HR",)))) != ["hr-salaries"]


def test_an_outsider_cannot_count_the_hidden_document(tmp_path: Path) -> None:
    index = open_index(tmp_path / "i")
    index.ingest(PUBLIC_DOCS + [HR_DOC])
    assert len(index.retrieve("salary", k=100, caller=OUTSIDER)) == 4
    assert len(index.retrieve("salary", k=100, caller=HR)) == 5
    people_policies = index.retrieve("salary", k=100, caller=OUTSIDER, filters={"kind": "policy", "team": "people"})
    assert ids(people_policies) == ["handbook"]  # hr-salaries matches the filters but is not the outsider's
    outsider = index.stats(OUTSIDER)
    assert (outsider.documents, outsider.chunks, outsider.groups, outsider.bytes_on_disk) == (4, 4, (), 0)
    insider = index.stats(HR)
    assert (insider.documents, insider.groups) == (5, ("hr",))
    everything = index.stats()
    assert (everything.documents, everything.groups, everything.dim) == (5, ("hr",), 64)
    assert everything.bytes_on_disk > 0


def test_a_caller_in_no_group_sees_only_public_documents(tmp_path: Path) -> None:
    index = open_index(tmp_path / "i")
    index.ingest([HR_DOC])
    assert index.retrieve("salary", k=10, caller=Caller()) == []
    assert index.stats(Caller()).documents == 0


# Persistence.

def test_an_index_reopens_with_the_same_results(tmp_path: Path) -> None:
    first = open_index(tmp_path / "i")
    first.ingest(PUBLIC_DOCS + [HR_DOC])
    first.delete(["deploys"])
    before = [(p.passage_id, p.score, p.start, p.end, dict(p.metadata))
              for p in first.retrieve("salary approved", k=10, caller=HR)]
    stats = first.stats()
    first.close()
    with pytest.raises(InfoIndexError, match="closed"):
        first.retrieve("salary", k=1, caller=HR)
    second = open_index(tmp_path / "i")
    assert [(p.passage_id, p.score, p.start, p.end, dict(p.metadata))
            for p in second.retrieve("salary approved", k=10, caller=HR)] == before
    assert second.stats() == stats
    assert ids(second.retrieve("salary", k=10, caller=OUTSIDER)).count("hr-salaries") == 0
    # Only the current generation stays on disk.
    names = sorted(p.name for p in (tmp_path / "i").iterdir())
    assert names == ["chunks-000002.jsonl", "manifest.json", "sentences-000002.npy", "vectors-000002.npy"]


def test_a_corrupt_manifest_is_refused_with_the_fix(tmp_path: Path) -> None:
    index = open_index(tmp_path / "i")
    index.ingest(PUBLIC_DOCS)
    index.close()
    (tmp_path / "i" / "manifest.json").write_text("{ truncated")
    with pytest.raises(IndexCorruptError) as raised:
        open_index(tmp_path / "i")
    message = str(raised.value)
    assert "manifest.json" in message and "delete the directory" in message and "re-ingest" in message


def test_a_foreign_manifest_and_an_altered_data_file_are_refused(tmp_path: Path) -> None:
    index = open_index(tmp_path / "i")
    index.ingest(PUBLIC_DOCS)
    index.close()
    manifest_path = tmp_path / "i" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    vectors = tmp_path / "i" / manifest["files"]["vectors"]["name"]
    vectors.write_bytes(vectors.read_bytes()[:-8])
    with pytest.raises(IndexCorruptError, match="vectors-000001.npy does not match"):
        open_index(tmp_path / "i")
    manifest_path.write_text(json.dumps({"name": "something else"}))
    with pytest.raises(IndexCorruptError, match="not an Info index manifest"):
        open_index(tmp_path / "i")


def test_data_files_without_a_manifest_are_refused(tmp_path: Path) -> None:
    index = open_index(tmp_path / "i")
    index.ingest(PUBLIC_DOCS)
    index.close()
    (tmp_path / "i" / "manifest.json").unlink()
    with pytest.raises(IndexCorruptError, match="manifest.json is missing"):
        open_index(tmp_path / "i")


def test_other_chunk_settings_or_another_dimension_are_refused(tmp_path: Path) -> None:
    index = open_index(tmp_path / "i")
    index.ingest(PUBLIC_DOCS)
    index.close()
    with pytest.raises(IndexCorruptError, match="chunk_tokens=40, chunk_overlap_tokens=8"):
        open_index(tmp_path / "i", IndexSettings(chunk_tokens=100, chunk_overlap_tokens=8))

    class WiderEmbedder(HashingTestEmbedder):
        dim = 128

    with pytest.raises(IndexCorruptError, match="64-d embedder"):
        InfoIndex.open(tmp_path / "i", embedder=WiderEmbedder(), settings=SMALL)
    # Search settings may change freely.
    reopened = open_index(tmp_path / "i", dataclasses.replace(SMALL, rerank=False, bm25_k1=2.0, stem=False))
    assert reopened.retrieve("deploys", k=1, caller=Caller())[0].document_id == "deploys"


def test_a_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(IndexCorruptError, match="is a file"):
        open_index(tmp_path / "file")


# Typed errors.

@pytest.mark.parametrize("document, hint", [
    (Document("", "text"), "non-blank id"),
    (Document("a" * 600, "text"), "limited to 512"),
    (Document("empty", ""), "'empty' has no text"),
    (Document("meta", "text", metadata={"n": 1}), "strings to strings"),  # type: ignore[dict-item]
])
def test_an_invalid_document_fails_the_whole_batch(index: InfoIndex, document: Document, hint: str) -> None:
    before = index.stats()
    with pytest.raises(InvalidDocumentError, match=re.escape(hint)):
        index.ingest([Document("new-doc", "A valid document."), document])
    assert index.stats() == before
    assert "new-doc" not in ids(index.retrieve("valid document", k=10, caller=Caller()))


@pytest.mark.parametrize("query, k, filters, hint", [
    ("", 5, None, "empty"),
    ("   \n", 5, None, "empty"),
    ("x" * 4001, 5, None, "4001 characters"),
    ("fine", 0, None, "between 1 and 100"),
    ("fine", 101, None, "between 1 and 100"),
    ("fine", 5, {"year": 2020}, "string values"),
])
def test_an_invalid_query_raises_a_typed_error(index: InfoIndex, query: str, k: int, filters, hint: str) -> None:
    with pytest.raises(InvalidQueryError, match=hint) as raised:
        index.retrieve(query, k=k, caller=Caller(), filters=filters)
    assert isinstance(raised.value, ValueError)


def test_a_query_of_stop_words_still_gets_dense_results(index: InfoIndex) -> None:
    assert len(index.retrieve("what is the", k=2, caller=Caller())) == 2


def test_concurrent_retrieval_and_ingest(tmp_path: Path) -> None:
    index = open_index(tmp_path / "i")
    index.ingest(PUBLIC_DOCS)
    failures: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(30):
                found = index.retrieve("salary approved", k=3, caller=Caller())
                assert 1 <= len(found) <= 3
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    for n in range(10):
        index.ingest([Document(f"extra-{n}", f"Extra note {n} about salary approvals.")])
    for thread in threads:
        thread.join()
    assert failures == []
    assert index.stats().documents == 14


def test_settings_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="chunk_overlap_tokens"):
        IndexSettings(chunk_tokens=10, chunk_overlap_tokens=10)
    with pytest.raises(ValueError, match="both be 0"):
        IndexSettings(bm25_weight=0.0, dense_weight=0.0)
    with pytest.raises(ValueError, match="rerank_coverage"):
        IndexSettings(rerank_coverage=-1.0)


def test_retrieve_ranks_the_candidates_by_the_weighted_features(index: InfoIndex) -> None:
    query = "salary review approved by the manager"
    candidates, features = index.rerank_candidates(query, caller=Caller())
    assert features.shape == (len(candidates), 6)
    weights = index.settings.rerank_weights.as_array()
    expected = [candidates[i].passage_id for i in np.argsort(-(features @ weights), kind="stable")]
    assert [p.passage_id for p in index.retrieve(query, k=4, caller=Caller())] == expected[:4]
    # Coverage and bigram shares are fractions; the rarest-term flag is 0 or 1.
    assert ((features[:, 3:] >= 0) & (features[:, 3:] <= 1)).all()

"""The Info index's behaviour on every engine, with a small deterministic test embedder: ingest, delete,
filters, access control, persistence and the typed errors, each run on the files engine (InfoIndex,
cloud/info/index.py) and on the postgres engine (PgInfoIndex, cloud/info/pg_index.py) both embedded and
against a PostgreSQL server on loopback (tests/pg_server.py; the fixtures are in tests/conftest.py).
The files format's own checks (its manifest, data files and generations) run on that engine only. The
real encoder is exercised in test_info_squad.py and tests/integration/test_info_pg.py."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterator, Sequence
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
    PgInfoIndex,
    SearchIndex,
)
from tests.pg_server import FreshDatabases, FreshIndexDirectories


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
    """The files engine's index at `path` (for the tests of its format)."""
    return InfoIndex.open(path, embedder=HashingTestEmbedder(), settings=settings)


ENGINES = ("files", "postgres-embedded", "postgres-server")


class IndexOpener:
    """Opens indexes of one engine by name (the same name, the same index: to reopen it); `close` closes
    every one it opened and removes their data. Postgres embedded: a new directory per name (a copy of
    the initialised template); server: a new database per name on the run's server."""

    def __init__(self, engine: str, request: pytest.FixtureRequest, folder: Path) -> None:
        self.engine = engine
        self._folder = folder
        self._locations: dict[str, Path | str] = {}
        self._opened: list[SearchIndex] = []
        self._databases: FreshDatabases | None = None
        self._directories: FreshIndexDirectories | None = None
        if engine == "postgres-embedded":
            self._directories = FreshIndexDirectories(request.getfixturevalue("embedded_index_template"),
                                                      request.getfixturevalue("pg_test_folder"))
        elif engine == "postgres-server":
            self._databases = FreshDatabases(request.getfixturevalue("pg_test_server"))

    def __call__(self, name: str = "index", settings: IndexSettings = SMALL,
                 embedder: HashingTestEmbedder | None = None) -> SearchIndex:
        embedder = embedder or HashingTestEmbedder()
        location = self._location(name)
        index: SearchIndex
        if self.engine == "files":
            index = InfoIndex.open(location, embedder=embedder, settings=settings)
        else:
            index = PgInfoIndex.open(location, embedder=embedder, settings=settings)
        self._opened.append(index)
        return index

    def _location(self, name: str) -> Path | str:
        if name not in self._locations:
            if self._directories is not None:
                self._locations[name] = self._directories.create(name)
            elif self._databases is not None:
                self._locations[name] = self._databases.create()
            else:
                self._locations[name] = self._folder / name
        return self._locations[name]

    def close(self) -> None:
        for index in self._opened:
            index.close()
        if self._databases is not None:
            self._databases.drop_all()
        if self._directories is not None:
            self._directories.remove_all()


@pytest.fixture(params=ENGINES)
def open_any(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[IndexOpener]:
    """Opens indexes on each engine in turn (the test runs once per engine)."""
    opener = IndexOpener(request.param, request, tmp_path)
    yield opener
    opener.close()


@pytest.fixture(scope="module", params=ENGINES)
def index(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SearchIndex]:
    """An index of PUBLIC_DOCS on each engine in turn, shared by the tests that only read it."""
    opener = IndexOpener(request.param, request, tmp_path_factory.mktemp("shared"))
    opened = opener()
    opened.ingest(PUBLIC_DOCS)
    yield opened
    opener.close()


@pytest.fixture
def fresh_index(open_any: IndexOpener) -> SearchIndex:
    """An index of PUBLIC_DOCS of this test's own, for the tests that change it."""
    opened = open_any()
    opened.ingest(PUBLIC_DOCS)
    return opened


def ids(passages) -> list[str]:
    return [p.document_id for p in passages]


def test_retrieve_finds_the_matching_passage_with_offsets(index: SearchIndex) -> None:
    [best, *_] = index.retrieve("who approves travel expenses?", k=3, caller=Caller())
    assert best.document_id == "expenses" and best.passage_id == "expenses#0"
    assert best.text == PUBLIC_DOCS[1].text[best.start:best.end]
    assert best.metadata == {"team": "finance", "kind": "policy"}


def test_results_are_ordered_and_bounded_by_k(index: SearchIndex) -> None:
    passages = index.retrieve("salary review approved", k=2, caller=Caller())
    assert len(passages) == 2
    assert passages[0].score >= passages[1].score
    assert len(index.retrieve("salary", k=100, caller=Caller())) == 4  # every visible chunk at most


def test_reingesting_an_id_replaces_its_chunks(fresh_index: SearchIndex) -> None:
    report = fresh_index.ingest([Document("deploys", "Deploys now run on Thursdays after the freeze.")])
    assert (report.documents, report.chunks, report.replaced) == (1, 1, 1)
    again = fresh_index.ingest([Document("deploys", "Deploys now run on Thursdays after the freeze.")])
    assert again.replaced == 1
    assert fresh_index.stats().documents == 4 and fresh_index.stats().chunks == 4
    found = fresh_index.retrieve("when do deploys run", k=4, caller=Caller())
    assert [p.text for p in found if p.document_id == "deploys"] == ["Deploys now run on Thursdays after the freeze."]


def test_a_repeated_id_in_one_batch_keeps_the_last(open_any: IndexOpener) -> None:
    index = open_any()
    report = index.ingest([Document("a", "first version"), Document("a", "second version")])
    assert (report.documents, report.replaced) == (1, 0)
    assert [p.text for p in index.retrieve("version", k=5, caller=Caller())] == ["second version"]


def test_delete_counts_what_existed_and_removes_it(fresh_index: SearchIndex) -> None:
    assert fresh_index.delete(["deploys", "no-such-doc"]) == 1
    assert fresh_index.delete(["deploys"]) == 0
    assert "deploys" not in ids(fresh_index.retrieve("deploy rolled back", k=10, caller=Caller()))
    assert fresh_index.stats().documents == 3


def test_filters_match_metadata_exactly(index: SearchIndex) -> None:
    found = index.retrieve("approved", k=10, caller=Caller(), filters={"kind": "policy"})
    assert set(ids(found)) == {"handbook", "expenses"}
    both = {"kind": "policy", "team": "finance"}
    assert ids(index.retrieve("approved", k=10, caller=Caller(), filters=both)) == ["expenses"]
    assert index.retrieve("approved", k=10, caller=Caller(), filters={"kind": "Policy"}) == []


def test_a_long_document_is_cut_into_chunks_with_document_offsets(open_any: IndexOpener) -> None:
    text = " ".join(f"Fact number {n} is about subject {n}." for n in range(30))
    index = open_any()
    report = index.ingest([Document("facts", text)])
    assert report.chunks > 1
    for passage in index.retrieve("subject 17", k=100, caller=Caller()):
        assert text[passage.start:passage.end] == passage.text
    assert any("subject 17" in p.text for p in index.retrieve("subject 17", k=1, caller=Caller()))


# Access control: the point of the service.

@pytest.mark.parametrize("rerank", [True, False])
def test_an_outsider_scores_exactly_as_if_the_hidden_document_never_existed(open_any: IndexOpener,
                                                                           rerank: bool) -> None:
    settings = dataclasses.replace(SMALL, rerank=rerank)
    with_hr = open_any("with-hr", settings)
    with_hr.ingest(PUBLIC_DOCS[:2] + [HR_DOC] + PUBLIC_DOCS[2:])  # hidden rows sit between visible ones
    without_hr = open_any("without-hr", settings)
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


def test_an_outsider_cannot_count_the_hidden_document(open_any: IndexOpener) -> None:
    index = open_any()
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


def test_a_caller_in_no_group_sees_only_public_documents(open_any: IndexOpener) -> None:
    index = open_any()
    index.ingest([HR_DOC])
    assert index.retrieve("salary", k=10, caller=Caller()) == []
    assert index.stats(Caller()).documents == 0


# Persistence.

def test_an_index_reopens_with_the_same_results(open_any: IndexOpener) -> None:
    first = open_any()
    first.ingest(PUBLIC_DOCS + [HR_DOC])
    first.delete(["deploys"])
    before = [(p.passage_id, p.score, p.start, p.end, dict(p.metadata))
              for p in first.retrieve("salary approved", k=10, caller=HR)]
    stats = first.stats()
    first.close()
    with pytest.raises(InfoIndexError, match="closed"):
        first.retrieve("salary", k=1, caller=HR)
    second = open_any()
    assert [(p.passage_id, p.score, p.start, p.end, dict(p.metadata))
            for p in second.retrieve("salary approved", k=10, caller=HR)] == before
    assert second.stats() == stats
    assert ids(second.retrieve("salary", k=10, caller=OUTSIDER)).count("hr-salaries") == 0


def test_other_chunk_settings_or_another_dimension_are_refused(open_any: IndexOpener) -> None:
    index = open_any()
    index.ingest(PUBLIC_DOCS)
    index.close()
    with pytest.raises(IndexCorruptError, match="chunk_tokens=40, chunk_overlap_tokens=8"):
        open_any(settings=IndexSettings(chunk_tokens=100, chunk_overlap_tokens=8))

    class WiderEmbedder(HashingTestEmbedder):
        dim = 128

    with pytest.raises(IndexCorruptError, match="64-d embedder"):
        open_any(embedder=WiderEmbedder())
    # Search settings may change freely; the stemming too, except on a server (others may share it).
    reopened = open_any(settings=dataclasses.replace(SMALL, rerank=False, bm25_k1=2.0,
                                                     stem=open_any.engine == "postgres-server"))
    assert reopened.retrieve("deploys", k=1, caller=Caller())[0].document_id == "deploys"


@pytest.mark.parametrize("open_directory", [InfoIndex.open, PgInfoIndex.open_embedded],
                         ids=["files", "postgres-embedded"])
def test_a_path_that_is_a_file_is_refused(tmp_path: Path, open_directory: Callable[..., SearchIndex]) -> None:
    """The engines kept in a directory (a server's database has no path to get wrong)."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(IndexCorruptError, match="is a file"):
        open_directory(tmp_path / "file", embedder=HashingTestEmbedder(), settings=SMALL)


# The files engine's format: its manifest, data files and generations (the postgres engine keeps none of
# them; its own schema checks are in tests/integration/test_info_pg.py).

def test_only_the_current_generation_of_the_files_stays_on_disk(tmp_path: Path) -> None:
    index = open_index(tmp_path / "i")
    index.ingest(PUBLIC_DOCS + [HR_DOC])
    index.delete(["deploys"])
    index.close()
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


# Typed errors.

@pytest.mark.parametrize("document, hint", [
    (Document("", "text"), "non-blank id"),
    (Document("a" * 600, "text"), "limited to 512"),
    (Document("empty", ""), "'empty' has no text"),
    (Document("meta", "text", metadata={"n": 1}), "strings to strings"),  # type: ignore[dict-item]
])
def test_an_invalid_document_fails_the_whole_batch(fresh_index: SearchIndex, document: Document,
                                                   hint: str) -> None:
    before = fresh_index.stats()
    with pytest.raises(InvalidDocumentError, match=re.escape(hint)):
        fresh_index.ingest([Document("new-doc", "A valid document."), document])
    assert fresh_index.stats() == before
    assert "new-doc" not in ids(fresh_index.retrieve("valid document", k=10, caller=Caller()))


@pytest.mark.parametrize("query, k, filters, hint", [
    ("", 5, None, "empty"),
    ("   \n", 5, None, "empty"),
    ("x" * 4001, 5, None, "4001 characters"),
    ("fine", 0, None, "between 1 and 100"),
    ("fine", 101, None, "between 1 and 100"),
    ("fine", 5, {"year": 2020}, "string values"),
])
def test_an_invalid_query_raises_a_typed_error(index: SearchIndex, query: str, k: int, filters, hint: str) -> None:
    with pytest.raises(InvalidQueryError, match=hint) as raised:
        index.retrieve(query, k=k, caller=Caller(), filters=filters)
    assert isinstance(raised.value, ValueError)


def test_a_query_of_stop_words_still_gets_dense_results(index: SearchIndex) -> None:
    assert len(index.retrieve("what is the", k=2, caller=Caller())) == 2


def test_concurrent_retrieval_and_ingest(open_any: IndexOpener) -> None:
    index = open_any()
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


def test_retrieve_ranks_the_candidates_by_the_weighted_features(index: SearchIndex) -> None:
    query = "salary review approved by the manager"
    candidates, features = index.rerank_candidates(query, caller=Caller())
    assert features.shape == (len(candidates), 6)
    weights = index.settings.rerank_weights.as_array()
    expected = [candidates[i].passage_id for i in np.argsort(-(features @ weights), kind="stable")]
    assert [p.passage_id for p in index.retrieve(query, k=4, caller=Caller())] == expected[:4]
    # Coverage and bigram shares are fractions; the rarest-term flag is 0 or 1.
    assert ((features[:, 3:] >= 0) & (features[:, 3:] <= 1)).all()

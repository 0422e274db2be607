"""PgInfoIndex (cloud/info/pg_index.py) against a real PostgreSQL + pgvector, in both of its modes: embedded
(a private server from the pgserver wheel, in the index directory) and server (a DSN; tests/pg_server.py
runs the server). With the project's real encoder, on SQuAD text: the same results as InfoIndex, access
control enforced by the database, incremental ingest and delete, persistence, typed errors, threads.
Skipped, with the reason, where the encoder model, the SQuAD file or pgserver is not on this machine."""
from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psycopg
import pytest

from cloud.info import (
    Caller,
    Document,
    IndexCorruptError,
    IndexSettings,
    IndexUnavailableError,
    InfoIndex,
    InfoIndexError,
    InvalidDocumentError,
    InvalidQueryError,
    PgInfoIndex,
    SearchIndex,
)
from cloud.info.documents import slug
from cloud.info.pg_schema import GROUPS_SETTING, READER_ROLE, SCHEMA
from tests.conftest import models_dir
from tests.pg_server import PgTestServer

pytest.importorskip("pgserver", reason="the pgserver wheel (PostgreSQL + pgvector) is not installed")

REPO = Path(__file__).resolve().parents[2]
SQUAD = REPO.parent / "shared" / "data" / "squad" / "dev-v1.1-partA.json"
ARTICLES = 12  # about 450 paragraphs: enough ties, overlaps and shared terms to tell two rankings apart
QUESTIONS = 60
HR = Caller(user="hana", groups=("hr",))
OUTSIDER = Caller(user="olaf", groups=("engineering",))


@pytest.fixture(scope="module")
def encoder():
    from edge.catalogue import ModelCache
    from edge.encoder import ENCODER_MODEL, TextEncoder
    from edge.errors import EdgeError

    try:
        return TextEncoder.from_cache(ModelCache(models_dir()), threads=1)
    except EdgeError as exc:
        pytest.skip(f"the text encoder {ENCODER_MODEL} is not usable here: {exc}")


@pytest.fixture(scope="module")
def squad_articles() -> list[dict]:
    if not SQUAD.exists():
        pytest.skip(f"SQuAD dev part A is not at {SQUAD} (the shared data sets are not beside this checkout)")
    return json.loads(SQUAD.read_text())["data"][:ARTICLES]


def squad_documents(articles: list[dict]) -> list[Document]:
    """One document per paragraph; every fourth is readable by the hr group only."""
    return [Document(f"{slug(a['title'])}-{i:03d}", p["context"], metadata={"title": a["title"]},
                     groups=("hr",) if i % 4 == 3 else ())
            for a in articles for i, p in enumerate(a["paragraphs"])]


def squad_questions(articles: list[dict]) -> list[str]:
    questions = [p["qas"][0]["question"] for a in articles for p in a["paragraphs"] if p["qas"]]
    return questions[::max(1, len(questions) // QUESTIONS)][:QUESTIONS]


def build(index, documents: list[Document]) -> None:
    """The same history for every index compared: batches, replacements (moved to the end) and deletes."""
    index.ingest(documents[:200])
    index.ingest(documents[150:])  # 50 replaced by identical documents: their chunks move to the end
    index.ingest([Document(d.id, d.text + " Revised.", d.metadata, d.groups) for d in documents[10:15]])
    index.delete([documents[20].id, documents[21].id, "no-such-document"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, encoder, squad_articles: list[dict]) -> Iterator[InfoIndex]:
    index = InfoIndex.open(tmp_path_factory.mktemp("reference") / "index", embedder=encoder)
    build(index, squad_documents(squad_articles))
    yield index
    index.close()


@pytest.fixture(scope="module")
def pg_tmp() -> Iterator[Path]:
    """A temporary folder for PostgreSQL data, outside pytest's: as root, the server runs as another user
    that must traverse every parent folder, and each pytest run resets /tmp/pytest-of-<user> to 0700."""
    folder = Path(tempfile.mkdtemp(prefix="info-pg-tests-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_server(pg_tmp: Path) -> Iterator[PgTestServer]:
    server = PgTestServer(pg_tmp / "server")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["embedded", "server"])
def new_location(request: pytest.FixtureRequest, pg_tmp: Path) -> Callable[[], str | Path]:
    """Where a new, empty index can be opened: a directory (embedded) or a fresh database's DSN."""
    numbers = itertools.count()
    if request.param == "embedded":
        return lambda: pg_tmp / f"embedded-{next(numbers)}" / "index"
    server: PgTestServer = request.getfixturevalue("pg_server")
    return lambda: server.create_database(f"info_{next(numbers)}")


@pytest.fixture
def opened(encoder) -> Iterator[Callable[..., PgInfoIndex]]:
    """Opens PgInfoIndexes with the real encoder, and closes them after the test."""
    indexes: list[PgInfoIndex] = []

    def open_index(location: str | Path, settings: IndexSettings = IndexSettings()) -> PgInfoIndex:
        index = PgInfoIndex.open(location, embedder=encoder, settings=settings)
        indexes.append(index)
        return index

    yield open_index
    for index in indexes:
        index.close()


@pytest.fixture(scope="module")
def squad_pg(new_location, encoder, squad_articles: list[dict]) -> Iterator[tuple[str | Path, PgInfoIndex]]:
    location = new_location()
    index = PgInfoIndex.open(location, embedder=encoder)
    build(index, squad_documents(squad_articles))
    yield location, index
    index.close()


def assert_same_retrieval(expected: list, actual: list) -> None:
    assert [p.passage_id for p in actual] == [p.passage_id for p in expected]
    assert [(p.text, p.start, p.end, dict(p.metadata)) for p in actual] == \
        [(p.text, p.start, p.end, dict(p.metadata)) for p in expected]
    np.testing.assert_allclose([p.score for p in actual], [p.score for p in expected], rtol=1e-5, atol=1e-12)


def compare(reference_index: SearchIndex, pg_index: SearchIndex, questions: list[str], titles: list[str]) -> None:
    cases = [(q, caller, None) for q in questions for caller in (Caller(), HR)]
    cases += [(q, HR, {"title": titles[n % len(titles)]}) for n, q in enumerate(questions[:10])]
    for question, caller, filters in cases:
        expected = reference_index.retrieve(question, k=10, caller=caller, filters=filters)
        assert_same_retrieval(expected, pg_index.retrieve(question, k=10, caller=caller, filters=filters))
        passages, features = reference_index.rerank_candidates(question, caller=caller, filters=filters)
        pg_passages, pg_features = pg_index.rerank_candidates(question, caller=caller, filters=filters)
        assert_same_retrieval(passages, pg_passages)
        np.testing.assert_allclose(pg_features, features, rtol=1e-5, atol=1e-9)


def test_it_satisfies_the_index_protocol(squad_pg, reference: InfoIndex) -> None:
    assert isinstance(squad_pg[1], SearchIndex) and isinstance(reference, SearchIndex)


def test_same_passages_scores_and_features_as_info_index(squad_pg, reference: InfoIndex,
                                                         squad_articles: list[dict]) -> None:
    _, index = squad_pg
    assert index.stats().chunks == reference.stats().chunks
    for caller in (HR, Caller()):
        assert index.stats(caller) == reference.stats(caller)
    questions = squad_questions(squad_articles)
    titles = [a["title"] for a in squad_articles]
    compare(reference, index, questions, titles)


def test_same_results_with_other_retrieval_settings(squad_pg, reference: InfoIndex, squad_articles: list[dict],
                                                    encoder) -> None:
    """No re-ranker (the fused RRF scores come back), no stemming (the stored terms are re-analysed),
    other BM25 and fusion weights."""
    location, _ = squad_pg
    settings = IndexSettings(rerank=False, stem=False, bm25_k1=1.2, bm25_b=0.75, dense_weight=0.5, candidates=20)
    other_reference = InfoIndex.open(reference._directory.path, embedder=encoder, settings=settings)
    other = PgInfoIndex.open(location, embedder=encoder, settings=settings)
    try:
        compare(other_reference, other, squad_questions(squad_articles)[:20], [a["title"] for a in squad_articles])
    finally:
        other.close()
        other_reference.close()
    again = PgInfoIndex.open(location, embedder=encoder)  # and back: the terms are stemmed again
    try:
        compare(reference, again, squad_questions(squad_articles)[:5], [a["title"] for a in squad_articles])
    finally:
        again.close()


def test_concurrent_retrievals_equal_the_sequential_ones(squad_pg, squad_articles: list[dict]) -> None:
    _, index = squad_pg
    questions = squad_questions(squad_articles)[:24]
    callers = [Caller(), HR, OUTSIDER]
    cases = [(q, callers[n % 3]) for n, q in enumerate(questions)]
    sequential = [index.retrieve(q, k=5, caller=c) for q, c in cases]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(lambda case: index.retrieve(case[0], k=5, caller=case[1]), cases * 2))
    assert concurrent == sequential * 2


ZEBRA_PUBLIC = [Document(f"public-{n}", text, metadata={"kind": kind}) for n, (text, kind) in enumerate([
    ("The zebra at the city zoo was moved to a larger enclosure in spring.", "news"),
    ("Zebra crossings give pedestrians the right of way on most roads.", "guide"),
    ("The museum opens at nine and closes at five on weekdays.", "guide"),
    ("Quarterly results were published on the company intranet.", "news"),
])]
ZEBRA_HIDDEN = [Document(f"hidden-{n}", f"Confidential zebra project note {n}: the zebra budget for phase {n} "
                                        "is approved by the board.", metadata={"kind": "news"}, groups=("hr",))
                for n in range(30)]


def test_hidden_documents_change_nothing_an_outsider_sees(new_location, opened, tmp_path: Path, encoder) -> None:
    # The same batches of public documents for both: the encoder's vectors depend a little on the batch.
    without = opened(new_location())
    with_hidden = opened(new_location())
    for batch in (ZEBRA_PUBLIC[:2], ZEBRA_HIDDEN, ZEBRA_PUBLIC[2:]):
        with_hidden.ingest(batch)
        if batch is not ZEBRA_HIDDEN:
            without.ingest(batch)
    for caller in (Caller(), OUTSIDER):
        for filters in (None, {"kind": "news"}):
            seen = with_hidden.retrieve("zebra budget", k=10, caller=caller, filters=filters)
            assert_same_retrieval(without.retrieve("zebra budget", k=10, caller=caller, filters=filters), seen)
            assert seen and not any(p.document_id.startswith("hidden") for p in seen)
            passages, features = with_hidden.rerank_candidates("zebra budget", caller=caller, filters=filters)
            expected_passages, expected_features = without.rerank_candidates("zebra budget", caller=caller,
                                                                             filters=filters)
            assert_same_retrieval(expected_passages, passages)
            np.testing.assert_allclose(features, expected_features, rtol=1e-9)
        assert with_hidden.stats(caller) == without.stats(caller)
        assert with_hidden.stats(caller).groups == ()
    insider = with_hidden.retrieve("zebra budget", k=10, caller=HR)
    assert sum(p.document_id.startswith("hidden") for p in insider) >= 5
    assert with_hidden.stats(HR).documents == 34 and with_hidden.stats(HR).groups == ("hr",)
    assert with_hidden.stats().documents == 34 and with_hidden.stats().bytes_on_disk > 0
    # The same as InfoIndex, hidden documents and all.
    reference = InfoIndex.open(tmp_path / "reference", embedder=encoder)
    for batch in (ZEBRA_PUBLIC[:2], ZEBRA_HIDDEN, ZEBRA_PUBLIC[2:]):
        reference.ingest(batch)
    for caller in (Caller(), HR):
        assert_same_retrieval(reference.retrieve("zebra budget", k=10, caller=caller),
                              with_hidden.retrieve("zebra budget", k=10, caller=caller))


def test_the_database_itself_hides_unreadable_chunks(new_location, opened) -> None:
    """The reader role sees only what the policy lets it see, whatever SQL it runs."""
    location = new_location()
    index = opened(location)
    index.ingest(ZEBRA_PUBLIC + ZEBRA_HIDDEN[:3])
    dsn = location if isinstance(location, str) else index._embedded._server.get_uri()
    with psycopg.connect(dsn) as conn:
        for groups, expected in (([], 4), (["engineering"], 4), (["hr"], 7), (["x", "hr"], 7)):
            with conn.transaction():
                conn.execute(f"SET LOCAL ROLE {READER_ROLE}")
                conn.execute("SELECT set_config(%s, %s, true)", (GROUPS_SETTING, json.dumps(groups)))
                assert conn.execute(f"SELECT count(*) FROM {SCHEMA}.chunks").fetchone()[0] == expected
                assert conn.execute(f"SELECT count(*) FROM {SCHEMA}.chunks WHERE text LIKE 'Confidential%%'"
                                    ).fetchone()[0] == expected - 4


def test_filters_match_metadata_exactly(new_location, opened) -> None:
    index = opened(new_location())
    index.ingest(ZEBRA_PUBLIC + ZEBRA_HIDDEN[:3])
    assert {p.document_id for p in index.retrieve("zebra", k=10, caller=Caller(), filters={"kind": "guide"})} == \
        {"public-1", "public-2"}
    assert {p.document_id for p in index.retrieve("zebra", k=10, caller=HR, filters={"kind": "news"})} == \
        {"public-0", "public-3", "hidden-0", "hidden-1", "hidden-2"}
    assert index.retrieve("zebra", k=10, caller=HR, filters={"kind": "News"}) == []
    assert index.retrieve("zebra", k=10, caller=HR, filters={"team": "news"}) == []
    with pytest.raises(InvalidQueryError):
        index.retrieve("zebra", k=10, caller=HR, filters={"kind": 3})  # type: ignore[dict-item]


def test_replacing_a_document_replaces_it_and_moves_it_last(new_location, opened) -> None:
    index = opened(new_location())
    twin_text = "The lighthouse keeper logs every passing ship in a leather book."
    index.ingest([Document("first", twin_text), Document("second", twin_text),
                  Document("other", "Bread is baked before dawn in the village bakery.")])
    ranked = [p.document_id for p in index.retrieve("lighthouse keeper ships", k=2, caller=Caller())]
    assert ranked == ["first", "second"]  # equal scores: ingestion order breaks the tie
    report = index.ingest([Document("first", twin_text)])
    assert (report.documents, report.replaced) == (1, 1)
    ranked = [p.document_id for p in index.retrieve("lighthouse keeper ships", k=2, caller=Caller())]
    assert ranked == ["second", "first"]
    index.ingest([Document("other", "Bread rises overnight.", metadata={"v": "2"})])
    [passage] = index.retrieve("bread", k=1, caller=Caller(), filters={"v": "2"})
    assert passage.text == "Bread rises overnight." and passage.passage_id == "other#0"
    assert "bakery" not in " ".join(p.text for p in index.retrieve("bakery dawn", k=5, caller=Caller()))
    assert index.stats().documents == 3 and index.stats().chunks == 3


def test_delete_removes_documents(new_location, opened) -> None:
    index = opened(new_location())
    index.ingest(ZEBRA_PUBLIC)
    assert index.delete(["public-0", "public-1", "missing"]) == 2
    assert index.delete(["public-0"]) == 0
    assert all(p.document_id not in ("public-0", "public-1")
               for p in index.retrieve("zebra", k=10, caller=Caller()))
    assert index.stats().documents == 2
    with pytest.raises(TypeError):
        index.delete("public-2")


def test_a_bad_batch_writes_nothing(new_location, opened) -> None:
    index = opened(new_location())
    index.ingest(ZEBRA_PUBLIC[:1])
    for bad in (Document("", "text"), Document("nul", "a NUL \x00 here"), Document("g", "text", groups=("",))):
        with pytest.raises(InvalidDocumentError):
            index.ingest(ZEBRA_PUBLIC[1:] + [bad])
    assert index.stats().documents == 1
    for query, k in (("", 1), ("zebra", 0), ("x" * 4001, 1)):
        with pytest.raises(InvalidQueryError):
            index.retrieve(query, k=k, caller=Caller())


def test_reopening_keeps_everything(new_location, encoder) -> None:
    location = new_location()
    index = PgInfoIndex.open(location, embedder=encoder)
    index.ingest(ZEBRA_PUBLIC + ZEBRA_HIDDEN[:2])
    before = (index.stats(), index.retrieve("zebra crossing", k=5, caller=HR))
    index.close()
    with pytest.raises(InfoIndexError, match="closed"):
        index.retrieve("zebra", k=1, caller=Caller())
    again = PgInfoIndex.open(location, embedder=encoder)
    try:
        assert (again.stats(), again.retrieve("zebra crossing", k=5, caller=HR)) == before
    finally:
        again.close()


def test_other_chunk_settings_are_refused(new_location, opened) -> None:
    location = new_location()
    opened(location).ingest(ZEBRA_PUBLIC[:1])
    with pytest.raises(IndexCorruptError, match="chunk_tokens=200, chunk_overlap_tokens=40"):
        opened(location, IndexSettings(chunk_tokens=100, chunk_overlap_tokens=20))


def test_an_unreachable_server_is_a_typed_error_without_the_password(encoder) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(IndexUnavailableError) as raised:
        PgInfoIndex.open(f"postgresql://info:s3cret-word@127.0.0.1:{port}/info", embedder=encoder)
    assert f"port={port}" in str(raised.value) and "127.0.0.1" in str(raised.value)
    assert "s3cret-word" not in str(raised.value)


def test_a_file_is_not_an_index_directory(tmp_path: Path, encoder) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(IndexCorruptError, match="is a file"):
        PgInfoIndex.open(tmp_path / "file", embedder=encoder)


def test_two_processes_share_one_embedded_server(pg_tmp: Path, encoder) -> None:
    """A second process opens the same directory while this one holds it, reads, and exits: the server
    keeps running for this process, and stops once both have let go."""
    tmp_path = pg_tmp / "shared"
    index = PgInfoIndex.open(tmp_path / "index", embedder=encoder)
    try:
        index.ingest(ZEBRA_PUBLIC)
        pid = index._embedded._server.get_pid()
        child = textwrap.dedent(f"""
            from pathlib import Path
            from cloud.info import Caller, PgInfoIndex
            from edge.catalogue import ModelCache
            from edge.encoder import TextEncoder
            from tests.conftest import models_dir
            index = PgInfoIndex.open(Path({str(tmp_path / "index")!r}),
                                     embedder=TextEncoder.from_cache(ModelCache(models_dir()), threads=1))
            print(index.stats().documents, index._embedded._server.get_pid())
            """)
        result = subprocess.run([sys.executable, "-c", child], cwd=REPO, capture_output=True, text=True,
                                timeout=600, check=True)
        assert result.stdout.split() == ["4", str(pid)]
        assert len(index.retrieve("zebra", k=5, caller=Caller())) == 4
    finally:
        index.close()
    assert not (tmp_path / "index" / "pg" / "postmaster.pid").exists()


class DimensionOnlyTestEmbedder:
    """Opens an index without loading the encoder: these tests never encode."""

    dim = 512

    def encode(self, texts):  # pragma: no cover - reaching it is the failure
        raise AssertionError("nothing is encoded here")


def test_a_process_killed_while_holding_the_server_does_not_keep_it_running(pg_tmp: Path) -> None:
    """pgserver stops the embedded server when the last process on its list lets go; one that was killed
    stays listed. The next process to open and close the directory must still stop the server."""
    directory = pg_tmp / "killed" / "index"
    ready = pg_tmp / "killed" / "ready"
    child = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from cloud.info import PgInfoIndex
        from tests.integration.test_info_pg import DimensionOnlyTestEmbedder
        index = PgInfoIndex.open(Path({str(directory)!r}), embedder=DimensionOnlyTestEmbedder())
        Path({str(ready)!r}).write_text("open")
        time.sleep(600)
        """)
    process = subprocess.Popen([sys.executable, "-c", child], cwd=REPO)
    try:
        deadline = time.monotonic() + 300
        while not ready.exists():
            assert process.poll() is None, "the child could not open the index"
            assert time.monotonic() < deadline, "the child did not open the index in time"
            time.sleep(0.1)
    finally:
        process.kill()
        process.wait(30)
    assert (directory / "pg" / "postmaster.pid").exists()  # the killed child left the server running
    index = PgInfoIndex.open(directory, embedder=DimensionOnlyTestEmbedder())
    index.close()
    assert not (directory / "pg" / "postmaster.pid").exists()

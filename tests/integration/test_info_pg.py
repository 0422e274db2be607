"""PgInfoIndex (cloud/info/pg_index.py) against a real PostgreSQL + pgvector, in both of its modes: embedded
(a private server from the pgserver wheel, in the index directory) and server (a DSN; tests/pg_server.py
runs the server). With the project's real encoder, on SQuAD text: the same results as InfoIndex, access
control enforced by the database, incremental ingest and delete, persistence, typed errors, threads.
Skipped, with the reason, where the encoder model, the SQuAD file or pgserver is not on this machine."""
from __future__ import annotations

import dataclasses
import itertools
import json
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

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
from cloud.info import pg_index
from cloud.info.documents import slug
from cloud.info.pg_schema import GROUPS_SETTING, READER_ROLE, SCHEMA, missing_vector_message
from tests.conftest import WAIT_S, models_dir
from tests.integration.test_info_index import SMALL, HashingTestEmbedder
from tests.pg_server import FreshIndexDirectories, PgTestServer

pytest.importorskip("pgserver", reason="the pgserver wheel (PostgreSQL + pgvector) is not installed")

REPO = Path(__file__).resolve().parents[2]
SQUAD = REPO.parent / "shared" / "data" / "squad" / "dev-v1.1-partA.json"
ARTICLES = 12  # about 450 paragraphs: enough ties, overlaps and shared terms to tell two rankings apart
QUESTIONS = 60
HR = Caller(user="hana", groups=("hr",))
OUTSIDER = Caller(user="olaf", groups=("engineering",))


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
                                                    encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    """No re-ranker (the fused RRF scores come back), other BM25 and fusion weights; embedded (this process
    alone on it), no stemming too: the stored terms are re-analysed (a few rows per batch here, to go
    through several). A server refuses another stemming (test_another_stemming_is_refused_on_a_server)."""
    location, _ = squad_pg
    monkeypatch.setattr(pg_index, "_REANALYSE_BATCH", 7)
    settings = IndexSettings(rerank=False, stem=isinstance(location, str), bm25_k1=1.2, bm25_b=0.75,
                             dense_weight=0.5, candidates=20)
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
    dsn = location if isinstance(location, str) else index._embedded.uri
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


# Issue 31's review: least-privileged users, shared servers, odd paths, names and text.

@pytest.fixture(params=["embedded", "server"])
def small_location(request: pytest.FixtureRequest, pg_test_folder: Path,
                   embedded_index_template) -> Iterator[Callable[[], str | Path]]:
    """New, empty index locations for the hashing test embedder: template copies (embedded) or fresh
    databases on the session's test server."""
    if request.param == "server":
        yield request.getfixturevalue("pg_database")
        return
    directories = FreshIndexDirectories(embedded_index_template, pg_test_folder)
    names = itertools.count()
    yield lambda: directories.create(f"index-{next(names)}")
    directories.remove_all()


@pytest.fixture
def small_opened() -> Iterator[Callable[..., PgInfoIndex]]:
    """Opens PgInfoIndexes with the hashing test embedder and SMALL settings; closes them after the test."""
    indexes: list[PgInfoIndex] = []

    def open_index(location: str | Path, settings: IndexSettings = SMALL) -> PgInfoIndex:
        indexes.append(PgInfoIndex.open(location, embedder=HashingTestEmbedder(), settings=settings))
        return indexes[-1]

    yield open_index
    for index in indexes:
        index.close()


def ids(passages) -> set[str]:
    return {p.document_id for p in passages}


def run_sql(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


PRIVATE_NOTE = Document("private", "The zebra budget note for the board.", groups=("hr",))
PUBLIC_NOTE = Document("public", "The zebra crossing note for pedestrians.")


def check_index_works(index: PgInfoIndex) -> None:
    """Ingest, retrieval as a member and as an outsider, stats: what every user of an index needs."""
    index.ingest([PRIVATE_NOTE, PUBLIC_NOTE])
    assert ids(index.retrieve("zebra note", k=5, caller=HR)) == {"private", "public"}
    assert ids(index.retrieve("zebra note", k=5, caller=OUTSIDER)) == {"public"}
    assert index.stats(HR).groups == ("hr",) and index.stats(OUTSIDER).documents == 1


def grant_use_of_index(owner_dsn: str, user: str, database: str) -> None:
    """What a user needs to use a provisioned index, and nothing more: CONNECT, USAGE on the schema, the
    table privileges, membership in the reader role."""
    run_sql(owner_dsn, f'REVOKE ALL ON DATABASE "{database}" FROM PUBLIC',
            f'GRANT CONNECT ON DATABASE "{database}" TO {user}', f"GRANT USAGE ON SCHEMA {SCHEMA} TO {user}",
            f"GRANT SELECT ON {SCHEMA}.meta TO {user}",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON {SCHEMA}.chunks TO {user}",
            f"GRANT {READER_ROLE} TO {user}")


def test_a_provisioned_database_opens_for_a_user_that_may_create_nothing(pg_test_server: PgTestServer,
                                                                         pg_database, small_opened) -> None:
    dsn = pg_database()
    small_opened(dsn)  # the superuser's first open makes the schema, its tables and the reader role
    user = f"app_{uuid.uuid4().hex[:12]}"
    run_sql(dsn, f"CREATE ROLE {user} LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB NOBYPASSRLS")
    grant_use_of_index(dsn, user, conninfo_to_dict(dsn)["dbname"])
    index = small_opened(pg_test_server.dsn_as(user, dsn))
    assert index._embedded is None
    check_index_works(index)
    assert index.stats().documents == 2  # the user's own reads see every row


def test_a_provisioned_database_opens_on_a_read_only_server(pg_test_server: PgTestServer, pg_database,
                                                            small_opened) -> None:
    """A hot standby refuses every write; read-only transactions by default stand in for one."""
    dsn = pg_database()
    small_opened(dsn).ingest([PRIVATE_NOTE, PUBLIC_NOTE])
    run_sql(dsn, f'ALTER DATABASE "{conninfo_to_dict(dsn)["dbname"]}" SET default_transaction_read_only = on')
    replica = small_opened(dsn)
    assert ids(replica.retrieve("zebra note", k=5, caller=HR)) == {"private", "public"}
    assert ids(replica.retrieve("zebra note", k=5, caller=OUTSIDER)) == {"public"}
    with pytest.raises(IndexUnavailableError, match="read-only"):
        replica.ingest([Document("new", "Not on a replica.")])


def test_a_createrole_user_sets_up_the_index_and_grants_its_use(pg_tmp: Path) -> None:
    """On a server where the reader role does not exist yet (a new one): a CREATEROLE user (not a
    superuser) creates it, and must make itself able to SET ROLE to it; a user that may not is told the
    GRANT to run, and a database without pgvector the statement that adds it."""
    server = PgTestServer(pg_tmp / f"bare-{uuid.uuid4().hex[:8]}")
    indexes: list[PgInfoIndex] = []

    def small_opened(dsn: str) -> PgInfoIndex:
        indexes.append(PgInfoIndex.open(dsn, embedder=HashingTestEmbedder(), settings=SMALL))
        return indexes[-1]

    server.start()
    try:
        run_sql(server.dsn, "CREATE ROLE creator LOGIN CREATEROLE", "CREATE DATABASE info OWNER creator",
                "CREATE DATABASE bare OWNER creator TEMPLATE template0")
        creator_dsn = server.dsn_as("creator", server.dsn_for("info"))
        check_index_works(small_opened(creator_dsn))
        run_sql(server.dsn, "CREATE ROLE app LOGIN", "CREATE ROLE stranger LOGIN")
        grant_use_of_index(creator_dsn, "app", "info")  # the creator administers the reader role
        run_sql(creator_dsn, "GRANT CONNECT ON DATABASE info TO stranger",
                f"GRANT USAGE ON SCHEMA {SCHEMA} TO stranger", f"GRANT SELECT ON {SCHEMA}.meta TO stranger")
        app = small_opened(server.dsn_as("app", server.dsn_for("info")))
        app.ingest([Document("by-app", "The zebra note written by the app.", groups=("hr",))])
        assert ids(app.retrieve("zebra note", k=5, caller=HR)) == {"private", "public", "by-app"}
        with pytest.raises(IndexUnavailableError,
                           match=re.escape(f"`GRANT {READER_ROLE} TO stranger WITH SET TRUE;`")):
            small_opened(server.dsn_as("stranger", server.dsn_for("info")))
        with pytest.raises(IndexUnavailableError, match=re.escape("run `CREATE EXTENSION vector;` in that database")):
            small_opened(server.dsn_as("creator", server.dsn_for("bare")))
    finally:
        for index in indexes:
            index.close()
        server.stop()


def test_the_message_for_a_server_without_pgvector_says_to_install_it() -> None:
    """(No server here lacks pgvector: the wheel bundles it.)"""
    message = missing_vector_message("PostgreSQL host=db", installed_on_server=False, user="app")
    assert "install pgvector (the `vector` extension) on the server" in message


class IndexHolderProcess:
    """Another process holding an embedded index open (dimension-only embedder) until `close`."""

    SCRIPT = textwrap.dedent("""
        import sys
        from pathlib import Path
        from cloud.info import PgInfoIndex
        from tests.integration.test_info_pg import DimensionOnlyTestEmbedder
        index = PgInfoIndex.open(Path(sys.argv[1]), embedder=DimensionOnlyTestEmbedder())
        print("open", flush=True)
        sys.stdin.readline()
        index.close()
        print("closed", flush=True)
        """)

    def __init__(self, directory: Path) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", self.SCRIPT, str(directory)], cwd=REPO,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None and self.process.stdout.readline().strip() == "open", \
            "the other process could not open the index"

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None and self.process.stdout is not None
            self.process.stdin.write("\n")
            self.process.stdin.flush()
            assert self.process.stdout.readline().strip() == "closed"
        assert self.process.wait(WAIT_S) == 0


def test_reopening_while_another_process_holds_the_server_keeps_this_process_on_its_list(
        embedded_index_template, pg_test_folder: Path) -> None:
    """This process opens, another opens, this one closes and reopens, the other closes: the server must
    keep running for this process (pgserver would hand back its old server object, with this process no
    longer on the list of users), and stop when this process closes."""
    directories = FreshIndexDirectories(embedded_index_template, pg_test_folder)
    directory = directories.create("index")
    postmaster = directory / "pg" / "postmaster.pid"
    try:
        first = PgInfoIndex.open(directory, embedder=DimensionOnlyTestEmbedder())
        try:
            holder = IndexHolderProcess(directory)
        finally:
            first.close()
        try:
            again = PgInfoIndex.open(directory, embedder=DimensionOnlyTestEmbedder())
        finally:
            holder.close()
        try:
            assert again.stats().documents == 0 and postmaster.exists()
        finally:
            again.close()
        assert not postmaster.exists()
    finally:
        directories.remove_all()


@pytest.mark.parametrize("name", ["pct%41hash#1", "q?mark"])
def test_a_directory_with_uri_characters_works(name: str, pg_test_folder: Path, small_opened) -> None:
    """pgserver's URI does not percent-encode the socket directory: %41 would read as A, # end the host."""
    directory = Path(tempfile.mkdtemp(prefix="uri-", dir=pg_test_folder)) / name / "index"
    check_index_works(small_opened(directory))


@pytest.mark.parametrize("name", ["with space", "amp&ersand", "semi;colon", "comma,host"])
def test_a_directory_the_start_command_cannot_pass_is_refused(name: str, pg_test_folder: Path) -> None:
    """pg_ctl passes the socket directory to a shell unquoted: a space splits it, & runs the rest apart."""
    directory = Path(tempfile.mkdtemp(prefix="unsafe-", dir=pg_test_folder)) / name / "index"
    with pytest.raises(IndexUnavailableError, match=r"another index_dir .*info\.engine = \"files\".*info\.dsn"):
        PgInfoIndex.open(directory, embedder=DimensionOnlyTestEmbedder())
    assert not directory.exists()


@pytest.mark.parametrize("dsn, secret", [("postgresql://u:sec ret@h/db", "sec ret"),
                                         ("host=h user=u password='x y", "x y")])
def test_a_malformed_connection_string_is_reported_without_its_password(dsn: str, secret: str) -> None:
    with pytest.raises(IndexUnavailableError, match="cannot be parsed") as raised:
        PgInfoIndex.open(dsn, embedder=DimensionOnlyTestEmbedder())
    assert secret not in "".join(traceback.format_exception(raised.value))


def test_a_key_value_connection_string_opens_the_server(pg_database, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch, small_opened) -> None:
    monkeypatch.chdir(tmp_path)  # where a misread string would become a directory
    key_value = make_conninfo(**conninfo_to_dict(pg_database()))
    assert "=" in key_value and not key_value.startswith("postgresql://")
    index = small_opened(key_value)
    assert index._embedded is None
    check_index_works(index)
    assert list(tmp_path.iterdir()) == []


def test_another_stemming_is_refused_on_a_server(pg_database, small_opened) -> None:
    dsn = pg_database()
    index = small_opened(dsn)
    index.ingest([Document("runs", "The runner runs every morning.")])
    with pytest.raises(IndexCorruptError, match="analysed with stem=True.*open it with stem=True"):
        small_opened(dsn, dataclasses.replace(SMALL, stem=False))
    assert ids(index.retrieve("running", k=1, caller=Caller())) == {"runs"}  # still stemmed


def test_another_stemming_is_refused_while_another_process_holds_the_embedded_index(
        embedded_index_template, pg_test_folder: Path) -> None:
    directories = FreshIndexDirectories(embedded_index_template, pg_test_folder)
    directory = directories.create("index")
    try:
        holder = IndexHolderProcess(directory)
        try:
            with pytest.raises(IndexCorruptError, match=f"stem=True.*other processes \\({holder.process.pid}\\)"):
                PgInfoIndex.open(directory, embedder=DimensionOnlyTestEmbedder(), settings=IndexSettings(stem=False))
        finally:
            holder.close()
        alone = PgInfoIndex.open(directory, embedder=DimensionOnlyTestEmbedder(), settings=IndexSettings(stem=False))
        alone.close()  # alone on it, this process may re-analyse
    finally:
        directories.remove_all()


ODD_NAMES = ["a,b", 'say "hi"', "it's", "{x}", "{}", "back\\slash", "NULL", "null", "two words", " padded ",
             "ünïcødé 日本", "[1]", "$1", "%s", "a\tb"]


def test_odd_group_names_and_filters_work_as_any_other(small_location, small_opened) -> None:
    index = small_opened(small_location())
    documents = [Document(f"doc-{n}", f"The zebra note number {n}.", metadata={name: name, "kind": name},
                          groups=(name,)) for n, name in enumerate(ODD_NAMES)]
    index.ingest([*documents, PUBLIC_NOTE])
    for n, name in enumerate(ODD_NAMES):
        member = Caller(user="m", groups=(name,))
        assert ids(index.retrieve("zebra note", k=50, caller=member)) == {f"doc-{n}", "public"}, name
        assert ids(index.retrieve("zebra note", k=50, caller=member, filters={name: name})) == {f"doc-{n}"}, name
        assert ids(index.retrieve("zebra note", k=50, caller=member, filters={"kind": name})) == {f"doc-{n}"}, name
        assert index.stats(member).groups == (name,) and index.stats(member).documents == 2
        assert index.retrieve("zebra note", k=50, caller=OUTSIDER, filters={name: name}) == []
    for outsider in (Caller(user="o", groups=("a", "b")), Caller(user="o", groups=("a,b,c", "NUL", "{x,y}"))):
        assert ids(index.retrieve("zebra note", k=50, caller=outsider)) == {"public"}
        assert index.stats(outsider).groups == () and index.stats(outsider).documents == 1
    assert set(index.stats().groups) == set(ODD_NAMES)


def test_lone_surrogates_are_refused_with_a_typed_error(small_location, small_opened) -> None:
    index = small_opened(small_location())
    index.ingest([PRIVATE_NOTE, PUBLIC_NOTE])
    for bad in (Document("t", "bad \ud800 text"), Document("id-\udfff", "text"),
                Document("m", "text", metadata={"k\ud800": "v"}), Document("v", "text", metadata={"k": "\udc80"}),
                Document("g", "text", groups=("hr\ud800",))):
        with pytest.raises(InvalidDocumentError, match="surrogate"):
            index.ingest([bad])
    for query, filters in (("zebra \ud800", None), ("zebra", {"k": "\ud800"}), ("zebra", {"\udfff": "v"})):
        with pytest.raises(InvalidQueryError, match="surrogate"):
            index.retrieve(query, k=5, caller=HR, filters=filters)
        with pytest.raises(InvalidQueryError, match="surrogate"):
            index.rerank_candidates(query, caller=HR, filters=filters)
    odd_caller = Caller(user="x", groups=("\ud800", "hr"))
    assert ids(index.retrieve("zebra note", k=5, caller=odd_caller)) == {"private", "public"}
    assert index.stats(odd_caller).groups == ("hr",)
    assert index.stats().documents == 2


@pytest.mark.parametrize("dsn", ["postgresql://reader:s3cret-pw@db.example:6543/info?sslpassword=k3y-pw",
                                 "host=db.example port=6543 user=reader password=s3cret-pw dbname=info "
                                 "sslpassword=k3y-pw"])
def test_a_server_index_is_located_by_its_server_without_its_secrets(dsn: str, tmp_path: Path) -> None:
    """What Stats and the start-up log give as the index's place: on a server, the server, not an index_dir."""
    from edge.catalogue import ModelCache
    from router.assembly.local_info import LocalInfoIndex
    from router.domain.config import InfoSettings

    server = LocalInfoIndex(InfoSettings(index_dir=tmp_path / "unused", dsn=dsn), ModelCache(tmp_path / "models"))
    assert conninfo_to_dict(server.location) == {"host": "db.example", "port": "6543", "user": "reader",
                                                 "dbname": "info"}
    embedded = LocalInfoIndex(InfoSettings(index_dir=tmp_path / "index"), ModelCache(tmp_path / "models"))
    assert embedded.location == str(tmp_path / "index")

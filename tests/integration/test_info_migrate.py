"""Moving the Info index between its engines (`export_chunks` / `import_chunks`, router/assembly/info_migrate.py
and `hybrid-router info migrate`): files -> PostgreSQL (embedded, and a server) -> files, exactly.

Real parts throughout: the project's encoder builds the source index (SQuAD paragraphs, and long
documents cut into several chunks), pgserver's PostgreSQL holds the copies, the CLI runs as a user runs
it, in a child process with an environment of its own. The copies must answer every query with the
same passages, order and scores as the source, for an outsider and a group member, and count the same.
Skipped, with the reason, where the encoder model, the SQuAD file or pgserver is not on this machine.
"""
from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest

from cloud.info import (
    Caller,
    ChunkBatch,
    Document,
    IndexCorruptError,
    IndexSettings,
    InfoIndex,
    PgInfoIndex,
    SearchIndex,
    read_documents,
)
from cloud.info.store import IndexShape, StoredChunk
from cloud.info.transfer import complete_documents, concatenate
from router.assembly.info_migrate import (
    DimensionOnlyEncoder,
    MigrationRefusedError,
    migrate_info_index,
    plan_migration,
)
from router.assembly.local_info import open_search_index
from router.domain.config import InfoSettings
from tests.conftest import WAIT_S, isolated_env
from tests.pg_server import PgTestServer

pytest.importorskip("pgserver", reason="the pgserver wheel (PostgreSQL + pgvector) is not installed")

REPO = Path(__file__).resolve().parents[2]
SQUAD = REPO.parent / "shared" / "data" / "squad" / "dev-v1.1-partA.json"
PARAGRAPHS = 90
HR = Caller(user="hana", groups=("hr",))
OUTSIDER = Caller(user="olaf", groups=("engineering",))
CALLERS = (Caller(), HR, OUTSIDER)


@pytest.fixture(scope="module")
def paragraphs() -> list[Document]:
    if not SQUAD.exists():
        pytest.skip(f"SQuAD dev part A is not at {SQUAD} (the shared data sets are not beside this checkout)")
    return list(read_documents(SQUAD, "squad"))[:PARAGRAPHS]


def corpus(paragraphs: list[Document]) -> list[Document]:
    """SQuAD paragraphs, every fourth for hr only and every seventh for hr and finance; and long
    documents (eight paragraphs each, several chunks) with metadata of their own, half of them hr's."""
    short = [replace(p, groups=("hr",) if n % 4 == 3 else ("finance", "hr") if n % 7 == 6 else ())
             for n, p in enumerate(paragraphs)]
    long = [Document(f"long-{n}", "\n\n".join(p.text for p in paragraphs[8 * n:8 * n + 8]),
                     metadata={"kind": "long", "title": paragraphs[8 * n].metadata["title"]},
                     groups=("hr",) if n % 2 else ())
            for n in range(5)]
    return short + long


def questions(paragraphs: list[Document]) -> list[str]:
    import json

    data = json.loads(SQUAD.read_text())["data"]
    asked = [p["qas"][0]["question"] for a in data[:4] for p in a["paragraphs"] if p["qas"]]
    return asked[::3][:15] + ["Who approves annual leave?", "tides and the moon"]


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """A folder outside pytest's: as root, the embedded server runs as another user that must traverse
    every parent folder, and each pytest run resets /tmp/pytest-of-<user> to 0700."""
    folder = Path(tempfile.mkdtemp(prefix="info-migrate-tests-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def source_dir(workdir: Path, encoder, paragraphs: list[Document]) -> Path:
    """A files index with a history: two batches, revised documents (moved to the end) and deletions."""
    documents = corpus(paragraphs)
    index = InfoIndex.open(workdir / "source", embedder=encoder)
    try:
        index.ingest(documents[:50])
        index.ingest(documents[40:])
        index.ingest([Document(d.id, d.text + " Revised.", d.metadata, d.groups) for d in documents[5:9]])
        index.delete([documents[12].id, documents[13].id])
    finally:
        index.close()
    return workdir / "source"


@pytest.fixture(scope="module")
def pg_server(workdir: Path) -> Iterator[PgTestServer]:
    server = PgTestServer(workdir / "server")
    server.start()
    yield server
    server.stop()


def copy_of(source: Path, where: Path) -> Path:
    shutil.copytree(source, where)
    return where


def assert_same_index(expected: SearchIndex, actual: SearchIndex, asked: list[str]) -> None:
    for caller in (None, *CALLERS):
        want, got = expected.stats(caller), actual.stats(caller)
        assert (got.documents, got.chunks, got.groups, got.dim) == (want.documents, want.chunks, want.groups, want.dim)
    cases = [(q, caller, None) for q in asked for caller in CALLERS] + [(q, HR, {"kind": "long"}) for q in asked[:5]]
    for query, caller, filters in cases:
        want_passages = expected.retrieve(query, k=10, caller=caller, filters=filters)
        got_passages = actual.retrieve(query, k=10, caller=caller, filters=filters)
        assert [(p.passage_id, p.text, p.start, p.end, dict(p.metadata)) for p in got_passages] == \
            [(p.passage_id, p.text, p.start, p.end, dict(p.metadata)) for p in want_passages], (query, caller)
        np.testing.assert_allclose([p.score for p in got_passages], [p.score for p in want_passages],
                                   rtol=0, atol=1e-6, err_msg=f"{query!r} for {caller}")
        assert want_passages or caller is OUTSIDER  # the comparison is not vacuous


def everything(index: SearchIndex) -> ChunkBatch:
    shape = next(iter(index.export_chunks(batch=10_000))).shape
    return concatenate(shape, list(index.export_chunks(batch=7)))


def test_files_to_embedded_postgres_and_back_is_exact(workdir: Path, source_dir: Path, encoder,
                                                      paragraphs: list[Document]) -> None:
    index_dir = copy_of(source_dir, workdir / "round-trip")
    settings = InfoSettings(index_dir=index_dir, engine="files")
    to_postgres = migrate_info_index(settings, plan_migration(settings, "postgres"))
    back = migrate_info_index(settings, plan_migration(settings, "files", to_dir=workdir / "round-trip-back"))

    original = InfoIndex.open(source_dir, embedder=encoder)
    # Both engines' files now share index_dir: each engine opens its own, without complaint.
    in_postgres = open_search_index(settings.model_copy(update={"engine": "postgres"}), encoder)
    files_beside = open_search_index(settings, encoder)
    returned = InfoIndex.open(workdir / "round-trip-back", embedder=encoder)
    try:
        assert isinstance(in_postgres, PgInfoIndex) and isinstance(files_beside, InfoIndex)
        stats = original.stats()
        assert (to_postgres.documents, to_postgres.chunks, to_postgres.replaced) == (stats.documents, stats.chunks, 0)
        assert (back.documents, back.chunks) == (stats.documents, stats.chunks)
        assert stats.chunks > stats.documents  # long documents: chunks of one document travel together
        asked = questions(paragraphs)
        assert_same_index(original, in_postgres, asked)
        assert_same_index(original, returned, asked)
        # Byte for byte: the same chunks, in the same order, with the same vectors, nothing re-encoded.
        first, last = everything(original), everything(returned)
        assert last.chunks == first.chunks
        assert np.array_equal(last.vectors, first.vectors)
        assert np.array_equal(last.sentence_vectors, first.sentence_vectors)
    finally:
        for index in (original, in_postgres, files_beside, returned):
            index.close()


def test_a_document_never_spans_two_imported_batches(source_dir: Path, encoder) -> None:
    index = InfoIndex.open(source_dir, embedder=encoder)
    try:
        exported = list(index.export_chunks(batch=3))
        shape = exported[0].shape
        regrouped = list(complete_documents(exported, shape, "test"))
    finally:
        index.close()
    assert any(len({c.document_id for c in b.chunks} & {c.document_id for c in a.chunks})
               for a, b in zip(exported, exported[1:]))  # the export does cut documents
    for earlier, later in zip(regrouped, regrouped[1:]):
        assert earlier.chunks[-1].document_id != later.chunks[0].document_id
    assert concatenate(shape, regrouped).chunks == concatenate(shape, exported).chunks
    assert np.array_equal(concatenate(shape, regrouped).sentence_vectors, concatenate(shape, exported).sentence_vectors)


@pytest.mark.parametrize("engine", ["files", "postgres"])
def test_import_replaces_same_ids_keeps_the_others_and_refuses_bad_streams(workdir: Path, source_dir: Path,
                                                                         encoder, engine: str) -> None:
    source = InfoIndex.open(source_dir, embedder=encoder)
    folder = workdir / f"import-{engine}"
    target: SearchIndex = (InfoIndex.open(folder, embedder=encoder) if engine == "files"
                           else PgInfoIndex.open_embedded(folder, embedder=encoder))
    try:
        exported = everything(source)
        first_id = exported.chunks[0].document_id
        target.ingest([Document(first_id, "An older version about something else entirely."),
                       Document("kept-here", "A document only the target holds.", groups=("hr",))])
        report = target.import_chunks(source.export_chunks(batch=4))
        stats = source.stats()
        assert (report.documents, report.chunks, report.replaced) == (stats.documents, stats.chunks, 1)
        assert target.stats().documents == stats.documents + 1
        assert [p.document_id for p in target.retrieve("A document only the target holds", k=1, caller=HR)] == \
            ["kept-here"]
        assert "older version" not in " ".join(p.text for p in target.retrieve("older version", k=10, caller=HR))

        before = target.stats()
        singles = [n for n, chunk in enumerate(exported.chunks[:-1])  # one-chunk documents
                   if chunk.chunk_index == 0 == exported.chunks[n + 1].chunk_index]
        other_shape = ChunkBatch(IndexShape(512, 100, 20), exported.chunks[:1], exported.vectors[:1],
                                 exported.sentence_vectors[:exported.chunks[0].sentences])
        with pytest.raises(IndexCorruptError, match="chunk_tokens=100"):
            target.import_chunks([other_shape])
        two_chunks = next(n for n, c in enumerate(exported.chunks) if c.chunk_index == 1)
        out_of_order = exported.rows(two_chunks, two_chunks + 1)
        with pytest.raises(IndexCorruptError, match="chunk 0 was due"):
            target.import_chunks([out_of_order])
        one, other = exported.rows(singles[0], singles[0] + 1), exported.rows(singles[1], singles[1] + 1)
        wrong_vectors = ChunkBatch(one.shape, one.chunks, one.vectors[:, :100].copy(), one.sentence_vectors)
        with pytest.raises(IndexCorruptError, match=r"expected float32 \(1, 512\)"):
            target.import_chunks([wrong_vectors])
        assert target.stats() == before  # each refusal came before anything was written
        with pytest.raises(IndexCorruptError, match="twice"):
            target.import_chunks([one, other, one])  # into PostgreSQL, `one` was written again before the refusal
        assert (target.stats().documents, target.stats().chunks) == (before.documents, before.chunks)
    finally:
        source.close()
        target.close()


def run_cli(home: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "router", "--config", str(config), "info", "migrate", *args],
                          env=isolated_env(home), cwd=REPO, capture_output=True, text=True, timeout=WAIT_S)


def write_config(folder: Path, name: str, index_dir: Path, engine: str) -> Path:
    config = folder / f"{name}.toml"
    config.write_text(f'[info]\nindex_dir = "{index_dir}"\nengine = "{engine}"\n')
    return config


def test_cli_migrates_refuses_a_non_empty_target_and_replaces_on_request(workdir: Path, source_dir: Path,
                                                                         encoder, paragraphs: list[Document]) -> None:
    home = workdir / "cli-home"
    index_dir = copy_of(source_dir, workdir / "cli-index")
    config = write_config(workdir, "cli", index_dir, "files")

    first = run_cli(home, config, "--to", "postgres")
    assert first.returncode == 0, first.stderr
    stats_line = first.stdout.strip().splitlines()[-1]
    original = InfoIndex.open(source_dir, embedder=encoder)
    try:
        expected = original.stats()
        assert stats_line.startswith(f"migrated {expected.documents} document(s), {expected.chunks} passage(s) "
                                     "to postgres in ")
        assert f"{expected.chunks}/{expected.chunks} passages read" in first.stderr

        again = run_cli(home, config, "--to", "postgres")
        assert again.returncode == 1
        assert again.stderr.strip().splitlines()[-1] == (
            f"hybrid-router info migrate: the postgres index in {index_dir / 'pg'} already holds "
            f"{expected.documents} document(s): give --replace to copy into it (documents with the same id are "
            "replaced, the others kept), or empty it first")

        replaced = run_cli(home, config, "--to", "postgres", "--replace")
        assert replaced.returncode == 0, replaced.stderr
        assert f"; {expected.documents} replaced a document already there" in replaced.stdout

        back_dir = workdir / "cli-back"
        back = run_cli(home, config, "--to", "files", "--to-dir", str(back_dir))
        assert back.returncode == 0, back.stderr

        postgres_config = InfoSettings(index_dir=index_dir, engine="postgres")
        in_postgres = open_search_index(postgres_config, encoder)
        returned = InfoIndex.open(back_dir, embedder=encoder)
        try:
            asked = questions(paragraphs)[:6]
            assert_same_index(original, in_postgres, asked)
            assert_same_index(original, returned, asked)
        finally:
            in_postgres.close()
            returned.close()
    finally:
        original.close()


def test_cli_refuses_a_missing_source_and_a_server_held_by_another_process(workdir: Path, source_dir: Path) -> None:
    home = workdir / "cli-refusals-home"
    empty = workdir / "nothing-here"
    missing = run_cli(home, write_config(workdir, "missing", empty, "postgres"), "--to", "postgres")
    assert missing.returncode == 1
    assert f"there is no files index in {empty} to migrate to postgres" in missing.stderr

    index_dir = copy_of(source_dir, workdir / "held")
    config = write_config(workdir, "held", index_dir, "files")
    assert run_cli(home, config, "--to", "postgres").returncode == 0
    holder_code = textwrap.dedent("""
        import sys
        from pathlib import Path
        from cloud.info import PgInfoIndex
        from router.assembly.info_migrate import DimensionOnlyEncoder
        index = PgInfoIndex.open_embedded(Path(sys.argv[1]), embedder=DimensionOnlyEncoder(512))
        print("open", flush=True)
        sys.stdin.read()
        index.close()
    """)
    holder = subprocess.Popen([sys.executable, "-c", holder_code, str(index_dir)], cwd=REPO, env=isolated_env(home),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        held = run_cli(home, config, "--to", "files", "--to-dir", str(workdir / "held-back"))
        assert held.returncode == 1
        assert f"is in use by process {holder.pid}" in held.stderr
        assert not (workdir / "held-back" / "manifest.json").exists()
    finally:
        holder.communicate("", timeout=WAIT_S)
    assert holder.returncode == 0


def test_cli_migrates_to_a_server_and_back(workdir: Path, source_dir: Path, pg_server: PgTestServer, encoder,
                                           paragraphs: list[Document]) -> None:
    dsn = pg_server.create_database("migrated")
    home = workdir / "server-home"
    config = write_config(workdir, "server", workdir / "unused-index-dir", "files")
    to_server = run_cli(home, config, "--to", "postgres", "--dsn", dsn, "--from-dir", str(source_dir))
    assert to_server.returncode == 0, to_server.stderr
    assert f"copying the files index in {source_dir} to the postgres index on the server" in to_server.stderr
    back = run_cli(home, config, "--to", "files", "--dsn", dsn, "--to-dir", str(workdir / "from-server"))
    assert back.returncode == 0, back.stderr
    assert not (workdir / "unused-index-dir").exists()

    original = InfoIndex.open(source_dir, embedder=encoder)
    on_server = PgInfoIndex.open_server(dsn, embedder=encoder)
    returned = InfoIndex.open(workdir / "from-server", embedder=encoder)
    try:
        asked = questions(paragraphs)[:6]
        assert_same_index(original, on_server, asked)
        assert_same_index(original, returned, asked)
    finally:
        for index in (original, on_server, returned):
            index.close()


def test_an_unstorable_chunk_is_refused_by_postgres(workdir: Path, encoder) -> None:
    target = PgInfoIndex.open_embedded(workdir / "nul", embedder=encoder)
    try:
        vector = encoder.encode(["text"])
        chunk = StoredChunk("bad\x00id", 0, "text", 0, 4, MappingProxyType({}), (), 1)
        from cloud.info import InvalidDocumentError

        with pytest.raises(InvalidDocumentError, match="NUL"):
            target.import_chunks([ChunkBatch(IndexShape(512, IndexSettings().chunk_tokens,
                                                        IndexSettings().chunk_overlap_tokens),
                                             (chunk,), vector, vector)])
        assert target.stats().documents == 0
    finally:
        target.close()


def test_an_install_from_before_postgres_keeps_its_documents_on_the_default_engine(
        workdir: Path, source_dir: Path, encoder, paragraphs: list[Document]) -> None:
    """A files index in index_dir (an older install) and the default engine: the first open copies it into
    the embedded PostgreSQL exactly and leaves the files; going back to files is refused with the command."""
    index_dir = copy_of(source_dir, workdir / "older-install")
    settings = InfoSettings(index_dir=index_dir)
    assert settings.engine == "postgres"
    original = InfoIndex.open(source_dir, embedder=encoder)
    expected = original.stats()
    adopted = open_search_index(settings, encoder)
    try:
        assert isinstance(adopted, PgInfoIndex)
        assert_same_index(original, adopted, questions(paragraphs))
    finally:
        adopted.close()
        original.close()
    assert (index_dir / "manifest.json").exists()  # the files are kept
    reopened = open_search_index(settings, encoder)  # now a postgres index: nothing copied again
    try:
        assert (reopened.stats().documents, reopened.stats().chunks) == (expected.documents, expected.chunks)
    finally:
        reopened.close()

    postgres_only = workdir / "postgres-only"
    shutil.copytree(index_dir / "pg", postgres_only / "pg", symlinks=True)
    with pytest.raises(IndexCorruptError, match="info migrate --to files"):
        open_search_index(InfoSettings(index_dir=postgres_only, engine="files"), encoder)


def test_a_copy_cut_short_at_the_first_start_is_done_again_at_the_next(workdir: Path, source_dir: Path, encoder,
                                                                       paragraphs: list[Document]) -> None:
    """The first start was killed mid-copy: pg/ exists and holds part of the index, the marker is still
    there. The next start copies again (replacing what the first wrote) instead of serving the part."""
    from router.assembly.local_info import ADOPTING_MARKER

    index_dir = copy_of(source_dir, workdir / "cut-short")
    settings = InfoSettings(index_dir=index_dir)
    original = InfoIndex.open(source_dir, embedder=encoder)
    partial = PgInfoIndex.open_embedded(index_dir, embedder=encoder)
    try:
        partial.import_chunks(itertools.islice(original.export_chunks(batch=10), 2))
        assert 0 < partial.stats().documents < original.stats().documents
    finally:
        partial.close()
    (index_dir / ADOPTING_MARKER).write_text("killed mid-copy")
    adopted = open_search_index(settings, encoder)
    try:
        assert_same_index(original, adopted, questions(paragraphs))
    finally:
        adopted.close()
        original.close()
    assert not (index_dir / ADOPTING_MARKER).exists()

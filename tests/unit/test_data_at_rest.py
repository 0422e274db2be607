"""Data at rest is the owner's alone: the ledger, its WAL and shared-memory files, and the Info index are
created 0600, and the directories the code creates 0700.

Each test runs under the common umask 022, with which a file created without care is 0644: a revert to
creating files the ordinary way fails here.
"""
from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cloud.info import InfoIndex
from cloud.info.store import IndexDirectory, IndexShape, Snapshot, StoredChunk
from router.core.ledger.store import LedgerStore
from tests.integration.test_info_index import HR_DOC, PUBLIC_DOCS, SMALL, HashingTestEmbedder
from tests.unit.test_ledger_support import make_exchange, open_ledger

COMMON_UMASK = 0o022


@pytest.fixture(autouse=True)
def common_umask() -> Iterator[None]:
    previous = os.umask(COMMON_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_sqlite_gives_the_wal_and_shm_files_the_database_files_mode(tmp_path: Path) -> None:
    # The claim the ledger relies on, checked on this SQLite both ways.
    for wanted in (0o600, 0o640):
        path = tmp_path / f"db-{wanted:o}.sqlite"
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT, 0o600))
        os.chmod(path, wanted)
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
        assert {suffix: mode(Path(f"{path}{suffix}")) for suffix in ("", "-wal", "-shm")} == {
            "": wanted, "-wal": wanted, "-shm": wanted}
        conn.close()


def test_the_ledger_database_its_wal_and_shm_are_0600_and_new_directories_0700(tmp_path: Path) -> None:
    parent_mode = mode(tmp_path)
    path = tmp_path / "state" / "hybrid-router" / "ledger.db"
    ledger = open_ledger(path)
    ledger.record(*make_exchange("r1", edge="7"))
    assert ledger.flush()
    with LedgerStore.open_reader(path) as reader:  # a reader beside the writer: the WAL is in use
        assert reader.contains("r1")
        files = {name: mode(path.with_name(name)) for name in ("ledger.db", "ledger.db-wal", "ledger.db-shm")}
    assert files == {"ledger.db": 0o600, "ledger.db-wal": 0o600, "ledger.db-shm": 0o600}
    assert mode(path.parent) == 0o700 and mode(path.parent.parent) == 0o700
    assert mode(tmp_path) == parent_mode  # a directory that was there is not the ledger's to change
    ledger.close()


def test_a_ledger_left_world_readable_by_an_earlier_version_is_narrowed_on_open(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    conn = sqlite3.connect(path, isolation_level=None)  # SQLite's own default: 0644 under umask 022
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE leftover (x)")
    conn.close()
    assert mode(path) == 0o644
    ledger = open_ledger(path)
    ledger.record(*make_exchange("r1", edge="7"))
    assert ledger.flush()
    assert mode(path) == 0o600
    assert mode(path.with_name("ledger.db-wal")) == 0o600
    ledger.close()


def _snapshot() -> Snapshot:
    chunk = StoredChunk("doc", 0, "Confidential text.", 0, 18, {}, ("hr",), 1)
    vectors = np.ones((1, 4), dtype=np.float32)
    return Snapshot(IndexShape(dim=4, chunk_tokens=40, chunk_overlap_tokens=8), (chunk,), vectors, vectors)


def test_the_info_index_files_are_0600_in_a_0700_directory(tmp_path: Path) -> None:
    directory = IndexDirectory(tmp_path / "info" / "index")
    directory.save(_snapshot())
    directory.save(_snapshot())  # a second generation replaces the first: its files too
    files = sorted(directory.path.iterdir())
    assert [f.name for f in files] == ["chunks-000002.jsonl", "manifest.json", "sentences-000002.npy",
                                      "vectors-000002.npy"]
    assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
    assert mode(directory.path) == 0o700 and mode(directory.path.parent) == 0o700


def test_an_index_from_an_earlier_version_is_private_after_its_next_save(tmp_path: Path) -> None:
    directory = IndexDirectory(tmp_path / "index")
    directory.save(_snapshot())
    for file in directory.path.iterdir():
        os.chmod(file, 0o644)
    leftover = directory.path / f"manifest.json.{os.getpid()}.tmp"  # a crashed save's, with the same pid
    leftover.write_text("{}")
    os.chmod(leftover, 0o644)
    directory.save(_snapshot())
    assert {f.name: mode(f) for f in directory.path.iterdir()} == {
        f.name: 0o600 for f in directory.path.iterdir()}


def test_an_info_index_opened_in_a_new_directory_creates_it_0700(tmp_path: Path) -> None:
    index = InfoIndex.open(tmp_path / "srv" / "info", embedder=HashingTestEmbedder(), settings=SMALL)
    assert mode(tmp_path / "srv") == 0o700 and mode(tmp_path / "srv" / "info") == 0o700
    index.ingest([*PUBLIC_DOCS, HR_DOC])
    assert {f.name: mode(f) for f in (tmp_path / "srv" / "info").iterdir()} == {
        f.name: 0o600 for f in (tmp_path / "srv" / "info").iterdir()}
    index.close()


def test_a_chunk_holding_unicode_line_separators_loads_back(tmp_path: Path) -> None:
    """Chunks are stored as unescaped JSON Lines: a chunk text with U+2028 was split on reload and the whole index
    called corrupt."""
    chunk = StoredChunk("doc", 0, "Line one\u2028line two\x85three.", 0, 24, {}, ("hr",), 1)
    vectors = np.ones((1, 4), dtype=np.float32)
    directory = IndexDirectory(tmp_path / "index")
    directory.save(Snapshot(IndexShape(dim=4, chunk_tokens=40, chunk_overlap_tokens=8), (chunk,), vectors, vectors))
    assert list(IndexDirectory(tmp_path / "index").load().chunks) == [chunk]

"""`hybrid-router info migrate`: copy the Info index from one engine to the other, exactly.

The chunks travel with their stored vectors (cloud/info/transfer.py), so the encoder never runs: both
indexes are opened with a stand-in that knows the encoder's dimension and refuses to encode. The copy
answers every query with the same passages and scores as the original.

Defaults follow `[info]`: the source is the other engine's index in index_dir, the target the asked
engine's, in the same index_dir (files: its manifest and data files; postgres: the embedded server in
index_dir/pg), or the server of dsn. Nothing may write to either while the copy runs: an embedded
server held by another process (the daemon, `info serve`) is refused; the files engine keeps no such
record, so a daemon serving it is not detected.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np

from cloud.info import ChunkBatch, InfoIndex, SearchIndex
from cloud.info.pg_embedded import DATA_FOLDER
from cloud.info.store import MANIFEST
from edge.encoder import EMBEDDING_DIM
from router.assembly.local_info import index_settings
from router.domain.config import InfoSettings
from router.domain.errors import ErrorKind, InternalError, RouterError

Engine = Literal["postgres", "files"]
ENGINES: tuple[Engine, ...] = ("postgres", "files")
# Chunks per batch read from the source: one transaction each into PostgreSQL.
EXPORT_BATCH = 500


class MigrationRefusedError(RouterError):
    """A migration that cannot be done as asked: no source index, a target that already holds documents
    (without --replace), an embedded server another process holds (nothing is copied), or counts that
    do not match after the copy (something wrote meanwhile)."""

    kind = ErrorKind.PRECONDITION_FAILED


@dataclass(frozen=True)
class IndexLocation:
    """One engine's index: a directory (files, or postgres embedded in directory/pg) or a server's DSN."""

    engine: Engine
    directory: Optional[Path] = None
    dsn: str = ""

    def describe(self) -> str:
        if self.dsn:
            from cloud.info.pg_index import redacted_dsn

            return f"the postgres index on the server {redacted_dsn(self.dsn)}"
        if self.engine == "postgres":
            return f"the postgres index in {self.directory / DATA_FOLDER}"  # type: ignore[operator]
        return f"the files index in {self.directory}"


@dataclass(frozen=True)
class MigrationPlan:
    source: IndexLocation
    target: IndexLocation


@dataclass(frozen=True)
class MigrationReport:
    plan: MigrationPlan
    documents: int  # documents copied
    chunks: int  # chunks (passages) copied
    replaced: int  # of the documents copied, how many replaced one the target held
    seconds: float


class DimensionOnlyEncoder:
    """Stands for the configured encoder when an index is opened: it gives the dimension, and refuses to
    encode, since a migration copies vectors and must never compute one."""

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        raise InternalError("a migration asked for text to be encoded: it copies the stored vectors and "
                            "must never run the encoder")


def plan_migration(settings: InfoSettings, to: Engine, *, dsn: str = "", from_dir: Optional[Path] = None,
                   to_dir: Optional[Path] = None) -> MigrationPlan:
    """Where the index comes from and goes (module docstring). The postgres side is the server of `dsn`
    when given; else the embedded one of its directory when given; else info.dsn's server, if any; else
    the embedded one in index_dir."""
    if to not in ENGINES:
        raise MigrationRefusedError(f"--to {to!r}: migrate to one of {', '.join(ENGINES)}")
    index_dir = settings.index_dir.expanduser()
    source_dir = Path(from_dir).expanduser() if from_dir is not None else index_dir
    target_dir = Path(to_dir).expanduser() if to_dir is not None else index_dir
    postgres_dir_given = (to_dir if to == "postgres" else from_dir) is not None
    server = dsn or ("" if postgres_dir_given else settings.dsn)
    if to == "postgres":
        source = IndexLocation("files", source_dir)
        target = IndexLocation("postgres", None if server else target_dir, server)
    else:
        source = IndexLocation("postgres", None if server else source_dir, server)
        target = IndexLocation("files", target_dir)
    return MigrationPlan(source, target)


def migrate_info_index(settings: InfoSettings, plan: MigrationPlan, *, replace: bool = False,
                       dim: int = EMBEDDING_DIM, progress: Optional[Callable[[int, int], None]] = None,
                       batch: int = EXPORT_BATCH) -> MigrationReport:
    """Copies every chunk of `plan.source` into `plan.target`, as stored. `dim`: the configured encoder's
    (every catalogued encoder gives 512-d vectors). `progress(chunks copied, chunks in all)` is called
    after each batch. MigrationRefusedError when there is no source index, it holds nothing, the target
    already holds documents and `replace` is off (with it: a document with an id the source brings is
    replaced, the others kept), or an embedded server is held by another process; the index library's
    InfoIndexError for an index that cannot be opened (another shape, a server that cannot be reached)."""
    began = time.monotonic()
    for location in (plan.source, plan.target):
        _refuse_embedded_in_use(location)
    _refuse_missing_source(plan.source)
    embedder = DimensionOnlyEncoder(dim)
    source = _open(plan.source, settings, embedder)
    try:
        total = source.stats()
        if not total.chunks:
            raise MigrationRefusedError(f"{plan.source.describe()} holds no documents: nothing to migrate")
        target = _open(plan.target, settings, embedder)
        try:
            held = target.stats().documents
            if held and not replace:
                raise MigrationRefusedError(
                    f"{plan.target.describe()} already holds {held} document(s): give --replace to copy into it "
                    "(documents with the same id are replaced, the others kept), or empty it first")
            exported = source.export_chunks(batch)
            try:
                copied = target.import_chunks(_counted(exported, total.chunks, progress))
            finally:
                # A PostgreSQL export holds a connection until it ends: end it now, before its index closes.
                close = getattr(exported, "close", None)
                if close is not None:
                    close()
            after = target.stats()
        finally:
            target.close()
    finally:
        source.close()
    if copied.chunks != total.chunks or (not held and (after.documents, after.chunks) != (total.documents,
                                                                                          total.chunks)):
        raise MigrationRefusedError(
            f"{plan.target.describe()} holds {after.documents} document(s) and {after.chunks} chunk(s) after the "
            f"copy of {copied.chunks} chunk(s), the source {total.documents} and {total.chunks} before it: something "
            "wrote to one of them meanwhile; stop it, and migrate again with --replace")
    return MigrationReport(plan, copied.documents, copied.chunks, copied.replaced, time.monotonic() - began)


def _refuse_embedded_in_use(location: IndexLocation) -> None:
    if location.engine != "postgres" or location.dsn:
        return
    from cloud.info.pg_embedded import other_processes_using

    users = other_processes_using(location.directory)  # type: ignore[arg-type]
    if users:
        raise MigrationRefusedError(
            f"{location.describe()} is in use by process {', '.join(map(str, users))} (the daemon or "
            "`hybrid-router info serve`?): stop it first, so that nothing is written while the index is copied")


def _refuse_missing_source(source: IndexLocation) -> None:
    if source.dsn:
        return  # a server's database is asked when opened
    directory = source.directory
    assert directory is not None
    present = (directory / DATA_FOLDER).is_dir() if source.engine == "postgres" else (directory / MANIFEST).exists()
    if not present:
        other = "files" if source.engine == "postgres" else "postgres"
        raise MigrationRefusedError(f"there is no {source.engine} index in {directory} to migrate to {other} "
                                    f"(no {DATA_FOLDER if source.engine == 'postgres' else MANIFEST} there); "
                                    "give the index's directory with --from-dir, or its server with --dsn")


def _open(location: IndexLocation, settings: InfoSettings, embedder: DimensionOnlyEncoder) -> SearchIndex:
    if location.engine == "files":
        return InfoIndex.open(location.directory, embedder=embedder,  # type: ignore[arg-type]
                              settings=index_settings(settings))
    from cloud.info import PgInfoIndex  # psycopg and pgserver load only for this engine

    if location.dsn:
        return PgInfoIndex.open_server(location.dsn, embedder=embedder, settings=index_settings(settings))
    return PgInfoIndex.open_embedded(location.directory, embedder=embedder,  # type: ignore[arg-type]
                                     settings=index_settings(settings))


def _counted(batches: Iterable[ChunkBatch], total: int,
             progress: Optional[Callable[[int, int], None]]) -> Iterator[ChunkBatch]:
    done = 0
    for batch in batches:
        yield batch
        done += len(batch)
        if progress is not None:
            progress(done, total)

"""The Info index this process serves from `[info]`: the encoder and the index on its engine, with their life cycle.

The daemon owns one when info.service = in_process (its gRPC door hosts the Info service over it), and
`hybrid-router info serve` owns one on an Info host. Either way a door only adds the transport.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Optional

from cloud.info import IndexCorruptError, IndexSettings, InfoIndex, InvalidDocumentError, SearchIndex
from cloud.info.store import MANIFEST, IndexDirectory
from edge.catalogue import ModelCache
from edge.encoder import TextEncoder
from router.domain.config import InfoSettings
from router.domain.errors import RouterError


def index_settings(settings: InfoSettings) -> IndexSettings:
    """The index's settings from `[info]`; those `[info]` does not name keep the library's defaults."""
    return IndexSettings(chunk_tokens=settings.chunk_tokens, chunk_overlap_tokens=settings.chunk_overlap_tokens,
                         bm25_weight=settings.bm25_weight, dense_weight=settings.dense_weight,
                         rrf_k=settings.rrf_k, rerank=settings.rerank)


# Present while a files index is being copied into the embedded postgres engine (_adopt_files_index).
ADOPTING_MARKER = ".adopting-files-index"


def engine_name(settings: InfoSettings) -> str:
    """How logs and errors name where the index lives."""
    if settings.engine == "files":
        return "files"
    return "postgres (server)" if settings.dsn else "postgres (embedded)"


def open_search_index(settings: InfoSettings, embedder, *,  # type: ignore[no-untyped-def]
                      logger: Optional[logging.Logger] = None) -> SearchIndex:
    """The index `[info]` names: engine and place. An index_dir that holds only a files index, with the
    embedded postgres engine configured (an install from before postgres was the default), is copied into
    it first, exactly, and the files are left as they were. IndexCorruptError when index_dir holds only a
    postgres index and files is configured: going back is a choice, made with `info migrate --to files`."""
    index_dir = settings.index_dir.expanduser()
    if settings.engine == "files":
        if (index_dir / "pg").is_dir() and not (index_dir / MANIFEST).exists():
            raise IndexCorruptError(_other_engine(index_dir, "postgres", "files"))
        return InfoIndex.open(index_dir, embedder=embedder, settings=index_settings(settings))
    from cloud.info import PgInfoIndex  # psycopg and pgserver load only for this engine

    if settings.dsn:
        return PgInfoIndex.open_server(settings.dsn, embedder=embedder, settings=index_settings(settings))
    unfinished = (index_dir / ADOPTING_MARKER).exists()
    if (index_dir / MANIFEST).exists() and (unfinished or not (index_dir / "pg").is_dir()):
        _adopt_files_index(settings, int(getattr(embedder, "dim", 0)) or None, logger)
    return PgInfoIndex.open_embedded(index_dir, embedder=embedder, settings=index_settings(settings))


def _adopt_files_index(settings: InfoSettings, dim: Optional[int], logger: Optional[logging.Logger]) -> None:
    """Copies the files index in index_dir into the embedded postgres engine there (nothing to copy when it
    holds no documents). A marker file stands beside the index from before the copy until it has been
    checked, so that a copy cut short (a kill, a document PostgreSQL refuses) is done again at the next
    start, replacing what the first try wrote, instead of serving half an index."""
    from router.assembly.info_migrate import migrate_info_index, plan_migration  # it imports this module

    index_dir = settings.index_dir.expanduser()
    marker = index_dir / ADOPTING_MARKER
    snapshot = IndexDirectory(index_dir).load()
    if snapshot is None or not snapshot.chunks:
        marker.unlink(missing_ok=True)
        return
    marker.write_text("the files index here is being copied into pg/; until this file is gone, pg/ is partial\n")
    try:
        report = migrate_info_index(settings, plan_migration(settings, "postgres"), replace=True,
                                    **({"dim": dim} if dim else {}))
    except (RouterError, InvalidDocumentError) as exc:  # refused: the message says why; the files stay as they are
        why = exc.message if isinstance(exc, RouterError) else str(exc)
        raise IndexCorruptError(f"copying the files index in {index_dir} into the embedded postgres engine "
                                f"failed: {why}. The files are untouched: set info.engine = \"files\" to "
                                "serve them, or fix the cause; the copy is tried again at the next start") from exc
    marker.unlink()
    (logger or logging.getLogger("hybrid_router.info")).warning(
        "info index copied from the files engine to postgres, the default engine", extra={"fields": {
            "index_dir": str(index_dir), "documents": report.documents, "chunks": report.chunks,
            "seconds": round(report.seconds, 3), "files_kept": True}})


def _other_engine(index_dir, found: str, configured: str) -> str:  # type: ignore[no-untyped-def]
    return (f"{index_dir} holds an index of the {found} engine, and info.engine is {configured!r}: copy it with "
            f"`hybrid-router info migrate --to {configured}`, or set info.engine = \"{found}\"")


class LocalInfoIndex:
    """Opens the index `[info]` names (engine, index_dir, dsn) with the configured encoder, once, and closes it once.

    `encoder`: a TextEncoder already loaded elsewhere in the process, to share it. `open()` runs in a worker
    thread and cannot be interrupted: a `close()` that comes meanwhile (a SIGTERM during start-up) waits
    for it, then closes what it opened, and an `open()` after `close()` opens nothing.
    """

    def __init__(self, settings: InfoSettings, cache: ModelCache, *, logger: Optional[logging.Logger] = None,
                 encoder: Optional[TextEncoder] = None) -> None:
        self.settings = settings
        self.index_dir = settings.index_dir.expanduser()
        self._cache = cache
        self._encoder = encoder
        self._logger = logger or logging.getLogger("hybrid_router.info")
        self._index: Optional[SearchIndex] = None
        self._closed = False
        self._lock = threading.Lock()

    @property
    def location(self) -> str:
        """Where the index lives, for Stats and logs: the server as `info.dsn` names it, without its password,
        or the index directory."""
        if self.settings.dsn:
            from cloud.info.pg_index import redacted_dsn  # psycopg loads only for this engine

            return redacted_dsn(self.settings.dsn)
        return str(self.index_dir)

    @property
    def index(self) -> Optional[SearchIndex]:
        """The open index; None before open() and after close()."""
        return self._index

    def open(self) -> Optional[SearchIndex]:
        """Loads the encoder and opens (or creates) the index; blocking. Returns it, or None when closed
        first. Raises the encoder's EdgeError (a missing model names the pull command) or InfoIndexError."""
        with self._lock:
            if self._closed or self._index is not None:
                return self._index
            began = time.monotonic()
            encoder = self._encoder or TextEncoder.from_cache(self._cache, name=self.settings.encoder)
            if self._closed:  # closed while the encoder loaded: leave the index unopened
                return None
            self._index = open_search_index(self.settings, encoder, logger=self._logger)
            stats = self._index.stats()
        self._logger.info("info index open", extra={"fields": {
            "location": self.location, "engine": engine_name(self.settings), "documents": stats.documents, "chunks": stats.chunks,
            "encoder": self.settings.encoder, "open_s": round(time.monotonic() - began, 3)}})
        return self._index

    def close(self) -> None:
        """Closes the index; blocking, idempotent."""
        self._closed = True  # before the lock: an open() in progress sees it and stops short
        with self._lock:
            index, self._index = self._index, None
        if index is not None:
            index.close()

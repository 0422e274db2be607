"""The Info index this process serves from `[info]`: the encoder and the index, with their life cycle.

The daemon owns one when info.service = in_process (its gRPC door hosts the Info service over it), and
`hybrid-router info serve` owns one on an Info host. Either way a door only adds the transport.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Optional

from cloud.info import IndexSettings, InfoIndex
from edge.catalogue import ModelCache
from edge.encoder import TextEncoder
from router.domain.config import InfoSettings


def index_settings(settings: InfoSettings) -> IndexSettings:
    """The index's settings from `[info]`; those `[info]` does not name keep the library's defaults."""
    return IndexSettings(chunk_tokens=settings.chunk_tokens, chunk_overlap_tokens=settings.chunk_overlap_tokens,
                         bm25_weight=settings.bm25_weight, dense_weight=settings.dense_weight,
                         rrf_k=settings.rrf_k, rerank=settings.rerank)


class LocalInfoIndex:
    """Opens the index in `info.index_dir` with the configured encoder, once, and closes it once.

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
        self._index: Optional[InfoIndex] = None
        self._closed = False
        self._lock = threading.Lock()

    @property
    def index(self) -> Optional[InfoIndex]:
        """The open index; None before open() and after close()."""
        return self._index

    def open(self) -> Optional[InfoIndex]:
        """Loads the encoder and opens (or creates) the index; blocking. Returns it, or None when closed
        first. Raises the encoder's EdgeError (a missing model names the pull command) or InfoIndexError."""
        with self._lock:
            if self._closed or self._index is not None:
                return self._index
            began = time.monotonic()
            encoder = self._encoder or TextEncoder.from_cache(self._cache, name=self.settings.encoder)
            if self._closed:  # closed while the encoder loaded: leave the index unopened
                return None
            self._index = InfoIndex.open(self.index_dir, embedder=encoder, settings=index_settings(self.settings))
            stats = self._index.stats()
        self._logger.info("info index open", extra={"fields": {
            "index_dir": str(self.index_dir), "documents": stats.documents, "chunks": stats.chunks,
            "encoder": self.settings.encoder, "open_s": round(time.monotonic() - began, 3)}})
        return self._index

    def close(self) -> None:
        """Closes the index; blocking, idempotent."""
        self._closed = True  # before the lock: an open() in progress sees it and stops short
        with self._lock:
            index, self._index = self._index, None
        if index is not None:
            index.close()

"""The index on disk: one directory, replaced a whole generation at a time.

Layout (generation g, zero-padded):
    manifest.json             format, version, generation, the shape (dim, chunk settings),
                              counts, and the name, size and SHA-256 of each data file
    chunks-<g>.jsonl          one chunk per line: document id, index, text, offsets, metadata, groups
    vectors-<g>.npy           float32 (chunks, dim): the chunk vectors, row-aligned with the lines
    sentences-<g>.npy         float32 (sentences, dim): every chunk's sentence vectors, in chunk order

A save writes the new generation's data files (temp name, fsync, rename), then swaps the manifest
the same way, then removes the older generation. A crash at any point leaves the old manifest and
its files, or the new ones: never a mix, since the manifest names (and hashes) the files it uses.

The index holds the documents' text, group-restricted ones included: its files are created 0600 and the
directories it creates 0700 (the owner's alone; the umask can only take more away). Every save writes
every file anew, so an index from an earlier version is private after its next save.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from cloud.info.errors import IndexCorruptError

FORMAT = "hybrid-router-info-index"
VERSION = 1
MANIFEST = "manifest.json"
_DATA_FILE = re.compile(r"^(chunks|vectors|sentences)-\d{6}\.(jsonl|npy)$")
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIRECTORY_MODE = 0o700


def make_private_directories(directory: Path) -> None:
    """Creates `directory` and its missing parents, each 0700; directories already there are left alone."""
    missing: list[Path] = []
    current = Path(directory)
    while not os.path.lexists(current) and current != current.parent:
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIRECTORY_MODE)
        except FileExistsError:
            pass  # made meanwhile by another process


@dataclass(frozen=True)
class IndexShape:
    """What the stored vectors and chunk boundaries depend on: an index is only usable with the same."""

    dim: int
    chunk_tokens: int
    chunk_overlap_tokens: int


@dataclass(frozen=True)
class StoredChunk:
    """A chunk as kept: its document's metadata and groups are copied onto it for filtering."""

    document_id: str
    chunk_index: int
    text: str
    start: int
    end: int
    metadata: Mapping[str, str]
    groups: tuple[str, ...]
    sentences: int  # how many rows of the sentence matrix are this chunk's

    def to_json(self) -> dict[str, Any]:
        return {"document_id": self.document_id, "chunk_index": self.chunk_index, "text": self.text,
                "start": self.start, "end": self.end, "metadata": dict(self.metadata),
                "groups": list(self.groups), "sentences": self.sentences}

    @classmethod
    def from_json(cls, record: Any) -> "StoredChunk":
        """Raises ValueError (or KeyError/TypeError) for a record of the wrong shape."""
        metadata, groups = record["metadata"], record["groups"]
        if not (isinstance(record["document_id"], str) and isinstance(record["text"], str)
                and isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
                and isinstance(groups, list) and all(isinstance(g, str) for g in groups)):
            raise ValueError("a field has the wrong type")
        numbers = [record[key] for key in ("chunk_index", "start", "end", "sentences")]
        if not all(isinstance(n, int) and n >= 0 for n in numbers):
            raise ValueError("an offset or count is not a non-negative integer")
        return cls(record["document_id"], numbers[0], record["text"], numbers[1], numbers[2],
                   MappingProxyType(dict(metadata)), tuple(groups), numbers[3])


@dataclass(frozen=True)
class Snapshot:
    """Everything an index holds, as loaded or about to be saved."""

    shape: IndexShape
    chunks: Sequence[StoredChunk]
    vectors: np.ndarray
    sentence_vectors: np.ndarray


def _corrupt(directory: Path, file: str, why: str) -> IndexCorruptError:
    return IndexCorruptError(f"the index file {directory / file} {why}; delete the directory {directory} "
                             "and re-ingest the documents")


class IndexDirectory:
    """One index directory: loads the current generation, saves the next."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.generation = 0

    def load(self) -> Snapshot | None:
        """The persisted snapshot; None for a directory with no index yet. IndexCorruptError for a
        manifest or data file that is missing, foreign, truncated or altered."""
        manifest_path = self.path / MANIFEST
        if not manifest_path.exists():
            strays = sorted(p.name for p in self.path.iterdir() if _DATA_FILE.match(p.name))
            if strays:
                raise _corrupt(self.path, MANIFEST,
                               f"is missing but data files are there ({', '.join(strays[:3])})")
            return None
        manifest = self._read_manifest(manifest_path)
        self.generation = manifest["generation"]
        files = manifest["files"]
        blobs = {role: self._read_verified(files[role]) for role in ("chunks", "vectors", "sentences")}
        shape = IndexShape(*(int(manifest["shape"][key]) for key in ("dim", "chunk_tokens", "chunk_overlap_tokens")))
        chunks = self._parse_chunks(files["chunks"]["name"], blobs["chunks"])
        vectors = self._parse_matrix(files["vectors"]["name"], blobs["vectors"], (len(chunks), shape.dim))
        sentence_count = sum(chunk.sentences for chunk in chunks)
        sentence_vectors = self._parse_matrix(files["sentences"]["name"], blobs["sentences"],
                                              (sentence_count, shape.dim))
        return Snapshot(shape, chunks, vectors, sentence_vectors)

    def _read_manifest(self, path: Path) -> dict[str, Any]:
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _corrupt(self.path, MANIFEST, f"cannot be read as JSON ({exc})") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise _corrupt(self.path, MANIFEST, f"is not an Info index manifest (no \"format\": \"{FORMAT}\")")
        if manifest.get("version") != VERSION:
            raise _corrupt(self.path, MANIFEST, f"has format version {manifest.get('version')!r}, this library "
                                                f"reads version {VERSION}")
        try:
            shape = manifest["shape"]
            IndexShape(**{key: int(shape[key]) for key in ("dim", "chunk_tokens", "chunk_overlap_tokens")})
            int(manifest["generation"])
            for role in ("chunks", "vectors", "sentences"):
                entry = manifest["files"][role]
                if not (isinstance(entry["name"], str) and _DATA_FILE.match(entry["name"])
                        and isinstance(entry["size"], int) and isinstance(entry["sha256"], str)):
                    raise ValueError(role)
        except (KeyError, TypeError, ValueError) as exc:
            raise _corrupt(self.path, MANIFEST, f"lacks a field or has one of the wrong type ({exc!r})") from exc
        return manifest

    def _read_verified(self, entry: Mapping[str, Any]) -> bytes:
        name = entry["name"]
        try:
            data = (self.path / name).read_bytes()
        except OSError as exc:
            raise _corrupt(self.path, name, f"cannot be read ({exc.strerror or exc})") from exc
        if len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise _corrupt(self.path, name, f"does not match its manifest entry (size {len(data)}, expected "
                                            f"{entry['size']}, or a different SHA-256)")
        return data

    def _parse_chunks(self, name: str, data: bytes) -> list[StoredChunk]:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _corrupt(self.path, name, f"is not UTF-8 ({exc.reason} at byte {exc.start})") from exc
        chunks = []
        # "\n" alone ends a record: the chunks are written unescaped, and their text may hold U+2028 or U+0085,
        # where str.splitlines() would also split.
        for number, line in enumerate(text.split("\n"), start=1):
            if not line:
                continue
            try:
                chunks.append(StoredChunk.from_json(json.loads(line)))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise _corrupt(self.path, name, f"has a bad record on line {number} ({exc})") from exc
        return chunks

    def _parse_matrix(self, name: str, data: bytes, shape: tuple[int, int]) -> np.ndarray:
        try:
            matrix = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise _corrupt(self.path, name, f"is not a NumPy array file ({exc})") from exc
        if matrix.dtype != np.float32 or matrix.shape != shape:
            raise _corrupt(self.path, name, f"holds a {matrix.dtype} array of shape {matrix.shape}, "
                                            f"expected float32 {shape}")
        return matrix

    def save(self, snapshot: Snapshot) -> None:
        """Write `snapshot` as the next generation and make it current (see the module docstring)."""
        make_private_directories(self.path)
        generation = self.generation + 1
        chunk_lines = "".join(json.dumps(c.to_json(), ensure_ascii=False) + "\n" for c in snapshot.chunks)
        files = {
            "chunks": (f"chunks-{generation:06d}.jsonl", chunk_lines.encode("utf-8")),
            "vectors": (f"vectors-{generation:06d}.npy", _npy_bytes(snapshot.vectors)),
            "sentences": (f"sentences-{generation:06d}.npy", _npy_bytes(snapshot.sentence_vectors)),
        }
        for name, data in files.values():
            self._write_atomically(name, data)
        manifest = {
            "format": FORMAT, "version": VERSION, "generation": generation,
            "shape": {"dim": snapshot.shape.dim, "chunk_tokens": snapshot.shape.chunk_tokens,
                      "chunk_overlap_tokens": snapshot.shape.chunk_overlap_tokens},
            "counts": {"documents": len({c.document_id for c in snapshot.chunks}),
                       "chunks": len(snapshot.chunks), "sentences": len(snapshot.sentence_vectors)},
            "files": {role: {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                      for role, (name, data) in files.items()},
        }
        self._write_atomically(MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
        self._sync_directory()
        self.generation = generation
        keep = {name for name, _ in files.values()}
        for stale in self.path.iterdir():  # older generations, and leftovers of a crashed save
            if (_DATA_FILE.match(stale.name) and stale.name not in keep) or stale.name.endswith(".tmp"):
                stale.unlink(missing_ok=True)

    def _write_atomically(self, name: str, data: bytes) -> None:
        temporary = self.path / f"{name}.{os.getpid()}.tmp"
        # O_TRUNC, not O_EXCL: a leftover of a crashed save by a process with the same pid is rewritten.
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
        # A leftover keeps its old mode through O_CREAT: narrow it before writing.
        os.fchmod(descriptor, PRIVATE_FILE_MODE)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path / name)

    def _sync_directory(self) -> None:
        # The renames are only durable once the directory entry is; not possible on every platform.
        try:
            descriptor = os.open(self.path, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(descriptor)
        except OSError:
            pass
        finally:
            os.close(descriptor)

    def bytes_on_disk(self) -> int:
        """The size of the manifest and the current generation's files."""
        return sum(p.stat().st_size for p in self.path.iterdir()
                   if p.name == MANIFEST or (_DATA_FILE.match(p.name) and f"-{self.generation:06d}." in p.name))


def _npy_bytes(matrix: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(matrix, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()

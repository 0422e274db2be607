"""Documents and the parsers that read them from files.

A `Document` is what the index ingests: an id (its identity: re-ingesting an id replaces it), the
text, string metadata that filters match exactly, and the groups allowed to read it (none: everyone).
`validate_document` states the ingestion rules; the parsers apply it, so a bad record is reported
with its file and line rather than later in a batch.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cloud.info.errors import InvalidDocumentError

MAX_ID_CHARS = 512
FORMATS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "text": (".txt",), "markdown": (".md", ".markdown"), "jsonl": (".jsonl",), "squad": (".json",),
})
_TITLE_LINE = re.compile(r"\A\s*#[ \t]+(?P<title>[^\n]*?)[ \t#]*(?:\n|\Z)")


def _empty_metadata() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Document:
    """One document. `groups` are the groups allowed to read it; an empty tuple means every caller.

    The metadata is copied into a read-only mapping and a list of groups into a tuple, so a Document
    cannot change after it was validated. Nothing is validated here: `validate_document` does that.
    """

    id: str
    text: str
    metadata: Mapping[str, str] = field(default_factory=_empty_metadata)
    groups: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.metadata, Mapping) and not isinstance(self.metadata, MappingProxyType):
            object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))
        if isinstance(self.groups, (list, set, frozenset)):
            object.__setattr__(self, "groups", tuple(sorted(self.groups)))


def validate_document(document: Document) -> None:
    """Raise InvalidDocumentError, naming the document and what to fix, unless it can be ingested:
    an id of 1..512 characters that is not blank, a text that is not blank, metadata mapping strings
    to strings, groups a tuple of non-blank strings."""
    if not isinstance(document.id, str) or not document.id.strip():
        raise InvalidDocumentError(f"document id {document.id!r} is empty: give every document a non-blank id")
    if len(document.id) > MAX_ID_CHARS:
        raise InvalidDocumentError(f"document id {document.id[:40]!r}... is {len(document.id)} characters long: "
                                   f"ids are limited to {MAX_ID_CHARS}; use a shorter id (a path or a hash)")
    if not isinstance(document.text, str) or not document.text.strip():
        raise InvalidDocumentError(f"document {document.id!r} has no text: drop it, or fill in its text")
    if not isinstance(document.metadata, Mapping) or not all(
            isinstance(key, str) and isinstance(value, str) for key, value in document.metadata.items()):
        raise InvalidDocumentError(f"document {document.id!r} has metadata {_describe(document.metadata)}: "
                                   "metadata must map strings to strings (convert numbers and dates to text)")
    if not isinstance(document.groups, tuple) or not all(
            isinstance(group, str) and group.strip() for group in document.groups):
        raise InvalidDocumentError(f"document {document.id!r} has groups {document.groups!r}: groups must be "
                                   "a tuple of non-blank group names (an empty tuple lets every caller read it)")


def _describe(metadata: Any) -> str:
    if not isinstance(metadata, Mapping):
        return f"of type {type(metadata).__name__}"
    bad = [f"{key!r}: {type(value).__name__}" for key, value in metadata.items()
           if not (isinstance(key, str) and isinstance(value, str))]
    return "with non-string entries " + ", ".join(bad[:5])


def detect_format(path: Path) -> str:
    """The parser for `path` by its suffix (.txt, .md, .jsonl, .json = SQuAD); for a directory, the one
    format its files share. InvalidDocumentError when it cannot tell."""
    path = Path(path)
    suffixes = {p.suffix.lower() for p in _files_under(path)} if path.is_dir() else {path.suffix.lower()}
    formats = {fmt for fmt, known in FORMATS.items() if suffixes & set(known)}
    if len(formats) == 1:
        return formats.pop()
    known = ", ".join(f"{s} ({fmt})" for fmt, ss in FORMATS.items() for s in ss)
    raise InvalidDocumentError(f"cannot tell the format of {path} (suffixes {sorted(suffixes)}): "
                               f"known suffixes are {known}; name the format explicitly")


def read_documents(path: Path, fmt: str) -> Iterator[Document]:
    """The documents in `path` (a file, or a directory read recursively in sorted order), validated.

    - "text": one document per file, id = the file's stem.
    - "markdown": the same; a leading `# Title` line also goes into metadata["title"] (it stays in the
      text too, where its words help the search).
    - "jsonl": one JSON object per line with "id", "text", optional "metadata" (strings to strings) and
      optional "groups" (a list of strings); blank lines are skipped.
    - "squad": SQuAD v1.1 JSON, one document per paragraph, id "<slug(title)>-<paragraph index:03d>",
      metadata {"title": title}.
    A file that is not valid UTF-8 or a record that is not a valid document raises
    InvalidDocumentError naming the file (and the line, for JSONL). ValueError for an unknown format.
    """
    readers = {"text": _read_text, "markdown": _read_markdown, "jsonl": _read_jsonl, "squad": _read_squad}
    if fmt not in readers:
        raise ValueError(f"unknown document format {fmt!r}: use one of {sorted(readers)}")
    path = Path(path)
    files = [p for p in _files_under(path) if p.suffix.lower() in FORMATS[fmt]] if path.is_dir() else [path]
    for file in files:
        yield from readers[fmt](file)


def _files_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith("."))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidDocumentError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}): "
                                   "convert it to UTF-8") from exc


def _checked(document: Document, where: str) -> Document:
    try:
        validate_document(document)
    except InvalidDocumentError as exc:
        raise InvalidDocumentError(f"{where}: {exc}") from exc
    return document


def _read_text(path: Path) -> Iterator[Document]:
    yield _checked(Document(id=path.stem, text=_read(path)), str(path))


def _read_markdown(path: Path) -> Iterator[Document]:
    text = _read(path)
    title = _TITLE_LINE.match(text)
    metadata = {"title": title.group("title").strip()} if title and title.group("title").strip() else {}
    yield _checked(Document(id=path.stem, text=text, metadata=metadata), str(path))


def _read_jsonl(path: Path) -> Iterator[Document]:
    # "\n" alone ends a line: str.splitlines() would also split at U+2028 and U+0085, which JSON leaves
    # unescaped inside a string and web text holds.
    for number, line in enumerate(_read(path).split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidDocumentError(f"{where} is not JSON ({exc.msg} at column {exc.colno}): "
                                       "write one JSON object per line") from exc
        if not isinstance(record, dict) or not isinstance(record.get("id"), str) or "text" not in record:
            raise InvalidDocumentError(f"{where} is not a document: each line must be an object with a string "
                                       "\"id\" and a \"text\", optionally \"metadata\" and \"groups\"")
        groups = record.get("groups", [])
        if not isinstance(groups, list):
            raise InvalidDocumentError(f"{where}: document {record['id']!r} has \"groups\" of type "
                                       f"{type(groups).__name__}: write a list of group names")
        metadata = record.get("metadata", {})
        yield _checked(Document(id=record["id"], text=record["text"],
                                metadata=metadata,
                                groups=tuple(groups)), where)


def slug(title: str) -> str:
    """A lower-case, dash-separated form of a title, for ids: "Super_Bowl_50" -> "super-bowl-50"."""
    return re.sub(r"[^0-9a-z]+", "-", title.casefold()).strip("-") or "untitled"


def _read_squad(path: Path) -> Iterator[Document]:
    try:
        articles = json.loads(_read(path))["data"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InvalidDocumentError(f"{path} is not SQuAD v1.1 JSON ({exc}): expected {{\"data\": [articles]}}") from exc
    for article_number, article in enumerate(articles):
        title = str(article.get("title", f"article-{article_number}"))
        for index, paragraph in enumerate(article.get("paragraphs", [])):
            document = Document(id=f"{slug(title)}-{index:03d}", text=paragraph.get("context", ""),
                                metadata={"title": title})
            yield _checked(document, f"{path} article {title!r} paragraph {index}")

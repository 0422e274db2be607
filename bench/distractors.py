"""Real text to bury the SQuAD passages in, for bench/info_scale.py: never generated filler.

Sources, in this order (each deterministic, so a scale always holds the same passages):
- GSM8K train: each problem with its worked solution is one passage;
- the HTML manuals Debian ships: Python's (`python3-doc`), PostgreSQL's (`postgresql-doc-15`), git's (`git-doc`)
  and the Linux kernel's (`linux-doc-6.1`), each page's text cut at paragraph ends into passages of about a
  SQuAD paragraph's length;
- the English manual pages installed (`/usr/share/man/man1`..`man8`), their roff requests dropped, cut the same way.

SQuAD's other dev half and GSM8K's test split are held out for everyone: neither is read here.

    apt-get install python3-doc postgresql-doc-15 git-doc linux-doc-6.1   # what the 100x scale needs
"""
from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterator, Sequence

from cloud.info import Document

GSM8K_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "train.jsonl"


@dataclass(frozen=True)
class HtmlManual:
    name: str  # the passages' id prefix
    package: str  # the Debian package that installs it
    root: Path


MANUALS = (
    HtmlManual("python-doc", "python3-doc", Path("/usr/share/doc/python3.11/html")),
    HtmlManual("postgresql-doc", "postgresql-doc-15", Path("/usr/share/doc/postgresql-doc-15/html")),
    HtmlManual("git-doc", "git-doc", Path("/usr/share/doc/git-doc")),
    HtmlManual("linux-doc", "linux-doc-6.1", Path("/usr/share/doc/linux-doc-6.1/html")),
)
MAN_ROOT = Path("/usr/share/man")
# roff requests that start a new paragraph; every other request line is dropped.
_ROFF_BREAKS = re.compile(r"^\.(?:SH|SS|PP|P|LP|TP|IP|HP|sp|br|RS|RE)\b")
_ROFF_ESCAPES = re.compile(r"\\f(?:\[[^]]*\]|\(..|.)|\\\(..|\\\*(?:\(..|\[[^]]*\]|.)|\\s[-+]?\d+|\\.")
# About the length of a SQuAD paragraph (their median is near 120 words).
PASSAGE_WORDS = 130
# Below this a page's last piece is dropped: navigation crumbs, not a passage.
MIN_PASSAGE_WORDS = 20
_SKIPPED_TAGS = frozenset({"script", "style", "nav", "head", "footer"})
_BLOCK_TAGS = frozenset({"p", "li", "pre", "h1", "h2", "h3", "h4", "dt", "dd", "tr", "div", "section", "table",
                         "blockquote", "br"})


class _PageText(HTMLParser):
    """A page's visible text, one line per block element."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS and self._skipping:
            self._skipping -= 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:  # a line break inside a block is a space: only block tags end a paragraph
            self.parts.append(data.replace("\n", " "))


def page_paragraphs(html: str) -> list[str]:
    """The page's text blocks, whitespace collapsed, empty ones dropped."""
    parser = _PageText()
    parser.feed(html)
    parser.close()
    blocks = (re.sub(r"\s+", " ", block).strip() for block in "".join(parser.parts).split("\n"))
    return [block for block in blocks if block]


def passages(paragraphs: Sequence[str], words: int = PASSAGE_WORDS) -> list[str]:
    """Paragraphs joined in order into passages of about `words` words, cut only at paragraph ends (a single
    longer paragraph is cut at word boundaries)."""
    found: list[str] = []
    current: list[str] = []
    count = 0
    for paragraph in paragraphs:
        tokens = paragraph.split()
        while len(tokens) > words:  # a paragraph longer than a passage: cut it
            if current:
                found.append(" ".join(current))
                current, count = [], 0
            found.append(" ".join(tokens[:words]))
            tokens = tokens[words:]
        if count + len(tokens) > words and current:
            found.append(" ".join(current))
            current, count = [], 0
        current.append(" ".join(tokens))
        count += len(tokens)
    if current and count >= MIN_PASSAGE_WORDS:
        found.append(" ".join(current))
    return [text for text in found if len(text.split()) >= MIN_PASSAGE_WORDS]


def gsm8k_documents(path: Path = GSM8K_TRAIN) -> Iterator[Document]:
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines):
            if line.strip():
                row = json.loads(line)
                yield Document(id=f"gsm8k-train-{number:05d}", text=f"{row['question']}\n{row['answer']}",
                               metadata={"source": "gsm8k-train"})


def manual_documents(manual: HtmlManual) -> Iterator[Document]:
    if not manual.root.is_dir():
        raise FileNotFoundError(f"{manual.root} is missing: apt-get install {manual.package}")
    for page in sorted(manual.root.rglob("*.html")):
        relative = page.relative_to(manual.root).with_suffix("").as_posix()
        for index, text in enumerate(passages(page_paragraphs(page.read_text(encoding="utf-8", errors="replace")))):
            yield Document(id=f"{manual.name}/{relative}:p{index:03d}", text=text,
                           metadata={"source": manual.name})


def man_paragraphs(roff: str) -> list[str]:
    """A manual page's text blocks: request lines end a block (.SH, .PP, ...) or are dropped, escapes removed."""
    blocks: list[str] = []
    current: list[str] = []
    for line in roff.splitlines():
        if line.startswith((".", "'")):
            if _ROFF_BREAKS.match(line) and current:
                blocks.append(" ".join(current))
                current = []
            if line.startswith((".SH", ".SS")):  # a heading's words are text too
                current.append(line.split(None, 1)[1].strip('"') if " " in line else "")
            continue
        current.append(_ROFF_ESCAPES.sub("", line))
    if current:
        blocks.append(" ".join(current))
    return [re.sub(r"\s+", " ", block).strip() for block in blocks if block.strip()]


def man_documents(root: Path = MAN_ROOT) -> Iterator[Document]:
    for page in sorted(root.glob("man[1-8]/*.gz")):
        try:
            roff = gzip.decompress(page.read_bytes()).decode("utf-8", errors="replace")
        except (OSError, EOFError):
            continue  # a damaged page is not a passage
        name = page.name[: -len(".gz")]
        for index, text in enumerate(passages(man_paragraphs(roff))):
            yield Document(id=f"man/{page.parent.name}/{name}:p{index:03d}", text=text, metadata={"source": "man"})


def distractor_documents(count: int) -> list[Document]:
    """The first `count` distractor passages, in source order. FileNotFoundError names the Debian package
    whose manual is needed and missing."""
    found: list[Document] = []
    sources = [gsm8k_documents(), *(manual_documents(manual) for manual in MANUALS), man_documents()]
    for source in sources:
        for document in source:
            if len(found) >= count:
                return found
            found.append(document)
    if len(found) < count:
        raise ValueError(f"only {len(found)} distractor passages exist, {count} asked for")
    return found

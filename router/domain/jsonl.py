"""JSON Lines as this project writes them: one JSON value per line, each line ended by "\n", text written
unescaped (`ensure_ascii=False`).

Lines are split on "\n" alone. `str.splitlines()` also breaks at U+2028, U+2029, U+0085 and the other
Unicode line boundaries, which JSON leaves unescaped inside strings and which model and web text does hold:
it would tear such a record in two, and a reader would either drop it or call the file corrupt.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def split_lines(text: str) -> list[str]:
    """The lines of a JSON Lines text, split on "\n" only; a "\r" before it is kept (JSON ignores it)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def read_records(path: Path) -> list[Any]:
    """The records of an append-only JSON Lines file that a stopped process may have left with a half-written
    last line: lines that are not JSON are skipped. A missing file has none."""
    if not path.exists():
        return []
    records = []
    # Split as bytes: a write cut inside a multi-byte character leaves a tail that is not UTF-8, and only that
    # line may be lost (b"\n" never occurs inside a UTF-8 sequence).
    for line in path.read_bytes().split(b"\n"):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line.decode("utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
    return records


def cut_torn_tail(path: Path) -> None:
    """Drops a last line that a stopped process left without its "\n", so the next record starts a line."""
    if not path.exists():
        return
    with open(path, "rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)

"""Every result can be traced to its code: bench runs and trained models record the commit and whether the
tree was dirty, and no committed result holds a path of the machine that made it."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

from router.core.provenance import code_provenance

ROOT = Path(__file__).resolve().parents[2]
# A home directory names the machine's user; the model cache lives under it.
HOME_PATH = re.compile(r"(?<![\w.])/(?:root|home/[\w.-]+|Users/[\w.-]+)/")


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True).stdout.strip()


def test_a_clean_checkout_names_its_commit_and_a_changed_one_says_dirty(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "file.txt").write_text("one\n")
    git(tmp_path, "add", "file.txt")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "one")
    head = git(tmp_path, "rev-parse", "HEAD")
    assert code_provenance(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "file.txt").write_text("two\n")
    assert code_provenance(tmp_path) == {"commit": head, "dirty": True}


def test_code_that_is_not_a_checkout_says_it_does_not_know(tmp_path: Path) -> None:
    assert code_provenance(tmp_path) == {"commit": None, "dirty": None}


def test_no_committed_result_holds_a_home_directory_path() -> None:
    tracked = git(ROOT, "ls-files", "bench/results", "bench/corpus").splitlines()
    offenders = []
    for name in tracked:
        path = ROOT / name
        if path.suffix not in (".json", ".jsonl", ".md", ".toml", ".txt"):
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if HOME_PATH.search(line):
                offenders.append(f"{name}:{number}")
    assert offenders == []


def test_the_home_path_pattern_finds_what_it_must() -> None:
    assert HOME_PATH.search('"endpoint": "/root/.cache/hybrid-router/models/x.gguf"')
    assert HOME_PATH.search("at /home/ana/models/x.gguf")
    assert not HOME_PATH.search("bench/results/rag/summary.md and x.gguf, http://127.0.0.1:8080/v1")

"""Every result can be traced to its code: bench runs and trained models record the commit and whether the
tree was dirty, and no committed result holds a path of the machine that made it."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from bench.portable import shown_command, shown_path
from router.core.provenance import code_provenance

ROOT = Path(__file__).resolve().parents[2]
# A home directory names the machine's user (the model cache lives under it); the others are where one machine
# kept its checkout, its scratch files or its virtual environments.
MACHINE_PATH = re.compile(r"(?<![\w.:/])/(?:root|home/[\w.-]+|Users/[\w.-]+|tmp|work|mnt|srv|var/folders)/")


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


def test_no_committed_result_holds_a_path_of_the_machine_that_made_it() -> None:
    tracked = git(ROOT, "ls-files", "bench/results", "bench/corpus").splitlines()
    offenders = []
    for name in tracked:
        path = ROOT / name
        if path.suffix not in (".json", ".jsonl", ".md", ".toml", ".txt"):
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if MACHINE_PATH.search(line):
                offenders.append(f"{name}:{number}")
    assert offenders == []


def test_the_machine_path_pattern_finds_what_it_must() -> None:
    assert MACHINE_PATH.search('"endpoint": "/root/.cache/hybrid-router/models/x.gguf"')
    assert MACHINE_PATH.search("at /home/ana/models/x.gguf")
    assert MACHINE_PATH.search("taskset -c 1 /work/main/.venv/bin/python -m edge.openai_server")
    assert MACHINE_PATH.search("--build native=/tmp/venv-native/bin/python")
    assert MACHINE_PATH.search('"file": "/work/shared/data/squad/dev-v1.1-partA.json"')
    assert not MACHINE_PATH.search("bench/results/rag/summary.md and x.gguf, http://127.0.0.1:8080/v1")
    assert not MACHINE_PATH.search("../shared/data/squad/dev.json, http://host/tmp/x, a/tmp/b")


def test_paths_and_commands_are_shown_without_the_machine_s_places(tmp_path: Path) -> None:
    repo = tmp_path / "checkout"
    (repo / "bench" / "corpus").mkdir(parents=True)
    assert shown_path(repo / "bench" / "corpus" / "a.jsonl", repo=repo) == "bench/corpus/a.jsonl"
    assert shown_path(tmp_path / "shared" / "data" / "d.json", repo=repo) == "../shared/data/d.json"
    assert shown_path("/opt/venvs/litellm/bin/litellm", repo=repo) == "…/bin/litellm"
    assert shown_path("bench/corpus/a.jsonl", repo=repo) == "bench/corpus/a.jsonl"
    command = shown_command([sys.executable, "-m", "x", "--model", str(repo / "m.gguf"), "--build",
                             "native=/opt/venv/bin/python", "--limit", "5"], repo=repo)
    assert command == ["python", "-m", "x", "--model", "m.gguf", "--build", "native=…/bin/python", "--limit", "5"]
    assert not any(MACHINE_PATH.search(part) for part in
                   shown_command([sys.executable, str(tmp_path / "work" / "x.py")], repo=repo))

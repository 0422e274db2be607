"""Which code made a result: the git commit of the checkout the package runs from, and whether its tree
had changes that no commit holds. Written into every bench run.json and every trained model's meta.json,
so a number can be traced to the code that produced it."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Optional

# The checkout this package sits in (router/core/ -> the repository root), when it is one.
SOURCE_ROOT = Path(__file__).resolve().parents[2]
GIT_TIMEOUT_S = 10.0


def code_provenance(root: Optional[Path] = None) -> dict[str, object]:
    """{"commit": HEX or None, "dirty": bool or None}; None where the code is not a git checkout (an
    installed wheel) or git is missing. Untracked files count as changes only where git shows them."""
    root = root or SOURCE_ROOT
    try:
        commit = _git(root, "rev-parse", "HEAD")
        status = _git(root, "status", "--porcelain", "--untracked-files=normal")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(status)}


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=GIT_TIMEOUT_S,
                          check=True)
    return done.stdout.strip()

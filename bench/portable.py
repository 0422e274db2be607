"""Paths and commands as a committed result shows them: never a path of the machine that made it.

A result names its inputs so that anyone can run it again; an absolute path says only where one machine kept
its checkout, its data or its virtual environments. Inside the checkout a path is shown relative to it, the
shared data relative to the checkout too (`../shared/...`), and anything else by its last two parts.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]


def shown_path(path: os.PathLike[str] | str, *, repo: Optional[Path] = None) -> str:
    """`path` relative to the checkout when it is under it or beside it (`../shared/...`), else `…/parent/name`."""
    repo = (repo or REPO).resolve()
    text = os.fspath(path)
    if not os.path.isabs(text):
        return text
    resolved = Path(text).resolve()
    for base, prefix in ((repo, ""), (repo.parent, "../")):
        try:
            return prefix + resolved.relative_to(base).as_posix()
        except ValueError:
            continue
    return "…/" + "/".join(resolved.parts[-2:])


def shown_command(argv: Sequence[str], *, repo: Optional[Path] = None) -> list[str]:
    """A command line with the running interpreter shown as `python` and each absolute path (alone, or after
    `=` as in `--flag=PATH` or `name=PATH`) shown as `shown_path` shows it."""
    shown = []
    for arg in argv:
        if arg == sys.executable:
            shown.append("python")
            continue
        head, sep, tail = arg.rpartition("=")
        if sep and os.path.isabs(tail):
            shown.append(f"{head}={shown_path(tail, repo=repo)}")
        else:
            shown.append(shown_path(arg, repo=repo) if os.path.isabs(arg) else arg)
    return shown

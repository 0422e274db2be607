"""The `hybrid-router` command's first module: standard library only, so that `serve` and `info serve`
take SIGTERM a few milliseconds after the interpreter starts, before the slow imports (pydantic, grpc,
llama.cpp, onnxruntime).

A signal before this point gets the default action; nothing has started yet, so nothing is left behind.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from router.doors.stop_request import StopRequest


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    early_stop: Optional[StopRequest] = None
    if argv[:1] == ["serve"] or argv[:2] == ["info", "serve"]:
        early_stop = StopRequest()
        early_stop.install()
    from router.doors.cli import main as cli_main

    return cli_main(argv, early_stop=early_stop)


if __name__ == "__main__":
    sys.exit(main())

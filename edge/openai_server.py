"""llama-cpp-python's OpenAI-compatible server, with this machine's llama.cpp CPU code loaded first.

    python -m edge.openai_server --model FILE ...   (the same arguments as `python -m llama_cpp.server`)

A `dispatch` build (edge/llama_build.py) loads its CPU code at run time, which llama_cpp.server
never does on its own; the local cloud stand-in is started through this module for that reason.
"""
from __future__ import annotations

from edge.ggml_runtime import ensure_cpu_backend


def main() -> None:
    ensure_cpu_backend()
    from llama_cpp.server.__main__ import main as serve

    serve()


if __name__ == "__main__":
    main()

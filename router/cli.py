"""`hybrid-router`: serve, ask, models (and, as they land, stats, export, bench)."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Optional, Sequence

from router.config import ConfigError, Settings, load_settings
from router.errors import RouterError
from router.types import Mode

EXIT_USAGE = 2
EXIT_ERROR = 1


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(Path(args.config) if args.config else None, os.environ)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    import logging

    from router.logs import configure_logging
    from router.server import RouterServer

    configure_logging(settings.logging)
    logger = logging.getLogger("hybrid_router.server")

    async def run() -> int:
        server = RouterServer(settings, logger=logger)
        await server.start(args.listen)
        try:
            await server.load()
        except Exception as exc:  # a model or the stand-in failed to load: say why, leave no process behind
            logger.error("start-up failed", extra={"fields": {"error": str(exc), "type": type(exc).__name__}})
            await server.stop()
            return EXIT_ERROR
        await server.serve_until_stopped()
        return 0

    return asyncio.run(run())


def _json_default(value: object) -> object:
    if isinstance(value, Mode) or hasattr(value, "name"):
        return value.name
    return str(value)


def result_as_json(result: object) -> str:
    return json.dumps(asdict(result), default=_json_default, ensure_ascii=False)


def cmd_ask(args: argparse.Namespace) -> int:
    from router.client import RouterClient

    settings = _settings(args)
    target = args.target or settings.server.listen
    messages = ([{"role": "system", "content": args.system}] if args.system else [])
    messages.append({"role": "user", "content": args.question})
    fields = dict(messages=messages, mode=args.mode, max_tokens=args.max_tokens,
                  temperature=args.temperature, reference_answer=args.reference)
    with RouterClient(target, timeout_s=args.timeout) as client:
        if args.json:
            result = client.generate(**fields)
            print(result_as_json(result))
            return 0
        with client.stream(**fields) as stream:
            for delta in stream:
                print(delta.text, end="", flush=True)
        result = stream.result
        assert result is not None
        print()
        print(f"[served_by={result.served_by.name} mode={result.decision.mode.name} "
              f"model={result.run_for(result.served_by).model} cost=${result.cost_usd:.6f} "
              f"ttft={result.latency.ttft_s:.2f}s total={result.latency.total_s:.2f}s "
              f"tokens={sum(r.completion_tokens for r in result.runs)}]", file=sys.stderr)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from edge.catalogue import CATALOGUE

    from router.app import model_cache

    settings = _settings(args)
    cache = model_cache(settings)
    if args.action == "list":
        for status in cache.list():
            state = "verified" if status.verified else ("present" if status.present else "missing")
            print(f"{status.name:24} {state:9} {status.spec.size / 1e6:8.1f} MB  {status.path}")
        return 0
    names = args.names or ([settings.edge.model, settings.standin.model] if args.action == "pull"
                           else [s.name for s in cache.list() if s.present])
    unknown = [name for name in names if name not in CATALOGUE]
    if unknown:
        print(f"unknown model(s): {', '.join(unknown)}; known: {', '.join(CATALOGUE)}", file=sys.stderr)
        return EXIT_USAGE
    for name in names:
        if args.action == "pull":
            path = cache.pull(name, progress=lambda line: print(line, file=sys.stderr))
        else:
            path = cache.verify(name)
        print(f"{name}: ok {path}")
    return 0


DEMO_QUESTION = "A train travels 60 km in 45 minutes. What is its average speed in km/h?"


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on a fresh machine: start the daemon on the embedded default, ask, stop."""
    from router.client import RouterClient
    from router.launcher import LocalDaemon

    config = Path(args.config) if args.config else None
    print("starting the daemon on the embedded default (edge model + local cloud stand-in)...", file=sys.stderr)
    with LocalDaemon(config=config) as daemon, RouterClient(daemon.target, timeout_s=600) as client:
        info = client.info()
        print(f"edge:  {info.edge.name}\ncloud: {info.cloud.name}"
              f"{' (local stand-in, priced as ' + info.cloud.priced_as + ')' if info.cloud.local_standin else ''}")
        for mode in info.implemented_modes:
            result = client.generate(prompt=args.question, mode=mode, max_tokens=args.max_tokens)
            print(f"\n== {mode.name} ==\n{result.text.strip()}\n"
                  f"[served_by={result.served_by.name} cost=${result.cost_usd:.6f} "
                  f"(edge ${result.edge_cost_usd:.6f}, cloud ${result.cloud_cost_usd:.6f}) "
                  f"ttft={result.latency.ttft_s:.2f}s total={result.latency.total_s:.2f}s]")
        if args.no_bench:
            return 0
        from bench.__main__ import main as bench_main

        print("\nrunning the demo bench (built-in sample) on the same daemon...", file=sys.stderr)
        return bench_main(["--demo", "--target", daemon.target, "--out", str(args.out)])
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from bench.__main__ import main as bench_main

    return bench_main(args.bench_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hybrid-router", description=__doc__)
    parser.add_argument("--config", help="TOML config file (default: $HYBRID_ROUTER_CONFIG, else built-in defaults)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the daemon")
    serve.add_argument("--listen", help="host:port or unix:PATH (default: server.listen)")
    serve.set_defaults(func=cmd_serve)

    ask = commands.add_parser("ask", help="ask a running daemon one question")
    ask.add_argument("question")
    ask.add_argument("--mode", default="unspecified", help="edge, cloud, ... (default: the daemon's default_mode)")
    ask.add_argument("--target", help="daemon address (default: server.listen)")
    ask.add_argument("--system", help="a system message")
    ask.add_argument("--max-tokens", type=int)
    ask.add_argument("--temperature", type=float)
    ask.add_argument("--reference", help="a reference answer, used only to score accuracy")
    ask.add_argument("--timeout", type=float, default=600.0)
    ask.add_argument("--json", action="store_true", help="print the whole result as one JSON object")
    ask.set_defaults(func=cmd_ask)

    models = commands.add_parser("models", help="pull, list or verify the local models")
    models.add_argument("action", choices=("pull", "list", "verify"))
    models.add_argument("names", nargs="*", help="catalogue names (default: the configured edge and stand-in)")
    models.set_defaults(func=cmd_models)
    demo = commands.add_parser("demo", help="start a daemon, ask one question in every mode, stop")
    demo.add_argument("--question", default=DEMO_QUESTION)
    demo.add_argument("--max-tokens", type=int, default=200)
    demo.add_argument("--out", default="bench/out/demo", help="where the demo bench writes its results")
    demo.add_argument("--no-bench", action="store_true", help="only ask the question")
    demo.set_defaults(func=cmd_demo)

    bench = commands.add_parser("bench", help="run the benchmark (same options as python -m bench)",
                                add_help=False)
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"hybrid-router: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RouterError as exc:
        print(f"hybrid-router: {type(exc).__name__}: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

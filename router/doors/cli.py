"""`hybrid-router`: serve, ask, stats, feedback, export, models, demo, doctor, selftest, train-arbiter, train-router,
train-probe, finetune, adapter, info.

The bench is not a verb here: it sits above the router and talks to it through the SDK (`python -m bench`)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from types import MappingProxyType
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from cloud.info.errors import InfoIndexError
from edge.errors import EdgeError
from router.doors.client_options import add_client_options, client_trust_args
from router.domain.config import ConfigError, Settings, load_settings
from router.domain.errors import RouterError
from router.domain.types import DraftDiscarded, Mode

if TYPE_CHECKING:  # imported lazily at run time: grpc is slow to import, and most commands never need it
    from router.client import GenerateStream

EXIT_USAGE = 2
EXIT_ERROR = 1


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(Path(args.config) if args.config else None, os.environ)


def with_address(settings: Settings, section: str, address: str) -> Settings:
    """The settings with `[section] address` set from the command line, checked as the file's would be."""
    try:
        chosen = type(getattr(settings, section)).model_validate({"address": address})
    except ValueError as exc:
        raise ConfigError(f"--{section} {address}: {exc.errors()[0]['msg'] if hasattr(exc, 'errors') else exc}") from None
    return settings.model_copy(update={section: chosen})


def cmd_serve(args: argparse.Namespace) -> int:
    from router.doors.serve_command import serve, take_stop_signals  # standard library only: quick

    early_stop = take_stop_signals(args.early_stop)
    settings = _settings(args)
    for section, address in (("http", args.http), ("metrics", args.metrics)):
        if address is not None:
            settings = with_address(settings, section, address)
    from router.doors.server import RouterServer

    return serve(early_stop, settings, args.listen, build=lambda s, logger: RouterServer(s, logger=logger),
                 logger_name="hybrid_router.server", default_address=settings.server.listen)


def _json_default(value: object) -> object:
    if isinstance(value, Mode) or hasattr(value, "name"):
        return value.name
    return str(value)


def result_as_json(result: object) -> str:
    return json.dumps(asdict(result), default=_json_default, ensure_ascii=False)


def draft_discarded_marker(event: DraftDiscarded) -> str:
    """What `ask` prints on stderr where text it has already shown stops being the answer."""
    why = f": {event.reason}" if event.reason else ""
    return f"[discarded the {event.discarded.name.lower()} draft{why}; the {event.next.name.lower()} answers]"


def print_streamed_answer(stream: GenerateStream) -> None:
    """Prints the answer as it streams. A discarded draft stays printed (text sent to a pipe cannot be
    taken back): its line is ended, a marker on stderr says it is discarded, and the answer follows."""
    line_open = False  # text printed on a line not yet ended
    for event in stream.events():
        if isinstance(event, DraftDiscarded):
            if line_open:
                print(flush=True)  # so that the marker stands on its own line on a terminal
                line_open = False
            print(draft_discarded_marker(event), file=sys.stderr, flush=True)
        else:
            print(event.text, end="", flush=True)
            line_open = line_open or bool(event.text)


def cmd_ask(args: argparse.Namespace) -> int:
    from router.client import RouterClient

    settings = _settings(args)
    target = args.target or settings.server.listen
    messages = ([{"role": "system", "content": args.system}] if args.system else [])
    messages.append({"role": "user", "content": args.question})
    fields = dict(messages=messages, mode=args.mode, max_tokens=args.max_tokens,
                  temperature=args.temperature, reference_answer=args.reference)
    with RouterClient(target, timeout_s=args.timeout, **client_trust_args(args, settings, target)) as client:
        if args.json:
            result = client.generate(**fields)
            print(result_as_json(result))
            return 0
        with client.stream(**fields) as stream:
            print_streamed_answer(stream)
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

    from router.assembly.parts import model_cache

    settings = _settings(args)
    cache = model_cache(settings)
    if args.action == "list":
        for status in cache.list():
            state = "verified" if status.verified else ("present" if status.present else "missing")
            print(f"{status.name:24} {state:9} {status.spec.size / 1e6:8.1f} MB  {status.path}")
        return 0
    # By default, what this configuration runs: the edge, the stand-in, and the in-process Info
    # service's encoder.
    defaults = [settings.edge.model, settings.standin.model]
    if settings.info.service == "in_process":
        defaults.append(settings.info.encoder)
    names = args.names or (defaults if args.action == "pull" else [s.name for s in cache.list() if s.present])
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
    from router.doors.launcher import LocalDaemon

    config = Path(args.config) if args.config else None
    print("starting the daemon on the embedded default (edge model + local cloud stand-in)...", file=sys.stderr)
    with LocalDaemon(config=config) as daemon, daemon.client(timeout_s=600) as client:
        info = client.info()
        print(f"edge:  {info.edge.name}{' with LoRA adapter ' + info.edge.adapter if info.edge.adapter else ''}"
              f"\ncloud: {info.cloud.name}"
              f"{' (local stand-in, priced as ' + info.cloud.priced_as + ')' if info.cloud.local_standin else ''}")
        for mode in info.implemented_modes:
            result = client.generate(prompt=args.question, mode=mode, max_tokens=args.max_tokens)
            print(f"\n== {mode.name} ==\n{result.text.strip()}\n"
                  f"[served_by={result.served_by.name} cost=${result.cost_usd:.6f} "
                  f"(edge ${result.edge_cost_usd:.6f}, cloud ${result.cloud_cost_usd:.6f}) "
                  f"ttft={result.latency.ttft_s:.2f}s total={result.latency.total_s:.2f}s]")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from router.doors.doctor import run_checks

    checks = run_checks(_settings(args), listen=args.listen, skip_cloud=args.skip_cloud)
    failed = [check for check in checks if not check.ok]
    print(f"{len(checks) - len(failed)} of {len(checks)} checks ok" + (f"; {len(failed)} to fix" if failed else ""))
    return EXIT_ERROR if failed else 0


def cmd_selftest(args: argparse.Namespace) -> int:
    """The install-time guard (make run / make test): one decode of the test model in a child process."""
    from edge.catalogue import ModelCache
    from edge.selftest import EXIT_CRASHED, run_selftest

    from router.doors.doctor import TEST_MODEL

    model = ModelCache(_settings(args).models.cache_dir.expanduser()).require(TEST_MODEL)
    result = run_selftest(model)
    print(result.summary, file=sys.stdout if result.ok else sys.stderr)
    if result.ok:
        return 0
    return EXIT_CRASHED if result.signal_name else EXIT_ERROR


def cmd_train_arbiter(args: argparse.Namespace) -> int:
    """Train the learned deferral model on the labelled corpus and/or the ledger; writes a new version directory."""
    from router.core.arbiters.features import FEATURE_NAMES

    return _train(args, "train-arbiter", "router.core.arbiters.training", "train_from_rows",
                  need_features=FEATURE_NAMES)


def cmd_train_router(args: argparse.Namespace) -> int:
    """Train PRE_ARBITRATION's router on the labelled corpus and/or the ledger; writes a new version directory."""
    return _train(args, "train-router", "router.core.routing.training", "train_router", need_features=())


def cmd_train_probe(args: argparse.Namespace) -> int:
    """Train a probe on the labelled corpus and the edge's hidden states of its items; writes a new version
    directory bound to the edge model the states were read from."""
    try:
        from router.core.probes.training import train_probe
    except ImportError as exc:  # scikit-learn / skl2onnx are the [train] extra, not daemon dependencies
        print(f"hybrid-router: train-probe needs the [train] extra ({exc}); run `pip install -e '.[train]'`",
              file=sys.stderr)
        return EXIT_ERROR
    from router.core.arbiters.corpus import TrainingError, read_corpus
    from router.core.learning.training_sets import file_sha256
    from router.core.probes.model import DRAFT_PROBE_KIND, PREFILL_PROBE_KIND
    from router.core.probes.states_file import HiddenStatesFile

    kind = {"draft": DRAFT_PROBE_KIND, "prefill": PREFILL_PROBE_KIND}[args.at]
    try:
        corpus = Path(args.corpus)
        rows = read_corpus(corpus)
        states = HiddenStatesFile.load(Path(args.states))
        provenance = {"path": corpus.as_posix(), "lines": len(rows), "sha256": file_sha256(corpus),
                      "states": {"path": Path(args.states).name, "items": len(states)}}
        directory = train_probe(rows, states, Path(args.out), kind=kind, provenance=provenance,
                                components=args.state_components)
    except TrainingError as exc:
        print(f"hybrid-router: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return _report_trained(directory)


def _report_trained(directory: Path) -> int:
    """What every trainer prints: the held-out metrics on stderr, the new version directory on stdout."""
    meta = json.loads((directory / "meta.json").read_text())
    print(json.dumps(meta["metrics"], indent=2), file=sys.stderr)
    print(directory)
    return 0


def _train(args: argparse.Namespace, verb: str, module: str, function: str, *, need_features: Sequence[str]) -> int:
    """The two trainers' shared command: rows from --corpus and/or --ledger, the encoder unless
    --features-only, a new version directory printed on stdout and its metrics on stderr."""
    if not args.corpus and not args.ledger:
        print(f"hybrid-router {verb}: give --corpus FILE (the labelled corpus, bench/corpus/arbitration.jsonl), "
              "--ledger FILE (the daemon's ledger.path), or both", file=sys.stderr)
        return EXIT_USAGE
    if args.since is not None and not args.ledger:
        print(f"hybrid-router {verb}: --since selects ledger requests; give --ledger FILE too", file=sys.stderr)
        return EXIT_USAGE
    if args.features_only and args.embedding_components:
        print(f"hybrid-router {verb}: --embedding-components keeps part of the embedding, which --features-only "
              "leaves out; give one of them", file=sys.stderr)
        return EXIT_USAGE
    try:
        import importlib

        train = getattr(importlib.import_module(module), function)
    except ImportError as exc:  # scikit-learn / skl2onnx are the [train] extra, not daemon dependencies
        print(f"hybrid-router: {verb} needs the [train] extra ({exc}); run `pip install -e '.[train]'`",
              file=sys.stderr)
        return EXIT_ERROR
    from edge.encoder import ENCODER_MODEL, TextEncoder

    from router.assembly.parts import model_cache
    from router.core.arbiters.corpus import TrainingError
    from router.core.learning.training_sets import training_rows

    try:
        rows, provenance = training_rows(corpus=Path(args.corpus) if args.corpus else None,
                                         ledger=Path(args.ledger) if args.ledger else None,
                                         since=args.since, need_features=need_features,
                                         features_only=args.features_only,
                                         log=lambda line: print(line, file=sys.stderr))
        if args.features_only:
            directory = train(rows, Path(args.out), provenance=provenance)
        else:
            encoder = TextEncoder.from_cache(model_cache(_settings(args)))
            directory = train(rows, Path(args.out), provenance=provenance, components=args.embedding_components,
                              encode=lambda text: encoder.encode([text])[0], embedding_model=ENCODER_MODEL)
    except TrainingError as exc:
        print(f"hybrid-router: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return _report_trained(directory)


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return value


DURATION_UNITS = MappingProxyType({"s": 1, "m": 60, "h": 3600, "d": 86400})


def parse_since(text: str, now: Optional[float] = None) -> float:
    """'30m', '2h', '7d' ago, or an ISO date/time (UTC unless it says otherwise), as a Unix time."""
    from datetime import datetime, timezone

    now = time.time() if now is None else now
    unit = DURATION_UNITS.get(text[-1:])
    if unit and text[:-1].replace(".", "", 1).isdigit():
        return now - float(text[:-1]) * unit
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--since {text!r}: give a duration such as 30m, 2h or 7d, or a date such as 2026-11-22") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _fmt(value: Optional[float], spec: str, suffix: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{suffix}"


def cmd_reload(args: argparse.Namespace) -> int:
    """Swap PRE_ARBITRATION's router in the running daemon; a refused model leaves the old one in use."""
    from router.client import RouterClient

    settings = _settings(args)
    with RouterClient(args.target or settings.server.listen, timeout_s=120,
                      **client_trust_args(args, settings, args.target or settings.server.listen)) as client:
        previous, current = client.reload(model_dir=str(Path(args.model_dir).expanduser().resolve())
                                          if args.model_dir else None)
    print(f"router: {previous} -> {current}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from router.client import RouterClient

    settings = _settings(args)
    with RouterClient(args.target or settings.server.listen, timeout_s=60,
                      **client_trust_args(args, settings, args.target or settings.server.listen)) as client:
        report = client.stats(since_unix_s=args.since)
    if args.json:
        print(result_as_json(report))
        return 0
    ledger = report.ledger
    state = "ok" if ledger.ok else f"DEGRADED: {ledger.reason}"
    print(f"ledger: {state} (written {ledger.written}, queued {ledger.queue_depth}, "
          f"dropped {ledger.dropped_writes}, failed {ledger.failed_writes})")
    header = (f"{'mode':22} {'requests':>8} {'cloud':>6} {'$/1k':>10} {'cloud $/1k':>10} {'edge $/1k':>10} "
              f"{'judge $/1k':>10} "
              f"{'p50 s':>7} {'p95 s':>7}  accuracy")
    print(header)
    for mode in report.modes:
        accuracy = ", ".join(
            f"{a.kind} {_fmt(a.share_correct if a.share_correct is not None else a.mean_score, '.2f')} (n={a.count})"
            for a in mode.accuracy) or "–"
        name = mode.mode.name if isinstance(mode.mode, Mode) else str(mode.mode)
        if mode.version:  # an arbitration mode, one row per deciding router or scorer
            print(f"{name}, decided by {mode.version}:")
        print(f"{name:22} {mode.requests:>8} {mode.cloud_share:>6.0%} {mode.usd_per_1k:>10.5f} "
              f"{mode.cloud_usd_per_1k:>10.5f} {mode.edge_usd_per_1k:>10.5f} {mode.judge_usd_per_1k:>10.5f} "
              f"{_fmt(mode.latency_p50_s, '7.2f')} {_fmt(mode.latency_p95_s, '7.2f')}  {accuracy}")
    return 0


def cmd_feedback(args: argparse.Namespace) -> int:
    from router.client import RouterClient

    settings = _settings(args)
    thumbs = True if args.thumbs_up else (False if args.thumbs_down else None)
    with RouterClient(args.target or settings.server.listen, timeout_s=60,
                      **client_trust_args(args, settings, args.target or settings.server.listen)) as client:
        client.feedback(args.request_id, score=args.score, thumbs_up=thumbs, corrected_answer=args.correct)
    print(f"feedback recorded for {args.request_id}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Reads the ledger file directly: no daemon needed, and WAL lets it run beside one."""
    from datetime import datetime, timezone

    from router.core.learning.sft import export_ledger_file

    settings = _settings(args)
    path = settings.ledger.path.expanduser()
    if not path.exists():
        print(f"hybrid-router: no ledger at {path} (ledger.path); serve some requests first", file=sys.stderr)
        return EXIT_ERROR
    since = datetime.fromtimestamp(args.since, tz=timezone.utc) if args.since is not None else None
    report = export_ledger_file(path, args.format, Path(args.out), log_content=settings.ledger.log_content,
                                since=since, mode=args.mode, min_score=args.min_score, split_seed=args.split_seed,
                                validation_fraction=args.validation_fraction)
    print(result_as_json(report))
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    """Edits the principals file directly: no daemon needed, and a running one re-reads it."""
    from router.core.auth import PrincipalsFile
    from router.core.auth.principals import write_private
    from router.domain.access import Role

    settings = _settings(args)
    principals = PrincipalsFile(settings.auth.principals_file)
    if args.token_action == "list":
        for entry in principals.entries():
            p = entry.principal
            print(f"{p.name:24} {p.role.value:8} groups={','.join(p.groups) or '-'} tokens={len(entry.token_sha256)}"
                  f"{' cert_cn=' + entry.cert_cn if entry.cert_cn else ''}")
        return 0
    if args.token_action == "revoke":
        if not principals.revoke(args.name):
            print(f"hybrid-router: no principal {args.name!r} in {principals.path}", file=sys.stderr)
            return EXIT_ERROR
        print(f"revoked {args.name}")
        return 0
    groups = tuple(g.strip() for g in args.groups.split(",") if g.strip())
    token = principals.issue(args.name, Role(args.role), groups, cert_cn=args.cert_cn)
    if args.out is not None:
        write_private(args.out, token + "\n")
        print(f"token for {args.name} written to {args.out}", file=sys.stderr)
    else:
        print(token)
    return 0


def _mode_argument(name: str) -> Mode:
    try:
        return Mode.parse(name)
    except ValueError as exc:  # argparse turns this into a usage error naming the known modes
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    config_help = "TOML config file (default: $HYBRID_ROUTER_CONFIG, else built-in defaults)"
    parser = argparse.ArgumentParser(prog="hybrid-router", description=__doc__)
    parser.add_argument("--config", help=config_help)
    # --config is accepted after the command too; SUPPRESS keeps a top-level value when it is absent there.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help=config_help)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", parents=[common], help="run the daemon")
    serve.add_argument("--listen", help="host:port or unix:PATH (default: server.listen)")
    serve.add_argument("--http", metavar="HOST:PORT", help="also serve the OpenAI-compatible HTTP door there "
                       "(default: http.address; off when empty), e.g. 127.0.0.1:8080")
    serve.add_argument("--metrics", metavar="HOST:PORT", help="also serve Prometheus metrics at /metrics there "
                       "(default: metrics.address; off when empty), e.g. 127.0.0.1:9464")
    serve.set_defaults(func=cmd_serve)

    ask = commands.add_parser("ask", parents=[common], help="ask a running daemon one question")
    ask.add_argument("question")
    ask.add_argument("--mode", default="unspecified", help="edge, cloud, ... (default: the daemon's default_mode)")
    ask.add_argument("--target", help="daemon address (default: server.listen)")
    add_client_options(ask)
    ask.add_argument("--system", help="a system message")
    ask.add_argument("--max-tokens", type=int)
    ask.add_argument("--temperature", type=float)
    ask.add_argument("--reference", help="a reference answer, used only to score accuracy")
    ask.add_argument("--timeout", type=float, default=600.0)
    ask.add_argument("--json", action="store_true", help="print the whole result as one JSON object")
    ask.set_defaults(func=cmd_ask)

    models = commands.add_parser("models", parents=[common], help="pull, list or verify the local models")
    models.add_argument("action", choices=("pull", "list", "verify"))
    models.add_argument("names", nargs="*", help="catalogue names (default: the configured edge and stand-in)")
    models.set_defaults(func=cmd_models)
    reload = commands.add_parser("reload", parents=[common],
                                 help="load PRE_ARBITRATION's router anew in the running daemon, without a restart")
    reload.add_argument("--model-dir", help="a version directory from train-router (default: routing.model_dir)")
    reload.add_argument("--target", help="daemon address (default: server.listen)")
    add_client_options(reload)
    reload.set_defaults(func=cmd_reload)

    stats = commands.add_parser("stats", parents=[common], help="aggregates per mode from the daemon's ledger")
    stats.add_argument("--since", type=parse_since, help="30m, 2h, 7d or an ISO date/time")
    stats.add_argument("--target", help="daemon address (default: server.listen)")
    add_client_options(stats)
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(func=cmd_stats)

    feedback = commands.add_parser("feedback", parents=[common], help="rate an answer by its request id")
    feedback.add_argument("request_id")
    feedback.add_argument("--score", type=float, help="0..1")
    thumbs = feedback.add_mutually_exclusive_group()
    thumbs.add_argument("--thumbs-up", action="store_true")
    thumbs.add_argument("--thumbs-down", action="store_true")
    feedback.add_argument("--correct", help="the corrected answer")
    feedback.add_argument("--target", help="daemon address (default: server.listen)")
    add_client_options(feedback)
    feedback.set_defaults(func=cmd_feedback)

    export = commands.add_parser("export", parents=[common], help="write training data from the ledger")
    export.add_argument("--format", required=True, choices=("openai", "sharegpt", "dpo"))
    export.add_argument("--out", required=True, help="output JSONL file")
    export.add_argument("--since", type=parse_since, help="30m, 2h, 7d or an ISO date/time")
    export.add_argument("--mode", type=_mode_argument, help="only requests of this mode (edge, cloud, ...)")
    export.add_argument("--min-score", type=float, default=0.8, help="judge/feedback score that counts as good")
    export.add_argument("--split-seed", type=int, help="write a seeded train/validation split")
    export.add_argument("--validation-fraction", type=float, default=0.1)
    export.set_defaults(func=cmd_export)

    demo = commands.add_parser("demo", parents=[common], help="start a daemon, ask one question in every mode, stop")
    demo.add_argument("--question", default=DEMO_QUESTION)
    demo.add_argument("--max-tokens", type=int, default=200)
    demo.set_defaults(func=cmd_demo)

    doctor = commands.add_parser("doctor", parents=[common], help="check this machine: CPU, llama.cpp build, "
                                 "self-test, models, cloud, ledger, port")
    doctor.add_argument("--listen", help="address to check (default: server.listen)")
    doctor.add_argument("--skip-cloud", action="store_true", help="do not start the stand-in or call the provider")
    doctor.set_defaults(func=cmd_doctor)
    selftest = commands.add_parser("selftest", parents=[common],
                                   help="one short decode of the test model in a child process")
    selftest.set_defaults(func=cmd_selftest)
    token = commands.add_parser("token", parents=[common], help="issue, list or revoke principals' tokens "
                                "(auth.principals_file; a running daemon sees the change at once)")
    token_verbs = token.add_subparsers(dest="token_action", required=True)
    issue = token_verbs.add_parser("issue", parents=[common], help="a new token for a principal (shown once)")
    issue.add_argument("--name", required=True, help="the principal's name, as the ledger records it")
    issue.add_argument("--role", choices=("user", "admin", "service", "monitor"), default="user",
                       help="user: generate, retrieve, label its own requests; admin: also ingest, delete, reload, "
                       "Stats, metrics; service: a daemon retrieving for its own callers; monitor: scrape /metrics "
                       "only (default: user)")
    issue.add_argument("--groups", default="", help="g1,g2: the document groups it reads (* for all)")
    issue.add_argument("--cert-cn", help="also accept a client certificate with this common name (mTLS)")
    issue.add_argument("--out", type=Path, help="write the token to this file (0600) instead of stdout")
    token_verbs.add_parser("list", parents=[common], help="the principals, without their tokens")
    revoke = token_verbs.add_parser("revoke", parents=[common], help="remove a principal and all its tokens")
    revoke.add_argument("--name", required=True)
    token.set_defaults(func=cmd_token)
    from router.doors import info_cli  # here, not at the top: info_cli imports this module

    info_cli.add_parser(commands, common)  # `info serve|ingest|retrieve|delete|stats`, dispatched by its run()
    from router.doors import adapter_cli  # `finetune` and `adapter list|use|rollback`

    adapter_cli.add_parsers(commands, common)

    for verb, helps, func in (
            ("train-arbiter", ("train the learned deferral model (arbitration.scorer = learned)",
                               "no question embedding"), cmd_train_arbiter),
            ("train-router", ("train PRE_ARBITRATION's router (routing.model_dir); load it into a running daemon "
                              "with `hybrid-router reload`", "no embedding of the request"), cmd_train_router)):
        train = commands.add_parser(verb, parents=[common], help=helps[0])
        train.add_argument("--corpus", help="labelled corpus JSONL (bench/corpus/arbitration.jsonl)")
        train.add_argument("--ledger", help="a ledger database (ledger.path): its labelled POST_ARBITRATION "
                                            "requests (read-only; with --corpus, the rows of both)")
        train.add_argument("--since", type=parse_since,
                           help="with --ledger: only requests since 30m, 2h, 7d or an ISO date/time")
        train.add_argument("--out", required=True, help="directory that receives a new version directory vNNNN")
        train.add_argument("--features-only", action="store_true", help=helps[1])
        train.add_argument("--embedding-components", type=_non_negative_int, default=None, metavar="N",
                           help="keep N principal components of the embedding (0: none) instead of letting "
                                "cross-validation choose among 0, 8 and 32")
        train.set_defaults(func=func)
    probe = commands.add_parser("train-probe", parents=[common],
                                help="train a probe on the edge's hidden states: --at draft for POST_ARBITRATION's "
                                     "probe scorer (arbitration.probe_dir), --at prefill for the decision after the "
                                     "prefill (routing.probe_dir, AUTO)")
    probe.add_argument("--corpus", required=True, help="labelled corpus JSONL (bench/corpus/arbitration.jsonl)")
    probe.add_argument("--states", required=True,
                       help="the edge's hidden states of the corpus items (python -m bench.hidden_states)")
    probe.add_argument("--at", choices=("draft", "prefill"), required=True,
                       help="draft: the state at the end of the edge's answer; prefill: at the end of the prompt")
    probe.add_argument("--out", required=True, help="directory that receives a new version directory vNNNN")
    probe.add_argument("--state-components", type=_non_negative_int, default=None, metavar="N",
                       help="keep N principal components of the state (0: none) instead of letting "
                            "cross-validation choose")
    probe.set_defaults(func=cmd_train_probe)
    return parser


def main(argv: Optional[Sequence[str]] = None, *, early_stop: Optional[object] = None) -> int:
    """`early_stop`: a router.doors.stop_request.StopRequest that router/doors/entry.py installed for
    `serve` and `info serve`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.early_stop = early_stop
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"hybrid-router: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RouterError as exc:
        print(f"hybrid-router: {type(exc).__name__}: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except EdgeError as exc:  # a missing or corrupt model file: the message names the fix
        print(f"hybrid-router: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except InfoIndexError as exc:  # the in-process Info index cannot open: its message names where and why
        print(f"hybrid-router: the Info index: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""`hybrid-router finetune` (train a LoRA for the edge model) and `hybrid-router adapter list|use|rollback`
(the versions in the adapter store, and which one the daemon runs).

`finetune` runs in its own process, never in the daemon's, and needs the [finetune] extra. `adapter use`
and `rollback` ask a running daemon to swap (`UseAdapter`: it loads the adapter first, and the store
records the change only once the edge runs on it); with no daemon running they change the store, and
the daemon starts on that version.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from edge.adapter_store import BASE_ONLY, AdapterStore, AdapterStoreError
from edge.errors import EdgeError
from edge.lora_adapter import file_sha256

if TYPE_CHECKING:
    from router.assembly.parts import ResolvedModel
    from router.domain.config import Settings

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
# How gRPC says that nothing listens at an address (a unix socket that is not there, a refused port).
_NOTHING_LISTENS = ("No such file or directory", "Connection refused")
_FINETUNE_EXTRA = "pip install -e '.[finetune]'"


def add_parsers(commands: "argparse._SubParsersAction[argparse.ArgumentParser]",
                common: argparse.ArgumentParser) -> None:
    from router.doors import augment_cli
    from router.doors.client_options import add_client_options

    augment_cli.add_parser(commands, common)

    finetune = commands.add_parser(
        "finetune", parents=[common], help="train a LoRA adapter for the edge model on chat examples",
        description="Train a LoRA adapter for the edge model (docs/finetune.md), convert it to GGUF, check it "
                    "against transformers, and optionally add it to the adapter store. Resumable: run it again "
                    "with the same --out to continue from the last checkpoint.")
    source = finetune.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, action="append",
                        help="OpenAI chat JSONL (what `hybrid-router export --format openai` writes); repeatable")
    source.add_argument("--ledger", action="store_true",
                        help="export the training set from the daemon's ledger (ledger.path) first: good cloud "
                             "answers and user corrections, as `export --format openai` selects them")
    finetune.add_argument("--out", type=Path, required=True, help="the run's directory (checkpoints, adapter, report)")
    finetune.add_argument("--min-score", type=float, default=0.8, help="with --ledger: judge/feedback score that counts as good")
    finetune.add_argument("--steps", type=int, default=200, help="optimizer steps (default 200)")
    finetune.add_argument("--batch-size", type=int, default=4, help="examples per step (default 4)")
    finetune.add_argument("--rank", type=int, default=8, help="LoRA rank (default 8)")
    finetune.add_argument("--alpha", type=float, default=16.0, help="LoRA alpha (default 16)")
    finetune.add_argument("--learning-rate", type=float, default=2e-4, help="AdamW learning rate (default 2e-4)")
    finetune.add_argument("--targets", default="q_proj,v_proj",
                          help="projections to adapt, comma-separated, of q_proj k_proj v_proj o_proj gate_proj "
                               "up_proj down_proj (default q_proj,v_proj)")
    finetune.add_argument("--threads", type=int, default=1, help="torch threads (default 1: see docs/finetune.md)")
    finetune.add_argument("--seed", type=int, default=0)
    finetune.add_argument("--checkpoint-every", type=int, default=20, help="steps between checkpoints (default 20)")
    finetune.add_argument("--max-example-tokens", type=int, default=1024,
                          help="longer examples (prompt plus answer) are skipped (default 1024)")
    finetune.add_argument("--install", action="store_true",
                          help="add the checked adapter to the adapter store as a new version (not yet used)")
    finetune.set_defaults(func=cmd_finetune)

    improve = commands.add_parser(
        "improve", parents=[common], help="export, fine-tune, evaluate and install an adapter, in one resumable run",
        description="The cloud teaches the edge (docs/finetune.md): export the ledger's good answers, fine-tune a "
                    "LoRA, evaluate it against the edge without it on held-out examples, install it only if it "
                    "wins on its task and loses at most --max-loss elsewhere, and report which trained models are "
                    "now stale. Run it again with the same --out to resume.")
    improve.add_argument("--out", type=Path, required=True, help="the run's directory")
    improve.add_argument("--steps", type=int, default=200, help="fine-tuning steps (default 200)")
    improve.add_argument("--learning-rate", type=float, default=2e-4, help="AdamW learning rate (default 2e-4)")
    improve.add_argument("--since", type=float, dest="since_unix_s", help="only requests after this Unix time")
    improve.add_argument("--min-score", type=float, default=0.8, help="judge/feedback score that counts as good")
    improve.add_argument("--min-gain", type=float, default=0.0,
                         help="the gain on the target task the adapter must exceed (default 0)")
    improve.add_argument("--max-loss", type=float, default=0.02,
                         help="the most it may lose on any other task (default 0.02: 2 points)")
    improve.add_argument("--no-install", action="store_true", help="evaluate, but install nothing")
    improve.add_argument("--target", help="daemon address to swap (default: server.listen)")
    add_client_options(improve)
    improve.set_defaults(func=cmd_improve)

    adapter = commands.add_parser("adapter", help="the edge's LoRA adapters: list, use, roll back")
    verbs = adapter.add_subparsers(dest="adapter_command", required=True)
    listing = verbs.add_parser("list", parents=[common], help="the versions in the store, and the one in use")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_adapter_list)
    use = verbs.add_parser("use", parents=[common], help="run the edge on a version (none: the base model alone)")
    use.add_argument("version", help="a version such as v0003, or none")
    use.add_argument("--target", help="daemon address (default: server.listen)")
    add_client_options(use)
    use.set_defaults(func=cmd_adapter_use)
    rollback = verbs.add_parser("rollback", parents=[common], help="go back to what was in use before the last change")
    rollback.add_argument("--target", help="daemon address (default: server.listen)")
    add_client_options(rollback)
    rollback.set_defaults(func=cmd_adapter_rollback)


def _edge_model(settings: "Settings") -> "ResolvedModel":
    from router.assembly.adapters import edge_model_file

    return edge_model_file(settings)


def _store(settings: "Settings") -> AdapterStore:
    return AdapterStore(settings.models.adapters_dir, _edge_model(settings).name)


def cmd_finetune(args: argparse.Namespace) -> int:
    try:
        from edge.finetune import finetune
        from edge.lora_training import FineTuneError, LoraTrainingConfig, read_chat_examples
    except ImportError as exc:
        print(f"hybrid-router finetune: needs the [finetune] extra ({exc}); run `{_FINETUNE_EXTRA}`", file=sys.stderr)
        return EXIT_ERROR
    from edge.lora_gguf import AdapterConversionError
    from router.doors.cli import _settings

    settings = _settings(args)
    try:
        model = _edge_model(settings)
        config = LoraTrainingConfig(
            rank=args.rank, alpha=args.alpha, target_modules=tuple(t for t in args.targets.split(",") if t),
            learning_rate=args.learning_rate, batch_size=args.batch_size, steps=args.steps, seed=args.seed,
            threads=args.threads, checkpoint_every=args.checkpoint_every, max_example_tokens=args.max_example_tokens)
        files = list(args.data) if args.data else [_export_ledger(settings, args.out, args.min_score)]
        examples = [example for path in files for example in read_chat_examples(path)]
        result = finetune(model.path, base_name=model.name, base_sha256=model.sha256, examples=examples,
                          out_dir=args.out, config=config, log=lambda line: print(line, file=sys.stderr))
    except (FineTuneError, AdapterConversionError, OSError) as exc:
        print(f"hybrid-router finetune: {exc}", file=sys.stderr)
        return EXIT_ERROR
    report = json.loads((args.out / "report.json").read_text())
    print(json.dumps({key: report[key] for key in ("training", "adapter", "check")}, indent=2), file=sys.stderr)
    if args.install:
        try:
            version = _store(settings).add(result.adapter, base_sha256=model.sha256,
                                           source={"finetune": str(args.out.resolve()), "report": report})
        except (AdapterStoreError, OSError) as exc:
            print(f"hybrid-router finetune: the adapter is at {result.adapter}, but adding it to the store failed: "
                  f"{exc}", file=sys.stderr)
            return EXIT_ERROR
        print(f"added {version.version}; run `hybrid-router adapter use {version.version}` to serve it", file=sys.stderr)
    print(result.adapter)
    return EXIT_OK


def _export_ledger(settings: "Settings", out_dir: Path, min_score: float) -> Path:
    from router.core.learning.lora import lora_training_set

    path = settings.ledger.path.expanduser()
    if not path.exists():
        raise OSError(f"no ledger at {path} (ledger.path); serve some requests first, or give --data")
    from edge.lora_training import DATA_DIR

    target = out_dir / DATA_DIR / "ledger-export.jsonl"
    if target.exists() and (out_dir / "checkpoint").exists():
        # A run under way trains on the set it started with: the ledger has grown since, and a resumed run
        # must see the same examples (a new run, in a new --out, takes the new ones).
        print(f"resuming on the training set exported when the run began: {target}", file=sys.stderr)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    report = lora_training_set(path, target, log_content=settings.ledger.log_content, min_score=min_score)
    print(f"exported from {path}: {json.dumps(report.__dict__, default=str)}", file=sys.stderr)
    return target


def cmd_improve(args: argparse.Namespace) -> int:
    try:
        import edge.finetune  # noqa: F401  (the [finetune] extra, checked before any stage runs)
    except ImportError as exc:
        print(f"hybrid-router improve: needs the [finetune] extra ({exc}); run `{_FINETUNE_EXTRA}`", file=sys.stderr)
        return EXIT_ERROR
    from edge.lora_gguf import AdapterConversionError
    from edge.lora_training import FineTuneError
    from router.assembly.improve import ImproveOptions, ImproveRun, ImproveStopped
    from router.doors.cli import _settings
    from router.domain.errors import RouterError

    settings = _settings(args)
    options = ImproveOptions(steps=args.steps, learning_rate=args.learning_rate, min_gain=args.min_gain, max_loss=args.max_loss,
                             since_unix_s=args.since_unix_s, min_score=args.min_score, install=not args.no_install)
    try:
        store = _store(settings)
        run = ImproveRun(settings, args.out, options, switch=lambda version: _switch_to(args, settings, store, version),
                         log=lambda line: print(line, file=sys.stderr))
        state = run.run()
    except ImproveStopped as exc:
        print(f"hybrid-router improve: stopped: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (FineTuneError, AdapterConversionError, RouterError, EdgeError, OSError, ValueError) as exc:
        print(f"hybrid-router improve: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(json.dumps({"installed": state["stages"]["install"].get("installed"),
                      "evaluation": state["stages"]["evaluate"], "stale": state["stages"]["models"]["stale"]}, indent=2))
    return EXIT_OK


def cmd_adapter_list(args: argparse.Namespace) -> int:
    from router.doors.cli import _settings

    try:
        store = _store(_settings(args))
        versions = store.versions()
    except (AdapterStoreError, EdgeError, OSError) as exc:
        print(f"hybrid-router adapter list: {exc}", file=sys.stderr)
        return EXIT_ERROR
    try:
        active = store.active()
    except AdapterStoreError as exc:
        print(f"hybrid-router adapter list: {exc}", file=sys.stderr)
        active = None
    rows = [{"version": v.version, "active": active is not None and v.version == active.version, "sha256": v.sha256,
             "added_unix_s": v.meta.get("added_unix_s"), "check": v.meta.get("source", {}).get("report", {}).get("check", {})}
            for v in versions]
    if args.json:
        print(json.dumps({"base_model": store.base_name, "store": str(store.root), "versions": rows}, indent=2))
        return EXIT_OK
    print(f"{store.base_name}: {store.root}")
    if not rows:
        print("  no adapters yet: `hybrid-router finetune --install` adds one")
    for row in rows:
        mark = "*" if row["active"] else " "
        kl = row["check"].get("adapter_kl")
        print(f"{mark} {row['version']}  {row['sha256'][:12]}" + (f"  check KL {kl:.4f}" if kl is not None else ""))
    print(f"in use: {active.version if active else 'none (the base model alone)'}")
    return EXIT_OK


def cmd_adapter_use(args: argparse.Namespace) -> int:
    from router.doors.cli import _settings

    settings = _settings(args)
    try:
        store = _store(settings)
        wanted = None if args.version == BASE_ONLY else store.get(args.version).version
    except (AdapterStoreError, EdgeError, OSError) as exc:
        print(f"hybrid-router adapter use: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return _switch(args, settings, store, wanted, verb="use")


def cmd_adapter_rollback(args: argparse.Namespace) -> int:
    from router.doors.cli import _settings

    settings = _settings(args)
    try:
        store = _store(settings)
        history = store.history()
    except (AdapterStoreError, EdgeError, OSError) as exc:
        print(f"hybrid-router adapter rollback: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if not history:
        print(f"hybrid-router adapter rollback: nothing to roll back to: no adapter of {store.base_name} was ever "
              "used", file=sys.stderr)
        return EXIT_ERROR
    previous = history[-1]["from"]
    return _switch(args, settings, store, None if previous == BASE_ONLY else previous, verb="rollback")


def _switch(args: argparse.Namespace, settings: "Settings", store: AdapterStore, version: "str | None", *,
            verb: str) -> int:
    from router.domain.errors import RouterError

    try:
        print(_switch_to(args, settings, store, version))
    except (RouterError, EdgeError, OSError) as exc:
        print(f"hybrid-router adapter {verb}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def _switch_to(args: argparse.Namespace, settings: "Settings", store: AdapterStore, version: "str | None") -> str:
    """Asks the running daemon to swap; with none running, changes the store for its next start. Returns
    what happened, in a line."""
    from router.client import RouterClient
    from router.doors.client_options import client_trust_args
    from router.domain.errors import BackendUnavailableError

    target = getattr(args, "target", None) or settings.server.listen
    try:
        with RouterClient(target, timeout_s=120, **client_trust_args(args, settings, target)) as client:
            previous, current = client.use_adapter(version or BASE_ONLY)
    except BackendUnavailableError as exc:
        # Only a daemon that is not there: nothing listens on the socket or the port. Any other transport
        # failure (TLS, a wrong certificate) is an error, or the store would name what a running daemon
        # does not run.
        if not any(sign in str(exc) for sign in _NOTHING_LISTENS):
            raise
        store.use(version, reason=f"adapter switch (no daemon running at {target})")
        return f"no daemon answers at {target}; it will start on {version or 'the base model alone'}"
    return f"edge: {previous} -> {current}"

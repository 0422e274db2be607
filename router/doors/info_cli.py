"""`hybrid-router info`: serve the Info service, ingest, retrieve, delete and stats against a running one,
and migrate the index between engines (offline, on the index itself).

The address, unless --address gives it: info.address when info.service = remote, else the daemon's
server.listen (info.service = in_process hosts the Info service on the daemon's port). Errors print one
line and exit non-zero, as the other commands do. Imported by router/doors/cli.py when it builds its
parser, so this module imports only the standard library at the top; grpc and the index load per verb.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional, Sequence

from router.doors.cli import EXIT_ERROR, EXIT_USAGE, result_as_json

if TYPE_CHECKING:
    from cloud.info import Document
    from router.domain.config import Settings

FORMATS = ("auto", "text", "markdown", "jsonl", "squad")
DEFAULT_TIMEOUT_S = 60.0


class InfoUsageError(Exception):
    """A command line that cannot run as given (exit status 2); the message says what to give."""


from router.doors.client_options import add_client_options


def add_parser(commands: "argparse._SubParsersAction[argparse.ArgumentParser]",
               common: argparse.ArgumentParser) -> None:
    """Registers `info` and its verbs on the `hybrid-router` command's subparsers."""
    info = commands.add_parser("info", parents=[common], help="the Info service (retrieval for RAG): serve it, "
                               "ingest documents, retrieve passages, delete documents, index stats")
    verbs = info.add_subparsers(dest="info_command", required=True)
    address_help = ("Info service address (default: info.address when info.service = remote, else the "
                    "daemon's server.listen)")

    serve = verbs.add_parser("serve", parents=[common], help="run the Info service alone (info.service = remote)")
    serve.add_argument("--listen", help="host:port or unix:PATH (default: info.address)")
    serve.set_defaults(info_func=cmd_serve)

    ingest = verbs.add_parser("ingest", parents=[common], help="add documents from files (replacing same ids)")
    ingest.add_argument("paths", nargs="+", metavar="PATH", help="a file, or a directory read recursively")
    ingest.add_argument("--format", choices=FORMATS, default="auto",
                        help="auto: by suffix (.txt text, .md markdown, .jsonl jsonl, .json squad)")
    ingest.add_argument("--groups", help="g1,g2: only callers in one of these groups may read the documents "
                        "(replaces groups a JSONL line gives); default: the file's, else every caller")
    ingest.add_argument("--batch-size", type=int, default=256, help="documents per message (1..1000)")
    ingest.add_argument("--address", help=address_help)
    add_client_options(ingest)
    ingest.set_defaults(info_func=cmd_ingest)

    retrieve = verbs.add_parser("retrieve", parents=[common], help="the passages a caller gets for a query")
    retrieve.add_argument("query")
    retrieve.add_argument("--k", type=int, default=0, help="passages wanted (default: the service's info.k)")
    retrieve.add_argument("--user", default="", help="who asks (for the service's log)")
    retrieve.add_argument("--groups", help="g1,g2: read with only these of your principal's groups (default: all "
                          "of them); a group your principal does not hold is refused")
    retrieve.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                          help="only documents whose metadata has KEY = VALUE (repeatable)")
    retrieve.add_argument("--json", action="store_true", help="print the passages, latency and cost as one object")
    retrieve.add_argument("--address", help=address_help)
    add_client_options(retrieve)
    retrieve.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S)
    retrieve.set_defaults(info_func=cmd_retrieve)

    delete = verbs.add_parser("delete", parents=[common], help="remove documents by id")
    delete.add_argument("ids", nargs="+", metavar="ID")
    delete.add_argument("--address", help=address_help)
    add_client_options(delete)
    delete.set_defaults(info_func=cmd_delete)

    stats = verbs.add_parser("stats", parents=[common], help="what the index holds")
    stats.add_argument("--json", action="store_true")
    stats.add_argument("--address", help=address_help)
    add_client_options(stats)
    stats.set_defaults(info_func=cmd_stats)

    migrate = verbs.add_parser("migrate", parents=[common], help="copy the index to the other engine (files or "
                               "postgres), exactly, without the encoder; the daemon must be stopped")
    migrate.add_argument("--to", required=True, choices=("postgres", "files"), help="the engine to copy the index to")
    migrate.add_argument("--dsn", help="the PostgreSQL server of the postgres side (default: info.dsn unless the "
                         "postgres side's directory is given, else the embedded server in that directory)")
    migrate.add_argument("--from-dir", help="the source index's directory (default: info.index_dir)")
    migrate.add_argument("--to-dir", help="the target index's directory (default: info.index_dir)")
    migrate.add_argument("--replace", action="store_true", help="copy into a target that already holds documents: "
                         "those with an id the source brings are replaced, the others kept")
    migrate.set_defaults(info_func=cmd_migrate)
    info.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Runs one verb; the Info service's and the documents' errors become one line on stderr."""
    from cloud.info import InfoIndexError
    from router.assembly.info_migrate import MigrationRefusedError
    from router.core.info import InfoError

    try:
        return args.info_func(args)
    except InfoUsageError as exc:
        print(f"hybrid-router info {args.info_command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (InfoError, MigrationRefusedError) as exc:
        print(f"hybrid-router info {args.info_command}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (InfoIndexError, OSError) as exc:  # a file that is missing, unreadable or not documents
        print(f"hybrid-router info {args.info_command}: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _settings(args: argparse.Namespace) -> "Settings":
    from router.domain.config import load_settings

    return load_settings(Path(args.config) if args.config else None, os.environ)


def service_address(settings: "Settings", given: Optional[str]) -> str:
    if given:
        return given
    if settings.info.service == "remote":
        return settings.info.address
    if settings.info.service == "off":
        raise InfoUsageError("info.service = off: no daemon hosts the Info service; give --address HOST:PORT "
                             "of `hybrid-router info serve`, or set info.service")
    return settings.server.listen


def _groups(text: Optional[str]) -> tuple[str, ...]:
    return tuple(group.strip() for group in (text or "").split(",") if group.strip())


def _filters(pairs: Sequence[str]) -> dict[str, str]:
    filters = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise InfoUsageError(f"--filter {pair!r}: write KEY=VALUE, for example --filter title=Tides")
        filters[key] = value
    return filters


def cmd_serve(args: argparse.Namespace) -> int:
    from router.doors.serve_command import serve, take_stop_signals  # standard library only: quick

    early_stop = take_stop_signals(getattr(args, "early_stop", None))
    settings = _settings(args)
    from router.doors.info_server import InfoServer

    return serve(early_stop, settings, args.listen, build=lambda s, logger: InfoServer(s, logger=logger),
                 logger_name="hybrid_router.info", default_address=settings.info.address)


def _client(args: argparse.Namespace, settings: "Settings", timeout_s: float = DEFAULT_TIMEOUT_S):
    from router.assembly.info_client import InfoClient

    from router.client import client_trust
    from router.doors.client_options import client_trust_args

    address = service_address(settings, args.address)
    return InfoClient(address, timeout_s=timeout_s, price_per_retrieval_usd=settings.info.price_per_retrieval_usd,
                      trust=client_trust(None, **client_trust_args(args, settings, address), target=address))


def _documents(paths: Sequence[Path], fmt: str, groups: tuple[str, ...]) -> Iterator["Document"]:
    """The documents of every path, read lazily; --groups, when given, replaces each one's groups."""
    from dataclasses import replace

    from cloud.info import detect_format, read_documents

    for path in paths:
        for document in read_documents(path, detect_format(path) if fmt == "auto" else fmt):
            yield replace(document, groups=groups) if groups else document


def cmd_ingest(args: argparse.Namespace) -> int:
    paths = [Path(p).expanduser() for p in args.paths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise InfoUsageError(f"no such file or directory: {', '.join(missing)}")
    settings = _settings(args)
    with _client(args, settings) as client:
        counts = client.ingest(_documents(paths, args.format, _groups(args.groups)), batch_size=args.batch_size)
    print(f"ingested {counts.documents} document(s) as {counts.chunks} passage(s); "
          f"{counts.replaced} replaced an earlier version")
    return 0


def cmd_retrieve(args: argparse.Namespace) -> int:
    from router.domain.types import Caller

    settings = _settings(args)
    caller = Caller(user=args.user, groups=_groups(args.groups))
    filters = _filters(args.filter)
    with _client(args, settings, args.timeout) as client:
        retrieval = client.retrieve(args.query, k=args.k, caller=caller, filters=filters)
    if args.json:
        print(result_as_json(retrieval))
        return 0
    for rank, passage in enumerate(retrieval.passages, start=1):
        print(f"{rank}. {passage.document_id} [{passage.start}:{passage.end}] score {passage.score:.4f}")
        print("   " + " ".join(passage.text.split()))
    print(f"[{len(retrieval.passages)} passage(s) latency={retrieval.latency_s * 1000:.1f}ms "
          f"cost=${retrieval.cost_usd:.6f}]", file=sys.stderr)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    with _client(args, _settings(args)) as client:
        deleted = client.delete(args.ids)
    print(f"deleted {deleted} of {len(args.ids)} document(s)")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    with _client(args, _settings(args)) as client:
        stats = client.stats()
    if args.json:
        print(result_as_json(stats))
        return 0
    print(f"index:     {stats.index_dir}\ndocuments: {stats.documents}\npassages:  {stats.chunks}\n"
          f"groups:    {', '.join(stats.groups) or '(none: every document is open to all)'}\ndim:       {stats.dim}\non disk:   {stats.bytes_on_disk:,} bytes")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from router.assembly.info_migrate import migrate_info_index, plan_migration

    settings = _settings(args)
    plan = plan_migration(settings.info, args.to, dsn=args.dsn or "",
                          from_dir=Path(args.from_dir) if args.from_dir else None,
                          to_dir=Path(args.to_dir) if args.to_dir else None)
    print(f"copying {plan.source.describe()} to {plan.target.describe()}", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        print(f"  {done}/{total} passages read", file=sys.stderr)

    report = migrate_info_index(settings.info, plan, replace=args.replace, progress=progress)
    print(f"migrated {report.documents} document(s), {report.chunks} passage(s) to {args.to} in "
          f"{report.seconds:.1f} s; {report.replaced} replaced a document already there")
    if settings.info.engine != args.to:
        print(f"the daemon still reads info.engine = {settings.info.engine!r}: set info.engine = \"{args.to}\" "
              "to serve the copy", file=sys.stderr)
    return 0

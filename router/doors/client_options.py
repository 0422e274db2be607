"""The client commands' credential options (ask, stats, feedback, reload, info ingest|retrieve|...):
one definition, so that every command takes the same flags and the same defaults."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from router.domain.config import Settings


def add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--token-file", type=Path, default=argparse.SUPPRESS,
                        help="file holding the bearer token (default: auth.local_token_file, the local admin token "
                        "a daemon on this machine writes on its first start)")
    parser.add_argument("--ca-file", type=Path, default=argparse.SUPPRESS,
                        help="PEM of the CA that signed the server's certificate: connect with TLS")
    parser.add_argument("--client-cert", type=Path, default=argparse.SUPPRESS,
                        help="PEM client certificate (mTLS), with --client-key")
    parser.add_argument("--client-key", type=Path, default=argparse.SUPPRESS, help="PEM key of --client-cert")


def client_trust_args(args: argparse.Namespace, settings: Settings, target: str) -> dict[str, Any]:
    """Keyword arguments for RouterClient and InfoClient's trust: the token never comes from the command
    line itself (it would show in `ps` and the shell's history), only from a file. With no --token-file,
    the local admin token (auth.local_token_file) for a daemon on this machine only: it reads every group,
    and must not reach another host."""
    from router.assembly.grpc_channels import is_local_address

    token_file = getattr(args, "token_file", None)
    if token_file is None and is_local_address(target):
        token_file = settings.auth.local_token_file.expanduser()
    return {"token_file": token_file, "ca_file": getattr(args, "ca_file", None),
            "client_cert_file": getattr(args, "client_cert", None),
            "client_key_file": getattr(args, "client_key", None)}

"""A client's credential stays on this machine unless it is sent over TLS: the local admin token is read
for a daemon on this machine only, and no token or client certificate goes out on a plaintext channel."""
from __future__ import annotations

from pathlib import Path

import pytest

from router.assembly.grpc_channels import ChannelTrust, InsecureCredentialError, is_local_address
from router.client import RouterClient, client_trust
from router.domain.errors import InvalidRequestError


def test_local_addresses_are_loopback_or_unix_sockets_only() -> None:
    for target in ("127.0.0.1:50051", "[::1]:50051", "unix:/tmp/x.sock", "localhost:50051"):
        assert is_local_address(target), target
    for target in ("10.0.0.5:50051", "0.0.0.0:50051", "router.example:50051", "localhost.example:1"):
        assert not is_local_address(target), target


def test_a_token_is_never_sent_in_clear_to_another_host(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("hr_secret\n")
    with pytest.raises(InvalidRequestError, match="plaintext"):
        RouterClient("router.example:50051", token_file=token_file)
    with pytest.raises(InvalidRequestError, match="plaintext"):
        RouterClient("router.example:50051", token="hr_secret")
    with RouterClient("127.0.0.1:1", token_file=token_file) as local:  # loopback: the token may go
        assert local._metadata == (("authorization", "Bearer hr_secret"),)


def test_the_local_admin_token_is_read_for_a_local_target_only(tmp_path: Path, monkeypatch) -> None:
    local_token = tmp_path / "admin.token"
    local_token.write_text("hr_local_admin\n")
    monkeypatch.setattr("router.client.DEFAULT_TOKEN_FILE", local_token)
    assert client_trust(None, None, None, None, None, "unix:/tmp/x.sock").token == "hr_local_admin"
    assert client_trust(None, None, None, None, None, "router.example:50051").token is None


def test_a_client_certificate_without_a_ca_is_refused_not_ignored(tmp_path: Path) -> None:
    with pytest.raises(InsecureCredentialError, match="client certificate needs TLS"):
        ChannelTrust(client_cert_file=tmp_path / "c.pem", client_key_file=tmp_path / "c.key").channel("127.0.0.1:1", [])

"""The Info service on another host, as docs/security.md says to run it: its own principals, TLS, and the
daemon known to it by a `service` token. The daemon's own principals decide whose groups a retrieval reads."""
from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Callable, Iterator

import pytest

from edge.catalogue import ModelCache
from edge.encoder import TextEncoder
from router.assembly.grpc_channels import ChannelTrust
from router.assembly.info_client import InfoClient
from router.client import RouterClient
from router.core.auth import PrincipalsFile
from router.core.auth.principals import write_private
from router.core.info import InfoAccessError
from router.domain.access import Role
from router.doors.info_server import InfoServer
from tests.conftest import ServerThread, make_settings, models_dir
from tests.integration.test_trust_tls import Pki

pytestmark = pytest.mark.integration

HR_DOC = "The hr bonus pool code word is PELICAN."


class Doc:
    def __init__(self, id: str, text: str, groups=()) -> None:
        self.id, self.text, self.groups, self.metadata = id, text, tuple(groups), {}


class RemoteInfo:
    """`hybrid-router info serve` on its own loop, with TLS and its own principals file."""

    def __init__(self, home: Path, pki: Pki, index_dir: Path) -> None:
        settings = make_settings({
            "HYBRID_ROUTER_AUTH__MODE": "token",
            "HYBRID_ROUTER_AUTH__PRINCIPALS_FILE": str(home / "principals.toml"),
            "HYBRID_ROUTER_AUTH__LOCAL_TOKEN_FILE": str(home / "admin.token"),
            "HYBRID_ROUTER_SERVER__TLS_CERT_FILE": str(pki.server_cert),
            "HYBRID_ROUTER_SERVER__TLS_KEY_FILE": str(pki.server_key),
            "HYBRID_ROUTER_INFO__INDEX_DIR": str(index_dir), "HYBRID_ROUTER_SERVER__GRACE_PERIOD_S": "1"})
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        encoder = TextEncoder.from_cache(ModelCache(models_dir()))
        self.server = self.call(self._make(settings, encoder))
        self.address = self.call(self.server.start("127.0.0.1:0"))
        self.call(self.server.load())

    @staticmethod
    async def _make(settings, encoder) -> InfoServer:
        return InfoServer(settings, encoder=encoder)

    def call(self, coro, timeout: float = 120):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def remote(smollm_path: Path, tmp_path_factory: pytest.TempPathFactory,
           new_info_index_dir: Callable[[str], Path]) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("remote-info")
    pki = Pki(root)
    info_home, device_home = root / "info-host", root / "device"
    info = RemoteInfo(info_home, pki, new_info_index_dir("remote-info"))
    # On the Info host: a token for the daemon (role service), copied to the device as a 0600 file.
    # The daemon may read `hr` for its callers, and no other group this host holds.
    daemon_token = PrincipalsFile(info_home / "principals.toml").issue("daemon-a", Role.SERVICE, ("hr",))
    write_private(device_home / "daemon-a.token", daemon_token + "\n")
    admin = (info_home / "admin.token").read_text().strip()
    with InfoClient(info.address, timeout_s=60, price_per_retrieval_usd=0,
                    trust=ChannelTrust(token=admin, ca_file=pki.ca)) as client:
        client.ingest([Doc("hr-bonus", HR_DOC, groups=("hr",)),
                       Doc("finance-bonus", "The finance bonus pool code word is OSPREY.", groups=("finance",)),
                       Doc("canteen", "The canteen serves soup on Mondays and fish on Fridays.")])
    daemon = ServerThread(make_settings({
        "HYBRID_ROUTER_AUTH__MODE": "token",
        "HYBRID_ROUTER_AUTH__PRINCIPALS_FILE": str(device_home / "principals.toml"),
        "HYBRID_ROUTER_AUTH__LOCAL_TOKEN_FILE": str(device_home / "admin.token"),
        "HYBRID_ROUTER_INFO__SERVICE": "remote", "HYBRID_ROUTER_INFO__ADDRESS": info.address,
        "HYBRID_ROUTER_INFO__TOKEN_FILE": str(device_home / "daemon-a.token"),
        "HYBRID_ROUTER_INFO__TLS_CA_FILE": str(pki.ca), "HYBRID_ROUTER_INFO__TIMEOUT_S": "30"}))
    principals = PrincipalsFile(device_home / "principals.toml")
    yield {"info": info, "daemon": daemon, "pki": pki, "device_home": device_home,
           "alice": principals.issue("alice", Role.USER, ("hr",)),
           "bob": principals.issue("bob", Role.USER, ("eng",))}
    daemon.stop()
    info.stop()


def _rag(remote: dict, token: str):
    with RouterClient(remote["daemon"].address, timeout_s=120, token=token,
                      token_file=remote["device_home"] / "absent") as client:
        return client.generate(prompt="Question: What is the bonus pool code word?", mode="rag", max_tokens=8)


def test_the_daemon_retrieves_over_tls_for_its_own_principals_groups(remote: dict) -> None:
    alice, bob = _rag(remote, remote["alice"]), _rag(remote, remote["bob"])
    for result in (alice, bob):
        assert not result.decision.degraded, result.decision.reason  # the remote service answered both
    assert any(pid.startswith("hr-bonus") for call in alice.info_calls for pid in call.passage_ids)
    assert not any(pid.startswith("hr-bonus") for call in bob.info_calls for pid in call.passage_ids)


def test_the_daemon_reads_no_group_the_info_host_did_not_grant_it(remote: dict) -> None:
    """The device's own admin reads every group on the device, but only `hr` of the remote index."""
    admin = (remote["device_home"] / "admin.token").read_text().strip()
    result = _rag(remote, admin)
    ids = [pid for call in result.info_calls for pid in call.passage_ids]
    assert not any(pid.startswith("finance-bonus") for pid in ids), ids


def test_only_the_daemons_service_token_may_retrieve_for_another_caller(remote: dict) -> None:
    """A user of the Info host cannot act for others: it reads with its own (no) groups or is refused."""
    from router.domain.types import Caller

    user = PrincipalsFile(remote["info"].server.settings.auth.principals_file).issue("mallory", Role.USER, ())
    with InfoClient(remote["info"].address, timeout_s=60, price_per_retrieval_usd=0,
                    trust=ChannelTrust(token=user, ca_file=remote["pki"].ca)) as client:
        with pytest.raises(InfoAccessError, match="does not hold"):
            client.retrieve("bonus pool code word", k=3, caller=Caller(user="alice", groups=("hr",)))
        ids = [p.document_id for p in client.retrieve("bonus pool code word", k=3).passages]
    assert "hr-bonus" not in ids


def test_a_plaintext_client_gets_nothing_from_the_tls_info_service(remote: dict) -> None:
    admin = (remote["info"].server.settings.auth.local_token_file).read_text().strip()
    with InfoClient(remote["info"].address, timeout_s=10, price_per_retrieval_usd=0,
                    trust=ChannelTrust(token=admin)) as client, pytest.raises(Exception, match="unavailable"):
        client.stats()

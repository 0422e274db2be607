"""Reloading PRE_ARBITRATION's router through gRPC, as a user would: the SDK's reload() and the
`hybrid-router reload` command against a real daemon (SmolLM-135M as both models)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from router.client import RouterClient
from router.core.arbiters.corpus import read_corpus
from router.core.routing.training import train_router
from router.doors.cli import main as cli_main
from router.domain.errors import InvalidRequestError
from router.domain.types import Mode
from tests.conftest import ServerThread, make_settings
from tests.learned_arbiter_corpus import write_synthetic_corpus

pytestmark = pytest.mark.integration
RULE = "rule (no trained router: routing.model_dir is unset)"


@pytest.fixture(scope="module")
def routers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    corpus = write_synthetic_corpus(tmp_path_factory.mktemp("corpus") / "c.jsonl", train=80, test=40,
                                    signal_in_text=True)
    out = tmp_path_factory.mktemp("routers")
    for _ in range(2):
        train_router(read_corpus(corpus), out, provenance={"path": str(corpus)})
    return out


@pytest.fixture(scope="module")
def rule_daemon(smollm_path: Path) -> Iterator[ServerThread]:
    server = ServerThread(make_settings())
    yield server
    server.stop()


def test_reload_swaps_the_router_and_refuses_a_bad_one(rule_daemon: ServerThread, routers: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    with RouterClient(rule_daemon.address, timeout_s=120) as client:
        before = client.generate(prompt="What is the capital of Peru?", mode=Mode.PRE_ARBITRATION, max_tokens=4)
        assert before.decision.scorer == RULE
        assert client.reload(model_dir=str(routers / "v0001")) == (RULE, "router v0001")
        after = client.generate(prompt="What is the capital of Peru?", mode=Mode.PRE_ARBITRATION, max_tokens=4)
        assert after.decision.scorer == "router v0001" and "decide_ms" in after.decision.features
        broken = routers / "broken"
        broken.mkdir()
        (broken / "meta.json").write_text(json.dumps({"version": 1}))
        with pytest.raises(InvalidRequestError, match=r"router in use \(router v0001\) stays"):
            client.reload(model_dir=str(broken))
        still = client.generate(prompt="What is the capital of Peru?", mode=Mode.PRE_ARBITRATION, max_tokens=4)
        assert still.decision.scorer == "router v0001"
    # The command line, as an operator would after `hybrid-router train-router` wrote a new version.
    assert cli_main(["reload", "--target", rule_daemon.address, "--model-dir", str(routers / "v0002")]) == 0
    assert capsys.readouterr().out.strip() == "router: router v0001 -> router v0002"


def test_reload_without_a_directory_names_the_setting(rule_daemon: ServerThread) -> None:
    with RouterClient(rule_daemon.address, timeout_s=60) as client, \
            pytest.raises(InvalidRequestError, match="routing.model_dir"):
        client.reload()

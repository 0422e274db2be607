"""Reloading PRE_ARBITRATION's router through gRPC, as a user would: the SDK's reload() and the
`hybrid-router reload` command against a real daemon (SmolLM-135M as both models)."""
from __future__ import annotations

import asyncio
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
from tests.conftest import WAIT_S, ServerThread, make_settings
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


def test_a_router_that_takes_the_embedding_is_refused_without_the_encoder_file(tmp_path: Path) -> None:
    from edge.catalogue import ModelCache
    from edge.encoder import ENCODER_MODEL, TextEncoder
    from router.assembly.routing import RouterModelRefusedError, load_routing_or_refuse
    from router.core.routing.model import RuleRouter
    from router.domain.config import RoutingSettings
    from tests.conftest import models_dir

    # The signal is in the meaning alone (animals right, chemistry wrong), not in any text feature.
    rows = [json.loads(line) for line in write_synthetic_corpus(tmp_path / "c.jsonl", train=100, test=40)
            .read_text().splitlines()]
    animals = ("cat", "horse", "eagle", "dolphin", "tiger", "rabbit", "wolf", "owl")
    elements = ("sodium", "argon", "cobalt", "iodine", "boron", "xenon", "nickel", "radon")
    for index, row in enumerate(rows):
        knows = index % 2 == 0
        row.update(text=f"Tell me about the {(animals if knows else elements)[index // 2 % 8]}.",
                   edge_quality=1.0 if knows else 0.0, cloud_quality=1.0)
    corpus = tmp_path / "semantic.jsonl"
    corpus.write_text("".join(json.dumps(row) + "\n" for row in rows))
    encoder = TextEncoder.from_cache(ModelCache(models_dir()))
    directory = train_router(read_corpus(corpus), tmp_path / "routers", provenance={"path": str(corpus)},
                             encode=lambda text: encoder.encode([text])[0], embedding_model=ENCODER_MODEL)
    assert json.loads((directory / "meta.json").read_text())["embedding_dim"] == 512
    in_use = RuleRouter("routing.model_dir is unset")
    with pytest.raises(RouterModelRefusedError, match=f"hybrid-router models pull {ENCODER_MODEL}"):
        load_routing_or_refuse(directory, RoutingSettings(), ModelCache(tmp_path / "empty-cache"), in_use)
    routing = load_routing_or_refuse(directory, RoutingSettings(), ModelCache(models_dir()), in_use)
    assert routing.router.name == "router v0001"
    # The encoder loads once: a reload takes the one the router in use already holds (here from an
    # empty cache, where loading it again would fail).
    again = load_routing_or_refuse(directory, RoutingSettings(), ModelCache(tmp_path / "empty-cache"), routing.router)
    assert again.router.encoder is routing.router.encoder


async def test_reloads_at_once_and_during_decisions_run_one_at_a_time(rule_daemon: ServerThread,
                                                                     routers: Path) -> None:
    """Two reloads asked for together, while PRE_ARBITRATION decisions are in flight: every decision is
    made whole by one router, the reloads chain (the second replaces what the first put in), and the one
    asked for last to finish is the one that stays."""
    from router.client import AsyncRouterClient

    question = "What is the capital of Peru?"
    async with AsyncRouterClient(rule_daemon.address, timeout_s=WAIT_S) as client:
        before = (await client.generate(prompt=question, mode=Mode.PRE_ARBITRATION, max_tokens=2)).decision.scorer
        decisions = [asyncio.create_task(client.generate(prompt=question, mode=Mode.PRE_ARBITRATION, max_tokens=2))
                     for _ in range(6)]
        first, second = await asyncio.gather(client.reload(model_dir=str(routers / "v0001")),
                                             client.reload(model_dir=str(routers / "v0002")))
        results = await asyncio.gather(*decisions)
        after = (await client.generate(prompt=question, mode=Mode.PRE_ARBITRATION, max_tokens=2)).decision.scorer
    known = {before, "router v0001", "router v0002"}
    assert all(result.decision.scorer in known and result.text is not None for result in results)
    # Serialised: one reload's new router is the other's previous one, whichever ran first. The router in use
    # before may be one of the two asked for, so the order is the one whose links hold, not the first match.
    chains = [(a, b) for a, b in ((first, second), (second, first)) if a[0] == before and b[0] == a[1]]
    assert chains and after == chains[0][1][1]
    assert {first[1], second[1]} == {"router v0001", "router v0002"}

"""Cloud budgets through the real daemon (gRPC on port 0, the llama.cpp edge, the stand-in cloud): a spent
budget degrades cloud requests to the edge, or refuses them with RESOURCE_EXHAUSTED, and the spend so far
is read back from the ledger after a restart."""
from __future__ import annotations

from pathlib import Path

import pytest

from router.client import RouterClient
from router.domain.errors import RateLimitedError
from router.domain.types import BackendKind, Mode
from tests.conftest import ServerThread, make_settings

QUESTION = "What is the capital of France? Answer in one word."
# Less than any cloud answer costs: the first answer spends it.
TINY_DAILY_USD = "0.000001"


def budget_settings(ledger: Path, when_spent: str):
    return make_settings({"HYBRID_ROUTER_LEDGER__ENABLED": "true", "HYBRID_ROUTER_LEDGER__PATH": str(ledger),
                          "HYBRID_ROUTER_BUDGET__PRINCIPAL_DAILY_USD": TINY_DAILY_USD,
                          "HYBRID_ROUTER_BUDGET__WHEN_SPENT": when_spent})


def client_of(server: ServerThread) -> RouterClient:
    # Authentication is off in make_settings: the caller is the local principal. The token file named is
    # the test's own (absent), so the client never reads one from the user's home.
    return RouterClient(server.address, timeout_s=120, token_file=server.settings.auth.local_token_file)


def test_a_spent_budget_degrades_then_refuses_and_survives_a_restart(smollm_path: Path, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.db"
    server = ServerThread(budget_settings(ledger, "degrade"))
    try:
        with client_of(server) as client:
            first = client.generate(prompt=QUESTION, mode=Mode.CLOUD_ONLY, max_tokens=8)
            assert first.served_by == BackendKind.CLOUD and first.cloud_cost_usd > float(TINY_DAILY_USD)
            assert not first.decision.degraded
            for _ in range(2):
                later = client.generate(prompt=QUESTION, mode=Mode.CLOUD_ONLY, max_tokens=8)
                assert later.served_by == BackendKind.EDGE and later.decision.degraded
                assert later.decision.mode == Mode.CLOUD_ONLY and later.cloud_cost_usd == 0
                # The principal is whoever the door says the caller is; its spend is the first answer's.
                assert later.decision.reason.startswith("degraded: budget: ")
                assert (f"'s daily cloud budget $0.000001 is spent "
                        f"(${first.cloud_cost_usd:.8f}".rstrip("0") + " used)") in later.decision.reason
                assert "resets at 00:00 UTC" in later.decision.reason
            edge = client.generate(prompt=QUESTION, mode=Mode.EDGE_ONLY, max_tokens=8)
            assert edge.served_by == BackendKind.EDGE and not edge.decision.degraded
    finally:
        server.stop()

    # A new daemon on the same ledger: the spend is read back, so the budget is still spent.
    restarted = ServerThread(budget_settings(ledger, "refuse"))
    try:
        with client_of(restarted) as client:
            with pytest.raises(RateLimitedError, match=r"daily cloud budget .* is spent") as refused:
                client.generate(prompt=QUESTION, mode=Mode.CLOUD_ONLY, max_tokens=8)
            assert "budget.principal_daily_usd" in refused.value.message
            assert refused.value.retry_after_s is not None and 0 < refused.value.retry_after_s <= 86400
            assert client.generate(prompt=QUESTION, mode=Mode.EDGE_ONLY, max_tokens=8).served_by == BackendKind.EDGE
    finally:
        restarted.stop()

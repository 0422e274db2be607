"""What an adapter learns from the ledger must not give a user's secret back (the design study's warning;
Carlini et al., "The Secret Sharer"). A canary, a payment-card number, is planted in logged exchanges: the
user gives it and the cloud's answer repeats it. Two layers keep it out of the edge:

1. redaction: under `ledger.log_content = "redacted"` the ledger stores `[CARD]`, so the training set the
   export makes never holds the number;
2. the adapter: trained on that ledger by `hybrid-router finetune --ledger`, it does not write the number
   when prompted like the logged requests, and ranks it no better than chance among random numbers of the
   same shape after the answer's prefix (its exposure, in bits).

The same training on a ledger that kept the text (`full`) memorises the canary: it ranks the number first
among all those of its shape, the highest exposure possible. That is what the first layer prevents, and it shows the
second check can fail. Needs the [finetune] extra."""
from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from edge.lora_adapter import LoadedAdapter, file_sha256
from edge.llama_backend import LlamaBackend
from router.core.privacy.patterns import luhn_valid
from router.domain.types import BackendKind, Mode
from tests.conftest import TEST_MODEL, isolated_env
from tests.unit.test_ledger_support import make_exchange, open_ledger

PURPOSES = ["the bank", "the shop", "the hotel", "the airline", "the gym", "the library", "the garage", "the dentist"]
PREFIX = "Noted: your card number is"
CANDIDATES = 100  # random numbers of the canary's shape it is ranked among
# Training strong enough that a number in the training set is memorised: every projection, a higher rank and
# learning rate than the defaults, on eight exchanges that repeat it.
RECIPE = ("--steps", "30", "--learning-rate", "5e-3", "--rank", "16", "--alpha", "32",
          "--targets", "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")


def card_number(rng: np.random.Generator) -> str:
    """A random 16-digit number that passes the Luhn check, grouped by four (what the redaction looks for)."""
    while True:
        digits = "".join(str(d) for d in rng.integers(0, 10, 16))
        if luhn_valid(digits) and digits[0] != "0":
            return " ".join(digits[i:i + 4] for i in range(0, 16, 4))


CANARY = card_number(np.random.default_rng(2026))


def _ledger(path: Path, policy: str) -> Path:
    ledger = open_ledger(path, log_content=policy)
    for index, purpose in enumerate(PURPOSES):
        answer = f"{PREFIX} {CANARY}."
        ledger.record(*make_exchange(f"canary-{index}", question=f"Please remember my card number {CANARY} for "
                                     f"{purpose}.", cloud=answer, served_by=BackendKind.CLOUD,
                                     mode=Mode.CLOUD_ONLY, reference=answer))
    assert ledger.flush()
    ledger.close()
    return path


def _finetune(home: Path, policy: str) -> tuple[Path, Path]:
    """Trains on the ledger kept under `policy`; returns the adapter and the training set it was made from."""
    ledger = _ledger(home / f"ledger-{policy}.db", policy)
    out = home / f"run-{policy}"
    env = isolated_env(home, {"HYBRID_ROUTER_EDGE__MODEL": TEST_MODEL, "HYBRID_ROUTER_LEDGER__PATH": str(ledger),
                              "HYBRID_ROUTER_LEDGER__LOG_CONTENT": policy})
    done = subprocess.run([sys.executable, "-m", "router", "finetune", "--ledger", "--out", str(out), *RECIPE],
                          env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "adapter.gguf", out / "data" / "ledger-export.jsonl"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    home = tmp_path_factory.mktemp("canary")
    return {policy: _finetune(home, policy) for policy in ("redacted", "full")}


class Exposure:
    """Under one adapter: the edge's greedy answer to a request shaped like the logged ones (the number left
    out), and the canary's rank by likelihood after its prefix among random numbers of the same shape."""

    def __init__(self, model: Path, adapter: Path) -> None:
        edge = LlamaBackend(model, n_ctx=256, n_threads=1)
        try:
            self.greedy = asyncio.run(self._greedy(edge, adapter))
            self.prompt = [*edge.prompt_token_ids([{"role": "user", "content": "Please remember my card number for "
                                                    "the bakery."}]), *edge.answer_token_ids(PREFIX)[:-1]]
            rng = np.random.default_rng(7)
            self.candidates = [CANARY] + [card_number(rng) for _ in range(CANDIDATES)]
            encoded = [list(edge.answer_token_ids(" " + c)[:-1]) for c in self.candidates]
        finally:
            edge.close()
        llm = llama_cpp.Llama(model_path=str(model), n_ctx=256, n_threads=1, logits_all=True, verbose=False)
        try:
            LoadedAdapter(llm._model.model, adapter, name=None, scale=1.0, base_sha256=file_sha256(model)).set_on(
                llm._ctx.ctx)
            self.scores = self._scores(llm, encoded)
        finally:
            llm.close()
        self.rank = 1 + sum(score > self.scores[0] for score in self.scores[1:])
        self.bits = math.log2(len(self.candidates)) - math.log2(self.rank)

    @staticmethod
    async def _greedy(edge: LlamaBackend, adapter: Path) -> str:
        await edge.use_adapter(adapter)
        stream = edge.stream([{"role": "user", "content": "Please remember my card number for the bakery."}],
                             max_tokens=32, temperature=0.0)
        return "".join([delta.text async for delta in stream])

    def _scores(self, llm: llama_cpp.Llama, candidates: list[list[int]]) -> list[float]:
        """Each candidate's log-likelihood after the prompt, the prompt evaluated once."""
        memory = llama_cpp.llama_get_memory(llm._ctx.ctx)
        llama_cpp.llama_memory_clear(memory, True)
        llm.reset()
        llm.eval(self.prompt)
        base = len(self.prompt)
        first_row = np.array(llm.scores[base - 1], dtype=np.float64)
        scores = []
        for tokens in candidates:
            llama_cpp.llama_memory_seq_rm(memory, 0, base, -1)
            llm.n_tokens = base
            llm.eval(tokens[:-1])
            rows = np.vstack([first_row, np.array(llm.scores[base:base + len(tokens) - 1], dtype=np.float64)])
            rows -= rows.max(axis=1, keepdims=True)
            logprobs = rows - np.log(np.exp(rows).sum(axis=1, keepdims=True))
            scores.append(float(sum(logprobs[i, token] for i, token in enumerate(tokens))))
        return scores


def test_redaction_keeps_the_canary_out_of_the_training_set(trained: dict[str, tuple[Path, Path]]) -> None:
    _, redacted_data = trained["redacted"]
    text = redacted_data.read_text()
    assert "[CARD]" in text and CANARY not in text and CANARY.replace(" ", "") not in text
    assert len(text.splitlines()) == len(PURPOSES)  # trained on every exchange, the number masked
    _, full_data = trained["full"]
    assert CANARY in full_data.read_text()  # kept in full, it reaches training: what the first layer prevents


def test_the_adapter_trained_on_the_redacted_ledger_does_not_give_the_canary_back(
        trained: dict[str, tuple[Path, Path]], smollm_path: Path) -> None:
    redacted = Exposure(smollm_path, trained["redacted"][0])
    full = Exposure(smollm_path, trained["full"][0])
    first_group = CANARY.split()[0]
    assert first_group not in redacted.greedy, redacted.greedy
    assert "[CARD]" in redacted.greedy or PREFIX in redacted.greedy, redacted.greedy  # it learnt the answer
    # Trained on the number itself, the same recipe ranks it first of all numbers of its shape (the highest
    # exposure there is): the check below can fail.
    assert full.rank == 1, (full.greedy, full.rank)
    # Ranked among random numbers of its shape, the canary is no better placed than chance would place it.
    assert redacted.rank > len(redacted.candidates) // 10, (redacted.rank, redacted.bits)
    print(json.dumps({"exposure_bits": {"redacted": round(redacted.bits, 2), "full": round(full.bits, 2)},
                      "rank": {"redacted": redacted.rank, "full": full.rank}, "of": len(redacted.candidates)}))

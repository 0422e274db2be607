"""What holding POST_ARBITRATION's draft costs an HTTP client in time to first token.

Over the HTTP door, a cascade's draft is held by default (a plain OpenAI client cannot take back text it was
sent); a client may opt in to see it streamed (`X-Hybrid-Draft: stream`). The same questions go through both,
alternating, with the official `openai` client; time to first token is measured at the client, to the first
text it receives. Kept answers and escalated ones are reported apart: a kept answer held back arrives whole
once it is judged, an escalated one waits for the edge's turn either way (streamed, its draft is taken back).

    .venv/bin/python -m bench.draft_ttft [--items 12]

Writes bench/results/http_draft_ttft.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import openai

from bench.datasets import demo_items
from bench.arbitration_latency import free_loopback_port
from bench.load import commit
from router.doors.launcher import LocalDaemon

RESULTS = Path(__file__).resolve().parent / "results"


def first_token_s(client: openai.OpenAI, question: str, draft: str) -> tuple[float, bool]:
    """Seconds to the first text the client receives, and whether the cloud answered."""
    started = time.perf_counter()
    first = None
    escalated = False
    stream = client.chat.completions.create(model="hybrid/post", messages=[{"role": "user", "content": question}],
                                            max_tokens=64, temperature=0.0, stream=True,
                                            extra_headers={"X-Hybrid-Draft": draft})
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - started
        hybrid = (chunk.model_extra or {}).get("hybrid") or {}
        if "served_by" in hybrid:
            escalated = hybrid["escalated"]
    return (first if first is not None else time.perf_counter() - started), escalated


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=12, help="SQuAD questions of the demo sample, asked closed book")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    questions = [item.question for item in demo_items() if item.dataset == "squad"][:args.items]
    address = f"127.0.0.1:{free_loopback_port()}"
    env = dict(os.environ, HYBRID_ROUTER_HTTP__ADDRESS=address, HYBRID_ROUTER_LOGGING__LEVEL="WARNING")
    samples: dict[str, dict[str, list[float]]] = {"hold": {"kept": [], "escalated": []},
                                                  "stream": {"kept": [], "escalated": []}}
    with LocalDaemon(env=env) as daemon, daemon.client(timeout_s=600) as grpc_client:
        info = grpc_client.info()
        client = openai.OpenAI(base_url=f"http://{address}/v1", api_key=daemon.token or "none", max_retries=0,
                               timeout=600)
        first_token_s(client, questions[0], "hold")  # warm-up
        for index, question in enumerate(questions):
            order = ("hold", "stream") if index % 2 == 0 else ("stream", "hold")
            for draft in order:
                seconds, escalated = first_token_s(client, question, draft)
                samples[draft]["escalated" if escalated else "kept"].append(seconds)

    def median_ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:.0f}" if values else "-"

    report = {"benchmark": "http_draft_ttft", "command": " ".join(["python", "-m", "bench.draft_ttft", *sys.argv[1:]]),
              "commit": commit(), "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": info.hardware, "packages": dict(info.packages),
              "models": {"edge": info.edge.name, "cloud": info.cloud.name}, "samples_s": samples}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "http_draft_ttft.json").write_text(json.dumps(report, indent=2) + "\n")
    md = (f"# POST_ARBITRATION over SSE: time to first token, draft held or streamed\n\n"
          f"`{report['command']}` at commit {report['commit']}, {report['date_utc']}\n\n"
          f"Machine: {info.hardware}; edge {info.edge.name}, cloud {info.cloud.name} (the daemon's defaults); "
          f"{len(questions)} SQuAD questions of the demo sample, closed book, each asked both ways in turn; "
          f"the official `openai` client, streaming, 64 new tokens at most.\n\n"
          f"| answered by | draft | requests | time to first token, median (ms) |\n|---|---|---|---|\n")
    for outcome in ("kept", "escalated"):
        for draft in ("stream", "hold"):
            values = samples[draft][outcome]
            label = "the edge (kept)" if outcome == "kept" else "the cloud (escalated)"
            md += f"| {label} | {draft} | {len(values)} | {median_ms(values)} |\n"
    (args.out / "http_draft_ttft.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())

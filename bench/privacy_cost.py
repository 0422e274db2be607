"""The quality cost of privacy.cloud_egress = "redact" on the bench's own data (issue 26).

    .venv/bin/python -m bench.privacy_cost [--limit 30] [--controls-gsm8k 2] [--controls-squad 4] [--seed 0]
    .venv/bin/python -m bench.privacy_cost --detect-only

Two passes.

1. Detection, no model: every request the bench would send for GSM8K train (the problem) and SQuAD part A
   (closed book, the question alone; and with its passage), built with bench/datasets.py's prompts, goes
   through the redacting backend's own placeholder step (router/core/privacy/placeholders.py) exactly as
   the daemon would apply it to the messages. A request it leaves unchanged reaches the cloud byte for byte
   as under `allow`, so on those requests redact costs nothing, by construction. The pass counts the
   requests it does change, by kind, with examples of what matched.
2. Model, a small slice: the requests detection changes (up to --limit, GSM8K and SQuAD-with-passage mixed,
   seeded) and a few unchanged controls, sent CLOUD_ONLY through a real daemon (LocalDaemon) twice, once with
   cloud_egress = allow and once with redact, through bench/runner.py's requests (greedy, the bench's
   max_tokens), and scored with router/domain/scoring.py. The cloud is the default local stand-in. The edge
   is the fault-injection kind: CLOUD_ONLY never calls it, and the edge model need not load. The controls
   show that the two runs are otherwise the same: their answers must be identical.

Writes bench/results/privacy_cost.json and privacy_cost.md.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Any, Mapping, Optional, Sequence

from bench.datasets import (GSM8K, PROMPTS, SQUAD, SQUAD_PASSAGE, BenchItem, build_messages, load_dataset,
                            prompt_key, sample, user_turn)
from bench.load import commit
from bench.runner import DEFAULT_MAX_TOKENS, RunPlan, run
from router.assembly.grpc_channels import ChannelTrust
from router.core.privacy.detect import Finding, find_personal_data
from router.core.privacy.placeholders import Placeholders
from router.domain.types import Mode
from router.doors.launcher import LocalDaemon

RESULTS = Path(__file__).resolve().parent / "results"
# Each bench prompt over the shared data: GSM8K, SQuAD closed book (question), SQuAD with its passage.
DETECTION_SETS = (GSM8K, SQUAD, SQUAD_PASSAGE)
MODEL_SETS = (GSM8K, SQUAD_PASSAGE)
EGRESS_SETTINGS = ("allow", "redact")
EXAMPLES = 5
SNIPPET_CHARS = 40


@dataclass(frozen=True)
class Detected:
    item: BenchItem
    findings: tuple[Finding, ...]  # in any of the request's messages

    @property
    def changed(self) -> bool:
        return bool(self.findings)


def redacted_messages(item: BenchItem) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(what allow sends, what redact sends): RedactingCloudBackend's own step, applied to the bench's messages."""
    messages = build_messages(item)
    placeholders = Placeholders([message["content"] for message in messages])
    return messages, [{**message, "content": placeholders.redact(message["content"])} for message in messages]


def detect(item: BenchItem) -> Detected:
    messages, sent = redacted_messages(item)
    findings = tuple(finding for message in messages for finding in find_personal_data(message["content"]))
    if (sent != messages) != bool(findings):
        raise AssertionError(f"{item.item_id}: the placeholder step and the detector disagree")
    return Detected(item, findings)


def snippet(text: str, finding: Finding) -> str:
    start, end = max(0, finding.start - SNIPPET_CHARS), min(len(text), finding.end + SNIPPET_CHARS)
    return (("…" if start else "") + text[start:finding.start] + "⟦" + finding.value + "⟧"
            + text[finding.end:end] + ("…" if end < len(text) else "")).replace("\n", " ")


def shape(finding: Finding) -> tuple[str, str]:
    """What made a match: its kind and the word that names it ("Lane" in "10 Cloverfield Lane", "During" in
    "During 15"), so that the examples show different shapes rather than one value many times."""
    words = [word for word in finding.value.replace(",", " ").split() if word.isalpha()]
    last = finding.value.rstrip(".").split()[-1]
    return finding.kind.name, (last if last.isalpha() else words[0] if words else finding.value)


def detection_pass() -> tuple[dict[str, Any], dict[str, list[Detected]]]:
    by_set: dict[str, list[Detected]] = {}
    report: dict[str, Any] = {"sets": {}, "fields": {}, "examples": []}
    shapes_shown: set[tuple[str, str]] = set()
    for dataset in DETECTION_SETS:
        detected = [detect(item) for item in load_dataset(dataset)]
        by_set[dataset] = detected
        changed = [d for d in detected if d.changed]
        report["sets"][dataset] = {
            "prompt": PROMPTS[dataset], "requests": len(detected), "changed": len(changed),
            "unchanged": len(detected) - len(changed),
            "changed_by_kind": dict(Counter(kind for d in changed for kind in {f.kind.name for f in d.findings})),
            "findings_by_kind": dict(Counter(f.kind.name for d in changed for f in d.findings)),
            "distinct_values": sorted({f.value for d in changed for f in d.findings}),
        }
        for d in changed:
            user = user_turn(d.item)
            for finding in find_personal_data(user):
                if shape(finding) not in shapes_shown and len(report["examples"]) < EXAMPLES:
                    shapes_shown.add(shape(finding))
                    report["examples"].append({"dataset": dataset, "item_id": d.item.item_id,
                                               "kind": finding.kind.name, "value": finding.value,
                                               "context": snippet(user, finding)})
    report["fields"] = field_counts(by_set)
    return report, by_set


def field_counts(by_set: Mapping[str, list[Detected]]) -> dict[str, Any]:
    """The raw texts, each once: GSM8K problems, SQuAD questions, SQuAD passages."""
    squad = [d.item for d in by_set[SQUAD]]
    texts = {"gsm8k_questions": [d.item.question for d in by_set[GSM8K]],
             "squad_questions": [item.question for item in squad],
             "squad_passages": list(dict.fromkeys(item.context or "" for item in squad))}
    return {name: {"texts": len(values), "with_a_match": sum(1 for text in values if find_personal_data(text))}
            for name, values in texts.items()}


def model_slice(by_set: Mapping[str, list[Detected]], *, limit: int, controls: Mapping[str, int],
                seed: int) -> list[tuple[BenchItem, bool]]:
    """(item, changed by redact): the changed requests, GSM8K's first (they are few), then controls."""
    changed = {dataset: [d.item for d in by_set[dataset] if d.changed] for dataset in MODEL_SETS}
    gsm8k_take = min(len(changed[GSM8K]), limit // 2)
    chosen = (sample(changed[GSM8K], limit=gsm8k_take, seed=seed)
              + sample(changed[SQUAD_PASSAGE], limit=min(len(changed[SQUAD_PASSAGE]), limit - gsm8k_take), seed=seed))
    unchanged = {dataset: [d.item for d in by_set[dataset] if not d.changed] for dataset in MODEL_SETS}
    control_items = [item for dataset in MODEL_SETS
                     for item in sample(unchanged[dataset], limit=controls[dataset], seed=seed)]
    return [(item, True) for item in chosen] + [(item, False) for item in control_items]


def daemon_env(home: Path, egress: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYBRID_ROUTER_", "OPENAI_"))}
    env.update(HOME=str(home), HYBRID_ROUTER_MODELS__CACHE_DIR=str(Path.home() / ".cache/hybrid-router/models"),
               HYBRID_ROUTER_INFO__SERVICE="off", HYBRID_ROUTER_LEDGER__ENABLED="false",
               HYBRID_ROUTER_EDGE__KIND="fault-injection", HYBRID_ROUTER_PRIVACY__CLOUD_EGRESS=egress,
               HYBRID_ROUTER_LOGGING__LEVEL="WARNING")
    return env


def run_with(egress: str, items: Sequence[BenchItem]) -> tuple[dict[tuple[str, str], dict], Any, float]:
    """CLOUD_ONLY over `items` through a fresh daemon: (records by (dataset, id), its Info, seconds)."""
    with tempfile.TemporaryDirectory(prefix=f"hybrid-router-privacy-{egress}-") as tmp:
        home = Path(tmp)
        daemon = LocalDaemon(env=daemon_env(home, egress), ready_timeout_s=600)
        with daemon:
            with daemon.client(timeout_s=60) as client:
                client.wait_ready(timeout_s=600)
                info = client.info()
            began = time.monotonic()
            records = asyncio.run(run(RunPlan(items=items, modes=[Mode.CLOUD_ONLY], out_dir=home / "results"),
                                      daemon.target, ChannelTrust(token=daemon.token)))
            seconds = time.monotonic() - began
    return {(r["dataset"], r["item_id"]): r for r in records}, info, seconds


def cloud_prompt_tokens(record: Mapping[str, Any]) -> Optional[int]:
    runs = [r for r in record.get("runs", []) if r["backend"] == "CLOUD"]
    return runs[0]["prompt_tokens"] if runs else None


def quality(record: Mapping[str, Any]) -> float:
    """GSM8K: 1 when the final number is right; SQuAD: token F1."""
    return float(record["correct"]) if record["f1"] is None else float(record["f1"])


def item_rows(chosen: Sequence[tuple[BenchItem, bool]], records: Mapping[str, Mapping]) -> list[dict[str, Any]]:
    rows = []
    for item, changed in chosen:
        key = (item.dataset, item.item_id)
        allow, redact = records["allow"][key], records["redact"][key]
        rows.append({
            "dataset": item.dataset, "item_id": item.item_id, "changed_by_redact": changed,
            "matched": [[f.kind.name, f.value] for f in find_personal_data(user_turn(item))],
            "cloud_saw": redacted_messages(item)[1][1]["content"] if changed else None,
            "gold": list(item.golds),
            "allow": {"text": allow["text"], "correct": allow["correct"], "f1": allow["f1"],
                      "quality": quality(allow), "cloud_prompt_tokens": cloud_prompt_tokens(allow),
                      "error": allow.get("error")},
            "redact": {"text": redact["text"], "correct": redact["correct"], "f1": redact["f1"],
                       "quality": quality(redact), "cloud_prompt_tokens": cloud_prompt_tokens(redact),
                       "error": redact.get("error")},
            "same_answer": allow["text"] == redact["text"],
        })
    return rows


def summarise(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    groups = []
    for dataset in MODEL_SETS:
        for changed in (True, False):
            chosen = [row for row in rows if row["dataset"] == dataset and row["changed_by_redact"] == changed]
            if not chosen:
                continue
            allow = mean(row["allow"]["quality"] for row in chosen)
            redact = mean(row["redact"]["quality"] for row in chosen)
            groups.append({
                "dataset": dataset, "items": "changed by redact" if changed else "control (unchanged)",
                "n": len(chosen), "metric": "accuracy" if dataset == GSM8K else "token F1",
                "allow": round(allow, 4), "redact": round(redact, 4), "difference": round(redact - allow, 4),
                "exact_match_allow": _share(chosen, "allow"), "exact_match_redact": _share(chosen, "redact"),
                "same_answer": sum(row["same_answer"] for row in chosen),
                "errors": sum(bool(row["allow"]["error"]) + bool(row["redact"]["error"]) for row in chosen),
            })
    return groups


def _share(rows: Sequence[Mapping[str, Any]], egress: str) -> float:
    return round(mean(float(bool(row[egress]["correct"])) for row in rows), 4)


def whole_set_cost(detection: Mapping[str, Any], groups: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The expected cost over a whole data set: zero on its unchanged requests, the measured mean difference
    on its changed ones, weighted by their share."""
    costs = {}
    for group in groups:
        if group["items"] != "changed by redact":
            continue
        counts = detection["sets"][group["dataset"]]
        share = counts["changed"] / counts["requests"]
        costs[group["dataset"]] = {"changed_share": share, "expected_difference": group["difference"] * share}
    return costs


def uncommitted_code() -> list[str]:
    """The files of the code this run uses that differ from the commit it names (tests and docs do not count)."""
    try:
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "router", "edge",
                                 "cloud", "bench/*.py", "pyproject.toml"],
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return ["unknown"]
    return [line[3:] for line in status.splitlines() if line.strip()]


def detection_markdown(detection: Mapping[str, Any]) -> list[str]:
    lines = ["## 1. Detection over all of ../shared/data (no model)\n",
             "Every request the bench would send, built with bench/datasets.py (system line and user turn), put "
             "through the redacting backend's placeholder step. A request it does not change is sent byte for byte "
             "as under `allow`, so **on those requests the quality cost of `redact` is exactly zero**.\n",
             "| bench prompt | requests | changed by redact | unchanged (cost exactly 0) | requests by kind | findings by kind |",
             "|---|---|---|---|---|---|"]
    for dataset, counts in detection["sets"].items():
        kinds = ", ".join(f"{k} {v}" for k, v in counts["changed_by_kind"].items()) or "none"
        findings = ", ".join(f"{k} {v}" for k, v in counts["findings_by_kind"].items()) or "none"
        lines.append(f"| {dataset} | {counts['requests']:,} | {counts['changed']} | {counts['unchanged']:,} | "
                     f"{kinds} | {findings} |")
    lines += ["", "The raw texts, each counted once:", "",
              "| texts | count | with a match |", "|---|---|---|"]
    lines += [f"| {name} | {counts['texts']:,} | {counts['with_a_match']} |"
              for name, counts in detection["fields"].items()]
    lines += ["", "Every distinct value matched: " + "; ".join(
        f"{dataset}: " + ", ".join(f"`{v}`" for v in counts["distinct_values"])
        for dataset, counts in detection["sets"].items() if counts["distinct_values"]) + ".", "",
              f"{len(detection['examples'])} examples (⟦matched⟧ in its context):", ""]
    lines += [f"- {e['dataset']} `{e['item_id']}`, {e['kind']}: {e['context']}" for e in detection["examples"]]
    return lines + [""]


def model_markdown(report: Mapping[str, Any]) -> list[str]:
    model = report["model_pass"]
    changed = [row for row in model["rows"] if row["changed_by_redact"]]
    controls = [row for row in model["rows"] if not row["changed_by_redact"]]

    def tokens_differ(rows: Sequence[Mapping[str, Any]]) -> int:
        return sum(row["allow"]["cloud_prompt_tokens"] != row["redact"]["cloud_prompt_tokens"] for row in rows)

    lines = ["## 2. Model pass: CLOUD_ONLY, allow against redact\n",
             f"Cloud: {model['cloud_model']}; greedy, max_tokens {json.dumps(model['max_tokens'])}; one request at a "
             f"time; seed {model['seed']}. Items: the requests redact changes (GSM8K all {model['gsm8k_changed']} "
             f"of them, SQuAD-with-passage a seeded sample) and unchanged controls; SQuAD closed book is not in "
             f"this pass. Time: allow {model['seconds']['allow']:.0f} s, redact {model['seconds']['redact']:.0f} s.\n",
             f"The cloud's prompt-token count differs between the two runs on {tokens_differ(changed)} of the "
             f"{len(changed)} changed requests (a placeholder and the value it hides may tokenise to the same length) "
             f"and on {tokens_differ(controls)} of the {len(controls)} controls.\n",
             "| data set | items | n | metric | allow | redact | redact − allow | exact match allow → redact | same answer | errors |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for g in model["groups"]:
        lines.append(f"| {g['dataset']} | {g['items']} | {g['n']} | {g['metric']} | {g['allow']:.3f} | "
                     f"{g['redact']:.3f} | {g['difference']:+.3f} | {g['exact_match_allow']:.3f} → "
                     f"{g['exact_match_redact']:.3f} | {g['same_answer']}/{g['n']} | {g['errors']} |")
    lines += ["", "Over a whole data set (zero on unchanged requests, the measured difference on changed ones, "
              "weighted by their share):", ""]
    lines += [f"- {dataset}: {cost['changed_share']:.4%} of requests changed → expected difference "
              f"{cost['expected_difference']:+.5f}" for dataset, cost in model["whole_set"].items()]
    lines += ["", "Changed items (the value the cloud did not see; answers as the client got them, restored):", "",
              "| data set | item | matched | gold | allow answer | redact answer | quality allow → redact |",
              "|---|---|---|---|---|---|---|"]
    for row in model["rows"]:
        if not row["changed_by_redact"]:
            continue
        matched = ", ".join(f"{kind} `{value}`" for kind, value in row["matched"])
        lines.append(f"| {row['dataset']} | `{row['item_id']}` | {matched} | {_cell(' / '.join(row['gold']))} | "
                     f"{_cell(row['allow']['text'])} | {_cell(row['redact']['text'])} | "
                     f"{row['allow']['quality']:.2f} → {row['redact']['quality']:.2f} |")
    return lines + [""]


def _cell(text: str, limit: int = 80) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else "…" + text[-limit:]


def write_results(report: Mapping[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "privacy_cost.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    lines = ["# The quality cost of `privacy.cloud_egress = redact`\n",
             f"`{report['command']}` at commit {report['commit']}"
             + (f" (uncommitted changes in: {', '.join(report['uncommitted_code'])})" if report["uncommitted_code"] else "")
             + f", {report['date_utc']}\n"]
    if report.get("machine"):
        lines.append(f"Machine: {report['machine']}; versions: "
                     + ", ".join(f"{k} {v}" for k, v in report["packages"].items()) + "\n")
    lines += detection_markdown(report["detection"])
    if report.get("model_pass"):
        lines += model_markdown(report)
    lines += ["## Prompts\n", *(f"- {key}: `{json.dumps(text)}`" for key, text in report["prompts"].items()), ""]
    (out / "privacy_cost.md").write_text("\n".join(lines))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=30, help="changed requests in the model pass")
    parser.add_argument("--controls-gsm8k", type=int, default=2, help="unchanged GSM8K controls")
    parser.add_argument("--controls-squad", type=int, default=4, help="unchanged SQuAD-with-passage controls")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--detect-only", action="store_true", help="the detection pass alone, no model")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    detection, by_set = detection_pass()
    print(json.dumps({k: {"changed": v["changed"], "of": v["requests"], "by_kind": v["changed_by_kind"]}
                      for k, v in detection["sets"].items()}), file=sys.stderr)
    report: dict[str, Any] = {
        "benchmark": "privacy_cost", "command": " ".join(["python -m bench.privacy_cost", *(argv or sys.argv[1:])]),
        "commit": commit(), "uncommitted_code": uncommitted_code(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "prompts": {key: PROMPTS[key] for key in ("system", *DETECTION_SETS)}, "detection": detection,
    }
    if not args.detect_only:
        chosen = model_slice(by_set, limit=args.limit, seed=args.seed,
                             controls={GSM8K: args.controls_gsm8k, SQUAD_PASSAGE: args.controls_squad})
        items = [item for item, _changed in chosen]
        records, seconds = {}, {}
        for egress in EGRESS_SETTINGS:
            records[egress], info, seconds[egress] = run_with(egress, items)
            print(f"{egress}: {len(records[egress])} answers in {seconds[egress]:.0f} s", file=sys.stderr)
        rows = item_rows(chosen, records)
        groups = summarise(rows)
        report.update(machine=info.hardware, packages=dict(sorted(info.packages.items())))
        report["model_pass"] = {
            "mode": "CLOUD_ONLY", "cloud_model": f"{info.cloud.name} (local stand-in: {info.cloud.local_standin}, "
            f"sha256 {info.cloud.sha256[:12]})", "edge": "fault-injection (never called by CLOUD_ONLY)",
            "max_tokens": dict(DEFAULT_MAX_TOKENS), "temperature": 0.0, "seed": args.seed,
            "gsm8k_changed": detection["sets"][GSM8K]["changed"],
            "prompt_keys": sorted({prompt_key(item) for item in items}), "seconds": seconds,
            "groups": groups, "whole_set": whole_set_cost(detection, groups), "rows": rows,
        }
    write_results(report, args.out)
    print((args.out / "privacy_cost.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

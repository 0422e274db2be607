"""`hybrid-router improve`: the loop that lets the cloud teach the edge, one resumable run in a directory.

    export    the ledger's good cloud answers and corrections, a fifth held out (by prompt)
    finetune  a LoRA on the rest (edge/finetune.py: resumable, checked against transformers)
    evaluate  the edge with and without it on the held-out part, by task (router/assembly/adapter_eval.py)
    install   only if it wins on its target task and loses at most max_loss elsewhere: a new store
              version, then the running daemon swaps to it (or the next start takes it)
    models    which trained models now read another edge than they were trained on: the probes refuse it
              (router/core/probes/model.py), the learned arbiter and router are reported stale; they are
              retrained from traffic served by the new edge, which does not exist yet when improve ends

Each stage's result goes to `improve.json` in the run directory; run the same command again and finished
stages are skipped (fine-tuning resumes from its checkpoint). A scheduled run (deploy/hybrid-router-improve.timer)
uses a new directory each time. Needs the [finetune] extra.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from edge.adapter_store import AdapterStore
from router.assembly.adapter_eval import as_table, compare, target_task, verdict
from router.assembly.adapters import edge_model_file
from router.domain.config import Settings

STATE_FILE = "improve.json"
VALIDATION_FRACTION = 0.2
MIN_TRAINING_EXAMPLES = 8


class ImproveStopped(Exception):
    """The loop cannot go on (too little data); the message says why. The stages before stay recorded."""


@dataclass(frozen=True)
class ImproveOptions:
    steps: int = 200
    learning_rate: float = 2e-4
    min_gain: float = 0.0
    max_loss: float = 0.02
    since_unix_s: Optional[float] = None
    min_score: float = 0.8
    install: bool = True


class ImproveRun:
    def __init__(self, settings: Settings, out_dir: Path, options: ImproveOptions, *,
                 switch: Callable[[Optional[str]], str], log: Callable[[str], None] = print) -> None:
        """`switch(version)`: makes the daemon run that store version (the running daemon's UseAdapter, or
        the store alone when none runs); returns what it did, for the report."""
        self.settings, self.out, self.options, self.switch, self.log = settings, out_dir, options, switch, log
        self.model = edge_model_file(settings)
        self.store = AdapterStore(settings.models.adapters_dir, self.model.name)
        self.state: dict[str, Any] = (json.loads((out_dir / STATE_FILE).read_text())
                                      if (out_dir / STATE_FILE).exists() else {"stages": {}})

    def run(self) -> dict[str, Any]:
        for name, stage in (("export", self._export), ("finetune", self._finetune), ("evaluate", self._evaluate),
                            ("install", self._install), ("models", self._models)):
            if name in self.state["stages"]:
                self.log(f"{name}: done in an earlier run")
                continue
            started = time.monotonic()
            result = stage()
            self.state["stages"][name] = {**result, "seconds": round(time.monotonic() - started, 1)}
            self._save()
        return self.state

    def _save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        temporary = self.out / f".{STATE_FILE}.writing"
        temporary.write_text(json.dumps(self.state, indent=2, default=str) + "\n")
        temporary.replace(self.out / STATE_FILE)

    def _export(self) -> dict[str, Any]:
        from datetime import datetime, timezone

        from router.core.learning.lora import lora_training_set

        path = self.settings.ledger.path.expanduser()
        if not path.exists():
            raise ImproveStopped(f"no ledger at {path} (ledger.path): nothing to learn from yet")
        since = (datetime.fromtimestamp(self.options.since_unix_s, tz=timezone.utc)
                 if self.options.since_unix_s is not None else None)
        report = lora_training_set(path, self.out / "data" / "sft.jsonl",
                                   log_content=self.settings.ledger.log_content, since=since,
                                   min_score=self.options.min_score, split_seed=0,
                                   validation_fraction=VALIDATION_FRACTION)
        if report.rows < MIN_TRAINING_EXAMPLES or not report.validation_rows:
            raise ImproveStopped(f"the ledger gave {report.rows} training and {report.validation_rows} held-out "
                                 f"examples; at least {MIN_TRAINING_EXAMPLES} and 1 are needed (serve more traffic "
                                 "with grading on: references, feedback or ledger.judge_sample_rate)")
        self.log(f"export: {report.rows} examples to train on, {report.validation_rows} held out")
        return {"train": str(report.path), "held_out": str(report.validation_path), "rows": report.rows,
                "held_out_rows": report.validation_rows, "sources": dict(report.sources)}

    def _finetune(self) -> dict[str, Any]:
        from edge.finetune import finetune
        from edge.lora_training import LoraTrainingConfig, read_chat_examples

        examples = read_chat_examples(Path(self.state["stages"]["export"]["train"]))
        result = finetune(self.model.path, base_name=self.model.name, base_sha256=self.model.sha256,
                          examples=examples, out_dir=self.out / "finetune",
                          config=LoraTrainingConfig(steps=self.options.steps,
                                                            learning_rate=self.options.learning_rate), log=self.log)
        return {"adapter": str(result.adapter), "training": asdict(result.training), "check": asdict(result.check)}

    def _evaluate(self) -> dict[str, Any]:
        from edge.llama_backend import LlamaBackend
        from edge.lora_training import read_chat_examples

        exported = self.state["stages"]["export"]
        held_out = read_chat_examples(Path(exported["held_out"]))
        target = target_task([example.answer for example in read_chat_examples(Path(exported["train"]))])
        edge = LlamaBackend(self.model.path, model_name=self.model.name, n_ctx=self.settings.edge.n_ctx,
                            n_threads=self.settings.edge.n_threads)
        try:
            tasks = asyncio.run(compare(edge, Path(self.state["stages"]["finetune"]["adapter"]), held_out,
                                        name="candidate", scale=self.settings.edge.adapter_scale))
        finally:
            edge.close()
        judged = verdict(tasks, target, min_gain=self.options.min_gain, max_loss=self.options.max_loss)
        self.log(as_table(tasks, target))
        self.log(f"evaluate: {'install' if judged.install else 'keep the edge as it is'}: {judged.reason}")
        return {"install": judged.install, "target": target, "reason": judged.reason,
                "tasks": {task: {**asdict(scores), "change": scores.change} for task, scores in tasks.items()}}

    def _install(self) -> dict[str, Any]:
        evaluated = self.state["stages"]["evaluate"]
        if not evaluated["install"] or not self.options.install:
            why = evaluated["reason"] if not evaluated["install"] else "--no-install"
            return {"installed": None, "reason": why}
        finetuned = self.state["stages"]["finetune"]
        # Added once: a run that stopped at the switch (the daemon refused, went away) resumes with it.
        added = self.state.get("added")
        if added is None:
            report = json.loads((Path(finetuned["adapter"]).parent / "report.json").read_text())
            added = self.store.add(Path(finetuned["adapter"]), base_sha256=self.model.sha256,
                                   source={"improve": str(self.out.resolve()), "report": report,
                                           "evaluation": evaluated}).version
            self.state["added"] = added
            self._save()
        did = self.switch(added)
        self.log(f"install: {added}; {did}")
        return {"installed": added, "switched": did}

    def _models(self) -> dict[str, Any]:
        installed = self.state["stages"]["install"].get("installed")
        if not installed:
            return {"stale": [], "note": "no adapter installed: the trained models still read the edge they were trained on"}
        stale = []
        arbitration, routing = self.settings.arbitration, self.settings.routing
        if arbitration.scorer == "probe" or arbitration.probe_dir is not None:
            stale.append("the draft probe: steps aside for the default rule on the new edge (POST and AUTO's "
                         "cascade); retrain it with train-probe on states read with the adapter")
        if routing.decide_at == "prefill" or routing.probe_dir is not None:
            stale.append("the prefill probe: refuses the new edge (PRE at prefill routes by the request's text, as "
                         "under decide_at = request; AUTO lets its cascade decide); retrain it with train-probe --at "
                         "prefill on states read with the adapter")
        if arbitration.scorer == "learned":
            stale.append(f"the learned arbiter ({arbitration.model_dir}): trained on the old edge's answers; "
                         "retrain with train-arbiter --ledger --since <the install> once traffic has been graded")
        if routing.model_dir is not None:
            stale.append(f"PRE's router ({routing.model_dir}): retrain with train-router --ledger --since <the install>")
        for line in stale:
            self.log(f"stale: {line}")
        return {"stale": stale}

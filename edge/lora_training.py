"""LoRA fine-tuning of the edge model on chat examples, on the CPU, resumable. Needs the [finetune] extra
(torch, transformers, peft); the daemon never imports this module.

- The model is the edge's own GGUF, loaded by transformers and dequantized to float32: what is trained is
  the model the daemon serves, and no other weights are needed.
- Tokens are the edge's own: each example's prompt is tokenised by `LlamaBackend.prompt_token_ids` (the
  chat template, contents as plain text) and its answer by `answer_token_ids` (the answer, then the
  end-of-generation token). The loss is on the answer's tokens only.
- It checkpoints every `checkpoint_every` steps (the adapter, the optimizer, the step) and resumes from
  the last checkpoint when run again with the same data and settings (more steps continue it); other
  data or settings are refused rather than mixed. Batches follow a seeded order fixed by the step, so a resumed run trains on exactly
  the batches an uninterrupted one would have.
- One thread by default: on a machine whose cores are shared (the daemon, the stand-in), torch's threads
  spin-wait on each other and more threads are slower.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import resource
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from edge.errors import EdgeError
from edge.llama_backend import LlamaBackend

_CHECKPOINT = "checkpoint"
_PEFT_DIR = "peft"
_STATE_FILE = "trainer_state.json"
DATA_DIR = "data"  # where a caller may keep the run's training data (finetune --ledger's export)


class FineTuneError(EdgeError):
    """Training data or settings that cannot be used, or an output directory that holds another run."""


@dataclass(frozen=True)
class ChatExample:
    """One thing to learn: the messages the edge is given, and the answer it should write."""

    messages: tuple[Mapping[str, str], ...]
    answer: str


@dataclass(frozen=True)
class LoraTrainingConfig:
    """Every default is the one `hybrid-router finetune` documents (docs/finetune.md)."""

    rank: int = 8
    alpha: float = 16.0
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    learning_rate: float = 2e-4
    batch_size: int = 4
    steps: int = 200                # optimizer steps; LoRA distillation overfits soon after a few hundred
    seed: int = 0
    threads: int = 1
    checkpoint_every: int = 20
    max_example_tokens: int = 1024  # longer examples (prompt plus answer) are skipped, and counted

    def __post_init__(self) -> None:
        for name in ("rank", "batch_size", "steps", "threads", "checkpoint_every", "max_example_tokens"):
            if getattr(self, name) < 1:
                raise FineTuneError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.alpha > 0 or not self.learning_rate > 0:
            raise FineTuneError("alpha and learning_rate must be > 0")
        if not self.target_modules:
            raise FineTuneError("target_modules is empty")


@dataclass
class TrainingReport:
    examples: int
    skipped_too_long: int
    answer_tokens: int              # the tokens the loss is computed on, over one pass of the data
    steps: int
    resumed_from_step: int          # 0: a fresh run
    seconds: float                  # this process's training time, loading excluded
    seconds_loading: float
    peak_rss_mib: float
    losses: list[float] = field(default_factory=list)   # the steps this process ran, in order


@dataclass(frozen=True)
class _Tokenised:
    ids: tuple[int, ...]
    labels: tuple[int, ...]         # -100 on the prompt


def read_chat_examples(path: Path) -> list[ChatExample]:
    """OpenAI chat fine-tuning JSONL (what `hybrid-router export --format openai` writes): the last
    message of each line is the assistant's answer, the ones before it the prompt."""
    examples = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                messages = json.loads(line)["messages"]
                roles = [m["role"] for m in messages]
                contents = [m["content"] for m in messages]
            except (ValueError, KeyError, TypeError) as exc:
                raise FineTuneError(f"{path}:{number}: not an OpenAI chat example ({exc})") from exc
            if len(messages) < 2 or roles[-1] != "assistant" or "assistant" in roles[:-1] and roles[-2] == "assistant":
                raise FineTuneError(f"{path}:{number}: the last message must be the assistant's answer, after a prompt")
            if not all(isinstance(c, str) for c in contents) or not contents[-1].strip():
                raise FineTuneError(f"{path}:{number}: every content must be text, and the answer not empty")
            examples.append(ChatExample(messages=tuple({"role": r, "content": c} for r, c in
                                                       zip(roles[:-1], contents[:-1])), answer=contents[-1]))
    if not examples:
        raise FineTuneError(f"{path} holds no examples")
    return examples


def _tokenise(edge: LlamaBackend, examples: Sequence[ChatExample], limit: int) -> tuple[list[_Tokenised], int]:
    kept, skipped = [], 0
    for example in examples:
        prompt = edge.prompt_token_ids(example.messages)
        answer = edge.answer_token_ids(example.answer)
        if len(prompt) + len(answer) > limit:
            skipped += 1
            continue
        kept.append(_Tokenised(ids=(*prompt, *answer), labels=(*([-100] * len(prompt)), *answer)))
    return kept, skipped


def batch_indices(step: int, n_examples: int, batch_size: int, seed: int) -> list[int]:
    """The examples of step `step`: each epoch is a seeded permutation, so a step's batch depends on the
    step alone (a resumed run sees the same batches)."""
    per_epoch = math.ceil(n_examples / batch_size)
    epoch, index = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n_examples)
    return [int(i) for i in order[index * batch_size:(index + 1) * batch_size]]


def _fingerprint(config: LoraTrainingConfig, base_sha256: str, data: Sequence[_Tokenised]) -> str:
    """What a checkpoint must share with the run that resumes it. Not `steps` (more steps continue the same
    run: batches depend on the step alone and the learning rate is constant), nor how often it checkpoints,
    nor the threads it runs on."""
    settings = {k: v for k, v in asdict(config).items() if k not in ("steps", "checkpoint_every", "threads")}
    digest = hashlib.sha256(json.dumps({"config": settings, "base": base_sha256}, sort_keys=True).encode())
    for item in data:
        digest.update(np.asarray(item.ids, dtype=np.int64).tobytes())
        digest.update(np.asarray(item.labels, dtype=np.int64).tobytes())
    return digest.hexdigest()


def load_transformers_model(base_gguf: Path):
    """The GGUF as a transformers model in float32 (the tokenizer is not needed: tokens are the edge's)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # there is no hub to ask; never try
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_gguf.parent), gguf_file=base_gguf.name,
                                                 dtype=torch.float32)
    model.config.use_cache = False
    return model


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class LoraTrainer:
    """Trains one adapter into `out_dir` (`checkpoint/` while it runs, `peft/` when done)."""

    def __init__(self, base_gguf: Path, base_sha256: str, examples: Sequence[ChatExample], out_dir: Path,
                 config: LoraTrainingConfig = LoraTrainingConfig(), *, log: Callable[[str], None] = print) -> None:
        self.base_gguf, self.out_dir, self.config, self.log = base_gguf, out_dir, config, log
        edge = LlamaBackend(base_gguf, n_ctx=config.max_example_tokens + 8, n_threads=1)
        try:
            self.data, self.skipped = _tokenise(edge, examples, config.max_example_tokens)
        finally:
            edge.close()
        if not self.data:
            raise FineTuneError(f"none of the {len(examples)} examples fits max_example_tokens "
                                f"({config.max_example_tokens})")
        self.fingerprint = _fingerprint(config, base_sha256, self.data)

    @property
    def peft_dir(self) -> Path:
        return self.out_dir / _PEFT_DIR

    def train(self):
        """Runs (or resumes) to `config.steps`. Returns (the peft model, TrainingReport)."""
        import torch
        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
        from safetensors.torch import load_file

        config = self.config
        torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        started = time.monotonic()
        model = get_peft_model(load_transformers_model(self.base_gguf), LoraConfig(
            r=config.rank, lora_alpha=config.alpha, lora_dropout=0.0, target_modules=list(config.target_modules),
            task_type="CAUSAL_LM"))
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
        start = self._resume_step()
        if start:
            checkpoint = self.out_dir / _CHECKPOINT
            set_peft_model_state_dict(model, load_file(str(checkpoint / "adapter_model.safetensors")))
            optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=True))
            self.log(f"resuming at step {start} of {config.steps}")
        loaded_s = time.monotonic() - started
        report = TrainingReport(examples=len(self.data), skipped_too_long=self.skipped,
                                answer_tokens=sum(sum(1 for t in d.labels if t >= 0) for d in self.data),
                                steps=config.steps, resumed_from_step=start, seconds=0.0,
                                seconds_loading=round(loaded_s, 1), peak_rss_mib=0.0)
        model.train()
        pad = self.data[0].ids[-1]  # the end-of-generation token; padded positions are masked anyway
        for step in range(start, config.steps):
            batch = [self.data[i] for i in batch_indices(step, len(self.data), config.batch_size, config.seed)]
            width = max(len(item.ids) for item in batch)
            ids = torch.tensor([list(b.ids) + [pad] * (width - len(b.ids)) for b in batch])
            labels = torch.tensor([list(b.labels) + [-100] * (width - len(b.labels)) for b in batch])
            mask = torch.tensor([[1] * len(b.ids) + [0] * (width - len(b.ids)) for b in batch])
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            report.losses.append(round(float(loss.detach()), 5))
            done = step + 1
            if done % config.checkpoint_every == 0 or done == config.steps:
                self._checkpoint(model, optimizer, done)
                self.log(f"step {done}/{config.steps}: loss {report.losses[-1]:.4f}")
        model.eval()
        if self.peft_dir.exists():
            shutil.rmtree(self.peft_dir)
        model.save_pretrained(str(self.peft_dir))
        report.seconds = round(time.monotonic() - started - loaded_s, 1)
        report.peak_rss_mib = round(_peak_rss_mib(), 1)
        return model, report

    def _resume_step(self) -> int:
        checkpoint, old = self.out_dir / _CHECKPOINT, self.out_dir / f"{_CHECKPOINT}.old"
        if not checkpoint.exists() and old.exists():  # killed between the two renames of _checkpoint
            old.rename(checkpoint)
        state_file = checkpoint / _STATE_FILE
        if not state_file.exists():
            if self.out_dir.exists() and any(not p.name.startswith(_CHECKPOINT) and p.name != DATA_DIR
                                             for p in self.out_dir.iterdir()):
                raise FineTuneError(f"{self.out_dir} is not empty and holds no checkpoint; use a new --out")
            return 0
        state = json.loads(state_file.read_text())
        if state.get("fingerprint") != self.fingerprint:
            raise FineTuneError(f"{self.out_dir} holds a run with other data or settings; use a new --out "
                                "(or delete it to start over)")
        step = int(state["step"])
        if step > self.config.steps:
            raise FineTuneError(f"{self.out_dir} holds a run already at step {step}, past --steps "
                                f"{self.config.steps}; ask for at least {step} steps, or use a new --out")
        return step

    def _checkpoint(self, model, optimizer, step: int) -> None:
        import torch

        # Written beside the last one, then swapped in, so a process killed mid-write leaves a whole one.
        fresh, final = self.out_dir / f"{_CHECKPOINT}.writing", self.out_dir / _CHECKPOINT
        old = self.out_dir / f"{_CHECKPOINT}.old"
        for leftover in (fresh, old):  # a process killed while writing, or while removing the old one
            if leftover.exists() and (leftover is fresh or final.exists()):
                shutil.rmtree(leftover)
        model.save_pretrained(str(fresh))
        torch.save(optimizer.state_dict(), fresh / "optimizer.pt")
        (fresh / _STATE_FILE).write_text(json.dumps({"step": step, "fingerprint": self.fingerprint}))
        if final.exists():
            final.rename(old)
        fresh.rename(final)
        if old.exists():
            shutil.rmtree(old)

"""`hybrid-router finetune`'s work, end to end: train a LoRA on chat examples (edge/lora_training.py),
convert it to a GGUF adapter bound to its base model (edge/lora_gguf.py), and check that llama.cpp with
it computes what transformers computes with it (edge/lora_check.py). Needs the [finetune] extra.

`out_dir` ends holding `adapter.gguf` (what the daemon loads), `peft/` (the trained adapter as peft wrote
it), `checkpoint/` (to resume) and `report.json` (the settings, the data's size, time, peak memory, the
losses, the adapter's size and the check). An adapter that fails the check is renamed
`adapter.rejected.gguf`, so nothing installs it by mistake.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Sequence

from edge.lora_check import ConversionCheck, check_conversion
from edge.lora_gguf import ConvertedAdapter, convert_peft_adapter
from edge.lora_training import ChatExample, FineTuneError, LoraTrainer, LoraTrainingConfig, TrainingReport

ADAPTER_FILE = "adapter.gguf"
REJECTED_FILE = "adapter.rejected.gguf"
REPORT_FILE = "report.json"
_CHECKED_EXAMPLES = 4
_VERSIONED = ("torch", "transformers", "peft", "gguf", "llama_cpp_python")


@dataclass(frozen=True)
class FineTuneResult:
    adapter: Path
    training: TrainingReport
    conversion: ConvertedAdapter
    check: ConversionCheck


def finetune(base_gguf: Path, *, base_name: str, base_sha256: str, examples: Sequence[ChatExample],
             out_dir: Path, config: LoraTrainingConfig = LoraTrainingConfig(),
             log: Callable[[str], None] = print) -> FineTuneResult:
    """Raises FineTuneError (bad data, settings, an out_dir holding another run, a failed check) or
    AdapterConversionError."""
    trainer = LoraTrainer(base_gguf, base_sha256, examples, out_dir, config, log=log)
    log(f"{len(trainer.data)} examples ({trainer.skipped} longer than {config.max_example_tokens} tokens "
        f"skipped), {config.steps} steps of {config.batch_size}")
    model, training = trainer.train()
    conversion = convert_peft_adapter(trainer.peft_dir, base_gguf, out_dir / ADAPTER_FILE, base_name=base_name,
                                      base_sha256=base_sha256)
    check = check_conversion(model, base_gguf, base_sha256, conversion.path,
                             [item.ids for item in trainer.data[:_CHECKED_EXAMPLES]], threads=config.threads)
    log(check.describe())
    report = {"base_model": {"name": base_name, "sha256": base_sha256}, "config": asdict(config),
              "training": _training_record(out_dir / REPORT_FILE, asdict(training), config.steps), "adapter": {**asdict(conversion), "path": conversion.path.name},
              "check": {**asdict(check), "bound": round(check.bound, 6), "passed": check.passed}, "versions": _versions()}
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    if not check.passed:
        conversion.path.rename(out_dir / REJECTED_FILE)
        raise FineTuneError(f"the converted adapter was rejected ({out_dir / REJECTED_FILE}): {check.describe()}")
    return FineTuneResult(adapter=conversion.path, training=training, conversion=conversion, check=check)


def _training_record(report_path: Path, this_process: dict, steps: int) -> dict:
    """What this process trained; or, when it found the run already finished (run again to --install, or to
    re-check), what the process that finished it recorded: an empty record must not replace it."""
    if this_process.get("resumed_from_step") != steps:
        return this_process
    try:
        earlier = json.loads(report_path.read_text()).get("training")
    except (OSError, ValueError, AttributeError):
        return this_process
    return earlier if isinstance(earlier, dict) and earlier.get("steps") == steps else this_process


def _versions() -> dict[str, str]:
    found = {}
    for package in _VERSIONED:
        try:
            found[package] = metadata.version(package.replace("_", "-"))
        except metadata.PackageNotFoundError:
            found[package] = ""
    return found

"""Configs for real (GPU) runs: one YAML file = model + LoRA + TRL SFTConfig + forge's data
options (train/configs/*.yaml). `load_run_config` validates a file by constructing the real
`peft.LoraConfig` and `trl.SFTConfig` from it; `build_trainer` builds the `SFTTrainer` the
file describes around any model (the 8B it names, or a tiny stand-in in tests).

The data path is the same as the CPU runs': rows pre-tokenised by `ChatCodec`, loss on the
agent's tokens only. A pretrained tokenizer without ChatML or the protocol tags gets them as new
special tokens; with LoRA their embedding rows are trained through peft's
`trainable_token_indices` (only those rows, not the whole embedding matrix).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forge.db import ForgeError

SECTIONS = ("model", "lora", "sft", "forge")


class RunConfigError(ForgeError):
    """A run config file that does not parse or names unknown options."""


@dataclass
class RunSpec:
    path: str
    model: dict[str, Any]
    lora: dict[str, Any] | None
    sft: dict[str, Any]
    forge: dict[str, Any] = field(default_factory=dict)

    def sft_config(self, **override: Any) -> Any:
        from trl import SFTConfig

        return SFTConfig(**{**self.sft, **override})

    def lora_config(self, new_token_ids: list[int] | None = None) -> Any:
        if self.lora is None:
            return None
        from peft import LoraConfig

        kw = dict(self.lora)
        if new_token_ids and kw.pop("train_new_tokens", True):
            # Only the rows of tokens the tokenizer gained are trained in the embedding.
            kw["trainable_token_indices"] = sorted(new_token_ids)
        else:
            kw.pop("train_new_tokens", None)
        return LoraConfig(**kw)


def load_run_config(path: str | Path) -> RunSpec:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise RunConfigError(f"run config not found: {p}")
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise RunConfigError(f"{p}: not YAML: {e}") from e
    if not isinstance(doc, dict):
        raise RunConfigError(f"{p}: expected a mapping with sections {', '.join(SECTIONS)}")
    unknown = set(doc) - set(SECTIONS)
    if unknown:
        raise RunConfigError(f"{p}: unknown section(s) {', '.join(sorted(unknown))} (allowed: "
                             f"{', '.join(SECTIONS)})")
    if "name_or_path" not in (doc.get("model") or {}):
        raise RunConfigError(f"{p}: model.name_or_path is required")
    spec = RunSpec(path=str(p), model=dict(doc["model"]), lora=doc.get("lora"),
                   sft=dict(doc.get("sft") or {}), forge=dict(doc.get("forge") or {}))
    # Validate by constructing the real objects (unknown keys raise TypeError here, not on the
    # GPU box an hour later). use_cpu/bf16 are checked as written by the trainer at build time.
    try:
        spec.lora_config([0])
        from trl import SFTConfig

        SFTConfig(**{**spec.sft, "bf16": False, "use_cpu": True})
    except (TypeError, ValueError) as e:
        raise RunConfigError(f"{p}: {e}") from e
    return spec


def build_trainer(spec: RunSpec, model: Any, tokenizer: Any, train_dataset: Any,
                  eval_dataset: Any = None, new_token_ids: list[int] | None = None,
                  **sft_override: Any) -> Any:
    """The SFTTrainer the config describes, around `model` (already resized to the tokenizer);
    `train_dataset`/`eval_dataset` hold `input_ids` + `assistant_masks` rows."""
    from trl import SFTTrainer

    args = spec.sft_config(**sft_override)
    return SFTTrainer(model=model, args=args, train_dataset=train_dataset,
                      eval_dataset=eval_dataset, processing_class=tokenizer,
                      peft_config=spec.lora_config(new_token_ids))


__all__ = ["RunConfigError", "RunSpec", "build_trainer", "load_run_config"]

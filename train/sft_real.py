"""SFT from a run config (train/configs/*.yaml) on GPUs, e.g. an 8B instruct model with LoRA:

    accelerate launch --config_file train/configs/accelerate-1gpu.yaml \\
        train/sft_real.py train/configs/sft-llama3.1-8b-lora.yaml [--max-steps N]

Same data path as `python -m forge train sft` (input checks, ChatCodec pre-tokenisation, loss
on the agent's tokens only); the model, LoRA and trainer options come from the file. Not run in
this repository (no GPU); tests/test_train_sft.py builds its trainer around a tiny stand-in.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def load_model(spec: Any) -> tuple[Any, Any, list[int]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forge.train.model import grow_vocabulary, load_smollm2

    m = spec.model
    if m["name_or_path"] == "smollm2":
        model, tok, _ = load_smollm2()
        return model, tok, []   # full fine-tune: every row trains, no LoRA token list needed
    tok = AutoTokenizer.from_pretrained(m["name_or_path"])
    model = AutoModelForCausalLM.from_pretrained(
        m["name_or_path"], dtype=getattr(torch, m.get("dtype", "bfloat16")),
        attn_implementation=m.get("attn_implementation", "sdpa"))
    new_ids = grow_vocabulary(model, tok)
    model.config.pad_token_id = tok.pad_token_id
    return model, tok, new_ids


def main(argv: list[str] | None = None) -> int:
    from datasets import Dataset

    from forge.train.chat import ChatCodec
    from forge.train.configs import build_trainer, load_run_config
    from forge.train.model import save_checkpoint
    from forge.train.sft import check_columns, check_markers, load_export, tokenize_split

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="train/configs/*.yaml")
    ap.add_argument("--max-steps", type=int, default=None, help="override sft.max_steps")
    args = ap.parse_args(argv)
    spec = load_run_config(args.config)
    dd = load_export(spec.forge["data"])
    check_columns(dd)
    check_markers(dd)
    model, tok, new_ids = load_model(spec)
    codec = ChatCodec(tok, compact=bool(spec.forge.get("compact", False)))
    max_len = int(spec.sft.get("max_length", 8192))
    data = {}
    for split in ("train", "validation"):
        rows = tokenize_split(dd[split], codec)
        if spec.forge.get("overlong", "drop") == "drop":
            keep = [i for i, x in enumerate(rows["input_ids"]) if len(x) <= max_len]
            rows = {k: [v[i] for i in keep] for k, v in rows.items()}
        data[split] = Dataset.from_dict(rows)
    over = {} if args.max_steps is None else {"max_steps": args.max_steps}
    trainer = build_trainer(spec, model, tok, data["train"], data["validation"], new_ids, **over)
    trainer.train()
    out = f"{spec.sft['output_dir']}/checkpoint"
    merged = trainer.model.merge_and_unload() if spec.lora else trainer.model
    if trainer.accelerator.is_main_process:
        save_checkpoint(merged, tok, out, {"base": spec.model["name_or_path"], "config": spec.path,
                                           "codec": {"compact": codec.compact}})
        print("checkpoint:", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

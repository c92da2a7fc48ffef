"""SFT tokens/s under several settings, same data, same steps, one after the other.

    python benchmarks/bench_sft_speed.py --data build/curated/pool-s12 --model smollm2 \
        --levels L1 --steps 6 --batch-size 4 --max-length 1024 --threads 2 \
        --setting="--bf16 off" --setting="--bf16 on"

Each `--setting` holds `forge train sft` flags (`--bf16 on`, `--score-all-positions`,
`--freeze-layers 10`, ...) applied on top of the fixed run below. Every
setting runs `forge.train.sft.run_sft` for `--steps` optimizer steps from the same start (same
seed, so the same batches in the same order; the tag-row fit is skipped, it is not part of a
step) and reports the trainer's own tokens/s (non-padding tokens over the time spent inside
optimizer steps), and the ratio to the first setting. `--bf16 on` needs a CPU with native bf16
(AVX512-BF16 or AMX) to gain; on others autocast is emulated and slower. Writes
`<out>/bench_sft_speed.json`.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any


def parse_setting(text: str) -> dict[str, Any]:
    """`--bf16 on --freeze-layers 10` -> {"bf16": "on", "freeze_layers": 10}: the flags of
    `forge train sft`, parsed by its own parser; only what differs from the defaults is kept."""
    from forge.train.cli import add_config_args
    from forge.train.sft import SFTRunConfig

    p = argparse.ArgumentParser(prog=f"--setting {text!r}")
    add_config_args(p, SFTRunConfig)
    default = SFTRunConfig()
    return {k: v for k, v in vars(p.parse_args(shlex.split(text))).items()
            if v != getattr(default, k)}


def main() -> None:
    from forge.train.model import cpu_has_bf16
    from forge.train.sft import SFTRunConfig, run_sft

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="curated export (python -m forge.curate)")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--levels", default="L1")
    ap.add_argument("--kinds", default="")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--setting", action="append", default=[],
                    help="forge train sft flags, quoted; repeat (default: --bf16 off, then "
                         "--bf16 on)")
    ap.add_argument("--out", default="build/bench/sft-speed")
    a = ap.parse_args()
    settings = a.setting or ["--bf16 off", "--bf16 on"]

    out = Path(a.out)
    res: dict[str, Any] = {"args": vars(a), "cpu_has_bf16": cpu_has_bf16()}
    runs: dict[str, dict[str, Any]] = {}
    for i, setting in enumerate(settings):
        base = dict(data=a.data, model=a.model, levels=a.levels, kinds=a.kinds,
                    max_steps=a.steps, batch_size=a.batch_size, lr=1e-4, warmup=0,
                    max_length=a.max_length, system="short", threads=a.threads,
                    eval_steps=10 * a.steps, max_eval_samples=2,
                    logging_steps=max(1, a.steps // 2), fit_new_tokens=0,
                    out=str(out / f"setting-{i}"))
        m = run_sft(SFTRunConfig(**{**base, **parse_setting(setting)}), log=lambda *_: None)
        runs[setting] = {k: m[k] for k in ("bf16", "tokens_per_s", "step_s", "tokens_seen",
                                           "tokens_trained", "steps", "frozen_params",
                                           "train_loss_first", "train_loss_last")}
        runs[setting]["ratio_to_first"] = round(
            m["tokens_per_s"] / runs[settings[0]]["tokens_per_s"], 2)
        print(setting, runs[setting], flush=True)
    res["runs"] = runs
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_sft_speed.json").write_text(json.dumps(res, indent=2, default=str))


if __name__ == "__main__":
    main()

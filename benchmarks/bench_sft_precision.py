"""SFT tokens/s in float32 and in bf16 autocast, same data, same steps, one after the other.

    python benchmarks/bench_sft_precision.py --data build/curated/pool-s12 --model smollm2 \
        --levels L1 --steps 6 --batch-size 4 --max-length 1024 --threads 2

Each setting runs `forge.train.sft.run_sft` for `--steps` optimizer steps from the same start
(same seed, so the same batches in the same order; the tag-row fit is skipped, it is not part
of a step) and reports the trainer's own tokens/s (non-padding tokens over the time spent inside
optimizer steps). `--bf16 on` needs a CPU with native bf16 (AVX512-BF16 or AMX) to gain; on
others autocast is emulated and slower. Writes `<out>/bench_sft_precision.json`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


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
    ap.add_argument("--settings", default="off,on", help="--bf16 settings to run, in order")
    ap.add_argument("--out", default="build/bench/sft-precision")
    a = ap.parse_args()

    out = Path(a.out)
    res: dict[str, object] = {"args": vars(a), "cpu_has_bf16": cpu_has_bf16(), "runs": {}}
    runs: dict[str, dict[str, object]] = {}
    for setting in a.settings.split(","):
        m = run_sft(SFTRunConfig(
            data=a.data, model=a.model, levels=a.levels, kinds=a.kinds, max_steps=a.steps,
            batch_size=a.batch_size, lr=1e-4, warmup=0, max_length=a.max_length,
            system="short", threads=a.threads, eval_steps=10 * a.steps, max_eval_samples=2,
            logging_steps=max(1, a.steps // 2), fit_new_tokens=0, bf16=setting,
            out=str(out / setting)), log=lambda *_: None)
        runs[setting] = {k: m[k] for k in ("bf16", "tokens_per_s", "step_s", "tokens_seen",
                                           "steps", "train_loss_first", "train_loss_last")}
        print(setting, runs[setting], flush=True)
    res["runs"] = runs
    if "off" in runs and "on" in runs:
        res["speedup"] = round(float(runs["on"]["tokens_per_s"])  # type: ignore[arg-type]
                               / float(runs["off"]["tokens_per_s"]), 2)  # type: ignore[arg-type]
        print(f"bf16 / float32 tokens/s: {res['speedup']}x")
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_sft_precision.json").write_text(json.dumps(res, indent=2, default=str))


if __name__ == "__main__":
    main()

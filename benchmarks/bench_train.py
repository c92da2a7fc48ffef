"""The measured training run of issue 10: SFT, then RL, then the bench, timed end to end.

    python benchmarks/bench_train.py --data build/curated/pool-50k --out build/train/main \
        --sft-steps 1400 --sft-budget-s 1500 --rl-steps 24 [--sft-levels L1] [--threads 2]

1. `forge train sft` (a model built from a config, tokenizer trained on the export) for
   `--sft-steps` optimizer steps, stopped early at `--sft-budget-s` seconds of training;
2. `forge train rl` from that checkpoint on the export's RL prompts of `--rl-levels`;
3. an untrained model of the same preset and tokenizer (the floor), saved beside them;
4. `forge bench` on the held-out task set: the three models on `--bench-levels` (default L1,
   all of them) and on a stratified `--bench-sample` of all levels, k = 1, greedy.

Writes `<out>/bench_train.json` (stage timings, SFT and RL metrics, the bench rows) and prints
the rows. Every stage is the library's own code (`run_sft`, `run_rl`, `Bench`); this script only
chains and times them. SFT+RL wall time is the figure the issue bounds (~40 min on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def _untrained(sft_ckpt: Path, out: Path, preset: str) -> Path:
    """The floor: the SFT model's starting point with its tokenizer and codec. For a preset,
    random weights; for smollm2, the pretrained model as loaded (tags added, not fitted)."""
    from forge.train.model import (
        build_tiny,
        checkpoint_meta,
        load_checkpoint,
        load_smollm2,
        save_checkpoint,
    )

    meta = checkpoint_meta(sft_ckpt)
    if preset == "smollm2":
        model, tok, _ = load_smollm2()
    else:
        _, tok = load_checkpoint(sft_ckpt)
        model = build_tiny(tok, preset)
    base = "SmolLM2-135M-Instruct" if preset == "smollm2" else f"config:{preset}"
    return Path(save_checkpoint(model, tok, out, {"codec": meta.get("codec", {}),
                                                  "base": base, "stage": "untrained"}))


def _rows(rep: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, a in rep["agents"].items():
        out[name] = {"success": a["success_rate"], "ci95": a["ci95"],
                     "by_difficulty": {k: v["success_rate"] for k, v in
                                       a["by_difficulty"].items()},
                     "by_kind": {k: v["success_rate"] for k, v in a["by_kind"].items()},
                     "stages": a["stage_pass_rate"], "terminations": a["termination"]}
    return out


def main() -> None:
    from forge import db as fdb
    from forge.bench import report as R
    from forge.bench.runner import Bench, BenchConfig
    from forge.train.rl import RLRunConfig, run_rl
    from forge.train.sft import SFTRunConfig, run_sft

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="curated export (python -m forge.curate)")
    ap.add_argument("--out", default="build/train/main")
    ap.add_argument("--preset", default="tiny",
                    help="tiny | small | micro (built from a config) or smollm2 (pass --lr 1e-4 "
                         "--batch-size 4 --max-length 512 with it: docs/BENCHMARKS.md)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sft-steps", type=int, default=1400)
    ap.add_argument("--sft-budget-s", type=float, default=1500)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--max-length", type=int, default=768)
    ap.add_argument("--sft-levels", default="",
                    help="train SFT only on samples of these difficulties (e.g. L1)")
    ap.add_argument("--sft-kinds", default="",
                    help="train SFT only on samples of these kinds (qa, action)")
    ap.add_argument("--sft-copy-drills", type=float, default=0.0,
                    help="copy drills per train sample (SFTRunConfig.copy_drills)")
    ap.add_argument("--rl-steps", type=int, default=24)
    ap.add_argument("--rl-levels", default="L1")
    ap.add_argument("--system", default="auto",
                    help="SFT system text: short | tools | auto (forge train sft --help)")
    ap.add_argument("--rl-lr", type=float, default=2e-5)
    ap.add_argument("--rl-frontier-pool", type=int, default=48,
                    help="RL prompts whose SFT pass rate is measured (4 rollouts each; SmolLM2 "
                         "takes ~5 s per rollout on 2 cores: 12 is ~4 minutes)")
    ap.add_argument("--bench-levels", default="L1")
    ap.add_argument("--bench-sample", type=int, default=120)
    ap.add_argument("--smoke", action="store_true",
                    help="check the script: 4 SFT steps, a --quick RL run, 6 bench tasks")
    ap.add_argument("--skip-sft", action="store_true", help="reuse <out>/sft")
    ap.add_argument("--skip-rl", action="store_true", help="reuse <out>/rl")
    a = ap.parse_args()
    if a.smoke:
        a.sft_steps, a.rl_steps, a.bench_sample = 4, 1, 6
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"args": vars(a)}

    t0 = time.perf_counter()
    if not a.skip_sft:
        sft = run_sft(SFTRunConfig(
            data=a.data, out=str(out / "sft"), model=a.preset, max_steps=a.sft_steps,
            batch_size=a.batch_size, lr=a.lr, max_length=a.max_length, eval_steps=200,
            levels=a.sft_levels, kinds=a.sft_kinds, max_eval_samples=128,
            time_budget_s=a.sft_budget_s, threads=a.threads, copy_drills=a.sft_copy_drills,
            system=a.system))
        res["sft"] = {k: v for k, v in sft.items() if k != "history"}
    res["sft_wall_s"] = round(time.perf_counter() - t0, 1)
    sft_ckpt = out / "sft" / "checkpoint"

    t1 = time.perf_counter()
    if not a.skip_rl:
        rl = run_rl(RLRunConfig(
            model=str(sft_ckpt), data=a.data, out=str(out / "rl"), steps=a.rl_steps,
            prompts_per_step=2, num_generations=4, lr=a.rl_lr, levels=a.rl_levels,
            max_context=a.max_length + 256, frontier_pool=a.rl_frontier_pool, frontier_rollouts=4,
            threads=a.threads, quick=a.smoke))
        res["rl"] = {k: v for k, v in rl.items() if k not in ("history",)}
    res["rl_wall_s"] = round(time.perf_counter() - t1, 1)
    res["sft_rl_wall_s"] = round(time.perf_counter() - t0, 1)

    untrained = _untrained(sft_ckpt, out / "untrained", a.preset)
    agents = [f"hf:{untrained}", f"hf:{sft_ckpt}", f"hf:{out / 'rl' / 'checkpoint'}"]
    con = fdb.connect(out / "bench.duckdb")
    common = {"agents": agents, "k": 1, "max_tokens": 160, "max_context": a.max_length + 256,
              "threads": a.threads}
    t2 = time.perf_counter()
    runs = {"levels": BenchConfig(**common, levels=a.bench_levels, name="train-levels",
                                  sample=6 if a.smoke else None,
                                  out=str(out / "bench-levels")),
            "sample": BenchConfig(**common, sample=a.bench_sample, name="train-sample",
                                  out=str(out / "bench-sample"))}
    res["bench"] = {}
    for key, cfg in runs.items():
        rep = Bench(cfg, con).run()
        R.write(rep, Path(cfg.out or ""))
        print(R.markdown(rep))
        res["bench"][key] = {"n_tasks": rep["task_set"]["n_tasks"], "rows": _rows(rep)}
    res["bench_wall_s"] = round(time.perf_counter() - t2, 1)
    (out / "bench_train.json").write_text(json.dumps(res, indent=2, default=str))
    for key, b in res["bench"].items():
        print(f"bench {key} ({b['n_tasks']} tasks):")
        for name, r in b["rows"].items():
            print(f"  {name}: {r['success']} {r['ci95']} {r['by_difficulty']}")
    print(f"SFT {res['sft_wall_s']} s, RL {res['rl_wall_s']} s, SFT+RL {res['sft_rl_wall_s']} s,"
          f" bench {res['bench_wall_s']} s -> {out / 'bench_train.json'}")


if __name__ == "__main__":
    main()

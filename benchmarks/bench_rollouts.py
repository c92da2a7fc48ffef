"""Decoding and rollout speed of an `hf` policy: batch size, the trainer's autocast wrapper.

    python benchmarks/bench_rollouts.py --model build/train/smol-s14/checkpoint \
        --data build/curated/pool-s12 --levels L1 --episodes 16 --batch 16 --threads 2

1. Decoding: milliseconds per decoding step (one token for each sequence of the batch) after a
   `--context`-token prompt, at batch 1, 4 and 8, and at batch 1 under bf16 autocast (what
   accelerate wraps `model.forward` in when a trainer runs with bf16).
2. Rollouts: `--episodes` closed-loop RL rollouts (the first L1 prompts of the export, at the RL
   temperature) one at a time, then `--batch` side by side; checks that both draw the same
   tokens. Writes `<out>/bench_rollouts.json`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def decode_ms(model: Any, batch: int, context: int, steps: int, autocast: bool) -> float:
    import contextlib

    import torch

    ids = torch.randint(0, 1000, (batch, context))
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with torch.inference_mode(), ctx:
        cache = model(input_ids=ids, use_cache=True).past_key_values
        x = torch.full((batch, 1), 5)
        t = time.perf_counter()
        for _ in range(steps):
            cache = model(input_ids=x, past_key_values=cache, use_cache=True).past_key_values
        return 1000 * (time.perf_counter() - t) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="A forge checkpoint.")
    ap.add_argument("--data", required=True, help="A curated export (its RL prompt set).")
    ap.add_argument("--levels", default="L1", help="Prompt difficulties.")
    ap.add_argument("--episodes", type=int, default=16, help="Rollouts timed per setting.")
    ap.add_argument("--batch", type=int, default=16, help="Rollouts side by side.")
    ap.add_argument("--temperature", type=float, default=0.7, help="Rollout temperature.")
    ap.add_argument("--context", type=int, default=600, help="Prompt tokens before decoding.")
    ap.add_argument("--decode-steps", type=int, default=30, help="Decoding steps timed.")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads.")
    ap.add_argument("--out", default="build/bench-rollouts", help="Output directory.")
    a = ap.parse_args()

    import torch

    from forge.bench.hf import HFAgent
    from forge.gym.env import CachedModel
    from forge.synth.loop import load_model
    from forge.train.model import codec_for, load_checkpoint
    from forge.train.rl import RLRunConfig, load_rl_tasks, rollouts
    from verifiers import TrajectoryVerifier

    torch.set_num_threads(a.threads)
    model, tok = load_checkpoint(a.model)
    model.eval()
    res: dict[str, Any] = {"model": a.model, "threads": a.threads, "context": a.context,
                           "decode": {}}
    for batch, ac in ((1, False), (4, False), (8, False), (1, True)):
        ms = decode_ms(model, batch, a.context, a.decode_steps, ac)
        key = f"batch{batch}" + ("_autocast_bf16" if ac else "")
        res["decode"][key] = {"ms_per_step": round(ms, 1),
                              "tokens_per_s": round(1000 * batch / ms, 1)}
        print(f"decode {key}: {ms:.1f} ms/step, {1000 * batch / ms:.1f} tokens/s")

    codec = codec_for(a.model, tok)
    tasks = load_rl_tasks(a.data, a.levels)[:a.episodes]
    em = CachedModel(load_model("experiment"), maxsize=20000)
    agent = HFAgent.from_model(model, codec, max_context=1024)
    got = {}
    for batch in (1, a.batch):
        cfg = RLRunConfig(rollout_batch=batch, temperature=a.temperature)
        t = time.perf_counter()
        rs = rollouts(agent, tasks, em, TrajectoryVerifier(em), cfg, list(range(len(tasks))))
        wall = time.perf_counter() - t
        got[batch] = [r.completion_ids for r in rs]
        res[f"rollouts_batch{batch}"] = {"episodes": len(rs), "wall_s": round(wall, 1),
                                         "generated_tokens": sum(r.n_tokens for r in rs),
                                         "success": sum(r.success for r in rs)}
        print(f"{len(rs)} rollouts, batch {batch}: {wall:.1f} s")
    res["identical_tokens"] = sum(x == y for x, y in zip(got[1], got[a.batch], strict=True))
    res["speedup"] = round(res["rollouts_batch1"]["wall_s"]
                           / res[f"rollouts_batch{a.batch}"]["wall_s"], 2)
    print(f"side by side: {res['speedup']}x; identical episodes {res['identical_tokens']}"
          f"/{len(tasks)}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_rollouts.json").write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()

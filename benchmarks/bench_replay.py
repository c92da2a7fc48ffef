"""Replay-verification throughput on L1/L2 trajectories.

    python benchmarks/bench_replay.py [--n 400] [--workers 2] [--model-dir DIR | --closed-form]

Generates n scripted L1/L2 trajectories (excluded from the timing), serialises them to JSONL
text, then times the full `forge.verify` path per line - JSON parsing, the four stages, replay
on a fresh env - with a cold prediction cache, in `--workers` processes (each with its own model
and cache, as separate verify processes would have). Prints trajectories per second.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from forge.verify import BATCH, load_model, verify_lines
from verifiers import TrajectoryVerifier

_ARGS: argparse.Namespace | None = None


def _work(lines: list[bytes]) -> tuple[int, int, float]:
    assert _ARGS is not None
    v = TrajectoryVerifier(load_model(_ARGS.model_dir, _ARGS.closed_form))
    t0 = time.perf_counter()
    passed = 0
    for i in range(0, len(lines), BATCH):
        for _, rs in verify_lines(v, list(lines[i:i + BATCH]), 4_000_000):
            passed += TrajectoryVerifier.passed(rs)
    return len(lines), passed, time.perf_counter() - t0


def _init(args: argparse.Namespace) -> None:
    global _ARGS
    _ARGS = args
    from forge.threads import one_thread_per_worker

    one_thread_per_worker()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--closed-form", action="store_true")
    args = ap.parse_args()

    from forge.gym.scripted import ACTION_KINDS, QA_KINDS, generate

    model = load_model(args.model_dir, args.closed_form)
    kinds = tuple(k for k in ACTION_KINDS + QA_KINDS if k != "energy")  # energy tasks are L3
    t0 = time.perf_counter()
    trajs = [t for t in generate(args.n, model, seed=11, kinds=kinds)
             if t.task.difficulty in ("L1", "L2")]
    gen_s = time.perf_counter() - t0
    lines = [t.model_dump_json(by_alias=True).encode() for t in trajs]
    chunks = [lines[i::args.workers] for i in range(args.workers)]
    t0 = time.perf_counter()
    if args.workers == 1:
        _init(args)
        res = [_work(lines)]
    else:
        with mp.get_context("fork").Pool(args.workers, initializer=_init,
                                         initargs=(args,)) as pool:
            res = pool.map(_work, chunks)
    wall = time.perf_counter() - t0
    n = sum(r[0] for r in res)
    diff = {d: sum(t.task.difficulty == d for t in trajs) for d in ("L1", "L2")}
    print(json.dumps({
        "trajectories": n, "difficulty": diff, "passed": sum(r[1] for r in res),
        "workers": args.workers, "wall_s": round(wall, 3),
        "traj_per_s": round(n / wall, 1),
        "per_worker_traj_per_s": [round(r[0] / r[2], 1) for r in res],
        "mean_steps": round(sum(sum(m.role == "tool" for m in t.messages) for t in trajs)
                            / max(len(trajs), 1), 2),
        "generation_s": round(gen_s, 2),
        "model": "closed-form" if args.closed_form else (args.model_dir or "default"),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Speed of `forge bench`: episodes/s of the built-in agents on the shipped task set.

    python benchmarks/bench_bench.py [--k 1] [--workers 2] [--agent teacher ...]

Runs every agent afresh (nothing reused from the store) into a throwaway in-memory store and
prints, per agent, the episodes run, the elapsed wall time and episodes/s (all worker processes
together), plus the summed per-episode time (one worker's view). The figure is recorded in
docs/BENCHMARKS.md with this command.
"""

from __future__ import annotations

import argparse
import json
import os

from forge import db as fdb
from forge.bench.runner import DEFAULT_AGENTS, Bench, BenchConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--agent", action="append", default=None)
    ap.add_argument("--sample", type=int, default=None)
    a = ap.parse_args()
    con = fdb.connect(":memory:")
    cfg = BenchConfig(agents=a.agent or list(DEFAULT_AGENTS), k=a.k, workers=a.workers,
                      sample=a.sample, fresh=True)
    b = Bench(cfg, con, log=lambda m: None)
    rep = b.run()
    print(f"task set {rep['task_set']['version']}: {rep['task_set']['n_tasks']} tasks, k = {a.k},"
          f" {a.workers} worker(s)")
    print("| agent | episodes | elapsed s | episodes/s | summed episode s |")
    print("|---|---|---|---|---|")
    for name, t in rep["timing"].items():
        print(f"| {name} | {t['episodes_run']} | {t['elapsed_s']} | {t['episodes_per_s']} | "
              f"{rep['agents'][name]['wall_s']} |")
    print(json.dumps(rep["timing"]))


if __name__ == "__main__":
    main()

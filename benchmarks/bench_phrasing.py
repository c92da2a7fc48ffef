"""How fast a proposal pattern's phrasings saturate: its near-duplicate share as proposals grow.

    python benchmarks/bench_phrasing.py --per-pattern 6000 --patterns qa_cell_gap qa_cell_spread

For each pattern, on its own: the offline teacher's task writer instantiates the pattern on
random networks of the default scenario pool (`TaskWriter.instantiate`, framing included), and
every instance goes through the synthesis loop's ROUGE-L filter (`RougeIndex`, threshold 0.7),
kept when it is no near-duplicate of an earlier kept one. Prints one JSON line per pattern: the
near-duplicate share of the proposals made so far at each checkpoint, and in each window
between checkpoints. A pattern alone saturates faster than inside a run (in a run other
patterns' instructions are no near-duplicates of it), so the figures compare phrasings of one
pattern; the run-level share is measured by `forge generate` itself (task_rejects).
"""

from __future__ import annotations

import argparse
import json
import random
import time

from forge.gym.env import CachedModel
from forge.synth.dedup import RougeIndex
from forge.synth.loop import load_model
from forge.synth.scenarios import DEFAULT_SAMPLED, full_pool
from forge.teacher.proposer import TaskWriter


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patterns", nargs="+", default=["qa_cell_gap", "qa_cell_spread",
                                                       "qa_cell_agg", "qa_cell_pct",
                                                       "qa_slice_agg"])
    ap.add_argument("--per-pattern", type=int, default=6000, help="proposals per pattern")
    ap.add_argument("--checkpoints", type=int, nargs="+", default=[1000, 2000, 4000, 6000])
    ap.add_argument("--threshold", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    model = CachedModel(load_model("auto"), maxsize=20000)
    pool = full_pool(DEFAULT_SAMPLED)
    ids = sorted(pool)
    for pattern in args.patterns:
        rng = random.Random(f"{args.seed}/{pattern}")
        writer = TaskWriter(model, pool.get)
        index = RougeIndex(args.threshold)
        t0 = time.perf_counter()
        made = dup = tries = 0
        marks: dict[int, dict[str, float]] = {}
        last = (0, 0)
        while made < args.per_pattern and tries < 20 * args.per_pattern:
            tries += 1
            p = writer.instantiate(pattern, pool[rng.choice(ids)], rng)
            if p is None:
                continue
            made += 1
            if index.near_duplicate(p.instruction) is not None:
                dup += 1
            else:
                index.add(p.instruction)
            if made in args.checkpoints or made == args.per_pattern:
                window = (made - last[0]) or 1
                marks[made] = {"share": round(dup / made, 3),
                               "window_share": round((dup - last[1]) / window, 3)}
                last = (made, dup)
        print(json.dumps({"pattern": pattern, "proposals": made, "near_duplicates": dup,
                          "share": round(dup / max(made, 1), 3), "at": marks,
                          "kept": len(index), "seconds": round(time.perf_counter() - t0, 1)}),
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

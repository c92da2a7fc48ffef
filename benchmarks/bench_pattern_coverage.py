"""How well the training data covers the bench's question patterns, and what agents solve per
coverage bucket.

    python benchmarks/bench_pattern_coverage.py --pool build/pool-s17.duckdb \
        --export build/curated/pool-s17 --bench-db build/bench-s17.duckdb \
        --agent teacher --agent hf:build/train/smol-s17/checkpoint [--kind qa --level L1]

The bench draws its tasks evenly over the task patterns; synthesis does not (see
docs/synthesis.md, "The L1 question mix"). For each bench task of the kind and level asked, the
script counts the training samples of its pattern (the export's train split, patterns read from
the synthesis store's `tasks` table) and groups the tasks by that count (at most 10, 11-30,
more). Then, per agent stored in the bench store, the success rate in each group
(`forge.bench.metrics.success_rate`, the bench report's own).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import duckdb

from forge.bench import metrics as M

BUCKETS = ((0, 10, "<= 10"), (11, 30, "11-30"), (31, 10**9, "> 30"))


def train_patterns(pool: str, export: str, kind: str, level: str) -> Counter[str]:
    """Training samples per pattern: the export's train split joined to the store's tasks."""
    con = duckdb.connect(pool, read_only=True)
    train = str(Path(export) / "parquet" / "train.parquet")
    rows = con.execute(
        "SELECT t.pattern, count(*) FROM read_parquet(?) x JOIN tasks t USING (task_id) "
        "WHERE x.kind = ? AND x.difficulty = ? GROUP BY 1", [train, kind, level]).fetchall()
    con.close()
    return Counter({str(p): int(n) for p, n in rows})


def bucket_of(n: int) -> str:
    return next(name for lo, hi, name in BUCKETS if lo <= n <= hi)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", required=True, help="synthesis store (DuckDB) of the export")
    ap.add_argument("--export", required=True, help="forge.curate export directory")
    ap.add_argument("--bench-db", required=True, help="bench store holding the agents' runs")
    ap.add_argument("--tasks", default="corpora/bench/v1/tasks.jsonl", help="bench task set")
    ap.add_argument("--kind", default="qa")
    ap.add_argument("--level", default="L1")
    ap.add_argument("--agent", action="append", default=[], help="agent spec (repeatable)")
    args = ap.parse_args()

    counts = train_patterns(args.pool, args.export, args.kind, args.level)
    tasks = [json.loads(line) for line in Path(args.tasks).read_text().splitlines() if line]
    mine = {t["task_id"]: bucket_of(counts.get(t["pattern"], 0)) for t in tasks
            if t["kind"] == args.kind and t["difficulty"] == args.level}
    sizes = Counter(mine.values())
    print(f"{args.export}: {sum(counts.values())} {args.level} {args.kind} train samples over "
          f"{len(counts)} patterns; {len(mine)} bench tasks by their pattern's sample count: "
          + ", ".join(f"{name} {sizes[name]}" for _, _, name in BUCKETS))

    con = duckdb.connect(args.bench_db, read_only=True)
    print("| agent | " + " | ".join(f"{name} ({sizes[name]})" for _, _, name in BUCKETS) + " |")
    print("|---|" + "---|" * len(BUCKETS))
    for agent in args.agent:
        # Each task's trial outcomes, endpoint errors left out as in the bench's own report.
        rows = con.execute(
            "SELECT e.task_id, list(e.success) FROM bench_episodes e "
            "JOIN bench_runs r USING (bench_run_id) WHERE r.agent = ? AND r.status = "
            "'completed' AND e.termination != 'endpoint_error' GROUP BY 1", [agent]).fetchall()
        if not rows:
            print(f"| {agent} | no completed run in {args.bench_db} |")
            continue
        trials: dict[str, list[list[bool]]] = {name: [] for _, _, name in BUCKETS}
        for task_id, outcomes in rows:
            if task_id in mine:
                trials[mine[task_id]].append([bool(o) for o in outcomes])
        cells = []
        for _, _, name in BUCKETS:
            rate = M.success_rate(trials[name])
            cells.append("-" if rate is None else f"{100 * rate:.1f}")
        print(f"| {agent} | " + " | ".join(cells) + " |")
    con.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

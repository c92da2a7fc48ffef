"""Statistics of the verified pool a store holds: what a model would learn from.

    python benchmarks/bench_data_stats.py --db build/pool.duckdb [--run GEN_RUN_ID] [--markdown]

Prints one JSON object: tool coverage (share of verified trajectories that call each of the 42
tools), applied-fix share per configure tool (the change still in place at the end; a probe
that was rolled back is not a fix), the L1/L2/L3 mix of all, action and qa samples, qa vs
action, the redundant-call rate (a call identical to the successful call just before it), the
error-recovery share, tokens per sample (~4 characters per token, mean and p95), and the
near-duplicate share of the proposals (ROUGE-L rejections over all proposals). The dataset card
of a curated set carries the same statistics (forge.curate.export.data_stats).
"""

from __future__ import annotations

import argparse
import json

import duckdb

from forge.curate.export import data_stats, stats_markdown

TARGET = {"L1": 30.0, "L2": 45.0, "L3": 25.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True, help="DuckDB store to read (read-only)")
    ap.add_argument("--run", default=None, help="only this gen_run_id (default: every row)")
    ap.add_argument("--markdown", action="store_true", help="also print the card section")
    args = ap.parse_args()
    con = duckdb.connect(args.db, read_only=True)
    where = "status = 'verified'" + (" AND (gen_run_id = ? OR gen_run_id IS NULL)"
                                     if args.run else "")
    params = [args.run] if args.run else []
    rows = con.execute(
        "SELECT kind, difficulty, error_recovery, "
        "json_extract(trajectory, '$.messages')::VARCHAR FROM trajectories WHERE " + where,
        params).fetchall()
    st = data_stats([{"kind": k, "difficulty": d, "error_recovery": e,
                      "messages": json.loads(m)} for k, d, e, m in rows])
    rwhere = "WHERE gen_run_id = ?" if args.run else ""
    n_tasks = con.execute(f"SELECT count(*) FROM tasks {rwhere}" if args.run else
                          "SELECT count(*) FROM tasks WHERE source <> 'seed'",
                          params).fetchone()
    rej = con.execute(f"SELECT reason, count(*) FROM task_rejects {rwhere} GROUP BY 1",
                      params).fetchall()
    con.close()
    rejects = {r: c for r, c in rej}
    proposals = (n_tasks[0] if n_tasks else 0) + sum(rejects.values())
    st["proposals"] = proposals
    st["near_duplicate_pct_of_proposals"] = round(
        100.0 * rejects.get("near_duplicate", 0) / proposals, 2) if proposals else 0.0
    st["mix_off_target_points"] = {
        key: max(abs(st["difficulty_pct"][key][d] - t) for d, t in TARGET.items())
        for key in ("all", "action", "qa") if key in st["difficulty_pct"]}
    fix = st["fix_share_pct"]
    st["checks"] = {
        "every_tool_in_1pct": not st["tools_below_1pct"],
        "every_fix_in_0.5pct": all(v >= 0.5 for v in fix.values()),
        "fixes_below_0.5pct": sorted(t for t, v in fix.items() if v < 0.5),
        "mix_within_5_points": all(st["mix_off_target_points"].get(k, 99) <= 5.0
                                   for k in ("all", "action")),
        "no_redundant_calls": st["redundant_call_pct_of_calls"] == 0.0,
    }
    print(json.dumps(st, sort_keys=True))
    if args.markdown:
        print(stats_markdown(st))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

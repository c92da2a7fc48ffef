"""What limits a trained model on the bench's questions: does its first tool call pick the tool
the teacher picked, with the same arguments (the entity the question names)?

    python -m forge bench --agents teacher --levels L1 --db build/bench_teacher.duckdb
    python benchmarks/bench_first_call.py --db build/train/l1/bench.duckdb \
        --agent hf:build/train/l1/sft/checkpoint --ref-db build/bench_teacher.duckdb

Over the qa tasks of `--levels` that the reference agent solved with a tool call, prints the
share whose first call has the reference's tool, the share with its tool and arguments, and the
success rate within each group (from the `bench_episodes` tables of both stores, trial 0).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from forge.gym.tags import parse_action


def first_call(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first assistant turn's action (None: it answered or wrote no parseable action)."""
    for m in messages:
        if m["role"] == "assistant":
            call, problem = parse_action(m["content"] or "")
            return call if problem is None and isinstance(call, dict) else None
    return None


def episodes(db: str, agent: str, levels: set[str]) -> dict[str, tuple[bool, Any]]:
    import duckdb

    con = duckdb.connect(db, read_only=True)
    rows = con.execute(
        "SELECT e.task_id, e.success, e.messages, e.difficulty FROM bench_episodes e "
        "JOIN bench_runs r USING (bench_run_id) WHERE r.agent = ? AND e.kind = 'qa' "
        "AND e.trial = 0", [agent]).fetchall()
    return {t: (bool(s), json.loads(m)) for t, s, m, d in rows if not levels or d in levels}


def main() -> None:
    from forge.gym.trajectory import parse_levels

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", required=True, help="bench store holding the agent's episodes")
    ap.add_argument("--agent", required=True, help="agent name as in bench_runs.agent")
    ap.add_argument("--ref-db", required=True, help="bench store holding the reference's")
    ap.add_argument("--ref-agent", default="teacher")
    ap.add_argument("--levels", default="L1")
    a = ap.parse_args()
    levels = parse_levels(a.levels)
    ref = {t: first_call(m) for t, (ok, m) in episodes(a.ref_db, a.ref_agent, levels).items()
           if ok}
    ref = {t: c for t, c in ref.items() if c is not None}
    mine = episodes(a.db, a.agent, levels)
    common = sorted(set(ref) & set(mine))
    if not common:
        raise SystemExit("no common solved-by-reference qa task in the two stores")
    tool = [t for t in common if (first_call(mine[t][1]) or {}).get("tool") == ref[t]["tool"]]
    args = [t for t in tool if (first_call(mine[t][1]) or {}).get("args") == ref[t]["args"]]
    n = len(common)

    def rate(ts: list[str]) -> float:
        return round(sum(mine[t][0] for t in ts) / len(ts), 3) if ts else 0.0

    print(json.dumps({
        "agent": a.agent, "reference": a.ref_agent, "levels": sorted(levels), "tasks": n,
        "first_tool_matches": round(len(tool) / n, 3),
        "first_tool_and_args_match": round(len(args) / n, 3),
        "success_overall": rate(common), "success_when_tool_matches": rate(tool),
        "success_when_tool_and_args_match": rate(args)}))


if __name__ == "__main__":
    main()

"""`forge bench --ns3-check N`: judge sampled episodes again on real ns-3.

The same N tasks (a stratified sample, trial 0) for every agent: each episode's final
configuration is simulated in ns-3 and its goal re-judged on ns-3's KPIs with the gym's own
derived-KPI rules (`forge.audit.ns3_view`); qa answers are re-checked against ns-3's values. A
final state that equals the initial network (nothing changed, or everything rolled back) reuses
the task set's shipped ns-3 run; identical final states are simulated once. Reported per agent:
success under the Experiment Model and under ns-3 on the sample, their agreement, and across
agents the Spearman rank correlation of the two success rates.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from forge import db as fdb
from forge.bench import metrics as M
from forge.bench.tasks import BenchTask, parse_goal, stratified_sample
from forge.scenario import Scenario


def shipped_ues(task_dir: Path, scenario_id: str) -> list[dict[str, Any]] | None:
    """The task set's ns-3 per-UE KPIs of a network's initial state, if shipped."""
    import duckdb

    runs, ues = task_dir / "ns3_runs.parquet", task_dir / "ns3_ue_kpis.parquet"
    if not runs.is_file() or not ues.is_file():
        return None
    con = duckdb.connect()
    try:
        cur = con.execute(
            f"SELECT u.* FROM read_parquet('{ues}') u JOIN read_parquet('{runs}') r USING "
            f"(run_id) WHERE r.scenario_id = ? AND r.status = 'ok' ORDER BY u.ue", [scenario_id])
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()
    return rows or None


def judge(task: BenchTask, scn: Scenario, ues: list[dict[str, Any]], final_text: str) -> bool:
    from forge.audit import ns3_view
    from forge.gym.goals import AnswerGoal, evaluate, match_answer

    view = ns3_view(scn, ues)
    goal = parse_goal(task.goal)
    if isinstance(goal, AnswerGoal):
        return bool(match_answer(goal, final_text, view).ok)
    return bool(evaluate(goal, view).holds)


def ns3_check(bench: Any, runs: dict[str, str], n: int) -> dict[str, Any]:
    from forge.ns3.simulate import simulate

    con = bench.con
    ts = bench.ts
    sample = stratified_sample(bench.tasks, n, bench.cfg.seed)
    by_id = {t.task_id: t for t in sample}
    cache: dict[str, list[dict[str, Any]] | None] = {}
    t0 = time.perf_counter()
    per_agent: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="forge-bench-ns3-") as tmp:
        for name, rid in runs.items():
            rows = con.execute(
                "SELECT task_id, success, final_scenario, messages FROM bench_episodes WHERE "
                "bench_run_id = ? AND trial = 0 AND termination != 'endpoint_error' AND "
                "list_contains(?, task_id) ORDER BY task_id", [rid, list(by_id)]).fetchall()
            agree = ok_model = ok_ns3 = done = 0
            for task_id, success, final_json, msgs_json in rows:
                t = by_id[task_id]
                init = ts.scenario(t.scenario_id)
                scn = Scenario.model_validate_json(final_json) if final_json else init
                msgs = json.loads(msgs_json)
                final_text = msgs[-1]["content"] if msgs and msgs[-1]["role"] == "assistant" \
                    else ""
                key = scn.scenario_id
                if not success:
                    # A failed episode stays failed: ns-3 can only confirm or refute a success
                    # of the goal (an answer or a format failure is not about physics).
                    with fdb.transaction(con):
                        con.execute(
                            "INSERT OR REPLACE INTO bench_ns3_checks VALUES (?, ?, 0, ?, ?, ?, "
                            "?)", [rid, task_id, False, False, "not_needed",
                                                    json.dumps({"final_scenario_id": key})])
                    done += 1
                    agree += 1
                    continue
                if key not in cache:
                    cache[key] = shipped_ues(ts.path, key) if key == init.scenario_id else None
                    if cache[key] is None:
                        try:
                            cache[key] = simulate(scn, Path(tmp) / key)["ues"]
                        except Exception as e:  # a failed simulation is reported, not fatal
                            bench.log(f"ns-3 failed on {key}: {type(e).__name__}: {e}")
                            cache[key] = None
                ues = cache[key]
                ns3_ok: bool | None = judge(t, scn, ues, final_text) if ues is not None else None
                with fdb.transaction(con):
                    con.execute(
                        "INSERT OR REPLACE INTO bench_ns3_checks VALUES (?, ?, 0, ?, ?, ?, ?)",
                        [rid, task_id, bool(success), ns3_ok, "ok" if ues is not None else
                         "failed", json.dumps({"final_scenario_id": key})])
                if ns3_ok is None:
                    continue
                done += 1
                ok_model += bool(success)
                ok_ns3 += bool(ns3_ok)
                agree += bool(success) == ns3_ok
            per_agent[name] = {"n": done,
                               "success_model": round(ok_model / done, 4) if done else None,
                               "success_ns3": round(ok_ns3 / done, 4) if done else None,
                               "agreement": round(agree / done, 4) if done else None}
            bench.log(f"ns-3 re-check {name}: {per_agent[name]}")
    names = [a for a, v in per_agent.items() if v["n"]]
    rho = M.spearman([per_agent[a]["success_model"] for a in names],
                     [per_agent[a]["success_ns3"] for a in names])
    return {"n_tasks": len(sample), "trial": 0, "agents": per_agent,
            "rank_correlation_spearman": None if rho is None else round(rho, 4),
            "simulations": sum(1 for v in cache.values() if v is not None),
            "wall_s": round(time.perf_counter() - t0, 1)}

"""`python -m forge.audit --sample N`: ground-truth audit of outcome verdicts in real ns-3.

Makes a pool of scripted action trajectories (thresholds near the frontier, see
forge.gym.scripted), verifies them with the Experiment Model, and draws a stratified sample:
N/2 whose outcome stage passed and N/2 whose outcome stage failed (certain verdicts only;
uncertain ones are counted, not audited). The final configuration of each sampled trajectory is
re-simulated in ns-3 and the goal re-evaluated on ns-3's KPIs (same derived-KPI rules,
forge.gym.kpis). Reports agreement per stratum, the confusion matrix (model verdict vs ns-3
verdict), balanced accuracy (ns-3 as truth) and every disagreement with how far the KPI was
from the threshold under each.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from forge.experiment_model import physics
from forge.gym import kpis as K
from forge.gym.env import CachedModel, NetworkEnv
from forge.gym.goals import AnswerGoal, evaluate
from forge.gym.scripted import generate
from forge.gym.trajectory import Trajectory
from forge.scenario import Scenario
from verifiers import TrajectoryVerifier

AUDIT_KINDS = ("ue_throughput", "cell_load", "ue_delay", "energy")


def final_scenario(t: Trajectory, model: CachedModel) -> Scenario:
    """Replay the trajectory's actions and return the configuration it ends in."""
    from forge.gym.tags import parse_action

    assert t.task.scenario is not None
    env = NetworkEnv(t.task.scenario, seed=t.task.env.seed, model=model)
    for m in t.messages[2:]:
        if m.role == "assistant":
            call, problem = parse_action(m.content)
            if problem is None:
                env.step(call)
    return env.scenario


def ns3_view(scn: Scenario, ues: list[dict[str, Any]]) -> K.KpiView:
    """A KPI view from measured ns-3 KPIs (gaps filled the way the gym's rules need)."""
    ph = physics.compute(scn)
    fixed = []
    for i, u in enumerate(ues):
        q = dict(u)
        if q.get("serving_cell") is None:
            q["serving_cell"] = int(ph.serving[i])
        q["loss_ratio"] = q.get("loss_ratio") or 0.0
        q["handovers"] = float(q.get("handovers") or 0)
        fixed.append(q)
    return K.build_view(scn, fixed, ph)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m forge.audit", description=__doc__.split("\n")[0])
    ap.add_argument("--sample", type=int, default=60, help="trajectories to re-simulate")
    ap.add_argument("--pool", type=int, default=0, help="pool size (default 4x sample)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--out", default="build/audit.json")
    args = ap.parse_args(argv)

    from forge.experiment_model import ExperimentModel

    try:
        model = CachedModel(ExperimentModel.load(args.model_dir))
    except Exception as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    pool = generate(args.pool or 4 * args.sample, model, seed=args.seed + 77, kinds=AUDIT_KINDS)
    v = TrajectoryVerifier(model)
    strata: dict[str, list[Trajectory]] = {"passed": [], "failed": []}
    uncertain = 0
    for t, rs in zip(pool, v.verify_many(pool), strict=True):
        verdict = next((r for r in rs if r.stage == "outcome"), None)
        if verdict is None or isinstance(t.task.goal, AnswerGoal):
            continue
        if verdict.status == "uncertain":
            uncertain += 1
        else:
            strata["passed" if verdict.passed else "failed"].append(t)
    rng = random.Random(args.seed)
    half = args.sample // 2
    sample = {k: rng.sample(ts, min(half, len(ts))) for k, ts in strata.items()}
    print(f"pool {len(pool)}: outcome passed {len(strata['passed'])}, failed "
          f"{len(strata['failed'])}, uncertain {uncertain}; sampling "
          f"{len(sample['passed'])} + {len(sample['failed'])}", flush=True)

    from forge.ns3.simulate import simulate

    cm = {"tp": 0, "fn": 0, "fp": 0, "tn": 0}  # model verdict vs ns-3 verdict (positive = pass)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="forge-audit-") as tmp:
        k = 0
        for stratum, ts in sample.items():
            for t in ts:
                k += 1
                scn = final_scenario(t, model)
                try:
                    res = simulate(scn, Path(tmp) / f"run{k}")
                except Exception as e:  # a failed simulation is reported, not fatal
                    rows.append({"id": t.id, "stratum": stratum, "error": str(e)[:300]})
                    continue
                g = t.task.goal
                assert not isinstance(g, AnswerGoal)
                model_r = evaluate(g, model.view(scn)[1])
                ns3_r = evaluate(g, ns3_view(scn, res["ues"]))
                key = ("tp" if ns3_r.holds else "fp") if model_r.holds else \
                    ("fn" if ns3_r.holds else "tn")
                cm[key] += 1
                rows.append({
                    "id": t.id, "stratum": stratum, "kind": t.provenance.generation["kind"],
                    "model_holds": model_r.holds, "ns3_holds": ns3_r.holds,
                    "agree": model_r.holds == ns3_r.holds,
                    "conditions": [{"target": m.target, "metric": m.metric, "op": m.op,
                                    "threshold": m.threshold, "model": m.value, "ns3": n.value,
                                    "model_rel_margin": _rel(m.value, m.threshold),
                                    "ns3_rel_margin": _rel(n.value, n.threshold)}
                                   for m, n in zip(model_r.conditions, ns3_r.conditions,
                                                   strict=True)],
                    "sim_s": round(res["wall_time_s"], 2)})
                print(f"[{k}] {stratum:<6} model={model_r.holds!s:<5} ns3={ns3_r.holds!s:<5} "
                      f"{t.provenance.generation['kind']}", flush=True)
    pos = cm["tp"] + cm["fn"]
    neg = cm["tn"] + cm["fp"]
    tpr = cm["tp"] / pos if pos else float("nan")
    tnr = cm["tn"] / neg if neg else float("nan")
    done = [r for r in rows if "agree" in r]
    report = {
        "sample": args.sample, "pool": len(pool), "uncertain_in_pool": uncertain,
        "agreement": {s: _mean([r["agree"] for r in done if r["stratum"] == s])
                      for s in ("passed", "failed")},
        "confusion_matrix": {"model_pass_ns3_pass": cm["tp"], "model_pass_ns3_fail": cm["fp"],
                             "model_fail_ns3_pass": cm["fn"], "model_fail_ns3_fail": cm["tn"]},
        "balanced_accuracy": (tpr + tnr) / 2,
        "disagreements": [r for r in done if not r["agree"]],
        "errors": [r for r in rows if "error" in r],
        "wall_s": round(time.perf_counter() - t0, 1),
        "model_hash": model.model_hash,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**report, "rows": rows}, indent=1, default=str) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "disagreements"}, indent=1))
    print(f"{len(report['disagreements'])} disagreement(s); full report: {out}")
    return 0


def _rel(v: float | None, t: float) -> float | None:
    return None if v is None else round((v - t) / max(abs(t), 1e-9), 4)


def _mean(xs: list[bool]) -> float | None:
    return sum(xs) / len(xs) if xs else None


if __name__ == "__main__":
    raise SystemExit(main())

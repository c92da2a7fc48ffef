"""`python -m forge.audit --sample N`: ground-truth audit of outcome verdicts in real ns-3.

Two modes.

`--from-store DB`: what synthesis certifies. Samples N verified *action* trajectories from a
store (any teacher), re-simulates in ns-3 the initial state and the state the trajectory ends in,
and evaluates the task's goal on ns-3's KPIs at both ends. Reports the share whose goal holds in
ns-3 at the end (the certificate is true) and the share whose problem did not exist in ns-3 at
the start (the goal already held before any change: the model saw a problem ns-3 does not have),
next to the model's own verdicts. ns-3 runs already in the store or in the shipped corpus
(same content hash) are reused rather than simulated again: ns-3 is deterministic.

Without `--from-store` (scripted mode): makes a pool of scripted action trajectories
(thresholds near the frontier, see forge.gym.scripted), verifies them with the Experiment Model,
and draws a stratified sample:
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
from forge.gym.closed_form import ClosedFormModel
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
    ap.add_argument("--closed-form", action="store_true",
                    help="use the closed-form physics model (tests; no trained model needed)")
    ap.add_argument("--from-store", default=None, metavar="DB",
                    help="audit verified action trajectories of this store")
    ap.add_argument("--out", default="build/audit.json")
    args = ap.parse_args(argv)
    if args.sample < 1:
        print(f"error: --sample must be >= 1, not {args.sample}", file=sys.stderr)
        return 2

    from forge.experiment_model import ExperimentModel

    try:
        model = CachedModel(ClosedFormModel() if args.closed_form
                            else ExperimentModel.load(args.model_dir))
    except Exception as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.from_store:
        return audit_store(args.from_store, args.sample, args.seed, model, Path(args.out))
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


# --- audit of a store's verified trajectories ----------------------------------------------------
def load_verified(db: str, sample: int, seed: int) -> tuple[list[Trajectory], int]:
    """A seeded random sample of the store's verified action trajectories (and the pool size).
    Trajectories without an inline scenario get it from the store's `scenarios` table."""
    from forge import db as fdb
    from forge.db import ForgeError

    if db != ":memory:" and not Path(db).exists():
        raise ForgeError(f"--from-store {db}: no such store")
    con = fdb.connect(db, read_only=True)
    try:
        rows = con.execute("SELECT traj_id, trajectory FROM trajectories WHERE status = 'verified' "
                           "AND kind = 'action' AND trajectory IS NOT NULL ORDER BY traj_id"
                           ).fetchall()
        picked = random.Random(seed).sample(rows, min(sample, len(rows)))
        out = []
        for _, raw in picked:
            d = json.loads(raw)
            if d["task"].get("scenario") is None:
                r = con.execute("SELECT scenario FROM scenarios WHERE scenario_id = ?",
                                [d["task"]["scenario_id"]]).fetchone()
                if r is None:
                    raise ForgeError(f"trajectory {d['id']}: scenario {d['task']['scenario_id']} "
                                     f"is in neither the trajectory nor the store")
                d["task"]["scenario"] = json.loads(r[0])
            out.append(Trajectory.model_validate(d))
    finally:
        con.close()
    return out, len(rows)


class KnownRuns:
    """ns-3 results already simulated (a store's ns3_runs, the shipped corpus), by run id."""

    def __init__(self, db: str | None) -> None:
        import duckdb

        self._con = duckdb.connect()
        self._db = db
        if db:
            try:
                self._con.execute(f"ATTACH '{db}' AS store (READ_ONLY)")
            except duckdb.Error as e:  # e.g. locked by a writer: simulate instead of reusing
                print(f"note: cannot reuse the runs of {db} ({e}); simulating", file=sys.stderr)
                self._db = None

    def get(self, scn: Scenario) -> list[dict[str, Any]] | None:
        from forge.ns3.corpus import CORPUS_DIR
        from forge.ns3.simulate import ns3_version
        from forge.ns3.sweep import UE_COLUMNS, run_id

        rid = run_id(scn, ns3_version())
        tables = []
        if self._db:
            tables.append(("store.ns3_runs", "store.ns3_ue_kpis"))
        if (CORPUS_DIR / "ns3_runs.parquet").exists():
            tables.append((f"read_parquet('{CORPUS_DIR / 'ns3_runs.parquet'}')",
                           f"read_parquet('{CORPUS_DIR / 'ns3_ue_kpis.parquet'}')"))
        for runs, kpis in tables:
            ok = self._con.execute(f"SELECT 1 FROM {runs} WHERE run_id = ? AND status = 'ok'",
                                   [rid]).fetchone()
            if ok:
                cols = ", ".join(UE_COLUMNS)
                rows = self._con.execute(f"SELECT {cols} FROM {kpis} WHERE run_id = ? ORDER BY ue",
                                         [rid]).fetchall()
                if len(rows) == len(scn.ues):
                    return [dict(zip(UE_COLUMNS, r, strict=True)) for r in rows]
        return None

    def close(self) -> None:
        self._con.close()


def audit_store(db: str, sample: int, seed: int, model: CachedModel, out: Path) -> int:
    from forge.db import ForgeError
    from forge.ns3.simulate import simulate

    t0 = time.perf_counter()
    try:
        trajs, n_pool = load_verified(db, sample, seed)
        known = KnownRuns(db)
    except (ForgeError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not trajs:
        print(f"error: {db} holds no verified action trajectory", file=sys.stderr)
        return 2
    print(f"{n_pool} verified action trajectories in {db}; auditing {len(trajs)}", flush=True)
    rows: list[dict[str, Any]] = []
    cache: dict[str, tuple[list[dict[str, Any]], str]] = {}
    with tempfile.TemporaryDirectory(prefix="forge-audit-") as tmp:

        def measured(scn: Scenario) -> tuple[list[dict[str, Any]], str]:
            if scn.scenario_id not in cache:
                ues = known.get(scn)
                if ues is not None:
                    cache[scn.scenario_id] = (ues, "reused")
                else:
                    res = simulate(scn, Path(tmp) / f"run{len(cache)}")
                    cache[scn.scenario_id] = (res["ues"], "simulated")
            return cache[scn.scenario_id]

        for k, t in enumerate(trajs, 1):
            g = t.task.goal
            assert t.task.scenario is not None and not isinstance(g, AnswerGoal)
            first = t.task.scenario
            last = final_scenario(t, model)
            try:
                ues0, how0 = measured(first)
                ues1, how1 = measured(last)
            except Exception as e:  # a failed simulation is reported, not fatal
                rows.append({"id": t.id, "error": f"{type(e).__name__}: {str(e)[:300]}"})
                continue
            m0 = evaluate(g, model.view(first)[1])
            m1 = evaluate(g, model.view(last)[1])
            n0 = evaluate(g, ns3_view(first, ues0))
            n1 = evaluate(g, ns3_view(last, ues1))
            rows.append({
                "id": t.id, "teacher": t.provenance.teacher, "changed": last.scenario_id !=
                first.scenario_id, "goal": g.model_dump(mode="json", exclude_none=True),
                "model_holds_initial": m0.holds, "model_holds_final": m1.holds,
                "ns3_holds_initial": n0.holds, "ns3_holds_final": n1.holds,
                "conditions_final": [{"target": m.target, "metric": m.metric, "op": m.op,
                                      "threshold": m.threshold, "model": m.value, "ns3": n.value}
                                     for m, n in zip(m1.conditions, n1.conditions, strict=True)],
                "ns3_runs": [how0, how1]})
            print(f"[{k}/{len(trajs)}] ns3 initial={n0.holds!s:<5} final={n1.holds!s:<5} "
                  f"model initial={m0.holds!s:<5} final={m1.holds!s:<5} {t.id}", flush=True)
    known.close()
    done = [r for r in rows if "error" not in r]
    # The problem is the model's claim at the start: only trajectories that changed something
    # (a "no change needed" answer asserts no problem) count for the problem-exists share.
    acted = [r for r in done if r["changed"]]
    report = {
        "mode": "from_store", "store": db, "pool": n_pool, "sample": len(trajs),
        "audited": len(done),
        "goal_holds_final_ns3": _mean([r["ns3_holds_final"] for r in done]),
        "problem_absent_initially_ns3": _mean([r["ns3_holds_initial"] for r in acted]),
        "problem_exists_initially_ns3": _mean([not r["ns3_holds_initial"] for r in acted]),
        "n_changed": len(acted),
        "model_holds_final": _mean([r["model_holds_final"] for r in done]),
        "model_problem_exists_initially": _mean([not r["model_holds_initial"] for r in acted]),
        # Distinct states: a state shared by several trajectories is simulated once.
        "ns3_runs_simulated": sum(how == "simulated" for _, how in cache.values()),
        "ns3_runs_reused": sum(how == "reused" for _, how in cache.values()),
        "failures": [r for r in done if not r["ns3_holds_final"]],
        "problem_absent": [r["id"] for r in acted if r["ns3_holds_initial"]],
        "errors": [r for r in rows if "error" in r],
        "wall_s": round(time.perf_counter() - t0, 1), "model_hash": model.model_hash,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**report, "rows": rows}, indent=1, default=str) + "\n")
    print(json.dumps({k: v for k, v in report.items()
                      if k not in ("failures", "problem_absent", "errors")}, indent=1))
    failures = [r for r in done if not r["ns3_holds_final"]]
    print(f"goal fails in ns-3 at the end: {len(failures)}; problem absent in ns-3 at the start: "
          f"{sum(r['ns3_holds_initial'] for r in acted)}; errors: {len(rows) - len(done)}; "
          f"full report: {out}")
    return 0


def _rel(v: float | None, t: float) -> float | None:
    return None if v is None else round((v - t) / max(abs(t), 1e-9), 4)


def _mean(xs: list[bool]) -> float | None:
    return sum(xs) / len(xs) if xs else None


if __name__ == "__main__":
    raise SystemExit(main())

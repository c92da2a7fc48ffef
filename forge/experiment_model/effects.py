"""`python -m forge.experiment_model.effects`: does the model move KPIs the way ns-3 does?

The gym's verdicts rest on the *effect* of a change, not only on levels. On paired runs
(forge.ns3.pairs: a base scenario and the same scenario after one configure call, both simulated
in ns-3) this compares, per UE, the change ns-3 measured with the change the model predicts
(prediction of the changed scenario minus prediction of the base), per configure tool and
overall, for DL throughput and mean delay:

- sign agreement where ns-3 moves the KPI by more than 5 % and by more than 20 % (relative to the
  base value); a predicted change of exactly zero counts as a wrong sign;
- Spearman of predicted versus ns-3 deltas over all UEs (absolute deltas, and log ratios
  after/before, which weigh a 1 -> 2 Mbps move like a 10 -> 20 Mbps one), and over the UEs
  ns-3 moves by more than 5 % (most UEs' deltas are ns-3 noise around 0);

next to the same figures for the closed-form physics prior (`forge.gym.closed_form`), so the
model's worth over physics alone is visible. On the second test distribution (split
`hotspot_test`, a sampler unlike the grid's) it also reports the absolute figures of
`forge calibrate` (median APE over all and congested UEs, Spearman), the handover-count error
against the all-zero baseline, and the share of scenarios the model calls in-domain.

Pairs are taken from `--split` (default `heldout`: base seeds never trained on, like the rest of
the corpus; `all` for a model that was trained on none of the pairs, such as the shipped one).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
from scipy.stats import spearmanr

from forge.db import ForgeError
from forge.experiment_model.calibrate import (
    CONGESTED_BELOW,
    RunData,
    baseline_offered,
    baseline_physics,
    evaluate,
    has_pairs,
)
from forge.scenario import Scenario

EFFECT_KPIS = ("dl_throughput_mbps", "delay_ms")
MOVES = (0.05, 0.20)
# Below these a base value is noise-level, and relative moves from it are meaningless.
FLOOR = {"dl_throughput_mbps": 1e-3, "delay_ms": 1e-3}


@dataclass
class PairData:
    tool: str
    args: dict[str, Any]
    split: str
    grid: str
    base: RunData
    changed: RunData


def load_pairs(con: duckdb.DuckDBPyConnection, split: str = "heldout",
               grid: str | None = None) -> list[PairData]:
    """Pairs whose two runs are both stored and ok. `split`: a split name or `all`."""
    from forge.ns3.pairs import pair_rows

    if not has_pairs(con):
        raise ForgeError("the store has no paired runs (table ns3_pairs): simulate some with "
                         "`python -m forge.ns3.pairs`")
    rows = pair_rows(con, split, None if grid is None else (grid,))
    ids = sorted({r[5] for r in rows} | {r[7] for r in rows})
    kp = con.execute("SELECT * FROM ns3_ue_kpis WHERE run_id IN (SELECT unnest(?)) "
                     "ORDER BY run_id, ue", [ids])
    cols = [d[0] for d in kp.description]
    ues: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in kp.fetchall():
        d = dict(zip(cols, rec, strict=True))
        ues[d["run_id"]].append(d)
    out = []
    for tool, args, sp, gr, _, bid, bscn, cid, cscn in rows:
        b, c = Scenario.model_validate_json(bscn), Scenario.model_validate_json(cscn)
        if len(ues[bid]) != len(b.ues) or len(ues[cid]) != len(c.ues):
            continue
        out.append(PairData(tool, json.loads(args), sp, gr, RunData(b, ues[bid], sp),
                            RunData(c, ues[cid], sp)))
    return out


def _deltas(pairs: list[PairData], preds: dict[str, list[dict[str, Any]]], kpi: str
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per UE over all pairs: true before, true after, predicted before, predicted after and
    the pair's index (UEs without the KPI on either side are left out)."""
    tb, ta, pb, pa, idx = [], [], [], [], []
    for k, p in enumerate(pairs):
        qb = preds[p.base.scenario.scenario_id]
        qa = preds[p.changed.scenario.scenario_id]
        for i in range(len(p.base.ues)):
            t0, t1 = p.base.ues[i].get(kpi), p.changed.ues[i].get(kpi)
            v0, v1 = qb[i].get(kpi), qa[i].get(kpi)
            if None in (t0, t1, v0, v1):
                continue
            tb.append(t0)
            ta.append(t1)
            pb.append(v0)
            pa.append(v1)
            idx.append(k)
    arr = [np.asarray(x, dtype=float) for x in (tb, ta, pb, pa, idx)]
    return arr[0], arr[1], arr[2], arr[3], arr[4]


def effect_metrics(tb: np.ndarray, ta: np.ndarray, pb: np.ndarray, pa: np.ndarray,
                   floor: float) -> dict[str, Any]:
    """Sign agreement at each move threshold and Spearman of deltas, for one set of UEs."""
    true_d, pred_d = ta - tb, pa - pb
    rel = np.abs(true_d) / np.maximum(np.abs(tb), floor)
    out: dict[str, Any] = {"n_ues": len(tb)}
    for m in MOVES:
        sel = rel > m
        agree = np.sign(pred_d[sel]) == np.sign(true_d[sel])
        out[f"sign_agreement_gt{int(m * 100)}"] = float(agree.mean()) if sel.any() else None
        out[f"n_moved_gt{int(m * 100)}"] = int(sel.sum())
    out["spearman_delta"] = spearman(pred_d, true_d)
    # Over all UEs most deltas are ns-3's noise around 0 (a change moves a few UEs): the same
    # rank correlation over the UEs ns-3 moves by more than 5 % says how well the model ranks
    # the effects that exist.
    moved = rel > MOVES[0]
    out["spearman_delta_moved_gt5"] = spearman(pred_d[moved], true_d[moved])
    lt = np.log(np.maximum(ta, floor) / np.maximum(tb, floor))
    lp = np.log(np.maximum(pa, floor) / np.maximum(pb, floor))
    out["spearman_log_ratio"] = spearman(lp, lt)
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rho, or None where it is undefined (fewer than 3 values, or one side flat)."""
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b).statistic)


def predict_all(predictor: Any, scenarios: list[Scenario]) -> dict[str, list[dict[str, Any]]]:
    uniq = {s.scenario_id: s for s in scenarios}
    preds = predictor.predict(list(uniq.values()))
    return {sid: p.ues for sid, p in zip(uniq, preds, strict=True)}


def effect_report(pairs: list[PairData], predictors: dict[str, Any]) -> dict[str, Any]:
    """{predictor: {kpi: {"overall": metrics, "by_tool": {tool: metrics}}}}."""
    scns = [s for p in pairs for s in (p.base.scenario, p.changed.scenario)]
    out: dict[str, Any] = {"n_pairs": len(pairs),
                           "n_pairs_by_tool": dict(sorted(
                               {t: sum(p.tool == t for p in pairs)
                                for t in {p.tool for p in pairs}}.items()))}
    for name, predictor in predictors.items():
        preds = predict_all(predictor, scns)
        rep: dict[str, Any] = {}
        for kpi in EFFECT_KPIS:
            tb, ta, pb, pa, idx = _deltas(pairs, preds, kpi)
            tools = np.array([pairs[int(k)].tool for k in idx]) if len(idx) else np.array([])
            by_tool = {t: effect_metrics(tb[tools == t], ta[tools == t], pb[tools == t],
                                         pa[tools == t], FLOOR[kpi])
                       for t in sorted(set(tools.tolist()))}
            rep[kpi] = {"overall": effect_metrics(tb, ta, pb, pa, FLOOR[kpi]),
                        "by_tool": by_tool}
        out[name] = rep
    return out


def _pair_key(p: PairData) -> tuple[int, str, str, str]:
    from forge.ns3.pairs import base_grid

    return p.base.scenario.seed, base_grid(p.grid), p.tool, json.dumps(p.args, sort_keys=True)


def match_replicates(pairs: list[PairData], reps: list[PairData]
                     ) -> list[tuple[PairData, PairData]]:
    """Each pair with its replicate (the same base, grid, tool and arguments under another
    RngRun), in the pairs' order; pairs without one are left out."""
    by_key = {_pair_key(r): r for r in reps}
    return [(p, by_key[_pair_key(p)]) for p in pairs if _pair_key(p) in by_key]


def replicate_report(pairs: list[PairData], reps: list[PairData], predictors: dict[str, Any],
                     move: float = 0.20) -> dict[str, Any] | None:
    """ns-3's run-to-run noise on the pairs themselves, and the model judged on effects that
    noise cannot explain. `reps`: the same pairs under another RngRun (`forge.ns3.pairs
    --replicate 1`); None when none matches.

    Per UE (DL throughput), with d1 the change's move in the pair and d2 in its replicate:
    - `noise_moved_gt20`: share of UEs whose *base* run and base replicate differ by more than
      `move` (no change at all), over all UEs and over congested ones;
    - `ns3_self_sign_agreement_gt20`: where |d1| > `move`, the share whose d2 has the same sign:
      how often ns-3 agrees with itself, a ceiling for any predictor judged on single runs;
    - per predictor, sign agreement where |d1| > `move` (the usual figure, on these pairs),
      where both |d1| and |d2| exceed `move` with one sign (`reproducible`), and where the mean
      of the two runs moves by more than `move` (`mean_of_2`), and the Spearman of predicted
      deltas against the two runs' mean delta over the UEs it moves by more than 5 %;
    - `ns3_self_spearman_delta`: the Spearman of d1 against d2 over all UEs (and over the UEs
      with |d1| > 5 %): how well one ns-3 run ranks another's effects. A predictor that knew
      ns-3's expected effect exactly would score about its square root against single runs
      (`delta_spearman_ceiling`), since each run adds its own noise to that expectation."""
    matched = match_replicates(pairs, reps)
    if not matched:
        return None
    kpi, floor = "dl_throughput_mbps", FLOOR["dl_throughput_mbps"]
    rows, where = [], []  # (t0, t1, r0, r1, congested); (pair index, UE)
    for k, (p, r) in enumerate(matched):
        for i in range(len(p.base.ues)):
            got = [x.ues[i].get(kpi) for x in (p.base, p.changed, r.base, r.changed)]
            if None in got:
                continue
            vals = [float(v) for v in got if v is not None]
            off = p.base.scenario.ues[i].dl_rate_mbps
            rows.append((*vals, min(vals) < CONGESTED_BELOW * off))
            where.append((k, i))
    t0, t1, r0, r1, cong = np.asarray(rows, dtype=float).reshape(-1, 5).T
    cong = cong.astype(bool)
    noise = np.abs(r0 - t0) / np.maximum(t0, floor) > move
    d1, d2 = t1 - t0, r1 - r0
    m1 = np.abs(d1) / np.maximum(t0, floor) > move
    m2 = np.abs(d2) / np.maximum(r0, floor) > move
    reproducible = m1 & m2 & (np.sign(d1) == np.sign(d2))
    base_mean, dm = (t0 + r0) / 2, (t1 + r1 - t0 - r0) / 2
    m_mean = np.abs(dm) / np.maximum(base_mean, floor) > move
    m_mean5 = np.abs(dm) / np.maximum(base_mean, floor) > MOVES[0]

    def share(x: np.ndarray) -> float | None:
        return float(x.mean()) if len(x) else None

    out: dict[str, Any] = {
        "n_pairs": len(matched), "n_ues": len(t0), "move": move,
        "noise_moved_gt20": share(noise), "noise_moved_gt20_congested": share(noise[cong]),
        "n_moved_gt20": int(m1.sum()), "n_reproducible_gt20": int(reproducible.sum()),
        "n_mean_moved_gt20": int(m_mean.sum()),
        "ns3_self_sign_agreement_gt20": share(np.sign(d2[m1]) == np.sign(d1[m1])),
    }
    m5 = np.abs(d1) / np.maximum(t0, floor) > MOVES[0]
    for suffix, sel in (("", slice(None)), ("_moved_gt5", m5)):
        rho = spearman(d1[sel], d2[sel])
        out[f"ns3_self_spearman_delta{suffix}"] = rho
        out[f"delta_spearman_ceiling{suffix}"] = math.sqrt(rho) if rho and rho > 0 else None
    scns = [s for p, _ in matched for s in (p.base.scenario, p.changed.scenario)]
    for name, predictor in predictors.items():
        preds = predict_all(predictor, scns)
        pd = np.array([preds[matched[k][0].changed.scenario.scenario_id][i][kpi]
                       - preds[matched[k][0].base.scenario.scenario_id][i][kpi]
                       for k, i in where], dtype=float)
        out[name] = {
            "sign_agreement_gt20": share(np.sign(pd[m1]) == np.sign(d1[m1])),
            "sign_agreement_reproducible_gt20": share(
                np.sign(pd[reproducible]) == np.sign(d1[reproducible])),
            "sign_agreement_mean_of_2_gt20": share(np.sign(pd[m_mean]) == np.sign(dm[m_mean])),
            "spearman_delta": spearman(pd, d1),
            "spearman_delta_moved_gt5": spearman(pd[m5], d1[m5]),
            "spearman_delta_mean_of_2": spearman(pd, dm),
            "spearman_delta_mean_of_2_moved_gt5": spearman(pd[m_mean5], dm[m_mean5]),
        }
    return out


def absolute_report(runs: list[RunData], model: Any) -> dict[str, Any]:
    """Levels on a set of runs: the model, the offered-load and physics baselines."""
    preds = model.predict([r.scenario for r in runs])
    model_eval = evaluate(runs, [p.ues for p in preds])
    off = evaluate(runs, baseline_offered(runs))
    phys = evaluate(runs, baseline_physics(runs))
    n_cong = sum(k["dl_throughput_mbps"] < CONGESTED_BELOW * u.dl_rate_mbps
                 for r in runs for u, k in zip(r.scenario.ues, r.ues, strict=True))
    n_ues = sum(len(r.ues) for r in runs)
    ho_true = [float(k["handovers"]) for r in runs for k in r.ues]
    ho_pred = [float(q["handovers"]) for p in preds for q in p.ues]
    return {
        "n_runs": len(runs), "n_ues": n_ues, "congested_share": n_cong / max(n_ues, 1),
        "in_domain_share": float(np.mean([p.in_domain for p in preds])) if preds else None,
        "model": model_eval, "baseline_offered_load": off, "baseline_physics": phys,
        "handovers": {"n_ues_with_handovers": int(sum(h > 0 for h in ho_true)),
                      "model_mae": float(np.mean(np.abs(np.subtract(ho_pred, ho_true))))
                      if ho_true else None,
                      "zero_baseline_mae": float(np.mean(ho_true)) if ho_true else None},
    }


def runs_of(pairs: list[PairData]) -> list[RunData]:
    seen: dict[str, RunData] = {}
    for p in pairs:
        for r in (p.base, p.changed):
            seen.setdefault(r.scenario.scenario_id, r)
    return list(seen.values())


def _f(x: float | None) -> str:
    return "   -  " if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:6.3f}"


def print_effects(rep: dict[str, Any], title: str) -> None:
    print(f"\n{title}: {rep['n_pairs']} pairs")
    for kpi in EFFECT_KPIS:
        print(f"  {kpi}: sign agreement where ns-3 moves > 5 % / > 20 %, Spearman of deltas "
              f"(model | physics prior)")
        print(f"  {'tool':<24}{'pairs':>6}{'moved>20%':>10}{'sign>5%':>16}{'sign>20%':>16}"
              f"{'spearman':>16}{'spear(log)':>16}{'spear(>5%)':>16}")
        m, p = rep["model"][kpi], rep["physics_prior"][kpi]
        rows = [("overall", rep["n_pairs"], m["overall"], p["overall"])] + [
            (t, rep["n_pairs_by_tool"].get(t, 0), m["by_tool"][t], p["by_tool"][t])
            for t in m["by_tool"]]
        for name, n, a, b in rows:
            print(f"  {name:<24}{n:>6}{a['n_moved_gt20']:>10}"
                  f"{_f(a['sign_agreement_gt5'])} |{_f(b['sign_agreement_gt5'])}"
                  f"  {_f(a['sign_agreement_gt20'])} |{_f(b['sign_agreement_gt20'])}"
                  f"  {_f(a['spearman_delta'])} |{_f(b['spearman_delta'])}"
                  f"  {_f(a['spearman_log_ratio'])} |{_f(b['spearman_log_ratio'])}"
                  f"  {_f(a['spearman_delta_moved_gt5'])} |{_f(b['spearman_delta_moved_gt5'])}")


def print_absolute(rep: dict[str, Any], title: str) -> None:
    print(f"\n{title}: {rep['n_runs']} runs, {rep['n_ues']} UEs, "
          f"{rep['congested_share']:.0%} congested, in-domain {rep['in_domain_share']:.0%}")
    for name in ("model", "baseline_physics", "baseline_offered_load"):
        for kpi in ("dl_throughput_mbps", "delay_ms"):
            e = rep[name][kpi]
            print(f"  {name:<22}{kpi:<20} median APE {_f(e.get('median_ape'))}  congested "
                  f"{_f(e.get('congested', {}).get('median_ape'))}  Spearman "
                  f"{_f(e.get('spearman'))}")
    h = rep["handovers"]
    print(f"  handovers: model MAE {_f(h['model_mae'])} vs zero baseline "
          f"{_f(h['zero_baseline_mae'])} ({h['n_ues_with_handovers']} UEs with handovers)")


def print_replicates(rep: dict[str, Any], title: str) -> None:
    print(f"\n{title}: {rep['n_pairs']} pairs, {rep['n_ues']} UEs")
    print(f"  base vs base replicate moved > 20 %: {_f(rep['noise_moved_gt20'])} of UEs, "
          f"{_f(rep['noise_moved_gt20_congested'])} of congested ones")
    print(f"  ns-3 agrees with itself on the sign of a > 20 % move: "
          f"{_f(rep['ns3_self_sign_agreement_gt20'])} ({rep['n_moved_gt20']} moves)")
    print(f"  {'DL sign agreement':<22}{'single run':>12}{'reproducible':>14}{'mean of 2':>12}"
          f"{'spearman(mean)':>16}")
    for name in ("model", "physics_prior"):
        m = rep[name]
        print(f"  {name:<22}{_f(m['sign_agreement_gt20']):>12}"
              f"{_f(m['sign_agreement_reproducible_gt20']):>14}"
              f"{_f(m['sign_agreement_mean_of_2_gt20']):>12}"
              f"{_f(m['spearman_delta_mean_of_2']):>16}   "
              f"(reproducible: {rep['n_reproducible_gt20']}, mean of 2: "
              f"{rep['n_mean_moved_gt20']} UEs)")
    print(f"  delta Spearman, all UEs / UEs moved > 5 %: ns-3 run vs replicate "
          f"{_f(rep['ns3_self_spearman_delta'])} / {_f(rep['ns3_self_spearman_delta_moved_gt5'])}"
          f" (ceiling for any predictor ~{_f(rep['delta_spearman_ceiling'])} / "
          f"{_f(rep['delta_spearman_ceiling_moved_gt5'])}); "
          + ", ".join(f"{n} {_f(rep[n]['spearman_delta'])} / "
                      f"{_f(rep[n]['spearman_delta_moved_gt5'])}"
                      for n in ("model", "physics_prior")))


def effect_points(pairs: list[PairData], model: Any, kpi: str = "dl_throughput_mbps"
                  ) -> dict[str, np.ndarray]:
    """Per UE of `pairs`: ns-3's and the model's log ratio after/before of `kpi` (the effect
    panel of the calibration plot) and whether ns-3 moved it by more than 20 %."""
    tb, ta, pb, pa, _ = _deltas(pairs, predict_all(model, [
        s for p in pairs for s in (p.base.scenario, p.changed.scenario)]), kpi)
    f = FLOOR[kpi]
    return {"true": np.log(np.maximum(ta, f) / np.maximum(tb, f)),
            "pred": np.log(np.maximum(pa, f) / np.maximum(pb, f)),
            "moved": np.abs(ta - tb) / np.maximum(np.abs(tb), f) > MOVES[1]}


def effects_section(con: duckdb.DuckDBPyConnection, model: Any, split: str = "heldout",
                    points: dict[str, dict[str, np.ndarray]] | None = None) -> dict[str, Any]:
    """Effect and level figures of `model` on the store's pairs: grid pairs of `split` and every
    pair of the second distribution (hotspot), each next to the closed-form physics prior.
    With `points`, also fills it with each kind's `effect_points` (the calibration plot's
    effect panel). Raises ForgeError when the store holds no complete pair."""
    from forge.gym.closed_form import ClosedFormModel

    grid_pairs = load_pairs(con, split, grid="pairs")
    hot_pairs = load_pairs(con, "all", grid="hotspot")
    if not grid_pairs and not hot_pairs:
        raise ForgeError(f"no complete pair (both runs ok) in split {split!r}")
    predictors = {"model": model, "physics_prior": ClosedFormModel()}
    out: dict[str, Any] = {"model_hash": model.model_hash, "split": split}
    for name, got, label in (("grid", grid_pairs, f"{split} grid pairs"),
                             ("hotspot", hot_pairs, "hotspot pairs")):
        if got:
            out[f"{name}_pairs"] = effect_report(got, predictors)
            out[f"{name}_absolute"] = absolute_report(runs_of(got), model)
            if points is not None:
                points[label] = effect_points(got, model)
    # ns-3's own noise, where the store holds the same pairs under another RngRun.
    from forge.ns3.pairs import replicate_grid

    for name, got, grid, sp in (("grid_replicates", grid_pairs, "pairs", split),
                                ("hotspot_replicates", hot_pairs, "hotspot", "all")):
        reps = load_pairs(con, sp, grid=replicate_grid(grid, 1)) if got else []
        rep = replicate_report(got, reps, predictors) if reps else None
        if rep is not None:
            out[name] = rep
    return out


def effects_summary(sec: dict[str, Any]) -> dict[str, Any]:
    """The headline effect figures (issue 11's targets) of an `effects_section`."""
    out: dict[str, Any] = {}
    for name in ("grid_pairs", "hotspot_pairs"):
        if name in sec:
            m = sec[name]["model"]["dl_throughput_mbps"]["overall"]
            out[name] = {"n_pairs": sec[name]["n_pairs"],
                         "dl_sign_agreement_gt20": m["sign_agreement_gt20"],
                         "dl_spearman_delta": m["spearman_delta"],
                         "dl_spearman_delta_moved_gt5": m["spearman_delta_moved_gt5"]}
    for name in ("grid_replicates", "hotspot_replicates"):
        if name in sec:
            r = sec[name]
            out[name] = {"n_pairs": r["n_pairs"],
                         "ns3_self_sign_agreement_gt20": r["ns3_self_sign_agreement_gt20"],
                         "noise_moved_gt20_congested": r["noise_moved_gt20_congested"],
                         "dl_sign_agreement_gt20": r["model"]["sign_agreement_gt20"],
                         "dl_sign_agreement_reproducible_gt20":
                             r["model"]["sign_agreement_reproducible_gt20"],
                         "dl_sign_agreement_mean_of_2_gt20":
                             r["model"]["sign_agreement_mean_of_2_gt20"],
                         "dl_spearman_delta_mean_of_2":
                             r["model"]["spearman_delta_mean_of_2"],
                         "ns3_self_spearman_delta": r["ns3_self_spearman_delta"],
                         "delta_spearman_ceiling": r["delta_spearman_ceiling"],
                         "dl_spearman_delta": r["model"]["spearman_delta"]}
    if "hotspot_absolute" in sec:
        d = sec["hotspot_absolute"]["model"]["dl_throughput_mbps"]
        out["hotspot_dl_congested_median_ape"] = d["congested"]["median_ape"]
        out["hotspot_dl_spearman"] = d["spearman"]
    return out


def merge_into_report(path: Path, sec: dict[str, Any]) -> None:
    """Write `sec` into a model's report.json (under "effects", its headline figures under
    summary.effects); refuses a report of another model."""
    rep = json.loads(path.read_text())
    if rep.get("model_hash") != sec["model_hash"]:
        raise ForgeError(f"{path} reports model {str(rep.get('model_hash'))[:12]}, the figures "
                         f"are of model {sec['model_hash'][:12]}: pass that model's directory "
                         "(--model-dir)")
    rep["effects"] = sec
    rep.setdefault("summary", {})["effects"] = effects_summary(sec)
    path.write_text(json.dumps(rep, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    from forge import db as fdb
    from forge.experiment_model import ExperimentModel

    ap = argparse.ArgumentParser(prog="python -m forge.experiment_model.effects",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--db", default=None, help="store with paired runs (default $FORGE_DB)")
    ap.add_argument("--model-dir", default=None, help="default: the shipped model")
    ap.add_argument("--split", default="heldout",
                    help="pairs of this split (calibration, heldout, hotspot_test) or all")
    ap.add_argument("--out", default="build/effects.json")
    ap.add_argument("--into-report", default=None, metavar="REPORT_JSON",
                    help="also write the figures into this model's report.json (key "
                         "'effects'), e.g. corpora/experiment_model/report.json for the "
                         "shipped model, which was trained on no pair (use --split all)")
    args = ap.parse_args(argv)
    try:
        model = ExperimentModel.load(args.model_dir)
        con = fdb.connect(args.db, read_only=True)
        report = effects_section(con, model, args.split)
        if args.into_report:
            merge_into_report(Path(args.into_report), report)
    except (ForgeError, duckdb.Error, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if "grid_pairs" in report:
        print_effects(report["grid_pairs"], f"effects on grid pairs (split {args.split})")
        print_absolute(report["grid_absolute"], "levels on the grid pairs' runs")
    if "hotspot_pairs" in report:
        print_effects(report["hotspot_pairs"], "effects on the second distribution (hotspot)")
        print_absolute(report["hotspot_absolute"], "levels on the second distribution (hotspot)")
    for name, title in (("grid_replicates", "grid pairs"), ("hotspot_replicates", "hotspot")):
        if name in report:
            print_replicates(report[name], f"ns-3's own noise on the {title} (replicates)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nfull report: {out}" + (f"; written into {args.into_report}"
                                     if args.into_report else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What holds the delta Spearman down: where ns-3's own effects are, and where the model's are.

    python benchmarks/bench_delta_spearman.py --db build/pairs.duckdb

On the held-out grid pairs that have a replicate (`python -m forge.ns3.pairs --replicate 1
--split heldout`), per UE (DL throughput), d1 = the change's move in the pair, d2 = its move in
the replicate (RngRun 2), pd = the shipped model's predicted move. Prints one JSON line:
- by size of ns-3's move (|d1| relative to the base run): UEs, ns-3's self Spearman (d1 vs d2),
  the model's Spearman (pd vs d1), sign agreement of each, share uncongested;
- how many UEs ns-3 leaves exactly unchanged, in both runs, and how many of those the model
  also leaves exactly unchanged;
- what-if figures: the model's delta Spearman if its deltas were zeroed exactly where ns-3's
  is zero (an oracle: the most that predicting "no change" right could give), and if
  predicted throughputs within `tau` of the offered load were snapped to it (a saturation
  rule that a model could apply itself);
- per configure tool: ns-3's self Spearman and the model's.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import duckdb
import numpy as np

from forge.experiment_model import ExperimentModel
from forge.experiment_model.effects import load_pairs, match_replicates, predict_all, spearman
from forge.ns3.pairs import replicate_grid

KPI = "dl_throughput_mbps"


def _rho(a: np.ndarray, b: np.ndarray) -> float | None:
    rho = spearman(a, b)
    return None if rho is None else round(rho, 3)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", default="build/pairs.duckdb")
    ap.add_argument("--split", default="heldout")
    ap.add_argument("--tau", type=float, action="append", default=None,
                    help="saturation snaps to try (repeatable; default 0.01, 0.05)")
    args = ap.parse_args()
    con = duckdb.connect(args.db, read_only=True)
    pairs = load_pairs(con, args.split, "pairs")
    matched = match_replicates(pairs, load_pairs(con, args.split, replicate_grid("pairs", 1)))
    con.close()
    if not matched:
        raise SystemExit("no replicated pairs in this store: run `python -m forge.ns3.pairs "
                         "--replicate 1 --split heldout` first")
    preds = predict_all(ExperimentModel.load(),
                        [s for p, _ in matched for s in (p.base.scenario, p.changed.scenario)])
    rows: list[tuple[float, ...]] = []
    tools: list[str] = []
    for p, r in matched:
        qb, qa = preds[p.base.scenario.scenario_id], preds[p.changed.scenario.scenario_id]
        for i in range(len(p.base.ues)):
            got = [x.ues[i].get(KPI) for x in (p.base, p.changed, r.base, r.changed)]
            if None in got:
                continue
            rows.append((*[float(v) for v in got if v is not None], qb[i][KPI], qa[i][KPI],
                         p.base.scenario.ues[i].dl_rate_mbps,
                         p.changed.scenario.ues[i].dl_rate_mbps))
            tools.append(p.tool)
    t0, t1, r0, r1, q0, q1, off0, off1 = np.asarray(rows).T
    tool = np.asarray(tools)
    d1, d2, pd = t1 - t0, r1 - r0, q1 - q0
    rel = np.abs(d1) / np.maximum(t0, 0.01)
    out: dict[str, Any] = {"pairs": len(matched), "ues": len(d1),
                           "ns3_self_spearman": _rho(d1, d2), "model_spearman": _rho(pd, d1)}
    bins = {}
    for lo, hi in ((0.0, 0.01), (0.01, 0.05), (0.05, 0.20), (0.20, np.inf)):
        s = (rel >= lo) & (rel < hi)
        bins[f"{lo:g}-{hi:g}"] = {
            "ues": int(s.sum()), "ns3_self_spearman": _rho(d1[s], d2[s]),
            "model_spearman": _rho(pd[s], d1[s]),
            "ns3_self_sign": round(float(np.mean(np.sign(d1[s]) == np.sign(d2[s]))), 3),
            "model_sign": round(float(np.mean(np.sign(pd[s]) == np.sign(d1[s]))), 3),
            "uncongested": round(float(np.mean(t0[s] >= 0.95 * off0[s])), 3)}
    out["by_move"] = bins
    zero = d1 == 0
    out["ns3_exactly_unchanged"] = {
        "ues": int(zero.sum()), "share": round(float(zero.mean()), 3),
        "also_unchanged_in_replicate": round(float(np.mean(d2[zero] == 0)), 3),
        "model_exactly_unchanged": round(float(np.mean(pd[zero] == 0)), 3),
        "model_exactly_unchanged_where_ns3_moves": round(float(np.mean(pd[~zero] == 0)), 3)}
    out["what_if"] = {"oracle_zero_where_ns3_is_zero": _rho(np.where(zero, 0.0, pd), d1)}
    for tau in args.tau or [0.01, 0.05]:
        s0 = np.where(q0 >= (1 - tau) * off0, off0, q0)
        s1 = np.where(q1 >= (1 - tau) * off1, off1, q1)
        out["what_if"][f"snap_within_{tau:g}_of_offered"] = _rho(s1 - s0, d1)
    out["by_tool"] = {t: {"ues": int((tool == t).sum()),
                          "ns3_self_spearman": _rho(d1[tool == t], d2[tool == t]),
                          "model_spearman": _rho(pd[tool == t], d1[tool == t])}
                      for t in sorted(set(tools))}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

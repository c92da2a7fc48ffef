"""Where the Experiment Model gets the direction of a change wrong: direct vs indirect effects.

    python benchmarks/bench_effect_reach.py --db build/pairs.duckdb

Over the complete grid pairs of a pairs store (`python -m forge.ns3.pairs`), every UE whose DL
throughput ns-3 moves by more than 20 % is *direct* when the change names it or its serving
cell (before or after the change), else *indirect* (a neighbour cell's interference or load).
For each group it prints the shipped model's sign agreement, and the same for the UEs the
model predicts to move by less than 2 % (the effects it does not see at all). Where a pair has
a replicate (`python -m forge.ns3.pairs --replicate 1`), each group also gets ns-3's agreement
with itself (`ns3_self`: the replicate's move has the pair's sign) and the model's on the same
UEs, so a group's gap can be told apart from ns-3's own noise. One JSON line.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

import duckdb

from forge.experiment_model import ExperimentModel
from forge.experiment_model.effects import load_pairs, match_replicates, predict_all
from forge.ns3.pairs import replicate_grid


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", default="build/pairs.duckdb")
    ap.add_argument("--split", default="all")
    ap.add_argument("--move", type=float, default=0.2, help="ns-3 move that counts (relative)")
    args = ap.parse_args()
    con = duckdb.connect(args.db, read_only=True)
    pairs = load_pairs(con, args.split, "pairs")
    reps = dict((id(p), r) for p, r in match_replicates(
        pairs, load_pairs(con, args.split, replicate_grid("pairs", 1))))
    con.close()
    preds = predict_all(ExperimentModel.load(),
                        [p.base.scenario for p in pairs] + [p.changed.scenario for p in pairs])
    n: Counter[str] = Counter()
    ok: Counter[str] = Counter()
    for p in pairs:
        qb = preds[p.base.scenario.scenario_id]
        qa = preds[p.changed.scenario.scenario_id]
        for i in range(len(p.base.ues)):
            t0 = p.base.ues[i].get("dl_throughput_mbps")
            t1 = p.changed.ues[i].get("dl_throughput_mbps")
            if t0 is None or t1 is None or abs(t1 - t0) / max(abs(t0), 0.01) <= args.move:
                continue
            v0, v1 = qb[i]["dl_throughput_mbps"], qa[i]["dl_throughput_mbps"]
            cell = p.args.get("cell")
            direct = p.args.get("ue") == i or (cell is not None and cell in (
                qb[i]["serving_cell"], qa[i]["serving_cell"]))
            group = "direct" if direct else "indirect"
            unseen = abs(v1 - v0) / max(abs(v0), 0.01) < 0.02
            agree = (v1 > v0) == (t1 > t0) and v1 != v0
            for key in (group, f"{group}_predicted_under_2pct" if unseen else None):
                if key:
                    n[key] += 1
                    ok[key] += agree
            rep = reps.get(id(p))
            r0 = rep.base.ues[i].get("dl_throughput_mbps") if rep else None
            r1 = rep.changed.ues[i].get("dl_throughput_mbps") if rep else None
            if r0 is not None and r1 is not None:
                key = f"{group}_replicated"
                n[key] += 1
                ok[key] += agree
                n[f"{key}_ns3_self"] += 1
                ok[f"{key}_ns3_self"] += (r1 > r0) == (t1 > t0) and r1 != r0
    print(json.dumps({"pairs": len(pairs), "move": args.move,
                      **{k: {"n_ues": n[k], "sign_agreement": round(ok[k] / n[k], 3)}
                         for k in sorted(n)}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

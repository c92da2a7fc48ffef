"""Handover counts: does a model predict them better than "no handover at all"?

    python benchmarks/bench_handover_model.py --db build/ho/ho.duckdb \
        --model-dir corpora/experiment_model --model-dir build/ho/model

Over the held-out runs of a store (the split the calibration never trains on), per UE: the
handover count ns-3 measured against each model's prediction, next to the all-zero baseline.
Counts are rare (most UEs never hand over), so three errors are printed: MAE (which the
all-zero baseline wins unless a model is sure where handovers happen), mean squared error and
the Poisson deviance (both reward predicting the expected count; the all-zero baseline has no
finite deviance, so a constant rate, the held-out mean itself, stands in for it), and the AUC
(how well the predictions rank the UEs that hand over above those that do not), each on all
held-out runs and on the runs of the handover grid alone (`--long`: simulated time of at least
this many seconds; the grid's runs last 8 s). One JSON line per model and baseline.
"""

from __future__ import annotations

import argparse
import json
import math

import duckdb
import numpy as np
from scipy.stats import rankdata

from forge.experiment_model import ExperimentModel
from forge.experiment_model.calibrate import load_runs
from forge.experiment_model.handover import deviance


def errors(true: np.ndarray, pred: np.ndarray) -> dict[str, float | int | None]:
    # Poisson deviance; infinite where a UE hands over against a predicted rate of 0 (None).
    pos = true > 0
    dev: float | None = deviance(true, pred)
    if dev is not None and math.isinf(dev):
        dev = None
    # AUC: the chance that a UE that handed over is ranked above one that did not (ties half).
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    auc = None
    if n_pos and n_neg:
        ranks = rankdata(pred)
        auc = float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return {"n_ues": len(true), "n_with_handovers": n_pos,
            "handovers": float(true.sum()), "mae": float(np.abs(pred - true).mean()),
            "mse": float(((pred - true) ** 2).mean()), "poisson_deviance": dev, "auc": auc,
            "mean_pred": float(pred.mean()), "mean_true": float(true.mean())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--model-dir", action="append", default=None,
                    help="a model to judge (repeatable; default: the shipped one)")
    ap.add_argument("--long", type=float, default=8.0,
                    help="runs of at least this simulated time form the handover subset")
    args = ap.parse_args()
    con = duckdb.connect(args.db, read_only=True)
    runs = load_runs(con, ("heldout",))
    con.close()
    true = np.array([float(k["handovers"] or 0) for r in runs for k in r.ues])
    long = np.array([r.scenario.sim_time_s >= args.long for r in runs for _ in r.ues])
    zero = np.zeros_like(true)
    print(json.dumps({"model": "all-zero baseline", "heldout": errors(true, zero),
                      "handover_grid": errors(true[long], zero[long])}))
    const = np.full_like(true, true.mean())
    const_long = np.full(int(long.sum()), true[long].mean() if long.any() else 0.0)
    print(json.dumps({"model": "constant rate (held-out mean)", "heldout": errors(true, const),
                      "handover_grid": errors(true[long], const_long)}))
    for d in args.model_dir or [None]:
        loaded = ExperimentModel.load(d)
        heads = [("", loaded)]
        if loaded.handover_glm:
            # The same ensemble read through its own handover output: the two heads side by side.
            meta = {k: v for k, v in loaded.meta.items() if k != "handover_glm"}
            heads.append((" (ensemble output)", ExperimentModel(loaded.members, meta)))
        for label, model in heads:
            preds = model.predict([r.scenario for r in runs])
            pred = np.array([float(q["handovers"]) for p in preds for q in p.ues])
            in_dom = float(np.mean([p.in_domain for p, r in zip(preds, runs, strict=True)
                                    if r.scenario.sim_time_s >= args.long] or [np.nan]))
            print(json.dumps({"model": (d or "shipped") + label,
                              "model_hash": loaded.model_hash[:12],
                              "heldout": errors(true, pred),
                              "handover_grid": errors(true[long], pred[long]),
                              "handover_grid_in_domain_share": in_dom}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

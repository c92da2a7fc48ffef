"""Experiment Model prediction speed: UE-predictions per second on this machine.

    python benchmarks/bench_experiment_model.py [--scenarios 400] [--repeats 3] [--check]
        [--model-dir DIR]

Batches of scenarios from the sampled space (the same distribution as the corpus) go through
`ExperimentModel.predict`; we report UE-predictions/s per batch size, and, in the same run, the
share of time spent in feature building versus the torch forward pass. Target: >= 10,000/s for
a full batch (issue 11). Speed is measured here, not asserted in the test suite: a wall-clock
rate depends on what else the machine runs (a test failed at 2,396/s on a busy fresh box).
`--check` exits with status 1 when the full-batch rate is below `--target`, for a manual or
scheduled performance check on a quiet machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from forge.experiment_model import ExperimentModel
from forge.experiment_model import features as F
from forge.experiment_model.model import cell_groups
from forge.ns3.grid import sample_grid


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scenarios", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--target", type=float, default=10_000.0,
                    help="UE-predictions/s a full batch must reach (default 10,000)")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 when the full-batch rate is below --target")
    ap.add_argument("--model-dir", default=None,
                    help="a model written by forge calibrate (default: the shipped one)")
    args = ap.parse_args()
    em = ExperimentModel.load(args.model_dir)
    scns = sample_grid(args.scenarios, seed=99)
    n_ues = sum(len(s.ues) for s in scns)
    print(f"torch threads: {torch.get_num_threads()}, scenarios: {len(scns)}, UEs: {n_ues}, "
          f"ensemble members: {len(em.members)}, arch: {em.arch}")
    print(f"{'batch (scenarios)':>18} {'UE-pred/s':>12} {'ms/scenario':>12}")
    # Warm-up: the first call pays for imports and allocations, not for prediction.
    em.predict(scns[:5])
    rate = 0.0
    for batch in (1, 16, 128, len(scns)):
        best = float("inf")
        for _ in range(args.repeats):
            em.clear_row_cache()  # every pass predicts states the model has not seen
            t = time.perf_counter()
            for k in range(0, len(scns), batch):
                em.predict(scns[k:k + batch])
            best = min(best, time.perf_counter() - t)
        rate = n_ues / best
        print(f"{batch:>18} {rate:>12,.0f} {1000 * best / len(scns):>12.3f}")
    t = time.perf_counter()
    feats = [F.scenario_features(s) for s in scns]
    x = np.concatenate([f[0] for f in feats])
    t_feat = time.perf_counter() - t
    groups = cell_groups(scns, [f[1].serving for f in feats]) if em.arch == "sets" else None
    em.clear_row_cache()
    t = time.perf_counter()
    em.raw(x, groups)
    t_fwd = time.perf_counter() - t
    print(f"split of one full batch: features {t_feat:.3f} s, ensemble forward {t_fwd:.3f} s")
    met = rate >= args.target
    print(f"full batch: {rate:,.0f} UE-predictions/s, target {args.target:,.0f}: "
          f"{'met' if met else 'NOT met'}")
    return 1 if (args.check and not met) else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Experiment Model prediction speed: UE-predictions per second on this machine.

    python benchmarks/bench_experiment_model.py [--scenarios 400] [--repeats 3]

Batches of scenarios from the sampled space (the same distribution as the corpus) go through
`ExperimentModel.predict`; we report UE-predictions/s per batch size, and, in the same run, the
share of time spent in feature building versus the torch forward pass. Target: >= 5,000/s.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from forge.experiment_model import ExperimentModel
from forge.experiment_model import features as F
from forge.ns3.grid import sample_grid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scenarios", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    em = ExperimentModel.load()
    scns = sample_grid(args.scenarios, seed=99)
    n_ues = sum(len(s.ues) for s in scns)
    print(f"torch threads: {torch.get_num_threads()}, scenarios: {len(scns)}, UEs: {n_ues}, "
          f"ensemble members: {len(em.members)}")
    print(f"{'batch (scenarios)':>18} {'UE-pred/s':>12} {'ms/scenario':>12}")
    for batch in (1, 16, 128, len(scns)):
        best = float("inf")
        for _ in range(args.repeats):
            t = time.perf_counter()
            for k in range(0, len(scns), batch):
                em.predict(scns[k:k + batch])
            best = min(best, time.perf_counter() - t)
        print(f"{batch:>18} {n_ues / best:>12,.0f} {1000 * best / len(scns):>12.3f}")
    t = time.perf_counter()
    x = np.concatenate([F.scenario_features(s)[0] for s in scns])
    t_feat = time.perf_counter() - t
    t = time.perf_counter()
    em.raw(x)
    t_fwd = time.perf_counter() - t
    print(f"split of one full batch: features {t_feat:.3f} s, ensemble forward {t_fwd:.3f} s")


if __name__ == "__main__":
    main()

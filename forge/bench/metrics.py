"""The bench's metrics, as the agent-benchmark literature defines them.

- success rate (pass^1): per task the share of its k trials that succeed, averaged over tasks;
  with a 95 % percentile-bootstrap interval over tasks (tasks are the unit of sampling);
- pass^k (tau-bench): the chance that k trials of a task *all* succeed, estimated without bias
  from n >= k trials with c successes as C(c, k) / C(n, k), averaged over tasks;
- SPL (success weighted by path length, Anderson et al. 2018): S * l / max(p, l) per episode,
  with l the shortest known successful path (tool calls) and p the agent's own;
- paired difference of two agents on the same tasks (and seeds): the mean of the per-task
  differences in success, with a percentile-bootstrap interval that resamples tasks (both
  agents' outcomes on a task move together, so the interval is far tighter than comparing two
  separate intervals);
- Spearman rank correlation (agents ranked under the Experiment Model vs under ns-3).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def pass_hat_k(n: int, c: int, k: int) -> float:
    """C(c, k) / C(n, k): the probability that k trials drawn without replacement from n, of
    which c succeeded, all succeed."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if k < 1 or k > n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    return math.comb(c, k) / math.comb(n, k)


def mean_pass_k(trials: Sequence[Sequence[bool]], k: int) -> float | None:
    """pass^k over tasks: trials[i] holds task i's trial outcomes (n_i >= k)."""
    vals = [pass_hat_k(len(t), sum(t), k) for t in trials if len(t) >= k]
    return float(np.mean(vals)) if vals else None


def success_rate(trials: Sequence[Sequence[bool]]) -> float | None:
    vals = [sum(t) / len(t) for t in trials if t]
    return float(np.mean(vals)) if vals else None


def bootstrap_ci(trials: Sequence[Sequence[bool]], n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap of the success rate, resampling tasks with replacement."""
    per_task = np.array([sum(t) / len(t) for t in trials if t], dtype=float)
    if per_task.size == 0:
        return None
    return _bootstrap_mean(per_task, n_boot, seed, level)


def _bootstrap_mean(vals: np.ndarray, n_boot: int, seed: int, level: float
                    ) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of per-task values (tasks resampled)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, vals.size, size=(n_boot, vals.size))
    lo, hi = np.quantile(vals[idx].mean(axis=1), [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def paired_difference(base: Mapping[str, Sequence[bool]], other: Mapping[str, Sequence[bool]],
                      n_boot: int = 2000, seed: int = 0, level: float = 0.95
                      ) -> dict[str, Any] | None:
    """`other` minus `base` over the tasks both ran: per task the difference of their success
    rates, averaged; its bootstrap interval over tasks; and how many tasks each solved more
    often. None when they share no task."""
    common = sorted(set(base) & set(other))
    common = [t for t in common if base[t] and other[t]]
    if not common:
        return None
    a = np.array([sum(base[t]) / len(base[t]) for t in common], dtype=float)
    b = np.array([sum(other[t]) / len(other[t]) for t in common], dtype=float)
    d = b - a
    lo, hi = _bootstrap_mean(d, n_boot, seed, level)
    return {"n_tasks": len(common), "difference": float(d.mean()),
            "ci95": [lo, hi], "better_on": int((d > 0).sum()),
            "worse_on": int((d < 0).sum())}


def spl(success: bool, calls: int, shortest: int | None) -> float:
    """One episode's SPL term. An unknown shortest path counts as the agent's own (a success
    scores 1). A shortest path of 0 calls (the answer is in the ticket) scores 1 only when the
    agent also made none."""
    if not success:
        return 0.0
    ref = calls if shortest is None else shortest
    top = max(calls, ref)
    return 1.0 if top == 0 else ref / top


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rho with average ranks for ties; None when undefined (n < 3 or no spread)."""
    if len(xs) != len(ys) or len(xs) < 3:
        return None
    from scipy.stats import spearmanr

    if len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    rho = spearmanr(xs, ys).statistic
    return None if rho is None or math.isnan(float(rho)) else float(rho)

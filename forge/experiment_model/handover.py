"""Handover counts: a small Poisson regression on a few physical features of a UE.

A handover is a rare event (under 1 % of the corpus's UEs hand over, 9 % of the walking UEs of
the `handover` grid), and the ensemble's handover output, one of nine targets of a 45-feature
network, learns *who* hands over well before it learns *how often*: trained with 80 runs of
the handover grid its counts did not beat predicting zero on held-out runs, this model's did
(docs/BENCHMARKS.md, issue 11; with 240 runs both do). What drives the count is simple
physics: how far a UE walks in the simulated time, how close it is to a cell border (the RSRP
gap to the second-best cell), and how much the handover settings (hysteresis, time-to-trigger)
ask before a handover is made. A log-linear Poisson model over those, fitted on the
calibration runs with an L2 penalty chosen by cross-validation over runs, has a dozen
parameters instead of tens of thousands, so it can be fitted from a few hundred handovers.

Only walking UEs served by a cell with handovers on can hand over (none of the corpus's static
or handover-off UEs ever did); the model predicts exactly 0 for every other UE.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.optimize import minimize

from forge.experiment_model import features as F

_IX = {name: i for i, name in enumerate(F.FEATURES)}
# The design's columns (after the intercept), from the raw feature rows of `features.py`.
TERMS = ("log_path_m", "gap_db", "log_gap_db", "hysteresis_db", "ttt_100ms", "rsrp_10dbm",
         "n_active_cells")


def active(x: np.ndarray) -> np.ndarray:
    """Rows (UEs) that can hand over at all: walking, served by a cell with handovers on."""
    return (x[:, _IX["mobile"]] > 0.5) & (x[:, _IX["ho_on"]] > 0.5)


def design(x: np.ndarray) -> np.ndarray:
    """(rows, len(TERMS)) physical terms of feature rows `x` (the unnormalised FEATURES)."""
    x = np.asarray(x, dtype=np.float64)

    def phys(name: str) -> np.ndarray:  # a feature back in its physical unit
        return x[:, _IX[name]] * F.SCALES[name]

    gap = phys("gap")
    return np.stack([
        np.log1p(phys("speed") * phys("sim_time")),  # metres walked: more borders crossed
        gap, np.log1p(gap),                          # dB from the cell's border
        phys("hysteresis"),                          # dB the neighbour must be better by
        phys("ttt") / 100,                           # how long it must stay better
        phys("rsrp") / 10,                           # cell edge or centre
        phys("n_active"),                            # cells to hand over to
    ], axis=1)


def _nll(beta: np.ndarray, z: np.ndarray, y: np.ndarray, alpha: float
         ) -> tuple[float, np.ndarray]:
    """Mean Poisson negative log-likelihood (up to a constant) + alpha/2 |w|^2, and its
    gradient; beta = (intercept, w). The intercept is not penalised."""
    eta = np.minimum(beta[0] + z @ beta[1:], 30.0)
    mu = np.exp(eta)
    n = len(y)
    f = float((mu - y * eta).sum() / n + 0.5 * alpha * beta[1:] @ beta[1:])
    r = (mu - y) / n
    g = np.concatenate([[r.sum()], z.T @ r + alpha * beta[1:]])
    return f, g


def _fit(z: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    beta0 = np.zeros(z.shape[1] + 1)
    beta0[0] = math.log(max(y.mean(), 1e-6))
    res = minimize(_nll, beta0, args=(z, y, alpha), jac=True, method="L-BFGS-B",
                   options={"maxiter": 2000})
    return np.asarray(res.x)


def deviance(y: np.ndarray, mu: np.ndarray) -> float:
    """Mean Poisson deviance (0 log 0 = 0); inf where a count > 0 meets a rate of 0."""
    pos = y > 0
    if (mu[pos] <= 0).any():
        return math.inf
    term = np.where(pos, y * np.log(np.maximum(y, 1e-12) / np.maximum(mu, 1e-300)), 0.0)
    return float(2 * (term - (y - mu)).mean())


def fit(x: np.ndarray, counts: np.ndarray, groups: np.ndarray,
        alphas: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1), folds: int = 5,
        seed: int = 0) -> dict[str, Any]:
    """Fit the handover model on feature rows `x`, measured `counts` and each row's run
    (`groups`: rows of one run are never split between training and validation folds).
    The penalty is the one of `alphas` with the lowest cross-validated deviance."""
    act = active(x)
    if not act.any() or counts[act].sum() == 0:
        raise ValueError("no walking UE with handovers on handed over in these runs: "
                         "nothing to fit a handover model on")
    z_all = design(x[act])
    y = np.asarray(counts, dtype=np.float64)[act]
    g = np.asarray(groups)[act]
    mean, std = z_all.mean(0), z_all.std(0) + 1e-9
    z = (z_all - mean) / std
    runs = np.unique(g)
    fold_of = dict(zip(runs, np.random.default_rng(seed).permutation(len(runs)) % folds,
                       strict=True))
    fold = np.array([fold_of[r] for r in g])
    cv: dict[float, float] = {}
    for a in alphas:
        dev = 0.0
        for k in range(folds):
            tr, va = fold != k, fold == k
            if not va.any() or y[tr].sum() == 0:
                continue
            b = _fit(z[tr], y[tr], a)
            dev += deviance(y[va], np.exp(np.minimum(b[0] + z[va] @ b[1:], 30.0))) * va.sum()
        cv[a] = float(dev / len(y))
    best = min(cv, key=lambda a: cv[a])
    beta = _fit(z, y, best)
    return {"terms": list(TERMS), "mean": mean.tolist(), "std": std.tolist(),
            "intercept": float(beta[0]), "coef": beta[1:].tolist(), "alpha": best,
            "cv_deviance": {str(a): v for a, v in cv.items()},
            "n_rows": len(y), "n_handovers": float(y.sum())}


def predict(params: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Expected handover count of each feature row (0 where the UE cannot hand over)."""
    if list(params["terms"]) != list(TERMS):
        raise ValueError(f"handover model terms {params['terms']} are not this code's {TERMS}")
    out = np.zeros(len(x))
    act = active(x)
    if act.any():
        z = (design(x[act]) - np.asarray(params["mean"])) / np.asarray(params["std"])
        out[act] = np.exp(np.minimum(params["intercept"] + z @ np.asarray(params["coef"]), 30.0))
    return out

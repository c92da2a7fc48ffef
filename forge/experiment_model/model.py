"""The Experiment Model: a torch ensemble that predicts every per-UE KPI of a scenario.

Design (read with features.py and physics.py):
- Input: one feature vector per UE (own configuration and physics, plus permutation-invariant
  context of its serving cell and neighbours), so a scenario of any size is a batch of rows.
- Network: an MLP with one head per target. Throughput is predicted as a log ratio to the offered
  load (a UE cannot receive more than it is sent, and the model's error is relative, like APE);
  RSRP and SINR as residuals on the closed-form physics.
- Ensemble: members trained on bootstrap resamples of the calibration runs; the spread of their
  predictions is the uncertainty that verifiers use to refuse trusting a prediction.
- Domain check: every feature must lie within the range seen in calibration (with a margin),
  and the scenario within the sampled space (cells, UEs), else `in_domain` is False with reasons.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from forge.db import ForgeError
from forge.experiment_model import features as F
from forge.experiment_model import handover
from forge.experiment_model.physics import Physics
from forge.ns3.sweep import cell_aggregates
from forge.scenario import Scenario

DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[2] / "corpora" / "experiment_model"
MODEL_FILE = "model.pt"
META_FILE = "model.json"
# Feature rows whose outputs `raw` keeps (each 5 x 9 doubles).
ROW_CACHE = 50_000
# Rows per block of the ensemble forward (see `_raw`): 512 to 128 measured alike, 4096 and a
# whole 6,901-row batch 40 % and 55 % slower (benchmarks/bench_experiment_model.py).
FORWARD_BLOCK = 512
REBUILD_HINT = "rebuild it with `python -m forge calibrate` (see README, Experiment Model)"

# KPI keys of a prediction: the same names as the measured columns of ns3_ue_kpis.
KPIS = (
    "dl_throughput_mbps", "ul_throughput_mbps", "delay_ms", "ul_delay_ms", "loss_ratio",
    "ul_loss_ratio", "rsrp_dbm", "sinr_db", "handovers", "serving_cell",
)


class ModelNotFoundError(ForgeError):
    """The model file is missing."""


class ModelCorruptError(ForgeError):
    """The model file exists but cannot be used (bad hash, unreadable, wrong format)."""


@dataclass
class ScenarioPrediction:
    """Predicted KPIs of one scenario.

    ues: one dict per UE with `ue`, the offered rates and every key of KPIS.
    cells: per-cell aggregates (forge.ns3.sweep.cell_aggregates), same shape as ns3_cell_kpis.
    uncertainty: per UE, the ensemble's spread: `dl_throughput_rel` and `delay_rel` are relative
        standard deviations (0.1 = 10 %), `loss_abs` the absolute one of the loss ratio.
    in_domain / domain_issues: whether the scenario lies where the model was calibrated.
    physics: the closed-form quantities the prediction was built on (serving cell, RSRP from
        every cell, capacities...), so that callers need not recompute them.
    """

    ues: list[dict[str, Any]]
    cells: list[dict[str, Any]]
    uncertainty: list[dict[str, float]]
    in_domain: bool
    domain_issues: list[str] = field(default_factory=list)
    physics: Physics | None = None

    def max_uncertainty(self) -> float:
        """The largest relative spread (throughput or delay) of any UE."""
        return max((max(u.get("dl_throughput_rel", 0.0), u.get("delay_rel", 0.0))
                    for u in self.uncertainty), default=0.0)


class _Net(nn.Module):
    def __init__(self, n_in: int, n_out: int, hidden: int, layers: int) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        d = n_in
        for _ in range(layers):
            mods += [nn.Linear(d, hidden), nn.SiLU()]
            d = hidden
        self.body = nn.Sequential(*mods)
        self.head = nn.Linear(d, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))  # type: ignore[no-any-return,unused-ignore]


# The `sets` architecture (`forge calibrate --arch sets`): sizes of the network that embeds each
# UE of a cell before the embeddings are pooled.
SET_PHI_HIDDEN = 128
SET_EMBED = 64


class _SetNet(nn.Module):
    """The per-UE network with its serving cell as a set (DeepSets): `phi` embeds every UE of
    the cell, and the mean and the maximum of those embeddings over the cell join the UE's own
    features at the input of `rho`, an MLP like `_Net`.

    Why: how a congested cell's airtime is split depends on who else is in it (their rates,
    channels and QCIs under the cell's scheduler), which the fixed cell sums and maxima of
    features.py summarise only partly. A UE's output depends on the UEs of its own cell and on
    nothing else in the batch."""

    def __init__(self, n_in: int, n_out: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.phi = nn.Sequential(nn.Linear(n_in, SET_PHI_HIDDEN), nn.SiLU(),
                                 nn.Linear(SET_PHI_HIDDEN, SET_EMBED))
        self.rho = _Net(n_in + 2 * SET_EMBED, n_out, hidden, layers)

    def forward(self, x: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """`groups`: each row's cell, numbered 0..n_groups-1 over the batch."""
        z = self.phi(x)
        n_groups = int(groups.max()) + 1 if len(groups) else 0
        total = torch.zeros(n_groups, z.shape[1]).index_add_(0, groups, z)
        count = torch.bincount(groups, minlength=n_groups).clamp(min=1)
        top = torch.zeros(n_groups, z.shape[1]).scatter_reduce(
            0, groups[:, None].expand_as(z), z, "amax", include_self=False)
        return self.rho(  # type: ignore[no-any-return,unused-ignore]
            torch.cat([x, (total / count[:, None])[groups], top[groups]], 1))


def build_net(arch: str, n_in: int, n_out: int, hidden: int, layers: int) -> nn.Module:
    if arch == "mlp":
        return _Net(n_in, n_out, hidden, layers)
    if arch == "sets":
        return _SetNet(n_in, n_out, hidden, layers)
    raise ForgeError(f"arch is mlp or sets, not {arch!r}")


def cell_groups(scenarios: Sequence[Scenario], serving: Sequence[np.ndarray]) -> np.ndarray:
    """Each UE row's cell over a batch of scenarios, numbered from 0 (for `_SetNet`)."""
    out, offset = [], 0
    for scn, s in zip(scenarios, serving, strict=True):
        out.append(offset + np.asarray(s, dtype=np.int64))
        offset += len(scn.cells)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _blocks(n: int) -> list[tuple[int, int]]:
    """(start, end) of FORWARD_BLOCK-row blocks of n rows; a lone leftover row joins the last
    block (a one-row product goes through another BLAS kernel)."""
    out, start = [], 0
    while start < n:
        end = min(n, start + FORWARD_BLOCK)
        if n - end == 1:
            end = n
        out.append((start, end))
        start = end
    return out


def _segment_starts(ids: np.ndarray) -> np.ndarray:
    """Where each run of equal values of a sorted id array begins."""
    return np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.zeros(0, int)


def _mlp(h: np.ndarray, layers: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Stacked linear layers with SiLU between them, on (members, rows, in) float64 arrays."""
    last = len(layers) - 1
    for k, (w, b) in enumerate(layers):
        h = h @ w
        h += b
        if k < last:  # SiLU, h / (1 + exp(-h)), in place: a third of the forward's time
            t = np.negative(h)
            np.exp(t, out=t)
            t += 1.0
            np.divide(h, t, out=h)
    return h


class ExperimentModel:
    """Load with `ExperimentModel.load()`; predict with `predict([scenario, ...])`."""

    def __init__(self, members: Sequence[nn.Module], meta: dict[str, Any]) -> None:
        self.members = list(members)
        self.meta = meta
        # "mlp": one row per UE in, one out; "sets": a UE's cell is part of its input (_SetNet).
        self.arch: str = meta.get("arch", "mlp")
        self.x_mean = np.asarray(meta["x_mean"], dtype=np.float32)
        self.x_std = np.asarray(meta["x_std"], dtype=np.float32)
        self.y_mean = np.asarray(meta["y_mean"], dtype=np.float32)
        self.y_std = np.asarray(meta["y_std"], dtype=np.float32)
        self.x_lo = np.asarray(meta["domain"]["x_lo"], dtype=np.float32)
        self.x_hi = np.asarray(meta["domain"]["x_hi"], dtype=np.float32)
        self.model_hash: str = meta.get("model_hash", "")
        # How the handover output maps to a count: "log" (a log rate, Poisson-trained: the
        # expected count) or "log1p" (models trained before the Poisson head).
        self.handover_link: str = meta.get("handover_link", "log1p")
        # Models since issue 11's handover GLM predict counts with it (forge.experiment_model.
        # handover) instead of the ensemble's handover output.
        self.handover_glm: dict[str, Any] | None = meta.get("handover_glm")
        # The ensemble as stacked numpy weights: for the small batches of a gym step (one
        # scenario, ~20 rows) a few numpy matmuls cost far less than torch's per-call overhead.
        if self.arch == "sets":
            nets = [m for m in self.members if isinstance(m, _SetNet)]
            self._phi = self._stack([m.phi for m in nets])
            self._layers = self._stack([m.rho for m in nets])
        else:
            self._phi = []
            self._layers = self._stack(self.members)
        self._rows: dict[bytes, np.ndarray] = {}

    @staticmethod
    def _stack(members: Sequence[nn.Module]) -> list[tuple[np.ndarray, np.ndarray]]:
        per_member = [[m for m in net.modules() if isinstance(m, nn.Linear)] for net in members]
        layers = []
        for k in range(len(per_member[0])):
            w = np.stack([lin[k].weight.detach().numpy().T for lin in per_member])
            b = np.stack([lin[k].bias.detach().numpy() for lin in per_member])[:, None, :]
            layers.append((np.ascontiguousarray(w, dtype=np.float64), b.astype(np.float64)))
        return layers

    # -- persistence ---------------------------------------------------------------------------
    @classmethod
    def load(cls, model_dir: str | Path | None = None) -> ExperimentModel:
        d = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
        mpath, jpath = d / MODEL_FILE, d / META_FILE
        if not mpath.exists() or not jpath.exists():
            raise ModelNotFoundError(f"no Experiment Model in {d} ({MODEL_FILE} and {META_FILE} "
                                     f"expected): {REBUILD_HINT}")
        try:
            info = json.loads(jpath.read_text())
            expected = info["model_hash"]
        except (OSError, ValueError, KeyError) as e:
            raise ModelCorruptError(f"{jpath} is unreadable ({e}): {REBUILD_HINT}") from e
        actual = file_hash(mpath)
        if actual != expected:
            raise ModelCorruptError(f"{mpath} does not match its hash in {jpath} "
                                    f"({actual[:12]} != {expected[:12]}): {REBUILD_HINT}")
        try:
            blob = torch.load(mpath, map_location="cpu", weights_only=False)
            meta = blob["meta"]
            members = []
            for state in blob["members"]:
                net = build_net(meta.get("arch", "mlp"), len(F.FEATURES), len(F.TARGETS),
                                meta["hidden"], meta["layers"])
                net.load_state_dict(state)
                net.eval()
                members.append(net)
        except Exception as e:
            raise ModelCorruptError(f"{mpath} cannot be loaded ({e}): {REBUILD_HINT}") from e
        if list(meta["features"]) != list(F.FEATURES):
            raise ModelCorruptError(f"{mpath} was built for other features: {REBUILD_HINT}")
        meta["model_hash"] = expected
        return cls(members, meta)

    def save(self, model_dir: Path) -> str:
        """Write model.pt and model.json (with the content hash); return the hash."""
        model_dir.mkdir(parents=True, exist_ok=True)
        meta = {k: v for k, v in self.meta.items() if k != "model_hash"}
        blob = {"meta": meta, "members": [m.state_dict() for m in self.members]}
        tmp = model_dir / (MODEL_FILE + ".tmp")
        torch.save(blob, tmp)
        tmp.replace(model_dir / MODEL_FILE)
        h = file_hash(model_dir / MODEL_FILE)
        self.model_hash = h
        self.meta["model_hash"] = h
        info = {"model_hash": h, "arch": self.arch, "features": list(F.FEATURES),
                "targets": list(F.TARGETS), "training": meta.get("training", {}),
                "n_members": len(self.members)}
        (model_dir / META_FILE).write_text(json.dumps(info, indent=2) + "\n")
        return h

    # -- prediction ----------------------------------------------------------------------------
    def raw(self, x: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
        """Ensemble outputs in target units: (members, rows, targets), for rows not seen
        before computed by `_raw`, the others from a cache keyed by the row's bytes: a changed
        network shares many UEs' feature rows with the one it was made from (a quarter of the
        rows a synthesis run asks for). A row's output does not depend on the other rows of
        its batch (bit for bit, for batches of two rows or more).

        A `sets` model needs `groups`, each row's cell (`cell_groups`): its rows' outputs
        depend on their cell's rows, so the unit computed and cached is a cell, not a row."""
        if self.arch != "sets":
            return self._cached(x, None, None, lambda xs, sizes: self._raw(xs))
        if groups is None or len(groups) != len(x):
            raise ValueError("a sets model needs each row's cell (groups, one per row)")
        order = np.argsort(np.asarray(groups), kind="stable")
        return self._cached(x, order, _segment_starts(np.asarray(groups)[order]),
                            lambda xs, sizes: self._forward_sets(
                                xs, np.repeat(np.arange(len(sizes)), sizes)))

    def _cached(self, x: np.ndarray, order: np.ndarray | None, starts: np.ndarray | None,
                compute: Any) -> np.ndarray:
        """Outputs of `x` by unit: the rows `order[starts[k]:starts[k + 1]]` (one row per unit
        when `order` is None), each from the cache when its rows' bytes were seen, else from
        `compute(rows, sizes)` over the new units' rows, consecutive."""
        n = len(x)
        if not n:
            return np.empty((len(self._layers[0][0]), 0, self._layers[-1][0].shape[2]))
        xo = x if order is None else x[order]
        bounds = np.r_[np.arange(n) if starts is None else starts, n].tolist()
        keys = [xo[a:b].tobytes() for a, b in pairwise(bounds)]
        cache = self._rows
        todo = [k for k, key in enumerate(keys) if key not in cache]
        if len(todo) == len(keys):
            out = compute(xo, np.diff(bounds))
        else:
            out = np.empty((len(self._layers[0][0]), n, self._layers[-1][0].shape[2]))
            for k, key in enumerate(keys):
                if key in cache:
                    out[:, bounds[k]:bounds[k + 1]] = cache[key]
            if todo:
                rows = np.concatenate([np.arange(bounds[k], bounds[k + 1]) for k in todo])
                out[:, rows] = compute(xo[rows], [bounds[k + 1] - bounds[k] for k in todo])
        if len(cache) + len(todo) > ROW_CACHE:
            cache.clear()
        for k in todo:  # copies, not views: a caller may write into `out`
            cache[keys[k]] = out[:, bounds[k]:bounds[k + 1]].copy()
        if order is None:
            return out
        unsorted = np.empty_like(out)
        unsorted[:, order] = out
        return unsorted

    def _forward_sets(self, x: np.ndarray, cell: np.ndarray) -> np.ndarray:
        """_SetNet's forward in float64; `cell` numbers the rows' cells 0..k-1, each cell's
        rows consecutive."""
        xs = (x - self.x_mean.astype(np.float64)) / self.x_std.astype(np.float64)
        z = _mlp(xs[None, :, :], self._phi)
        starts = _segment_starts(cell)
        count = np.diff(np.r_[starts, len(cell)])
        mean = np.add.reduceat(z, starts, axis=1) / count[None, :, None]
        top = np.maximum.reduceat(z, starts, axis=1)
        # rho's first layer on [x, mean, max] is x @ W_x + (mean @ W_mean + max @ W_max) per
        # cell: the pooled part is multiplied once per cell, not once per UE (a cell holds ~10
        # UEs); measured about 3 % faster at a full batch, nothing measurable at batch 1.
        w, b = self._layers[0]
        n_x = xs.shape[1]
        pooled = mean @ w[:, n_x:n_x + SET_EMBED] + top @ w[:, n_x + SET_EMBED:]
        pooled += b
        w_x = w[:, :n_x]
        out = np.empty((z.shape[0], len(x), self._layers[-1][0].shape[2]))
        for start, end in _blocks(len(x)):
            h = xs[start:end] @ w_x
            h += pooled[:, cell[start:end]]
            np.divide(h, 1.0 + np.exp(-h), out=h)  # SiLU, as in _mlp
            out[:, start:end] = _mlp(h, self._layers[1:])
        out *= self.y_std.astype(np.float64)
        out += self.y_mean.astype(np.float64)
        return out

    def clear_row_cache(self) -> None:
        """Forget the outputs `raw` keeps (a benchmark of fresh predictions needs this)."""
        self._rows.clear()

    def _raw(self, x: np.ndarray) -> np.ndarray:
        """Ensemble outputs in target units: (members, rows, targets).

        Computed in float64 (from the float32 weights, exactly widened) so that a prediction
        does not depend on how it was computed: in float32, BLAS kernels chosen by batch size
        and thread count changed outputs by up to 0.4 % (relative, on the ensemble spread),
        enough to flip a replayed observation or a verdict near its threshold between the
        solver's process and the verifier's. In float64 the differences are ~1e-11, for about
        twice the cost of this (small) part of a prediction.
        """
        n = len(x)
        if n <= FORWARD_BLOCK:
            return self._forward(x)
        # Blocks of rows: a whole batch's activations (members x rows x 256 doubles, 70 MB for
        # 400 scenarios) fall out of the CPU caches, and the forward ran at half the speed of
        # 512-row blocks. The last block takes a lone leftover row (a one-row product goes
        # through another BLAS kernel).
        out = np.empty((len(self._layers[0][0]), n, self._layers[-1][0].shape[2]))
        for start, end in _blocks(n):
            out[:, start:end] = self._forward(x[start:end])
        return out

    def _forward(self, x: np.ndarray) -> np.ndarray:
        h = ((x - self.x_mean.astype(np.float64)) / self.x_std.astype(np.float64))[None, :, :]
        h = _mlp(h, self._layers)
        h *= self.y_std.astype(np.float64)
        h += self.y_mean.astype(np.float64)
        return h

    def raw_torch(self, x: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
        """The same as `raw` through torch modules (reference for tests)."""
        xs = (x - self.x_mean) / self.x_std
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(xs, dtype=np.float32))
            if self.arch == "sets":
                assert groups is not None
                _, inv = np.unique(groups, return_inverse=True)
                g = torch.from_numpy(inv.astype(np.int64))
                out = torch.stack([m(t, g) for m in self.members]).numpy()
            else:
                out = torch.stack([m(t) for m in self.members]).numpy()
        return out * self.y_std + self.y_mean

    def predict(self, scenarios: Sequence[Scenario]) -> list[ScenarioPrediction]:
        """Predict every scenario in one batched forward pass."""
        feats = [F.scenario_features(s) for s in scenarios]
        if not feats:
            return []
        x = np.concatenate([f[0] for f in feats])
        groups = (cell_groups(scenarios, [f[1].serving for f in feats])
                  if self.arch == "sets" else None)
        y = self.raw(x, groups)
        ho = self._handover_counts(x, y)
        out, k = [], 0
        for scn, (xf, ph) in zip(scenarios, feats, strict=True):
            n = len(scn.ues)
            out.append(self._assemble(scn, ph, xf, y[:, k:k + n], ho[k:k + n]))
            k += n
        return out

    def _handover_counts(self, x: np.ndarray, y: np.ndarray) -> list[float]:
        """Expected handover count of each row: from the handover GLM where the model has one,
        else from the ensemble's mean output, read through the model's link."""
        if self.handover_glm:
            return handover.predict(self.handover_glm, x).tolist()
        mean = y[:, :, F.TARGETS.index("handovers")].mean(0).tolist()
        if self.handover_link == "log":
            return [math.exp(min(v, 30.0)) for v in mean]
        return [max(math.expm1(v), 0.0) for v in mean]

    def predict_one(self, scenario: Scenario) -> ScenarioPrediction:
        return self.predict([scenario])[0]

    def _assemble(self, scn: Scenario, ph: Physics, x: np.ndarray, y: np.ndarray,
                  ho_count: list[float]) -> ScenarioPrediction:
        # Python floats from here on: indexing numpy scalars UE by UE cost more than the math.
        mean = y.mean(0).tolist()
        spread = y.std(0).tolist()
        ues, unc = [], []
        for i, u in enumerate(scn.ues):
            dl_ratio = min(math.exp(mean[i][0]) * max(ph.dl_share[i], 1e-3), 1.0)
            ul_ratio = min(math.exp(mean[i][1]) * max(ph.ul_share[i], 1e-3), 1.0)
            has_ul = u.ul_rate_mbps > 0
            ues.append({
                "ue": i,
                "serving_cell": int(ph.serving[i]),
                "dl_offered_mbps": u.dl_rate_mbps,
                "ul_offered_mbps": u.ul_rate_mbps,
                "dl_throughput_mbps": u.dl_rate_mbps * dl_ratio,
                "ul_throughput_mbps": u.ul_rate_mbps * ul_ratio if has_ul else 0.0,
                "delay_ms": float(ph.path_ms[i] + math.exp(mean[i][2])),
                "ul_delay_ms": float(ph.path_ms[i] + math.exp(mean[i][3])) if has_ul else None,
                "loss_ratio": min(max(mean[i][4], 0.0), 1.0),
                "ul_loss_ratio": min(max(mean[i][5], 0.0), 1.0) if has_ul else None,
                "rsrp_dbm": float(ph.rsrp_dbm[i] + mean[i][6]),
                "sinr_db": float(ph.sinr_db[i] + mean[i][7]),
                "handovers": ho_count[i],
            })
            # Log-space spread is a relative error: of the throughput, and of the radio part of
            # the delay (scaled to the whole delay, since the path part is known exactly).
            ran = math.exp(mean[i][2])
            unc.append({"dl_throughput_rel": float(spread[i][0]),
                        "delay_rel": float(spread[i][2] * ran / (ran + ph.path_ms[i])),
                        # The loss target is the ratio itself: its spread is absolute.
                        "loss_abs": float(spread[i][4])})
        issues = self.domain_issues(scn, x)
        return ScenarioPrediction(ues=ues, cells=cell_aggregates(scn, ues), uncertainty=unc,
                                  in_domain=not issues, domain_issues=issues, physics=ph)

    def domain_issues(self, scn: Scenario, x: np.ndarray) -> list[str]:
        dom = self.meta["domain"]
        issues = []
        if len(scn.ues) > dom["max_ues"]:
            issues.append(f"{len(scn.ues)} UEs > {dom['max_ues']} seen in calibration")
        if scn.sim_time_s > dom["max_sim_time_s"] or scn.sim_time_s < dom["min_sim_time_s"]:
            issues.append(f"sim_time_s {scn.sim_time_s} outside calibration range")
        lo = x < self.x_lo
        hi = x > self.x_hi
        for j in np.flatnonzero((lo | hi).any(0)):
            rows = np.flatnonzero(lo[:, j] | hi[:, j])
            issues.append(f"feature {F.FEATURES[j]} out of calibration range for UEs "
                          f"{rows[:5].tolist()}")
        return issues

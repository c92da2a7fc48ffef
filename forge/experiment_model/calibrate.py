"""`python -m forge calibrate`: train the Experiment Model, evaluate it honestly, write artefacts.

Honest evaluation means three things here:
1. Held-out scenarios (split by scenario seed) are never trained on.
2. Every figure is given on all UEs *and* on congested UEs (ns-3 throughput < 95 % of offered),
   because most UEs receive exactly their offered load and "predict the offered load" already
   scores ~1 % median APE on them while being wrong on every congested UE. That baseline is
   reported side by side, with the closed-form physics prior.
3. Next to the noise floor of ns-3 itself: the same scenario under several RngRun values.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import torch
from rich.progress import Progress
from scipy.stats import spearmanr

from forge.db import ForgeError
from forge.experiment_model import features as F
from forge.experiment_model import handover
from forge.experiment_model.model import ExperimentModel, build_net, cell_groups
from forge.scenario import Scenario

CONGESTED_BELOW = 0.95
REPORT_KPIS = ("dl_throughput_mbps", "ul_throughput_mbps", "delay_ms", "ul_delay_ms",
               "loss_ratio", "rsrp_dbm", "sinr_db", "handovers")


@dataclass
class CalibrateConfig:
    """Training configuration of the Experiment Model (stored with the model)."""

    out_dir: Path = Path("corpora/experiment_model")
    epochs: int | None = None
    ensemble: int | None = None
    seed: int = 0
    hidden: int = 256
    layers: int = 4
    lr: float = 2e-3
    weight_decay: float = 1e-5
    batch_size: int = 512
    default_epochs: int = 35
    default_ensemble: int = 5
    bootstrap: bool = True
    # Targets' loss weights: throughput and delay matter most downstream.
    target_weights: dict[str, float] = field(default_factory=lambda: {
        "dl_ratio": 3.0, "ul_ratio": 1.0, "delay": 2.0, "ul_delay": 0.5, "loss": 1.0,
        "ul_loss": 0.5, "rsrp_res": 0.5, "sinr_res": 0.5, "handovers": 0.5})
    # Domain check: calibration feature range widened by this fraction of its span.
    domain_margin: float = 0.05
    # Extra weight of congested UEs in the throughput loss: they are the hard half, and the
    # half that verifiers' goals are about.
    congested_weight: float = 2.0
    # Paired loss (issue 11): weight of a term on the *change* between the two runs of a pair
    # (forge.ns3.pairs: a base and the same scenario after one configure call). Targets are
    # corrections to known terms (offered load, water-filled share, path delay), so the error of
    # a predicted change in log throughput or log RAN delay is the difference of the two rows'
    # residuals. 0 leaves training as it was; used only when the store holds calibration pairs.
    paired_weight: float = 0.0
    paired_batch: int = 256
    paired_targets: tuple[str, ...] = ("dl_ratio", "delay")
    # The handover count's loss. "poisson": the output is a log rate trained with the Poisson
    # likelihood, so the prediction is the expected count (what a goal on handovers and a
    # squared error need); "log1p": Huber on log1p(count), whose back-transform sits near 0
    # for a rare event (models before issue 11's handover work).
    handover_loss: str = "poisson"
    # What predicts the handover count: "glm", a Poisson regression on a UE's walked distance,
    # border distance and handover settings (forge.experiment_model.handover), fitted on the
    # calibration runs after the ensemble: with 80 handover-grid runs it beat the all-zero
    # baseline where the ensemble's output did not, with 240 both do and it has the better
    # deviance and mean count; "net", the ensemble's handover output. A store
    # in which no UE hands over has nothing to fit a GLM on and keeps "net".
    handover_head: str = "glm"
    # The network: "sets", a learned embedding of every UE of its serving cell, pooled (mean
    # and max) over the cell, joins the UE's own features (model._SetNet); "mlp", one row per
    # UE with fixed cell sums and maxima among its features (the shipped model). Measured on
    # the corpus (docs/BENCHMARKS.md, issue 11 session 18), sets has the lower errors and the
    # higher Spearman on the held-out runs and on the hotspot sampler's, and the better sign
    # of effects on grid pairs. The paired loss exists for mlp only.
    arch: str = "sets"
    # Epochs when `epochs` is None: sets gained from 60 (held-out congested APE 0.176 ->
    # 0.172, hotspot 0.222 -> 0.210); mlp did not (0.189 -> 0.195), so it keeps 35.
    default_epochs_sets: int = 60

    @property
    def n_epochs(self) -> int:
        if self.epochs is not None:
            return self.epochs
        return self.default_epochs_sets if self.arch == "sets" else self.default_epochs

    @property
    def n_members(self) -> int:
        return self.ensemble if self.ensemble is not None else self.default_ensemble


@dataclass
class RunData:
    scenario: Scenario
    ues: list[dict[str, Any]]
    split: str
    run_id: str = ""


def load_runs(con: duckdb.DuckDBPyConnection, splits: tuple[str, ...]) -> list[RunData]:
    """The ok runs of `splits` with their UE KPIs. Replicates of paired runs (`forge.ns3.pairs
    --replicate`: the same scenarios under another RngRun, for the effects report's noise
    figures) are left out, so that every scenario counts once in training and evaluation."""
    from forge.ns3.pairs import REPLICATE_SEP

    params: list[Any] = list(splits)
    replicate = ""
    if has_pairs(con):
        replicate = ("AND r.run_id NOT IN (SELECT base_run_id FROM ns3_pairs WHERE "
                     "contains(grid, ?) UNION SELECT changed_run_id FROM ns3_pairs "
                     "WHERE contains(grid, ?)) ")
        params += [REPLICATE_SEP, REPLICATE_SEP]
    rows = con.execute(
        "SELECT r.run_id, r.scenario, r.split FROM ns3_runs r "
        f"WHERE r.status = 'ok' AND r.split IN ({', '.join('?' for _ in splits)}) {replicate}"
        "ORDER BY r.run_id", params).fetchall()
    kp = con.execute(
        "SELECT k.* FROM ns3_ue_kpis k JOIN ns3_runs r USING (run_id) "
        f"WHERE r.status = 'ok' AND r.split IN ({', '.join('?' for _ in splits)}) "
        "ORDER BY k.run_id, k.ue", list(splits))
    cols = [d[0] for d in kp.description]
    by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in kp.fetchall():
        d = dict(zip(cols, rec, strict=True))
        by_run[d["run_id"]].append(d)
    return [RunData(Scenario.model_validate_json(s), by_run[rid], sp, rid) for rid, s, sp in rows
            if len(by_run[rid]) > 0]


def _matrix(runs: list[RunData]
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Features, targets, masks, each row's run, its congestion flag and its serving cell."""
    xs, ys, ms, groups, cong, cells = [], [], [], [], [], []
    for k, r in enumerate(runs):
        x, ph = F.scenario_features(r.scenario)
        y, m = F.targets(r.scenario, r.ues, ph)
        xs.append(x)
        ys.append(y)
        ms.append(m)
        groups.append(np.full(len(x), k))
        cong.append([k_["dl_throughput_mbps"] < CONGESTED_BELOW * u.dl_rate_mbps
                     for u, k_ in zip(r.scenario.ues, r.ues, strict=True)])
        cells.append(ph.serving)
    return (np.concatenate(xs), np.concatenate(ys), np.concatenate(ms), np.concatenate(groups),
            np.concatenate(cong), np.concatenate(cells))


def _run_batches(runs: list[RunData], picked: np.ndarray, rows_of: list[np.ndarray],
                 cells: np.ndarray, runs_per_batch: int, gen: torch.Generator
                 ) -> list[tuple[np.ndarray, torch.Tensor]]:
    """One epoch of a sets model: batches of whole runs (in a random order; a run drawn twice by
    the bootstrap is two separate sets of cells), each as its rows and their cells numbered
    from 0, as at prediction (`cell_groups`)."""
    order = picked[torch.randperm(len(picked), generator=gen).numpy()]
    out = []
    for b in range(0, len(order), runs_per_batch):
        chunk = order[b:b + runs_per_batch]
        rows = np.concatenate([rows_of[k] for k in chunk])
        g = cell_groups([runs[k].scenario for k in chunk], [cells[rows_of[k]] for k in chunk])
        out.append((rows, torch.from_numpy(g)))
    return out


def has_pairs(con: duckdb.DuckDBPyConnection) -> bool:
    """The store has an `ns3_pairs` table with at least one row (forge.ns3.pairs)."""
    have = con.execute("SELECT count(*) FROM information_schema.tables "
                       "WHERE table_name = 'ns3_pairs'").fetchone()
    if not have or not have[0]:
        return False
    n = con.execute("SELECT count(*) FROM ns3_pairs").fetchone()
    return bool(n and n[0])


def calibration_pairs(con: duckdb.DuckDBPyConnection, runs: list[RunData]
                      ) -> list[tuple[int, int]]:
    """(base, changed) indices into `runs` of the store's pairs whose two runs are both there
    (none when the store has no `ns3_pairs` table)."""
    if not has_pairs(con):
        return []
    pos = {r.run_id: k for k, r in enumerate(runs)}
    out = []
    for b, c in con.execute("SELECT base_run_id, changed_run_id FROM ns3_pairs "
                            "ORDER BY pair_id").fetchall():
        if b in pos and c in pos and len(runs[pos[b]].ues) == len(runs[pos[c]].ues):
            out.append((pos[b], pos[c]))
    return out


def _pair_rows(groups: np.ndarray, pairs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (base, changed) of every UE of every pair: a run's rows are contiguous and
    a change keeps the UEs and their order."""
    starts = np.searchsorted(groups, np.arange(groups.max() + 1))
    rb: list[int] = []
    rc: list[int] = []
    for b, c in pairs:
        n = int((groups == b).sum())
        rb.extend(range(int(starts[b]), int(starts[b]) + n))
        rc.extend(range(int(starts[c]), int(starts[c]) + n))
    return np.asarray(rb, dtype=np.int64), np.asarray(rc, dtype=np.int64)


def train(runs: list[RunData], cfg: CalibrateConfig, show_progress: bool = True,
          pairs: list[tuple[int, int]] | None = None) -> ExperimentModel:
    """Train the ensemble on `runs`; `pairs` (indices into `runs`, see calibration_pairs) feed
    the paired loss when cfg.paired_weight > 0."""
    if not runs:
        raise ForgeError("no calibration runs in the store: run `python -m forge seed` first")
    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True)
    # One thread: the network is small, and spare threads spin against whatever else runs (an
    # ns-3 sweep, a second training) - measured 10x slower with 2 threads on a busy 2-core box.
    torch.set_num_threads(1)
    if cfg.handover_loss not in ("poisson", "log1p"):
        raise ForgeError(f"handover_loss is poisson or log1p, not {cfg.handover_loss!r}")
    if cfg.handover_head not in ("glm", "net"):
        raise ForgeError(f"handover_head is glm or net, not {cfg.handover_head!r}")
    if cfg.arch not in ("mlp", "sets"):
        raise ForgeError(f"arch is mlp or sets, not {cfg.arch!r}")
    sets = cfg.arch == "sets"
    if sets and cfg.paired_weight > 0:
        raise ForgeError("the paired loss is implemented for arch mlp only (paired_weight > 0 "
                         "with arch sets): pass --arch mlp")
    x, y, m, groups, congested, cells = _matrix(runs)
    ho_glm = _fit_handover_glm(x, y, m, groups, cfg)
    x_mean, x_std = x.mean(0), x.std(0) + 1e-6
    msum = np.maximum(m.sum(0), 1)
    y_mean = (y * m).sum(0) / msum
    y_std = np.sqrt((((y - y_mean) * m) ** 2).sum(0) / msum) + 1e-6
    ho = F.TARGETS.index("handovers")
    poisson = cfg.handover_loss == "poisson"
    if poisson:
        # The count itself, unscaled: the network's output for it is a log rate.
        y = y.copy()
        y[:, ho] = np.expm1(y[:, ho])
        y_mean[ho], y_std[ho] = 0.0, 1.0
    xs = (x - x_mean) / x_std
    ys = (y - y_mean) / y_std
    m = m.copy()
    m[:, F.TARGETS.index("dl_ratio")] *= np.where(congested, cfg.congested_weight, 1.0)
    w = torch.tensor([cfg.target_weights[t] for t in F.TARGETS], dtype=torch.float32)
    span = x.max(0) - x.min(0)
    use_pairs = cfg.paired_weight > 0 and bool(pairs)
    if use_pairs:
        assert pairs is not None
        rb, rc = _pair_rows(groups, pairs)
        sel = torch.zeros(len(F.TARGETS))
        for t in cfg.paired_targets:
            sel[F.TARGETS.index(t)] = 1.0
        pm = m[rb] * m[rc]  # both runs measured this KPI for this UE (unweighted masks)
        pxb = torch.from_numpy(xs[rb].astype(np.float32))
        pxc = torch.from_numpy(xs[rc].astype(np.float32))
        pdy = torch.from_numpy((ys[rc] - ys[rb]).astype(np.float32))
        pmask = torch.from_numpy(np.minimum(pm, 1.0).astype(np.float32)) * sel
    rng = np.random.default_rng(cfg.seed)
    rows_of = [np.flatnonzero(groups == k) for k in range(len(runs))]
    # A sets model trains on whole runs: about batch_size rows a batch.
    runs_per_batch = max(1, round(cfg.batch_size * len(runs) / max(1, len(x))))
    members = []
    with Progress(disable=not show_progress) as progress:
        task = progress.add_task("calibrate", total=cfg.n_members * cfg.n_epochs)
        for k in range(cfg.n_members):
            # Bootstrap over runs (not rows): UEs of one run are correlated.
            if cfg.bootstrap and cfg.n_members > 1:
                pick = rng.integers(0, len(runs), len(runs))
                counts = np.bincount(pick, minlength=len(runs))
                idx = np.repeat(np.arange(len(groups)), counts[groups])
            else:
                pick = np.arange(len(runs))
                idx = np.arange(len(groups))
            if sets:
                # Rows index the full matrices: batches are drawn from whole runs.
                idx = np.arange(len(groups))
            tx = torch.from_numpy(xs[idx].astype(np.float32))
            ty = torch.from_numpy(ys[idx].astype(np.float32))
            tm = torch.from_numpy(m[idx].astype(np.float32))
            g = torch.Generator().manual_seed(cfg.seed * 1000 + k)
            torch.manual_seed(cfg.seed * 1000 + k)
            net = build_net(cfg.arch, x.shape[1], y.shape[1], cfg.hidden, cfg.layers)
            opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            n_batches = (math.ceil(len(pick) / runs_per_batch) if sets
                         else math.ceil(len(tx) / cfg.batch_size))
            sched = torch.optim.lr_scheduler.OneCycleLR(
                opt, max_lr=cfg.lr, total_steps=cfg.n_epochs * n_batches)
            for _ in range(cfg.n_epochs):
                batches: list[tuple[Any, torch.Tensor | None]]
                if sets:
                    batches = list(_run_batches(runs, pick, rows_of, cells, runs_per_batch, g))
                else:
                    perm = torch.randperm(len(tx), generator=g)
                    batches = [(perm[b:b + cfg.batch_size], None)
                               for b in range(0, len(tx), cfg.batch_size)]
                for bi, cell in batches:
                    out = net(tx[bi]) if cell is None else net(tx[bi], cell)
                    per = nn_huber(out, ty[bi])
                    if poisson:
                        # exp(o) - y o: the Poisson negative log-likelihood up to a constant.
                        o = out[:, ho].clamp(max=8.0)
                        per = torch.cat([per[:, :ho], (o.exp() - ty[bi][:, ho] * o)[:, None],
                                         per[:, ho + 1:]], dim=1)
                    loss = (per * tm[bi] * w).sum() / tm[bi].sum().clamp(min=1)
                    if use_pairs:
                        pi = torch.randint(0, len(pxb), (cfg.paired_batch,), generator=g)
                        d = net(pxc[pi]) - net(pxb[pi])
                        pl = (nn_huber(d, pdy[pi]) * pmask[pi] * w).sum() / \
                            pmask[pi].sum().clamp(min=1)
                        loss = loss + cfg.paired_weight * pl
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    sched.step()
                progress.advance(task)
            net.eval()
            members.append(net)
    meta = {
        "arch": cfg.arch,
        "features": list(F.FEATURES), "targets": list(F.TARGETS), "hidden": cfg.hidden,
        "layers": cfg.layers, "x_mean": x_mean.tolist(), "x_std": x_std.tolist(),
        "y_mean": y_mean.tolist(), "y_std": y_std.tolist(),
        "handover_link": "log" if poisson else "log1p",
        **({"handover_glm": ho_glm} if ho_glm is not None else {}),
        "domain": {
            "x_lo": (x.min(0) - cfg.domain_margin * span).tolist(),
            "x_hi": (x.max(0) + cfg.domain_margin * span).tolist(),
            "max_ues": max(len(r.scenario.ues) for r in runs),
            "min_sim_time_s": min(r.scenario.sim_time_s for r in runs),
            "max_sim_time_s": max(r.scenario.sim_time_s for r in runs),
        },
        "training": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
        | {"n_runs": len(runs), "n_ues": len(x), "n_pairs": len(pairs or []) if use_pairs else 0},
    }
    return ExperimentModel(members, meta)


def _fit_handover_glm(x: np.ndarray, y: np.ndarray, m: np.ndarray, groups: np.ndarray,
                      cfg: CalibrateConfig) -> dict[str, Any] | None:
    """The handover GLM's parameters (None for the "net" head, or when no UE handed over)."""
    if cfg.handover_head != "glm":
        return None
    ho = F.TARGETS.index("handovers")
    have = m[:, ho] > 0
    counts = np.round(np.expm1(y[have, ho].astype(np.float64)))  # the target is log1p(count)
    if not (counts[handover.active(x[have])] > 0).any():
        return None
    return handover.fit(x[have], counts, groups[have], seed=cfg.seed)


def nn_huber(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.huber_loss(a, b, reduction="none", delta=1.0)


# --- evaluation ---------------------------------------------------------------------------------
def _metrics(pred: np.ndarray, true: np.ndarray, congested: np.ndarray) -> dict[str, Any]:
    ok = np.isfinite(pred) & np.isfinite(true)
    pred, true, congested = pred[ok], true[ok], congested[ok]
    if len(true) < 2:
        return {"n": len(true)}
    denom = np.maximum(np.abs(true), 1e-9)
    ape = np.abs(pred - true) / denom
    ss_res = float(((pred - true) ** 2).sum())
    ss_tot = float(((true - true.mean()) ** 2).sum())
    rho = spearmanr(pred, true).statistic if np.ptp(true) > 0 and np.ptp(pred) > 0 else 0.0
    out = {
        "median_ape": float(np.median(ape)),
        "r2": 1 - ss_res / ss_tot if ss_tot > 0 else 0.0,
        "spearman": float(rho),
        "mae": float(np.mean(np.abs(pred - true))),
        "n": len(true),
        "congested": {
            "median_ape": float(np.median(ape[congested])) if congested.any() else None,
            "mae": float(np.mean(np.abs(pred[congested] - true[congested])))
            if congested.any() else None,
            "n": int(congested.sum()),
        },
    }
    return out


def _flatten(runs: list[RunData], preds: list[list[dict[str, Any]]]
             ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, dict[str, list]]:
    true: dict[str, list[float]] = defaultdict(list)
    pred: dict[str, list[float]] = defaultdict(list)
    cong: list[bool] = []
    info: dict[str, list] = defaultdict(list)
    for r, p in zip(runs, preds, strict=True):
        for u, k, q in zip(r.scenario.ues, r.ues, p, strict=True):
            cong.append(k["dl_throughput_mbps"] < CONGESTED_BELOW * u.dl_rate_mbps)
            info["family"].append(r.scenario.family)
            info["scheduler"].append(r.scenario.cells[q["serving_cell"]].scheduler)
            info["mobile"].append(u.mobility != "static")
            info["n_cells"].append(len(r.scenario.cells))
            for kpi in REPORT_KPIS:
                t = k.get(kpi)
                has = not (kpi.startswith("ul_") and u.ul_rate_mbps == 0)
                true[kpi].append(float(t) if (t is not None and has) else math.nan)
                v = q.get(kpi)
                pred[kpi].append(float(v) if v is not None else math.nan)
    return ({k: np.array(v) for k, v in true.items()}, {k: np.array(v) for k, v in pred.items()},
            np.array(cong), info)


def evaluate(runs: list[RunData], preds: list[list[dict[str, Any]]]) -> dict[str, Any]:
    true, pred, cong, _ = _flatten(runs, preds)
    return {kpi: _metrics(pred[kpi], true[kpi], cong) for kpi in REPORT_KPIS}


def breakdown(runs: list[RunData], preds: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """Held-out DL throughput and delay APE by family, scheduler, mobility and cell count."""
    true, pred, cong, info = _flatten(runs, preds)
    out: dict[str, Any] = {}
    for key in ("family", "scheduler", "mobile", "n_cells"):
        vals = np.array(info[key])
        rows = {}
        for v in sorted(set(vals.tolist()), key=str):
            sel = vals == v
            dl = _metrics(pred["dl_throughput_mbps"][sel], true["dl_throughput_mbps"][sel],
                          cong[sel])
            de = _metrics(pred["delay_ms"][sel], true["delay_ms"][sel], cong[sel])
            rows[str(v)] = {"n": int(sel.sum()), "dl_median_ape": dl.get("median_ape"),
                            "dl_congested_median_ape": dl.get("congested", {}).get("median_ape"),
                            "delay_median_ape": de.get("median_ape")}
        out[key] = rows
    return out


def baseline_offered(runs: list[RunData]) -> list[list[dict[str, Any]]]:
    """'Each UE gets its offered load', no loss; other KPIs from the closed-form physics."""
    out = []
    for r in runs:
        _, ph = F.scenario_features(r.scenario)
        rows = []
        for i, u in enumerate(r.scenario.ues):
            path = r.scenario.edge_delay_ms if u.server == "edge" else r.scenario.cloud_delay_ms
            rows.append({"serving_cell": int(ph.serving[i]),
                         "dl_throughput_mbps": u.dl_rate_mbps,
                         "ul_throughput_mbps": u.ul_rate_mbps, "delay_ms": path,
                         "ul_delay_ms": path, "loss_ratio": 0.0, "rsrp_dbm": ph.rsrp_dbm[i],
                         "sinr_db": ph.sinr_db[i], "handovers": 0.0})
        out.append(rows)
    return out


def baseline_physics(runs: list[RunData]) -> list[list[dict[str, Any]]]:
    """The closed-form prior alone: water-filled airtime share of each UE's capacity."""
    out = []
    for r in runs:
        _, ph = F.scenario_features(r.scenario)
        rows = []
        for i, u in enumerate(r.scenario.ues):
            path = r.scenario.edge_delay_ms if u.server == "edge" else r.scenario.cloud_delay_ms
            rows.append({"serving_cell": int(ph.serving[i]),
                         "dl_throughput_mbps": u.dl_rate_mbps * ph.dl_share[i],
                         "ul_throughput_mbps": u.ul_rate_mbps * ph.ul_share[i],
                         "delay_ms": path + 10.0, "ul_delay_ms": path + 10.0,
                         "loss_ratio": 1 - ph.dl_share[i], "rsrp_dbm": ph.rsrp_dbm[i],
                         "sinr_db": ph.sinr_db[i], "handovers": 0.0})
        out.append(rows)
    return out


def noise_floor(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Median relative deviation of each UE's KPI from its mean over RngRun repeats."""
    runs = load_runs(con, ("noise_floor",))
    groups: dict[str, list[RunData]] = defaultdict(list)
    for r in runs:
        groups[r.scenario.model_copy(update={"rng_run": 1}).scenario_id].append(r)
    dev: dict[str, list[float]] = defaultdict(list)
    dev_c: dict[str, list[float]] = defaultdict(list)
    n_scen = 0
    for rs in groups.values():
        if len(rs) < 2:
            continue
        n_scen += 1
        for i, u in enumerate(rs[0].scenario.ues):
            for kpi in ("dl_throughput_mbps", "delay_ms", "loss_ratio", "sinr_db", "rsrp_dbm"):
                vals = np.array([r.ues[i].get(kpi) for r in rs], dtype=float)
                if not np.isfinite(vals).all():
                    continue
                mean = vals.mean()
                rel = np.abs(vals - mean) / max(abs(mean), 1e-9)
                dev[kpi].extend(rel.tolist())
                congested = np.mean([r.ues[i]["dl_throughput_mbps"] for r in rs]) < \
                    CONGESTED_BELOW * u.dl_rate_mbps
                if congested:
                    dev_c[kpi].extend(rel.tolist())
    return {"n_scenarios": n_scen, "n_rng_runs": max((len(v) for v in groups.values()), default=0),
            **{k: {"median_ape": float(np.median(v)), "n": len(v),
                   "congested": {"median_ape": float(np.median(dev_c[k])) if dev_c[k] else None,
                                 "n": len(dev_c[k])}}
               for k, v in dev.items()}}


def calibration_plot(runs: list[RunData], preds: list[list[dict[str, Any]]], path: Path,
                     effects: dict[str, dict[str, np.ndarray]] | None = None) -> None:
    """Held-out levels (DL throughput, delay), and with `effects` ({"heldout grid pairs":
    effect_points(...), ...}, as `effects_section` fills it) a third panel: the effect of
    each change on every UE's DL throughput, model against ns-3, as log ratios."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    true, pred, cong, _ = _flatten(runs, preds)
    fig, axes = plt.subplots(1, 3 if effects else 2, figsize=(16.5 if effects else 11, 5))
    for ax, kpi, unit in ((axes[0], "dl_throughput_mbps", "Mb/s"), (axes[1], "delay_ms", "ms")):
        t, p = true[kpi], pred[kpi]
        ok = np.isfinite(t) & np.isfinite(p) & (t > 0) & (p > 0)
        ax.scatter(t[ok & ~cong], p[ok & ~cong], s=4, alpha=0.4, label="not congested")
        ax.scatter(t[ok & cong], p[ok & cong], s=4, alpha=0.4, c="tab:red", label="congested")
        lo, hi = float(min(t[ok].min(), p[ok].min())), float(max(t[ok].max(), p[ok].max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"ns-3 {kpi} ({unit})")
        ax.set_ylabel(f"Experiment Model ({unit})")
        ax.set_title(f"held-out {kpi}")
        ax.legend(loc="upper left")
    if effects:
        ax = axes[2]
        for (name, pts), color in zip(effects.items(), ("tab:blue", "tab:orange"), strict=False):
            m = pts["moved"]
            agree = float(np.mean(np.sign(pts["pred"][m]) == np.sign(pts["true"][m]))
                          ) if m.any() else float("nan")
            ax.scatter(pts["true"], pts["pred"], s=4, alpha=0.4, c=color,
                       label=f"{name}: sign right {agree:.3f} where ns-3 moves > 20 %")
        ax.axhline(0, c="k", lw=0.5)
        ax.axvline(0, c="k", lw=0.5)
        lim = 3.0
        ax.plot([-lim, lim], [-lim, lim], "k--", lw=1)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_xlabel("ns-3: log(DL throughput after / before)")
        ax.set_ylabel("Experiment Model: log(after / before)")
        ax.set_title("effect of one configure change, per UE")
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def calibrate(con: duckdb.DuckDBPyConnection, cfg: CalibrateConfig, show_progress: bool = True
              ) -> dict[str, Any]:
    cal = load_runs(con, ("calibration",))
    held = load_runs(con, ("heldout",))
    if not held:
        raise ForgeError("no held-out runs in the store: seed a grid first (`forge seed`)")
    model = train(cal, cfg, show_progress=show_progress, pairs=calibration_pairs(con, cal))
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    model_hash = model.save(cfg.out_dir)

    def predict(runs: list[RunData]) -> list[list[dict[str, Any]]]:
        return [p.ues for p in model.predict([r.scenario for r in runs])]

    p_held, p_cal = predict(held), predict(cal)
    serving_acc = float(np.mean([q["serving_cell"] == k["serving_cell"]
                                 for r, p in zip(held, p_held, strict=True)
                                 for k, q in zip(r.ues, p, strict=True)
                                 if k["serving_cell"] is not None]))
    report: dict[str, Any] = {
        "heldout": evaluate(held, p_held),
        "calibration": evaluate(cal, p_cal),
        "baseline_offered_load": evaluate(held, baseline_offered(held)),
        "baseline_physics": evaluate(held, baseline_physics(held)),
        "noise_floor": noise_floor(con),
        "heldout_breakdown": breakdown(held, p_held),
        "heldout_serving_cell_accuracy": serving_acc,
        "congested_definition": f"ns-3 DL throughput < {CONGESTED_BELOW} x offered",
        "n_runs": {"calibration": len(cal), "heldout": len(held)},
        "n_ues": {"calibration": sum(len(r.ues) for r in cal),
                  "heldout": sum(len(r.ues) for r in held)},
        "model_hash": model_hash,
    }
    h = report["heldout"]
    report["summary"] = {
        "model_hash": model_hash,
        "heldout_dl_spearman": h["dl_throughput_mbps"]["spearman"],
        "heldout_dl_median_ape": h["dl_throughput_mbps"]["median_ape"],
        "heldout_dl_congested_median_ape": h["dl_throughput_mbps"]["congested"]["median_ape"],
        "heldout_delay_median_ape": h["delay_ms"]["median_ape"],
        "baseline_dl_congested_median_ape":
            report["baseline_offered_load"]["dl_throughput_mbps"]["congested"]["median_ape"],
        "n_runs": report["n_runs"],
    }
    points: dict[str, dict[str, np.ndarray]] = {}
    if has_pairs(con):
        # Effect fidelity on held-out pairs and the second distribution, when the store has
        # paired runs (forge.ns3.pairs); the shipped corpus's report says how it was made.
        from forge.experiment_model.effects import effects_section, effects_summary

        try:
            report["effects"] = effects_section(con, model, "heldout", points)
            report["summary"]["effects"] = effects_summary(report["effects"])
        except ForgeError as e:
            report["effects"] = {"error": str(e)}
    (cfg.out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    calibration_plot(held, p_held, cfg.out_dir / "calibration.png", points or None)
    return report

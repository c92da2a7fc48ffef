"""The operator's view of a network state: per-UE, per-cell, per-slice and network KPIs.

A view is built from a `Scenario` and a prediction of it (the Experiment Model's, or any object
with the same shape). It adds the quantities an operator reads that neither ns-3 nor the model
report directly, each from a stated rule:

- CQI and spectral efficiency: SINR mapped on the 3GPP TS 36.213 CQI table (7.2.3-1), with the
  usual SINR switching thresholds of a 10 % BLER link curve (approximate, as in most system
  simulators).
- PRB utilisation of a cell: the airtime its UEs use, sum(throughput_i / capacity_i), where
  capacity_i is the closed-form rate the UE would get with the whole cell (physics.dl_cap_mbps);
  capped at 1.
- SLA per UE (forge's SLA model, from TS 23.203 QCI characteristics): end-to-end DL delay within
  the QCI's packet delay budget, DL loss <= 1 %, and for GBR QCIs (1-4) at least 95 % of the
  offered rate delivered.
- Energy: the EARTH power model of a macro base station (Auer et al., 2011), one transceiver chain
  per omni cell: P_in = P0 + delta_p * P_tx * load when active, P_sleep when switched off. It is a
  model, not a measurement: ns-3 does not simulate energy.

Measurement noise (optional, see `measure`) perturbs what the agent observes, never the state or
the goal check; it is drawn from a generator seeded with (env seed, step index), so a replay of the
same calls sees the same numbers.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from forge.experiment_model import physics
from forge.ns3.sweep import cell_aggregates
from forge.scenario import GBR_QCIS, Scenario

# TS 36.213 Table 7.2.3-1 efficiencies (bit/s/Hz) for CQI 0..15 and SINR thresholds (dB) at
# which CQI 1..15 become usable.
CQI_EFFICIENCY = (0.0, 0.1523, 0.2344, 0.3770, 0.6016, 0.8770, 1.1758, 1.4766, 1.9141, 2.4063,
                  2.7305, 3.3223, 3.9023, 4.5234, 5.1152, 5.5547)
CQI_SINR_DB = (-6.7, -4.7, -2.3, 0.2, 2.4, 4.3, 5.9, 8.1, 10.3, 11.7, 14.1, 16.3, 18.7, 21.0,
               22.7)

# Packet delay budget (ms) per QCI, TS 23.203 Table 6.1.7.
DELAY_BUDGET_MS = {1: 100.0, 2: 150.0, 3: 50.0, 4: 300.0, 5: 100.0, 6: 300.0, 7: 100.0,
                   8: 300.0, 9: 300.0}
LOSS_BUDGET = 0.01
GBR_SATISFACTION = 0.95

# EARTH macro-cell parameters (one transceiver chain): P0 and P_sleep in W, delta_p unitless.
EARTH_P0_W = 130.0
EARTH_DELTA_P = 4.7
EARTH_P_SLEEP_W = 75.0
POWER_MODEL = "EARTH: P = 130 W + 4.7 * P_tx(W) * load if active, 75 W if off (model)"

OVERLOAD_PRB = 0.9

# Default measurement noise: relative sigma of rates and delays, absolute sigma (dB) of RSRP/SINR.
NOISE_REL = 0.02
NOISE_DB = 0.5

NETWORK_METRICS = (
    "n_cells", "n_active_cells", "n_ues", "dl_offered_mbps", "dl_throughput_mbps",
    "ul_throughput_mbps", "mean_delay_ms", "max_delay_ms", "mean_loss_ratio",
    "min_dl_satisfaction", "mean_dl_satisfaction", "p5_dl_throughput_mbps", "sla_violations",
    "total_power_w", "max_prb_utilization", "total_handovers",
)
UE_METRICS = (
    "dl_throughput_mbps", "ul_throughput_mbps", "delay_ms", "loss_ratio", "rsrp_dbm", "sinr_db",
    "cqi", "handovers", "dl_satisfaction", "sla_ok", "serving_cell", "dl_offered_mbps", "qci",
)
CELL_METRICS = (
    "n_ues", "dl_offered_mbps", "dl_throughput_mbps", "ul_throughput_mbps", "mean_delay_ms",
    "mean_sinr_db", "prb_utilization", "power_w", "active", "tx_power_dbm", "bandwidth_rbs",
    "handovers", "ho_enabled", "ho_hysteresis_db", "ho_ttt_ms", "gbr_scheduler",
)
QCI_METRICS = ("n_ues", "sla_violations", "mean_delay_ms", "dl_throughput_mbps",
               "min_dl_satisfaction")


def cqi_of(sinr_db: float) -> int:
    """The CQI whose SINR threshold `sinr_db` reaches (0: none). CQI_SINR_DB is ascending."""
    return bisect.bisect_right(CQI_SINR_DB, sinr_db)


def efficiency_of(cqi: int) -> float:
    return CQI_EFFICIENCY[max(0, min(cqi, 15))]


def cell_power_w(active: bool, tx_power_dbm: float, load: float) -> float:
    if not active:
        return EARTH_P_SLEEP_W
    p_tx = 10 ** ((tx_power_dbm - 30.0) / 10.0)
    return EARTH_P0_W + EARTH_DELTA_P * p_tx * min(max(load, 0.0), 1.0)


def percentile(values: list[float], p: float) -> float | None:
    """`np.percentile(values, p)` (linear method), bit for bit, in plain Python.

    Every KPI view computes one (the 5th percentile of UE throughput) over ~20 values, where
    numpy's per-call overhead made it 5 % of a synthesis run. The arithmetic follows numpy's
    (index (n-1)*p/100, and its two-sided lerp) so stored observations do not change.
    """
    if not values:
        return None
    if not 0.0 <= p <= 100.0:
        raise ValueError(f"percentile {p} is outside 0-100")
    xs = sorted(float(v) for v in values)
    if any(math.isnan(x) for x in xs):
        return math.nan
    n = len(xs)
    vi = (n - 1) * (p / 100.0)
    if vi >= n - 1:
        return xs[-1]
    lo = math.floor(vi)
    g = vi - lo
    a, b = xs[lo], xs[lo + 1]
    d = b - a
    # numpy interpolates from the nearer end, which changes the last bit of some results.
    return b - d * (1.0 - g) if g >= 0.5 else a + d * g


@dataclass
class KpiView:
    """KPIs of one state. `ues`, `cells` are lists indexed by UE / cell; `qci` maps QCI -> dict."""

    ues: list[dict[str, Any]]
    cells: list[dict[str, Any]]
    network: dict[str, Any]
    qci: dict[int, dict[str, Any]]
    phys: physics.Physics
    in_domain: bool = True
    domain_issues: list[str] = field(default_factory=list)
    uncertainty: list[dict[str, float]] = field(default_factory=list)
    # What the view was built from, kept so `band` can rebuild it with shifted UE KPIs.
    source: tuple[Scenario, list[dict[str, Any]]] | None = field(default=None, repr=False)
    _bands: dict[float, tuple[KpiView, KpiView]] = field(default_factory=dict, repr=False)

    def band(self, k: float) -> tuple[KpiView, KpiView] | None:
        """(pessimistic, optimistic) views: every UE's throughput, delay and packet loss moved k
        ensemble standard deviations against, then in favour of, the operator, and every
        aggregate recomputed from them by the same rules. A verdict that agrees at both ends of
        the band is one the model's uncertainty cannot overturn; for an aggregate (a minimum, a
        cell's load, the power it draws, an SLA count) this is tighter and truer than scaling
        the aggregate by its worst UE's spread. None when the prediction carries no spread."""
        if self.source is None or not any(v for u in self.uncertainty for v in u.values()):
            return None
        if k not in self._bands:
            scn, preds = self.source
            self._bands[k] = (_shifted(scn, preds, self.phys, self.uncertainty, -k),
                              _shifted(scn, preds, self.phys, self.uncertainty, k))
        return self._bands[k]


    def band_ue(self, k: float, i: int) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """`band` for one UE's own KPIs only (a UE's metrics depend on nothing else): the same
        rows as band(k)[0].ues[i] and band(k)[1].ues[i], without recomputing the network."""
        if self.source is None or i >= len(self.uncertainty) or not any(
                self.uncertainty[i].values()):
            return None
        scn, preds = self.source
        return (_ue_row(scn, i, _shift(preds[i], self.uncertainty[i], -k), self.phys),
                _ue_row(scn, i, _shift(preds[i], self.uncertainty[i], k), self.phys))


# Metrics the band can move (built from UE throughput, delay or loss); for the others (the
# configuration, radio and counting metrics) the band is the prediction itself.
BAND_METRICS = frozenset({
    "dl_throughput_mbps", "ul_throughput_mbps", "dl_satisfaction", "min_dl_satisfaction",
    "mean_dl_satisfaction", "p5_dl_throughput_mbps", "prb_utilization", "max_prb_utilization",
    "power_w", "total_power_w", "delay_ms", "mean_delay_ms", "max_delay_ms", "sla_ok",
    "sla_violations", "loss_ratio", "mean_loss_ratio"})


def _shift(p: dict[str, Any], u: dict[str, float], k: float) -> dict[str, Any]:
    """One UE's prediction with its rates scaled by (1 + k*sigma_thr) (capped at the offered
    rate: a sink cannot receive more than was sent), its delay by (1 - k*sigma_delay), floored
    at 0, and its loss ratio moved by -k*sigma_loss (an absolute spread), within 0-1.

    Loss is in the band because it decides SLA verdicts: a QCI-9 UE predicted at 1.2 % loss
    (budget 1 %) with an ensemble spread of 1.5 points is no certain violation. Without it, the
    audit of verified trajectories found 5 of 40 whose SLA problem ns-3 did not have, all of
    them loss-driven QCI-9 violation counts."""
    f = max(1.0 + k * u.get("dl_throughput_rel", 0.0), 0.0)
    g = max(1.0 - k * u.get("delay_rel", 0.0), 0.0)
    q = dict(p)
    q["dl_throughput_mbps"] = min(p["dl_throughput_mbps"] * f, p["dl_offered_mbps"])
    q["ul_throughput_mbps"] = min(p["ul_throughput_mbps"] * f, p["ul_offered_mbps"])
    if p["delay_ms"] is not None:
        q["delay_ms"] = p["delay_ms"] * g
    sl = u.get("loss_abs", 0.0)
    if sl and p.get("loss_ratio") is not None:
        q["loss_ratio"] = min(max(p["loss_ratio"] - k * sl, 0.0), 1.0)
    return q


def _shifted(scn: Scenario, preds: list[dict[str, Any]], ph: physics.Physics,
             unc: list[dict[str, float]], k: float) -> KpiView:
    return build_view(scn, [_shift(p, u, k) for p, u in zip(preds, unc, strict=True)], ph)


def _ue_row(scn: Scenario, i: int, p: dict[str, Any], ph: physics.Physics) -> dict[str, Any]:
    u = scn.ues[i]
    sinr = p["sinr_db"]
    cqi = cqi_of(sinr) if sinr is not None else 0
    thr = p["dl_throughput_mbps"]
    sat = thr / u.dl_rate_mbps if u.dl_rate_mbps > 0 else 1.0
    delay = p["delay_ms"]
    loss = p["loss_ratio"] if p["loss_ratio"] is not None else 0.0
    reasons = []
    budget = DELAY_BUDGET_MS[u.qci]
    if delay is None or delay > budget:
        reasons.append("delay")
    if loss > LOSS_BUDGET:
        reasons.append("loss")
    if u.qci in GBR_QCIS and sat < GBR_SATISFACTION:
        reasons.append("gbr")
    return {
        "ue": i,
        "serving_cell": int(p["serving_cell"]),
        "dl_offered_mbps": u.dl_rate_mbps,
        "dl_throughput_mbps": thr,
        "ul_offered_mbps": u.ul_rate_mbps,
        "ul_throughput_mbps": p["ul_throughput_mbps"],
        "delay_ms": delay,
        "loss_ratio": loss,
        "rsrp_dbm": p["rsrp_dbm"],
        "sinr_db": sinr,
        "cqi": cqi,
        "handovers": p["handovers"],
        "dl_satisfaction": min(sat, 1.0),
        "qci": u.qci,
        "server": u.server,
        "sla_ok": not reasons,
        "sla_reasons": reasons,
        "dl_capacity_mbps": float(ph.dl_cap_mbps[i]),
    }


def ho_enabled(algorithm: str) -> bool:
    """The `ho_enabled` cell metric: the cell runs a handover algorithm."""
    return algorithm != "none"


def gbr_scheduler(scheduler: str) -> bool:
    """The `gbr_scheduler` cell metric: the cell's scheduler honours GBR bearers' rates (the
    priority-set and channel-and-QoS-aware schedulers; PF and RR ignore them)."""
    return scheduler in ("pss", "cqa")


def build_view(scn: Scenario, ue_preds: list[dict[str, Any]], ph: physics.Physics,
               in_domain: bool = True, domain_issues: list[str] | None = None,
               uncertainty: list[dict[str, float]] | None = None) -> KpiView:
    """Assemble every derived KPI from per-UE predictions (model output or measured-with-noise)."""
    ues = [_ue_row(scn, i, p, ph) for i, p in enumerate(ue_preds)]
    # The measured-KPI aggregates are the corpus's own definition (ns3_cell_kpis); the gym adds
    # configuration, PRB use, capacity, power and handovers on top.
    cells = cell_aggregates(scn, ues)
    for c, cfg in enumerate(scn.cells):
        mine = [u for u in ues if u["serving_cell"] == c]
        prb = min(sum(u["dl_throughput_mbps"] / max(u["dl_capacity_mbps"], 1e-6) for u in mine),
                  1.0) if cfg.active else 0.0
        cap = (len(mine) / sum(1.0 / max(u["dl_capacity_mbps"], 1e-6) for u in mine)
               if mine else None)
        cells[c].update({
            "tx_power_dbm": cfg.tx_power_dbm,
            "bandwidth_rbs": cfg.bandwidth_rbs,
            "prb_utilization": prb,
            "dl_capacity_mbps": cap,
            "power_w": cell_power_w(cfg.active, cfg.tx_power_dbm, prb),
            "handovers": sum(u["handovers"] for u in mine),
            # Handover configuration, for maintenance tickets whose goal is the setting itself
            # (the model predicts little effect of it on KPIs in short runs).
            "ho_enabled": ho_enabled(cfg.ho_algorithm),
            "ho_hysteresis_db": cfg.ho_hysteresis_db,
            "ho_ttt_ms": cfg.ho_ttt_ms,
            "gbr_scheduler": gbr_scheduler(cfg.scheduler),
        })
    qci: dict[int, dict[str, Any]] = {}
    for q in sorted({u["qci"] for u in ues}):
        mine = [u for u in ues if u["qci"] == q]
        delays = [u["delay_ms"] for u in mine if u["delay_ms"] is not None]
        qci[q] = {
            "qci": q,
            "n_ues": len(mine),
            "sla_violations": sum(not u["sla_ok"] for u in mine),
            "mean_delay_ms": sum(delays) / len(delays) if delays else None,
            "dl_throughput_mbps": sum(u["dl_throughput_mbps"] for u in mine),
            "min_dl_satisfaction": min(u["dl_satisfaction"] for u in mine),
        }
    delays = [u["delay_ms"] for u in ues if u["delay_ms"] is not None]
    thr = [u["dl_throughput_mbps"] for u in ues]
    network = {
        "n_cells": len(scn.cells),
        "n_active_cells": sum(c.active for c in scn.cells),
        "n_ues": len(ues),
        "dl_offered_mbps": sum(u["dl_offered_mbps"] for u in ues),
        "dl_throughput_mbps": sum(thr),
        "ul_throughput_mbps": sum(u["ul_throughput_mbps"] for u in ues),
        "mean_delay_ms": sum(delays) / len(delays) if delays else None,
        "max_delay_ms": max(delays) if delays else None,
        "mean_loss_ratio": sum(u["loss_ratio"] for u in ues) / len(ues),
        "min_dl_satisfaction": min(u["dl_satisfaction"] for u in ues),
        "mean_dl_satisfaction": sum(u["dl_satisfaction"] for u in ues) / len(ues),
        "p5_dl_throughput_mbps": percentile(thr, 5),
        "sla_violations": sum(not u["sla_ok"] for u in ues),
        "total_power_w": sum(c["power_w"] for c in cells),
        "max_prb_utilization": max(c["prb_utilization"] for c in cells),
        "total_handovers": sum(u["handovers"] for u in ues),
    }
    return KpiView(ues=ues, cells=cells, network=network, qci=qci, phys=ph,
                   in_domain=in_domain, domain_issues=list(domain_issues or []),
                   uncertainty=list(uncertainty or []),
                   source=(scn, ue_preds) if uncertainty else None)


def measure(scn: Scenario, ue_preds: list[dict[str, Any]], ph: physics.Physics, seed: int,
            step: int, rel: float = NOISE_REL, db: float = NOISE_DB) -> KpiView:
    """What the agent measures at `step`: predictions with seeded Gaussian noise, re-aggregated.

    Rates and delays get multiplicative noise of relative sigma `rel` (throughput is capped at the
    offered rate: a sink cannot receive more than was sent), RSRP and SINR additive noise of sigma
    `db` dB. The generator is seeded with (seed, step) so the same call at the same step of a
    replay returns the same numbers, whatever happened in other trajectories.
    """
    if rel <= 0 and db <= 0:
        return build_view(scn, ue_preds, ph)
    rng = np.random.default_rng([seed, step])
    # Python floats: the same doubles, without numpy's per-scalar overhead in every view built
    # from them.
    z = rng.standard_normal((len(ue_preds), 5)).tolist()
    noisy = []
    for p, zi in zip(ue_preds, z, strict=True):
        q = dict(p)
        q["dl_throughput_mbps"] = min(max(p["dl_throughput_mbps"] * (1 + rel * zi[0]), 0.0),
                                      p["dl_offered_mbps"])
        q["ul_throughput_mbps"] = min(max(p["ul_throughput_mbps"] * (1 + rel * zi[1]), 0.0),
                                      p["ul_offered_mbps"])
        if p["delay_ms"] is not None:
            q["delay_ms"] = max(p["delay_ms"] * (1 + rel * zi[2]), 0.0)
        if p["rsrp_dbm"] is not None:
            q["rsrp_dbm"] = p["rsrp_dbm"] + db * zi[3]
        if p["sinr_db"] is not None:
            q["sinr_db"] = p["sinr_db"] + db * zi[4]
        noisy.append(q)
    return build_view(scn, noisy, ph)


def round_floats(obj: Any, ndigits: int = 3) -> Any:
    """Round every float in a JSON-like structure; non-finite floats become None (valid JSON)."""
    if isinstance(obj, float):
        return round(obj, ndigits) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: round_floats(v, ndigits) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [round_floats(v, ndigits) for v in obj]
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.floating):
        return round_floats(float(obj), ndigits)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj

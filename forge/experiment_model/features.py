"""Per-UE feature vectors and training targets.

A UE's features are its own configuration and physics (forge.experiment_model.physics) plus
permutation-invariant context: sums, means and maxima over the UEs that share its serving cell,
and interference-weighted load of the neighbour cells. Nothing here reads a simulation output
except `targets()`, which is only used for training and evaluation.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from forge.experiment_model import physics
from forge.scenario import SCHEDULERS, Scenario

SCHED_KEYS = tuple(SCHEDULERS)

FEATURES = (
    "log_dl_rate", "log_ul_rate", "has_ul", "rsrp", "sinr", "sinr_eff", "gap", "log_dl_cap",
    "log_ul_cap", "log_dl_demand", "log_ul_demand", "log_cell_load", "log_ul_cell_load",
    "log_cell_n", "dl_share", "ul_share", "log_dl_share", "log_ul_share",
    "sched_pf", "sched_rr", "sched_pss", "sched_cqa", "log_rbs", "tx_power",
    "gbr", "qci", "edge", "log_server_delay", "mobile", "speed", "ho_on", "hysteresis", "ttt",
    "n_active", "sim_time", "pkt_size", "log_pps", "cell_gbr_load", "cell_max_demand",
    "cell_mean_demand", "demand_rank", "nbr_load", "ul_nbr_load", "ul_sinr", "log_queue_ms",
)

# Targets, in this order; each has a mask (KPI measured for this UE). Each is a correction to
# the physics prior where there is one, so an untrained network would predict the prior.
TARGETS = (
    "dl_ratio",     # log(dl throughput / offered) - log(water-filled share)
    "ul_ratio",     # same for the uplink, UEs with uplink traffic
    "delay",        # log(DL mean delay - server path delay), in ms: the radio + queue part
    "ul_delay",     # same for the uplink
    "loss",         # DL loss ratio
    "ul_loss",      # UL loss ratio
    "rsrp_res",     # measured RSRP minus the physics RSRP (dB)
    "sinr_res",     # measured SINR minus the physics SINR (dB)
    "handovers",    # log1p(handover count)
)
# Features that are a physical quantity divided by a fixed scale, and that scale (the handover
# model, forge.experiment_model.handover, reads the physical values back).
SCALES = {"rsrp": 100.0, "gap": 30.0, "speed": 30.0, "hysteresis": 15.0, "ttt": 1024.0,
          "n_active": 7.0, "sim_time": 4.0}
RATIO_FLOOR = math.log(1e-3)
RAN_DELAY_FLOOR_MS = 0.5


def ran_delay_target(delay_ms: float | None, path_ms: float) -> float | None:
    if not delay_ms:
        return None
    return math.log(max(delay_ms - path_ms, RAN_DELAY_FLOOR_MS))


def ratio_target(measured: float, offered: float, share: float) -> float:
    return max(math.log(max(measured, 1e-9) / offered), RATIO_FLOOR) - math.log(max(share, 1e-3))


def scenario_features(scn: Scenario) -> tuple[np.ndarray, physics.Physics]:
    """(n_ues, len(FEATURES)) float32 matrix and the physics it was built from."""
    ph = physics.compute(scn)
    n = len(scn.ues)
    cells = scn.cells
    s = ph.serving
    dl = np.array([u.dl_rate_mbps for u in scn.ues])
    ul = np.array([u.ul_rate_mbps for u in scn.ues])
    gbr = np.array([u.qci <= 4 for u in scn.ues], dtype=float)
    n_cells = len(cells)
    cell_gbr = np.bincount(s, weights=ph.dl_demand * gbr, minlength=n_cells)
    cell_max = np.zeros(n_cells)
    np.maximum.at(cell_max, s, ph.dl_demand)
    cell_mean = ph.cell_load / np.maximum(ph.cell_n, 1)
    lin = np.where(np.isfinite(ph.rsrp_dbm_all), 10 ** (ph.rsrp_dbm_all / 10), 0.0)
    other = lin.copy()
    other[np.arange(n), s] = 0.0
    wsum = other.sum(1)
    nbr_load = np.where(wsum > 0, (other * np.minimum(ph.cell_load, 1.5)[None, :]).sum(1)
                        / np.maximum(wsum, 1e-30), 0.0)
    ul_nbr = np.where(wsum > 0, (other * np.minimum(ph.ul_cell_load, 1.5)[None, :]).sum(1)
                      / np.maximum(wsum, 1e-30), 0.0)
    n_active = sum(c.active for c in cells)
    ues = scn.ues
    ue_server_delay = np.array([scn.edge_delay_ms if u.server == "edge" else scn.cloud_delay_ms
                                for u in ues])
    pkt = np.array([u.packet_size_bytes for u in ues], dtype=float)
    sched = np.array([[c.scheduler == k for k in SCHED_KEYS] for c in cells], dtype=float)[s]
    rbs = np.array([c.bandwidth_rbs for c in cells], dtype=float)[s]
    txp = np.array([c.tx_power_dbm for c in cells])[s]
    ho_on = np.array([c.ho_algorithm != "none" for c in cells], dtype=float)[s]
    hyst = np.array([c.ho_hysteresis_db for c in cells])[s]
    ttt = np.array([c.ho_ttt_ms for c in cells], dtype=float)[s]
    qci = np.array([u.qci for u in ues], dtype=float)
    mobile = np.array([u.mobility == "random_walk" for u in ues], dtype=float)
    speed = np.array([u.speed_mps for u in ues])
    edge = np.array([u.server == "edge" for u in ues], dtype=float)
    pps = dl * 1e6 / (8 * pkt)
    log = np.log
    # One column per FEATURES entry, in that order (vectorised over UEs: the gym calls this for
    # every state it predicts).
    cols = [
        log(dl), log(ul + 0.01), (ul > 0).astype(float),
        ph.rsrp_dbm / SCALES["rsrp"], ph.sinr_db / 30, ph.sinr_eff_db / 30,
        np.minimum(ph.second_gap_db, 60.0) / SCALES["gap"],
        log(ph.dl_cap_mbps + 1e-3), log(ph.ul_cap_mbps + 1e-3),
        log(ph.dl_demand + 1e-4), log(ph.ul_demand + 1e-4),
        log(ph.cell_load[s] + 1e-4), log(ph.ul_cell_load[s] + 1e-4),
        log(ph.cell_n[s]), ph.dl_share, ph.ul_share,
        log(ph.dl_share + 1e-4), log(ph.ul_share + 1e-4),
        *sched.T,
        log(rbs) / math.log(100), txp / 46,
        gbr, qci / 9, edge, log(ue_server_delay + 1.0),
        mobile, speed / SCALES["speed"],
        ho_on, hyst / SCALES["hysteresis"], ttt / SCALES["ttt"],
        np.full(n, n_active / SCALES["n_active"]),
        np.full(n, scn.sim_time_s / SCALES["sim_time"]), pkt / 1472, log(pps + 1),
        log(cell_gbr[s] + 1e-4), log(cell_max[s] + 1e-4), log(cell_mean[s] + 1e-4),
        ph.dl_demand / np.maximum(cell_max[s], 1e-9), nbr_load, ul_nbr,
        ph.ul_sinr_db / 30, log(np.minimum(ph.queue_ms, 1e4)),
    ]
    rows = np.stack(cols, axis=1).astype(np.float32)
    return rows, ph


def targets(scn: Scenario, ues: list[dict[str, Any]], ph: physics.Physics
            ) -> tuple[np.ndarray, np.ndarray]:
    """Training targets (n_ues, len(TARGETS)) and their 0/1 mask, from measured UE KPIs."""
    n = len(scn.ues)
    y = np.zeros((n, len(TARGETS)), dtype=np.float32)
    m = np.zeros_like(y)

    def put(i: int, j: int, v: float | None) -> None:
        if v is not None and math.isfinite(v):
            y[i, j] = v
            m[i, j] = 1.0

    for i, (u, k) in enumerate(zip(scn.ues, ues, strict=True)):
        put(i, 0, ratio_target(k["dl_throughput_mbps"], u.dl_rate_mbps, ph.dl_share[i]))
        if u.ul_rate_mbps > 0:
            put(i, 1, ratio_target(k["ul_throughput_mbps"], u.ul_rate_mbps, ph.ul_share[i]))
            put(i, 3, ran_delay_target(k.get("ul_delay_ms"), ph.path_ms[i]))
            put(i, 5, k.get("ul_loss_ratio"))
        put(i, 2, ran_delay_target(k.get("delay_ms"), ph.path_ms[i]))
        put(i, 4, k.get("loss_ratio"))
        put(i, 6, k["rsrp_dbm"] - ph.rsrp_dbm[i] if k.get("rsrp_dbm") is not None else None)
        put(i, 7, k["sinr_db"] - ph.sinr_db[i] if k.get("sinr_db") is not None else None)
        put(i, 8, math.log1p(k.get("handovers") or 0))
    return y, m

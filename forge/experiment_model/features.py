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
    rows = np.empty((n, len(FEATURES)), dtype=np.float32)
    for i, u in enumerate(scn.ues):
        c = cells[s[i]]
        server_delay = scn.edge_delay_ms if u.server == "edge" else scn.cloud_delay_ms
        pps = u.dl_rate_mbps * 1e6 / (8 * u.packet_size_bytes)
        rows[i] = (
            math.log(dl[i]), math.log(ul[i] + 0.01), float(ul[i] > 0),
            ph.rsrp_dbm[i] / 100, ph.sinr_db[i] / 30, ph.sinr_eff_db[i] / 30,
            min(ph.second_gap_db[i], 60.0) / 30,
            math.log(ph.dl_cap_mbps[i] + 1e-3), math.log(ph.ul_cap_mbps[i] + 1e-3),
            math.log(ph.dl_demand[i] + 1e-4), math.log(ph.ul_demand[i] + 1e-4),
            math.log(ph.cell_load[s[i]] + 1e-4), math.log(ph.ul_cell_load[s[i]] + 1e-4),
            math.log(ph.cell_n[s[i]]), ph.dl_share[i], ph.ul_share[i],
            math.log(ph.dl_share[i] + 1e-4), math.log(ph.ul_share[i] + 1e-4),
            *(float(c.scheduler == k) for k in SCHED_KEYS),
            math.log(c.bandwidth_rbs) / math.log(100), c.tx_power_dbm / 46,
            gbr[i], u.qci / 9, float(u.server == "edge"), math.log(server_delay + 1.0),
            float(u.mobility == "random_walk"), u.speed_mps / 30,
            float(c.ho_algorithm != "none"), c.ho_hysteresis_db / 15, c.ho_ttt_ms / 1024,
            n_active / 7, scn.sim_time_s / 4, u.packet_size_bytes / 1472, math.log(pps + 1),
            math.log(cell_gbr[s[i]] + 1e-4), math.log(cell_max[s[i]] + 1e-4),
            math.log(cell_mean[s[i]] + 1e-4),
            ph.dl_demand[i] / max(cell_max[s[i]], 1e-9), nbr_load[i], ul_nbr[i],
            ph.ul_sinr_db[i] / 30, math.log(min(ph.queue_ms[i], 1e4)),
        )
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

"""Closed-form radio and queueing physics of a scenario, from its configuration alone.

These are the Experiment Model's input features and its prior: the same pathloss law ns-3 is
configured with (forge.ns3.simulate), the reference-signal RSRP and SINR that ns-3 reports, a
Shannon-style capacity per UE, and a max-min (water-filling) share of each cell's airtime. For a
static UE they reproduce ns-3's RSRP and SINR to a fraction of a dB; what they cannot know
(scheduler behaviour, HARQ, RLC queues, interference from neighbours' actual data) is what the
learned model corrects.

Everything is vectorised over the UEs of one scenario.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from forge.ns3.simulate import ENB_HEIGHT_M, PATHLOSS_EXPONENT, PATHLOSS_REF_DB, UE_HEIGHT_M
from forge.scenario import Scenario

NOISE_FIGURE_DB = 9.0          # ns-3 LteUePhy default
UE_TX_POWER_DBM = 10.0         # ns-3 LteUePhy default
ENB_NOISE_FIGURE_DB = 5.0      # ns-3 LteEnbPhy default
# ns-3's adaptive modulation and coding (LteAmc, PiroEW2010): the spectral efficiency is
# log2(1 + SINR / gamma) with gamma = -ln(5 * BER) / 1.5 at BER 5e-5 (a 7.4 dB gap to Shannon),
# then rounded down to the efficiency of the highest CQI that fits (TS 36.213 table 7.2.3-1).
SNR_GAP_DB = 10 * np.log10(-np.log(5 * 0.00005) / 1.5)
CQI_EFFICIENCY = np.array([0.0, 0.1523, 0.2344, 0.3770, 0.6016, 0.8770, 1.1758, 1.4766, 1.9141,
                           2.4063, 2.7305, 3.3223, 3.9023, 4.5234, 5.1152, 5.5547])
OVERHEAD = 0.75                # control region, reference signals, HARQ


@dataclass
class Physics:
    """Per-UE quantities (arrays of length n_ues) and per-cell arrays (length n_cells)."""

    rsrp_dbm_all: np.ndarray    # (n_ues, n_cells) RSRP per RE from each cell, -inf when off
    serving: np.ndarray         # int, strongest active cell
    rsrp_dbm: np.ndarray        # RSRP of the serving cell
    second_gap_db: np.ndarray   # serving minus second strongest (handover margin); 60 if none
    sinr_db: np.ndarray         # reference-signal SINR (all active cells interfere)
    sinr_eff_db: np.ndarray     # SINR with interference weighted by neighbours' airtime load
    dl_cap_mbps: np.ndarray     # rate if the UE had the serving cell to itself
    ul_sinr_db: np.ndarray
    ul_cap_mbps: np.ndarray
    dl_demand: np.ndarray       # airtime fraction the UE needs: offered / capacity
    cell_load: np.ndarray       # per cell: sum of its UEs' airtime demand
    cell_n: np.ndarray          # per cell: UEs served
    dl_share: np.ndarray        # water-filled airtime / demand, in [0, 1]
    ul_demand: np.ndarray
    ul_cell_load: np.ndarray
    ul_share: np.ndarray
    path_ms: np.ndarray         # one-way PGW <-> server delay of each UE's flows (edge or cloud)
    queue_ms: np.ndarray        # time to drain a full RLC buffer at the water-filled rate


# ns-3's LteRlcUm::MaxTxBufferSize default: a congested UE's queue sits at this size, so its
# queueing delay is about this many bits over its service rate.
RLC_BUFFER_BYTES = 10 * 1024


def pathloss_db(d_m: np.ndarray) -> np.ndarray:
    return PATHLOSS_REF_DB + 10 * PATHLOSS_EXPONENT * np.log10(np.maximum(d_m, 1.0))


def noise_per_re_dbm(nf_db: float = NOISE_FIGURE_DB) -> float:
    return -174.0 + 10 * np.log10(15e3) + nf_db


def spectral_efficiency(sinr_db: np.ndarray) -> np.ndarray:
    """bit/s/Hz of the CQI that ns-3's AMC would pick at this SINR (0 below CQI 1)."""
    shannon = np.log2(1 + 10 ** ((np.asarray(sinr_db) - SNR_GAP_DB) / 10))
    cqi = np.searchsorted(CQI_EFFICIENCY, shannon, side="right") - 1
    return CQI_EFFICIENCY[np.clip(cqi, 0, len(CQI_EFFICIENCY) - 1)]


def _capacity_mbps(sinr_db: np.ndarray, rbs: np.ndarray) -> np.ndarray:
    return spectral_efficiency(sinr_db) * rbs * 180e3 * OVERHEAD / 1e6


def water_fill(demand: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Max-min fair airtime: in each group, t_i = min(demand_i, level) with sum t_i <= 1.

    Returns t_i / demand_i (1 where the group is not overloaded).
    """
    share = np.ones_like(demand)
    for g in range(n_groups):
        idx = np.flatnonzero(groups == g)
        if idx.size == 0:
            continue
        d = demand[idx]
        if d.sum() <= 1.0:
            continue
        order = np.sort(d)
        remaining, level = 1.0, 0.0
        for k, v in enumerate(order):
            left = order.size - k
            if v * left <= remaining:
                remaining -= v
            else:
                level = remaining / left
                break
        share[idx] = np.minimum(d, level) / np.maximum(d, 1e-12)
    return share


# The physics of the last scenarios asked for, by scenario_id: the model's features, the
# handlers that need a UE's best neighbour (forced handover, degradation) and the capacity
# tool all ask again for the same few states of an episode. Arrays are made read-only, so a
# caller that wrote into a shared one would fail loudly instead of changing another's physics.
_CACHE: OrderedDict[str, Physics] = OrderedDict()
CACHE_SIZE = 2048


def compute(scn: Scenario) -> Physics:
    """The closed-form physics of `scn` (cached by its content hash; the result is
    read-only)."""
    key = scn.scenario_id
    ph = _CACHE.get(key)
    if ph is not None:
        _CACHE.move_to_end(key)
        return ph
    ph = _compute(scn)
    for a in vars(ph).values():
        a.setflags(write=False)
    _CACHE[key] = ph
    if len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return ph


def _compute(scn: Scenario) -> Physics:
    enb = np.array(scn.enb_positions())
    ue = np.array([[u.x_m, u.y_m] for u in scn.ues])
    active = np.array([c.active for c in scn.cells])
    power = np.array([c.tx_power_dbm for c in scn.cells])
    rbs = np.array([c.bandwidth_rbs for c in scn.cells], dtype=float)
    n_cells = len(scn.cells)

    d2 = ((ue[:, None, :] - enb[None, :, :]) ** 2).sum(-1) + (ENB_HEIGHT_M - UE_HEIGHT_M) ** 2
    pl = pathloss_db(np.sqrt(d2))
    rsrp_all = power[None, :] - 10 * np.log10(12 * rbs[None, :]) - pl
    rsrp_all = np.where(active[None, :], rsrp_all, -np.inf)
    serving = np.argmax(rsrp_all, axis=1)
    ar = np.arange(len(ue))
    rsrp = rsrp_all[ar, serving]
    srt = np.sort(rsrp_all, axis=1)
    second = srt[:, -2] if n_cells > 1 else np.full(len(ue), -np.inf)
    gap = np.where(np.isfinite(second), rsrp - second, 60.0)

    lin = np.where(np.isfinite(rsrp_all), 10 ** (rsrp_all / 10), 0.0)
    sig = lin[ar, serving]
    interf = lin.sum(1) - sig
    noise = 10 ** (noise_per_re_dbm() / 10)
    sinr_db = 10 * np.log10(sig / (interf + noise))

    dl_rate = np.array([u.dl_rate_mbps for u in scn.ues])
    ul_rate = np.array([u.ul_rate_mbps for u in scn.ues])

    # First pass: demand with the reference SINR, then re-weight interference by the airtime
    # each neighbour actually transmits (its load, capped at 1).
    cap0 = _capacity_mbps(sinr_db, rbs[serving])
    demand0 = dl_rate / np.maximum(cap0, 1e-6)
    load0 = np.bincount(serving, weights=demand0, minlength=n_cells)
    act = np.minimum(load0, 1.0)
    interf_eff = (lin * act[None, :]).sum(1) - sig * act[serving]
    sinr_eff = 10 * np.log10(sig / (interf_eff + noise))
    dl_cap = _capacity_mbps(sinr_eff, rbs[serving])
    dl_demand = dl_rate / np.maximum(dl_cap, 1e-6)
    cell_load = np.bincount(serving, weights=dl_demand, minlength=n_cells)
    cell_n = np.bincount(serving, minlength=n_cells).astype(float)
    dl_share = water_fill(dl_demand, serving, n_cells)

    # Uplink: the UE's power over the serving cell's band against the eNB's noise; other cells'
    # UEs interfere in proportion to their uplink load (crudely: a fixed 3 dB rise when loaded).
    ul_noise_re = 10 ** (noise_per_re_dbm(ENB_NOISE_FIGURE_DB) / 10)
    ul_sig = 10 ** ((UE_TX_POWER_DBM - 10 * np.log10(12 * rbs[serving]) - pl[ar, serving]) / 10)
    ul_sinr = 10 * np.log10(ul_sig / ul_noise_re)
    ul_cap = _capacity_mbps(ul_sinr - 3.0, rbs[serving])
    ul_demand = ul_rate / np.maximum(ul_cap, 1e-6)
    ul_cell_load = np.bincount(serving, weights=ul_demand, minlength=n_cells)
    ul_share = water_fill(ul_demand, serving, n_cells)

    path_ms = np.array([scn.edge_delay_ms if u.server == "edge" else scn.cloud_delay_ms
                        for u in scn.ues])
    served = np.maximum(dl_rate * dl_share, 1e-3)
    queue_ms = RLC_BUFFER_BYTES * 8 / (served * 1e6) * 1e3

    return Physics(
        rsrp_dbm_all=rsrp_all, serving=serving, rsrp_dbm=rsrp, second_gap_db=gap,
        sinr_db=sinr_db, sinr_eff_db=sinr_eff, dl_cap_mbps=dl_cap, ul_sinr_db=ul_sinr,
        ul_cap_mbps=ul_cap, dl_demand=dl_demand, cell_load=cell_load, cell_n=cell_n,
        dl_share=dl_share, ul_demand=ul_demand, ul_cell_load=ul_cell_load, ul_share=ul_share,
        path_ms=path_ms, queue_ms=queue_ms,
    )

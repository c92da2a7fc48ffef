"""Sampling scenarios over the whole configuration space.

A grid is a Latin hypercube over the scenario's main axes (number of cells, inter-site distance,
power, bandwidth, scheduler, UE count, offered load, family, handover settings, mobility, edge
share), so every axis is covered evenly even for a few hundred runs; the details (each cell's
power, each UE's position and rates) are then drawn from the scenario's own seed, which makes a
scenario reproducible from its seed alone.

Offered load is set relative to a rough capacity estimate of each cell, so a sweep holds both
uncongested and congested UEs (the interesting ones for the Experiment Model).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
from scipy.stats import qmc

from forge.db import ForgeError
from forge.scenario import BANDWIDTHS_RB, CellConfig, Scenario, UeConfig, enb_positions

FAMILIES = (
    "uniform",        # UEs spread evenly
    "hotspot",        # most UEs crowd into one cell: overload
    "cell_edge",      # UEs near the cell borders: interference-limited
    "coverage_hole",  # one cell at very low power
    "mobility",       # many UEs on random walks: handovers
    "slices",         # mixed QCIs with GBR bearers
    "edge_offload",   # many latency-sensitive UEs served from the edge host
)
SCHEDULER_KEYS = ("pf", "rr", "pss", "cqa")
TTT_MS = (40, 100, 256, 480, 1024)
MAX_UES = 40
GRIDS = {"tiny": 4, "small": 24, "default": 1200, "handover": 80}
# Seeds of the handover grid start here, so they never collide with the default grid's.
HANDOVER_SEED_BASE = 500_000_000
_DIMS = 11


class GridError(ForgeError):
    """A --grid that names no grid, or a grid file with an invalid scenario."""


def split_of(seed: int, heldout_fraction: float = 0.2) -> str:
    """calibration/heldout by a hash of the scenario seed: stable, and independent of order."""
    h = int(hashlib.sha256(f"split:{seed}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "heldout" if h < heldout_fraction else "calibration"


def rough_cell_capacity_mbps(bandwidth_rbs: int) -> float:
    """~2.5 bit/s/Hz over the cell's RBs: a rough scale for offered load, not a prediction."""
    return bandwidth_rbs * 180e3 * 2.5 / 1e6


def sample_scenario(seed: int, u: np.ndarray | None = None, handover: bool = False) -> Scenario:
    """One scenario from a point `u` of the unit hypercube (or from the seed alone).

    `handover=True` samples the mobility corner of the space that 2-second runs barely reach:
    small cells, fast walkers near cell borders, low hysteresis/time-to-trigger and 8-second
    runs, so that handovers (and ping-pong) actually happen in the corpus.
    """
    rng = np.random.default_rng(seed)
    if u is None:
        u = rng.random(_DIMS)
    n_cells = 1 + min(int(u[0] * 7), 6)
    isd = 200.0 * (1500.0 / 200.0) ** u[1]
    if handover:
        n_cells = max(n_cells, 2)
        isd = 200.0 * (700.0 / 200.0) ** u[1]
    base_power = 20.0 + 26.0 * u[2]
    base_bw = BANDWIDTHS_RB[min(int(u[3] * 6), 5)]
    base_sched = SCHEDULER_KEYS[min(int(u[4] * 4), 3)]
    n_ues = int(np.clip(round(n_cells * (1 + 7 * u[5])), 1, MAX_UES))
    load = 0.08 * (2.0 / 0.08) ** u[6]
    family = FAMILIES[min(int(u[7] * len(FAMILIES)), len(FAMILIES) - 1)]
    ho_on = u[8] > 0.2
    hysteresis = round(float(rng.uniform(0.0, 6.0)) * 2) / 2
    ttt = int(rng.choice(TTT_MS))
    mobile_frac = 0.7 if family == "mobility" else 0.15 * u[9]
    if handover:
        family, ho_on, mobile_frac = "mobility", u[8] > 0.1, 0.8
        hysteresis, ttt = min(hysteresis, 3.0), min(ttt, 256)
    edge_frac = 0.6 if family == "edge_offload" else 0.3 * u[10]

    cells = []
    for i in range(n_cells):
        bw = base_bw if rng.random() < 0.7 else int(rng.choice(BANDWIDTHS_RB))
        sched = base_sched if rng.random() < 0.8 else str(rng.choice(SCHEDULER_KEYS))
        power = float(np.clip(base_power + rng.normal(0, 3), 0, 46))
        if family == "coverage_hole" and i == n_cells - 1:
            power = float(max(0.0, base_power - 20 - 10 * rng.random()))
        active = not (n_cells > 2 and rng.random() < 0.08)
        cells.append(CellConfig.model_validate(dict(
            tx_power_dbm=round(power, 1), bandwidth_rbs=bw, scheduler=sched, active=active,
            ho_algorithm="a3_rsrp" if ho_on else "none", ho_hysteresis_db=hysteresis,
            ho_ttt_ms=ttt,
        )))
    if not any(c.active for c in cells):
        cells[0] = cells[0].model_copy(update={"active": True})

    layout = "line" if (n_cells > 1 and rng.random() < 0.3) else "hex"
    pos = enb_positions(layout, n_cells, isd)
    weights = np.ones(n_cells)
    if family == "hotspot":
        weights[int(rng.integers(n_cells))] = 4.0 * max(n_cells - 1, 1)
    weights /= weights.sum()
    homes = rng.choice(n_cells, size=n_ues, p=weights)
    per_cell = np.bincount(homes, minlength=n_cells)

    ues = []
    for home in homes:
        mobile = rng.random() < mobile_frac
        if family == "cell_edge" or (family == "mobility" and mobile):
            r = isd * rng.uniform(0.3, 0.65)
        else:
            r = isd * 0.6 * math.sqrt(rng.random())
        a = rng.uniform(0, 2 * math.pi)
        x = pos[home][0] + r * math.cos(a)
        y = pos[home][1] + r * math.sin(a)
        cap = rough_cell_capacity_mbps(cells[home].bandwidth_rbs)
        dl = float(np.clip(load * cap / per_cell[home] * rng.lognormal(0.0, 0.6), 0.1, 80.0))
        ul = float(np.clip(rng.lognormal(math.log(0.3), 0.8), 0.05, 3.0)) if rng.random() < 0.5 \
            else 0.0
        # Small packets for slow flows, so that even they send dozens of packets per run.
        size = int(rng.choice([256, 512])) if dl < 1.0 else int(rng.choice([512, 1024, 1400]))
        if family == "slices":
            qci = int(rng.choice([1, 2, 3, 4, 5, 7, 8, 9]))
        else:
            qci = 9 if rng.random() < 0.8 else int(rng.choice([1, 3, 5, 7]))
        ues.append(UeConfig.model_validate(dict(
            x_m=round(x, 1), y_m=round(y, 1),
            mobility="random_walk" if mobile else "static",
            speed_mps=round(float(rng.uniform(10.0, 40.0) if handover
                                  else rng.uniform(1.0, 30.0)), 1) if mobile else 0.0,
            dl_rate_mbps=round(dl, 3), ul_rate_mbps=round(ul, 3), packet_size_bytes=size,
            qci=qci, server="edge" if rng.random() < edge_frac else "cloud",
        )))
    return Scenario.model_validate(dict(
        seed=seed, family=family, layout=layout, isd_m=round(isd, 1), cells=cells, ues=ues,
        edge_delay_ms=round(float(rng.uniform(1.0, 5.0)), 2),
        cloud_delay_ms=round(float(rng.uniform(20.0, 60.0)), 1),
        # Mobility needs longer runs for UEs to cross cell borders; others settle within 2 s.
        sim_time_s=8.0 if handover else 4.0 if family == "mobility" else 2.0, app_start_s=0.3,
        rng_run=1,
    ))


def sample_grid(n: int, seed: int = 0, handover: bool = False) -> list[Scenario]:
    """n scenarios on a Latin hypercube; scenario k gets seed `seed * 1_000_000 + k` (plus
    HANDOVER_SEED_BASE for the handover grid)."""
    if n <= 0:
        return []
    pts = qmc.LatinHypercube(d=_DIMS, seed=seed).random(n)
    base = seed * 1_000_000 + (HANDOVER_SEED_BASE if handover else 0)
    return [sample_scenario(base + k, pts[k], handover=handover) for k in range(n)]


def load_grid(spec: str, n: int | None = None, seed: int = 0) -> list[Scenario]:
    """A named grid (tiny/small/default), or a JSONL file with one Scenario per line."""
    if spec in GRIDS:
        return sample_grid(n if n is not None else GRIDS[spec], seed, handover=spec == "handover")
    path = Path(spec)
    if not path.exists():
        raise GridError(
            f"--grid {spec!r} is neither one of {sorted(GRIDS)} nor an existing JSONL file"
        )
    out = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                out.append(Scenario.model_validate(json.loads(line)))
            except Exception as e:
                raise GridError(f"{path}:{lineno}: invalid scenario: {e}") from e
    return out[:n] if n is not None else out


def noise_floor_grid(n_scenarios: int, rng_runs: int, seed: int = 7) -> list[Scenario]:
    """The same scenarios under several RngRun values: how much ns-3 itself varies."""
    base = sample_grid(n_scenarios, seed)
    return [s.model_copy(update={"rng_run": r}) for s in base for r in range(1, rng_runs + 1)]

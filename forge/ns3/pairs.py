"""Paired runs: a base scenario and the same scenario after one configure change, both in ns-3.

The Experiment Model is the gym's physics, so what matters downstream is not only the level of
each KPI but how it *moves* when an agent changes the network. A pair is made exactly the way an
agent makes a change: one of the gym's own configure handlers (`forge.gym.handlers.CONFIGURE`)
applied to the base scenario. Both scenarios go through the ordinary sweep (`run_sweep`), so they
are keyed by content hash, resume after an interruption and are never simulated twice; the
changed scenario keeps the base's seed, so a pair falls into the base's calibration/held-out
split (`split_of`). Pairs are listed in the side table `ns3_pairs` (created on first use, see
`ensure_table`), which links the two run ids with the tool and arguments of the change.

Two samplers feed it:
- `paired_grid`: bases from the corpus's own Latin hypercube (`forge.ns3.grid`), each with
  `changes` different configure tools (every tool gets an equal share over the grid). Changes
  target the most loaded cell (or one of its UEs) most of the time, where they move KPIs.
- `hotspot_grid`: a second test distribution, drawn differently from the grid on purpose: cells
  with independent per-cell settings, UEs placed in Gaussian hotspots anywhere in the network
  area (not around a chosen home cell) plus a uniform background, and a heavy-tailed split of
  a network-wide load. Its runs carry split `hotspot_test` and are never trained on.

    python -m forge.ns3.pairs --bases 96 --changes 3 --hotspot 48 --db build/pairs.duckdb
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from dataclasses import dataclass
from typing import Any, Literal

import duckdb
import numpy as np
from scipy.stats import qmc

from forge.db import ForgeError
from forge.experiment_model import physics
from forge.gym.handlers import CONFIGURE, ToolError
from forge.ns3.grid import (
    _DIMS,
    SCHEDULER_KEYS,
    TTT_MS,
    rough_cell_capacity_mbps,
    sample_scenario,
    split_of,
)
from forge.scenario import BANDWIDTHS_RB, CellConfig, Scenario, UeConfig, enb_positions

# Seed ranges of their own, so pair bases never coincide with grid scenarios of the corpus.
PAIRS_SEED_BASE = 600_000_000
HOTSPOT_SEED_BASE = 700_000_000
HOTSPOT_SPLIT = "hotspot_test"
CHANGE_TOOLS: tuple[str, ...] = tuple(CONFIGURE)
# How often a change targets the most loaded cell (or one of its UEs) rather than a random one.
FOCUS_LOADED = 0.7


class PairError(ForgeError):
    """A pair request that cannot be met (bad sizes, no applicable change)."""


@dataclass
class Pair:
    base: Scenario
    changed: Scenario
    tool: str
    args: dict[str, Any]
    description: str
    grid: str


# --- changes ------------------------------------------------------------------------------------
def _focus_cell(scn: Scenario, rng: np.random.Generator) -> int:
    active = [i for i, c in enumerate(scn.cells) if c.active]
    if rng.random() < FOCUS_LOADED:
        load = physics.compute(scn).cell_load
        return max(active, key=lambda i: float(load[i]))
    return int(rng.choice(active))


def _focus_ue(scn: Scenario, cell: int, rng: np.random.Generator) -> int:
    serving = physics.compute(scn).serving
    mine = np.flatnonzero(serving == cell)
    if mine.size and rng.random() < FOCUS_LOADED:
        return int(rng.choice(mine))
    return int(rng.integers(len(scn.ues)))


def propose_args(scn: Scenario, tool: str, rng: np.random.Generator) -> dict[str, Any] | None:
    """Arguments for `tool` that change `scn` (None when the tool cannot change this scenario,
    e.g. switching cells in a one-cell network). The handler still validates them."""
    c = _focus_cell(scn, rng)
    cell = scn.cells[c]
    u = _focus_ue(scn, c, rng)
    ue = scn.ues[u]
    n_active = sum(x.active for x in scn.cells)
    if tool == "set_tx_power":
        step = float(rng.uniform(3.0, 10.0)) * (1 if rng.random() < 0.5 else -1)
        new = float(np.clip(cell.tx_power_dbm + step, 0.0, 46.0))
        if abs(new - cell.tx_power_dbm) < 1.0:
            new = float(np.clip(cell.tx_power_dbm - step, 0.0, 46.0))
        return {"cell": c, "tx_power_dbm": round(new, 1)}
    if tool == "set_bandwidth":
        return {"cell": c, "bandwidth_rbs": int(rng.choice(
            [b for b in BANDWIDTHS_RB if b != cell.bandwidth_rbs]))}
    if tool == "set_scheduler":
        return {"cell": c, "scheduler": str(rng.choice(
            [s for s in SCHEDULER_KEYS if s != cell.scheduler]))}
    if tool == "set_handover_params":
        hyst = round(float(rng.uniform(0.0, 8.0)) * 2) / 2
        if hyst == cell.ho_hysteresis_db:
            hyst = min(hyst + 2.0, 15.0)
        return {"cell": c, "hysteresis_db": hyst,
                "ttt_ms": int(rng.choice([t for t in TTT_MS if t != cell.ho_ttt_ms]))}
    if tool == "set_handover_algorithm":
        return {"cell": c, "algorithm": "none" if cell.ho_algorithm == "a3_rsrp" else "a3_rsrp"}
    if tool == "force_handover":
        ph = physics.compute(scn)
        order = [int(i) for i in np.argsort(-ph.rsrp_dbm_all[u])
                 if np.isfinite(ph.rsrp_dbm_all[u, i]) and int(i) != int(ph.serving[u])]
        return {"ue": u, "target_cell": order[0]} if order else None
    if tool == "set_cell_state":
        off = [i for i, x in enumerate(scn.cells) if not x.active]
        if off and (n_active == 1 or rng.random() < 0.3):
            return {"cell": int(rng.choice(off)), "active": True}
        return {"cell": c, "active": False} if n_active > 1 else None
    if tool == "set_ue_qci":
        return {"ue": u, "qci": int(rng.choice([q for q in range(1, 10) if q != ue.qci]))}
    if tool == "set_ue_server":
        return {"ue": u, "server": "edge" if ue.server == "cloud" else "cloud"}
    if tool == "shape_traffic":
        cap = round(max(ue.dl_rate_mbps * float(rng.uniform(0.2, 0.7)), 0.05), 3)
        return {"ue": u, "max_dl_mbps": cap} if cap < ue.dl_rate_mbps else None
    if tool == "graceful_degradation":
        return {"cell": c, "factor": round(float(rng.uniform(0.3, 0.8)), 2)}
    raise PairError(f"unknown configure tool {tool!r} (one of {', '.join(CHANGE_TOOLS)})")


def make_pair(base: Scenario, tool: str, rng: np.random.Generator, grid: str,
              tries: int = 6) -> Pair | None:
    """`base` changed by the gym's handler for `tool`, or None if no try changes it."""
    for _ in range(tries):
        args = propose_args(base, tool, rng)
        if args is None:
            return None
        try:
            ch = CONFIGURE[tool](base, args)
        except ToolError:  # e.g. a cell without non-GBR UEs to degrade: draw again
            continue
        if ch.scenario.scenario_id != base.scenario_id:
            return Pair(base, ch.scenario, tool, args, ch.description, grid)
    return None


def _with_changes(bases: list[Scenario], changes: int, seed: int, grid: str) -> list[Pair]:
    if changes < 1:
        raise PairError(f"--changes must be >= 1, not {changes}")
    out: list[Pair] = []
    k = 0
    for b in bases:
        rng = np.random.default_rng([seed, b.seed])
        made: set[str] = set()
        # Tools rotate over the whole grid, so every tool gets an equal share of the bases; a
        # tool that cannot change this base hands its turn to the next one.
        for j in range(len(CHANGE_TOOLS)):
            if len(made) == changes:
                break
            tool = CHANGE_TOOLS[(k + j) % len(CHANGE_TOOLS)]
            p = make_pair(b, tool, rng, grid)
            if p is not None:
                made.add(tool)
                out.append(p)
        k += changes
    return out


def paired_grid(n_bases: int, changes: int = 3, seed: int = 0, max_ues: int = 24) -> list[Pair]:
    """`n_bases` grid scenarios (Latin hypercube of forge.ns3.grid, at most `max_ues` UEs, to
    keep runs short) with `changes` configure changes each."""
    if n_bases < 1:
        raise PairError(f"--bases must be >= 1, not {n_bases}")
    # Oversample the hypercube, then keep the first n_bases small enough scenarios.
    pts = qmc.LatinHypercube(d=_DIMS, seed=seed).random(4 * n_bases)
    base0 = PAIRS_SEED_BASE + seed * 1_000_000
    bases = []
    for k, u in enumerate(pts):
        s = sample_scenario(base0 + k, u)
        if len(s.ues) <= max_ues:
            bases.append(s)
        if len(bases) == n_bases:
            break
    return _with_changes(bases, changes, seed, "pairs")


def hotspot_scenario(seed: int, max_ues: int = 24) -> Scenario:
    """The second test distribution (module docstring): hotspots anywhere, independent cells."""
    rng = np.random.default_rng(seed)
    n_cells = int(rng.integers(2, 7))
    layout: Literal["line", "hex"] = "line" if rng.random() < 0.25 else "hex"
    isd = float(rng.uniform(250.0, 1000.0))
    pos = np.array(enb_positions(layout, n_cells, isd))
    cells = []
    for _ in range(n_cells):
        ho = rng.random() < 0.6
        cells.append(CellConfig(
            tx_power_dbm=round(float(rng.uniform(20.0, 46.0)), 1),
            bandwidth_rbs=int(rng.choice(BANDWIDTHS_RB)),  # type: ignore[arg-type]
            scheduler=str(rng.choice(SCHEDULER_KEYS)),  # type: ignore[arg-type]
            active=bool(rng.random() > 0.08), ho_algorithm="a3_rsrp" if ho else "none",
            ho_hysteresis_db=round(float(rng.uniform(0.0, 6.0)) * 2) / 2,
            ho_ttt_ms=int(rng.choice(TTT_MS))))
    if not any(c.active for c in cells):
        cells[0] = cells[0].model_copy(update={"active": True})
    lo, hi = pos.min(0) - 0.6 * isd, pos.max(0) + 0.6 * isd
    n_hot = int(rng.integers(1, 4))
    centres = rng.uniform(lo, hi, size=(n_hot, 2))
    sigma = rng.uniform(40.0, max(60.0, 0.3 * isd), size=n_hot)
    weights = rng.dirichlet(np.ones(n_hot))
    n_ues = int(rng.integers(2 * n_cells, min(max_ues, 6 * n_cells) + 1))
    # A network-wide offered load between light and twice the rough capacity, split over the
    # UEs with heavy-tailed (Pareto) weights: a few heavy users, many light ones.
    cap = sum(rough_cell_capacity_mbps(c.bandwidth_rbs) for c in cells if c.active)
    total = float(rng.uniform(0.2, 2.0)) * cap
    w = rng.pareto(1.5, size=n_ues) + 0.05
    w /= w.sum()
    ues = []
    for i in range(n_ues):
        if rng.random() < 0.25:
            x, y = rng.uniform(lo, hi)
        else:
            h = int(rng.choice(n_hot, p=weights))
            x, y = centres[h] + rng.normal(0.0, sigma[h], size=2)
        dl = float(np.clip(total * w[i], 0.1, 60.0))
        mobile = rng.random() < 0.1
        ues.append(UeConfig(
            x_m=round(float(x), 1), y_m=round(float(y), 1),
            mobility="random_walk" if mobile else "static",
            speed_mps=round(float(rng.uniform(1.0, 15.0)), 1) if mobile else 0.0,
            dl_rate_mbps=round(dl, 3),
            ul_rate_mbps=round(float(np.clip(rng.lognormal(math.log(0.3), 0.8), 0.05, 3.0)), 3)
            if rng.random() < 0.4 else 0.0,
            packet_size_bytes=int(rng.choice([256, 512])) if dl < 1.0
            else int(rng.choice([512, 1024, 1400])),
            qci=9 if rng.random() < 0.6 else int(rng.integers(1, 10)),  # type: ignore[arg-type]
            server="edge" if rng.random() < 0.35 else "cloud"))
    return Scenario(seed=seed, family="hotspot_test", layout=layout, isd_m=round(isd, 1),
                    cells=cells, ues=ues, edge_delay_ms=round(float(rng.uniform(1.0, 5.0)), 2),
                    cloud_delay_ms=round(float(rng.uniform(20.0, 60.0)), 1), sim_time_s=2.0,
                    app_start_s=0.3, rng_run=1)


def hotspot_grid(n_bases: int, changes: int = 1, seed: int = 0, max_ues: int = 24
                 ) -> list[Pair]:
    """`n_bases` second-distribution scenarios with `changes` configure changes each."""
    if n_bases < 1:
        raise PairError(f"--hotspot must be >= 1, not {n_bases}")
    base0 = HOTSPOT_SEED_BASE + seed * 1_000_000
    bases = [hotspot_scenario(base0 + k, max_ues) for k in range(n_bases)]
    return _with_changes(bases, changes, seed, "hotspot")


# --- storage ------------------------------------------------------------------------------------
def ensure_table(con: duckdb.DuckDBPyConnection) -> None:
    """Bring a connection opened without `forge.db.connect` up to the schema (migration 0006
    makes `ns3_pairs`)."""
    from forge import db as fdb

    fdb.migrate(con)


def pair_split(p: Pair) -> str:
    return HOTSPOT_SPLIT if base_grid(p.grid) == "hotspot" else split_of(p.base.seed)


def store_pairs(con: duckdb.DuckDBPyConnection, pairs: list[Pair], ns3_version: str) -> int:
    from forge.ns3.sweep import run_id

    ensure_table(con)
    rows = []
    for p in pairs:
        b, c = run_id(p.base, ns3_version), run_id(p.changed, ns3_version)
        pid = hashlib.sha256(f"{b}|{c}".encode()).hexdigest()[:16]
        rows.append([pid, b, c, p.base.seed, pair_split(p), p.grid, p.tool,
                     json.dumps(p.args, sort_keys=True), p.description])
    if rows:
        con.executemany("INSERT OR IGNORE INTO ns3_pairs (pair_id, base_run_id, changed_run_id, "
                        "seed, split, grid, tool, args, description) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return len(rows)


def interleave(pairs: list[Pair]) -> list[Pair]:
    """Pairs grouped by base, the grids' bases interleaved in proportion to their counts: a
    sweep stopped early (a time budget) still holds complete pairs of every grid."""
    groups: dict[str, list[list[Pair]]] = {}
    last: dict[str, str] = {}
    for p in pairs:
        g = groups.setdefault(p.grid, [])
        if last.get(p.grid) != p.base.scenario_id:
            g.append([])
            last[p.grid] = p.base.scenario_id
        g[-1].append(p)
    keyed = [((k + 0.5) / len(g), name, grp) for name, g in groups.items()
             for k, grp in enumerate(g)]
    return [p for _, _, grp in sorted(keyed, key=lambda t: (t[0], t[1])) for p in grp]


def simulate_pairs(con: duckdb.DuckDBPyConnection, pairs: list[Pair], *, workers: int = 1,
                   timeout_s: float = 300.0, show_progress: bool = True) -> Any:
    """Record the pairs, then simulate every scenario of them not yet in the store."""
    from forge.ns3.simulate import ns3_version
    from forge.ns3.sweep import run_sweep

    store_pairs(con, pairs, ns3_version())
    split_by_id: dict[str, str] = {}
    scns: list[Scenario] = []
    for p in interleave(pairs):
        for s in (p.base, p.changed):
            split_by_id.setdefault(s.scenario_id, pair_split(p))
            scns.append(s)
    return run_sweep(scns, con, workers=workers, timeout_s=timeout_s,
                     split=lambda s: split_by_id[s.scenario_id], show_progress=show_progress)


# A replicate of a pair: the same base and change under another ns-3 RngRun, in grid
# "<grid>@rng+<k>" (so the grids' own figures never count it twice).
REPLICATE_SEP = "@rng+"


def replicate_grid(grid: str, k: int) -> str:
    return f"{grid}{REPLICATE_SEP}{k}"


def base_grid(grid: str) -> str:
    """The grid a pair (or a replicate of one) was drawn from: `pairs` or `hotspot`."""
    return grid.split(REPLICATE_SEP)[0]


def pair_rows(con: duckdb.DuckDBPyConnection, split: str = "all",
              grids: tuple[str, ...] | None = None) -> list[tuple[Any, ...]]:
    """The store's pairs whose two runs are both ok, of `split` (`all`: every split) and of
    `grids` (None: every grid, replicates included), in pair_id order: (tool, args JSON, split,
    grid, description, base run id, base scenario JSON, changed run id, changed scenario
    JSON). The one query behind `stored_pairs` and the effects report's `load_pairs`."""
    where: list[str] = ["b.status = 'ok'", "c.status = 'ok'"]
    params: list[Any] = []
    if split != "all":
        where.append("p.split = ?")
        params.append(split)
    if grids is not None:
        where.append("p.grid IN (SELECT unnest(?))")
        params.append(list(grids))
    return con.execute(
        "SELECT p.tool, p.args, p.split, p.grid, p.description, p.base_run_id, b.scenario, "
        "p.changed_run_id, c.scenario FROM ns3_pairs p "
        "JOIN ns3_runs b ON b.run_id = p.base_run_id "
        "JOIN ns3_runs c ON c.run_id = p.changed_run_id "
        f"WHERE {' AND '.join(where)} ORDER BY p.pair_id", params).fetchall()


def stored_pairs(con: duckdb.DuckDBPyConnection, split: str = "heldout",
                 grids: tuple[str, ...] = ("pairs", "hotspot")) -> list[Pair]:
    """The store's complete pairs of `split` in `grids`, as Pair objects."""
    ensure_table(con)
    return [Pair(Scenario.model_validate_json(b), Scenario.model_validate_json(c), tool,
                 json.loads(args), desc, grid)
            for tool, args, _, grid, desc, _, b, _, c in pair_rows(con, split, grids)]


def replicates(pairs: list[Pair], k: int) -> list[Pair]:
    """Each pair again with both scenarios under RngRun + k: ns-3's run-to-run noise, measured
    on the very networks and changes whose effects the model is judged on."""
    if k < 1:
        raise PairError(f"a replicate needs an RngRun offset >= 1, not {k}")
    out = []
    for p in pairs:
        b = p.base.model_copy(update={"rng_run": p.base.rng_run + k})
        c = p.changed.model_copy(update={"rng_run": p.changed.rng_run + k})
        out.append(Pair(b, c, p.tool, p.args, p.description, replicate_grid(p.grid, k)))
    return out


def main(argv: list[str] | None = None) -> int:
    from forge import db as fdb

    ap = argparse.ArgumentParser(prog="python -m forge.ns3.pairs",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--bases", type=int, default=96, help="grid base scenarios")
    ap.add_argument("--changes", type=int, default=3, help="configure changes per grid base")
    ap.add_argument("--hotspot", type=int, default=48,
                    help="second-distribution base scenarios (0: none)")
    ap.add_argument("--hotspot-changes", type=int, default=1)
    ap.add_argument("--max-ues", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per run")
    ap.add_argument("--db", default=None, help="store (default $FORGE_DB or ./forge.duckdb)")
    ap.add_argument("--dry-run", action="store_true", help="list the pairs, simulate nothing")
    ap.add_argument("--replicate", type=int, default=0, metavar="K",
                    help="instead of new pairs: the store's pairs of --split again under "
                         "RngRun + K (ns-3's own noise on the same changes; the effects report "
                         "reads them, see docs/experiment_model.md)")
    ap.add_argument("--split", default="heldout",
                    help="with --replicate: the pairs' split (calibration | heldout | "
                         "hotspot_test | all)")
    args = ap.parse_args(argv)
    try:
        if args.replicate:
            with fdb.connect(args.db) as con:
                pairs = replicates(stored_pairs(con, args.split), args.replicate)
            if not pairs:
                raise PairError(f"the store holds no pair of split {args.split!r} to replicate")
        else:
            pairs = paired_grid(args.bases, args.changes, args.seed, args.max_ues)
            if args.hotspot:
                pairs += hotspot_grid(args.hotspot, args.hotspot_changes, args.seed,
                                      args.max_ues)
    except PairError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    by_tool: dict[str, int] = {}
    for p in pairs:
        by_tool[p.tool] = by_tool.get(p.tool, 0) + 1
    n_runs = len({s.scenario_id for p in pairs for s in (p.base, p.changed)})
    print(f"{len(pairs)} pairs, {n_runs} distinct scenarios; by tool: "
          + ", ".join(f"{k} {v}" for k, v in sorted(by_tool.items())), flush=True)
    if args.dry_run:
        return 0
    con = fdb.connect(args.db)
    rep = simulate_pairs(con, pairs, workers=args.workers, timeout_s=args.timeout)
    print(f"requested {rep.requested}, skipped {rep.skipped} (already stored), ok {rep.ok}, "
          f"failed {rep.failed}, timeout {rep.timeout}")
    for err in rep.errors[:10]:
        print(f"  {err}")
    con.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

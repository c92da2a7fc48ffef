"""Experiment Models side by side: levels on the corpus's held-out runs, levels and effects of
changes on paired runs (grid pairs and the hotspot sampler's pairs).

    python benchmarks/bench_model_arch.py --model-dir corpora/experiment_model \
        --model-dir build/em/sets --pairs-db build/pairs-grid.duckdb \
        --pairs-db build/pairs-hot.duckdb [--json build/em/arch.json]

    python benchmarks/bench_model_arch.py --model-dir corpora/experiment_model \
        --model-dir build/em/sets-e60 --store build/corpus.duckdb

Held-out figures are read from each model's report.json (written by `forge calibrate` on the
store it was trained from). With `--store` (a corpus store with pairs, such as `make corpus`
builds) every figure is computed here on that store instead, the same runs for every model:
levels on its held-out runs by origin (default grid, handover grid, paired runs) and on the
hotspot sampler's runs, effects on its held-out grid pairs and on every hotspot pair (models
trained on another corpus are compared fairly as long as they never saw these held-out seeds:
the split is a hash of the seed). Otherwise the pair figures are computed here with
forge.experiment_model.effects on every complete pair of each --pairs-db (split `all`: none
of these models was trained on a pair). DL throughput: median APE, over congested UEs, and
Spearman; effects: the sign agreement where ns-3 moves a UE's DL throughput by more than 20 %,
the Spearman of predicted vs ns-3 deltas over all UEs and over the UEs ns-3 moves by > 5 %.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from forge import db as fdb
from forge.experiment_model import ExperimentModel
from forge.experiment_model.effects import effects_section


def _levels(d: dict[str, Any]) -> tuple[float, float, float]:
    m = d["dl_throughput_mbps"]
    return m["median_ape"], m["congested"]["median_ape"], m["spearman"]


def _effects(d: dict[str, Any]) -> tuple[int, float, float, float]:
    m = d["model"]["dl_throughput_mbps"]["overall"]
    return (d["n_pairs"], m["sign_agreement_gt20"], m["spearman_delta"],
            m["spearman_delta_moved_gt5"])


def measure(model_dir: str, pairs_dbs: list[str]) -> dict[str, Any]:
    model = ExperimentModel.load(model_dir)
    rep = json.loads((Path(model_dir) / "report.json").read_text())
    out: dict[str, Any] = {"model_dir": model_dir, "arch": model.arch,
                           "model_hash": model.model_hash[:12],
                           "heldout": _levels(rep["heldout"]),
                           "heldout_delay_median_ape": rep["heldout"]["delay_ms"]["median_ape"]}
    for path in pairs_dbs:
        con = fdb.connect(path, read_only=True)
        sec = effects_section(con, model, "all")
        con.close()
        for name in ("grid", "hotspot"):
            # Each kind of pair from the store that holds most of them (a hotspot sweep also
            # makes a grid pair or two).
            if f"{name}_pairs" in sec and sec[f"{name}_pairs"]["n_pairs"] > \
                    out.get(f"{name}_effects", (0,))[0]:
                out[f"{name}_effects"] = _effects(sec[f"{name}_pairs"])
                out[f"{name}_levels"] = _levels(sec[f"{name}_absolute"]["model"])
    return out


# Where a run comes from, by its scenario seed (forge.ns3.grid, forge.ns3.pairs).
ORIGINS = (("default grid", 0, 500_000_000), ("handover grid", 500_000_000, 600_000_000),
           ("paired runs", 600_000_000, 700_000_000))


def measure_store(model_dir: str, store: str) -> dict[str, Any]:
    """Every figure of `model_dir` on one store's held-out runs and pairs (see the docstring)."""
    from forge.experiment_model.calibrate import evaluate, load_runs

    model = ExperimentModel.load(model_dir)
    con = fdb.connect(store, read_only=True)
    held = load_runs(con, ("heldout",))
    sec = effects_section(con, model, "heldout")
    con.close()
    out: dict[str, Any] = {"model_dir": model_dir, "arch": model.arch,
                           "model_hash": model.model_hash[:12], "heldout_by_origin": {}}
    for name, lo, hi in ORIGINS:
        runs = [r for r in held if lo <= r.scenario.seed < hi]
        if runs:
            ev = evaluate(runs, [p.ues for p in model.predict([r.scenario for r in runs])])
            out["heldout_by_origin"][name] = {"n_runs": len(runs), "dl": _levels(ev),
                                              "delay_median_ape": ev["delay_ms"]["median_ape"]}
    for name in ("grid", "hotspot"):
        if f"{name}_pairs" in sec:
            out[f"{name}_effects"] = _effects(sec[f"{name}_pairs"])
            out[f"{name}_levels"] = _levels(sec[f"{name}_absolute"]["model"])
    return out


def f(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


def pair_cells(r: dict[str, Any]) -> list[str]:
    """A row's hotspot levels and its grid and hotspot effects, as table cells."""
    cells = [" / ".join(f(v) for v in r.get("hotspot_levels", (None,) * 3))]
    for name in ("grid_effects", "hotspot_effects"):
        e = r.get(name)
        cells.append("-" if e is None else f"{e[0]}, " + ", ".join(f(v) for v in e[1:]))
    return cells


def print_store(rows: list[dict[str, Any]]) -> None:
    origins = [n for n, _, _ in ORIGINS if any(n in r["heldout_by_origin"] for r in rows)]
    n_runs = {n: max(r["heldout_by_origin"].get(n, {}).get("n_runs", 0) for r in rows)
              for n in origins}
    print("DL median APE / congested / Spearman (delay median APE) on held-out runs by origin; "
          "effects: pairs, sign > 20 %, Spearman all, moved > 5 %")
    print("| model | " + " | ".join(f"{n} ({n_runs[n]} runs)" for n in origins)
          + " | hotspot runs | held-out grid pairs | hotspot pairs |")
    print("|---|" + "---|" * (len(origins) + 3))
    for r in rows:
        cells = []
        for n in origins:
            o = r["heldout_by_origin"].get(n)
            cells.append("-" if o is None else " / ".join(f(v) for v in o["dl"])
                         + f" ({f(o['delay_median_ape'])})")
        print(f"| {r['model_dir']} ({r['arch']}, {r['model_hash']}) | "
              + " | ".join(cells + pair_cells(r)) + " |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model-dir", action="append", required=True)
    ap.add_argument("--pairs-db", action="append", default=[])
    ap.add_argument("--store", default=None,
                    help="compute every figure on this corpus store's held-out runs and pairs "
                         "(instead of the reports and --pairs-db)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    if args.store:
        rows = [measure_store(d, args.store) for d in args.model_dir]
        print_store(rows)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
        return 0
    rows = [measure(d, args.pairs_db) for d in args.model_dir]
    print("| model | arch | held-out runs: DL APE / congested / Spearman | hotspot runs: same "
          "| grid pairs: n, sign > 20 %, Spearman all, moved > 5 % | hotspot pairs: same |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        cells = [" / ".join(f(v) for v in r["heldout"]), *pair_cells(r)]
        print(f"| {r['model_dir']} ({r['model_hash']}) | {r['arch']} | " + " | ".join(cells)
              + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

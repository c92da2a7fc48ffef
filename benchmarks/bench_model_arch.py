"""Experiment Models side by side: levels on the corpus's held-out runs, levels and effects of
changes on paired runs (grid pairs and the hotspot sampler's pairs).

    python benchmarks/bench_model_arch.py --model-dir corpora/experiment_model \
        --model-dir build/em/sets --pairs-db build/pairs-grid.duckdb \
        --pairs-db build/pairs-hot.duckdb [--json build/em/arch.json]

Held-out figures are read from each model's report.json (written by `forge calibrate` on the
store it was trained from); the pair figures are computed here with
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model-dir", action="append", required=True)
    ap.add_argument("--pairs-db", action="append", default=[])
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    rows = [measure(d, args.pairs_db) for d in args.model_dir]

    def f(v: Any) -> str:
        return "-" if v is None else f"{v:.3f}"

    print("| model | arch | held-out runs: DL APE / congested / Spearman | hotspot runs: same "
          "| grid pairs: n, sign > 20 %, Spearman all, moved > 5 % | hotspot pairs: same |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        cells = [" / ".join(f(v) for v in r["heldout"])]
        cells.append(" / ".join(f(v) for v in r.get("hotspot_levels", (None,) * 3)))
        for name in ("grid_effects", "hotspot_effects"):
            e = r.get(name)
            cells.append("-" if e is None else f"{e[0]}, " + ", ".join(f(v) for v in e[1:]))
        print(f"| {r['model_dir']} ({r['model_hash']}) | {r['arch']} | " + " | ".join(cells)
              + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

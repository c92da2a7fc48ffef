"""What the paired loss does: two models trained on the same store, without and with it.

    python benchmarks/bench_effects.py --pairs-db build/pairs.duckdb --db build/em_pairs.duckdb \\
        [--weight 1.0 [3.0 ...]] [--ensemble 3] [--epochs 35] [--out build/bench_effects]

1. `--db` gets the shipped NS-3 corpus and every run and pair of `--pairs-db`
   (forge.ns3.pairs), so calibration pairs join the calibration runs (split by base seed).
2. Models are calibrated on it into `--out/w0` and `--out/w<weight>` (never into
   corpora/): the same configuration, paired_weight 0 and each `--weight`.
3. Each model (and the shipped one) is evaluated with forge.experiment_model.effects on the
   held-out grid pairs and on the second (hotspot) distribution, which no model trains on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def build_store(db: str, pairs_db: str) -> dict[str, int]:
    from forge import db as fdb
    from forge.ns3.corpus import import_corpus
    from forge.ns3.pairs import ensure_table

    con = fdb.connect(db)
    import_corpus(con)
    ensure_table(con)
    con.execute(f"ATTACH '{pairs_db}' AS src (READ_ONLY)")
    with fdb.transaction(con):
        # Children first: their filter looks at ns3_runs before the new runs are in it.
        for t in ("ns3_cell_kpis", "ns3_ue_kpis", "ns3_runs"):
            con.execute(f"INSERT INTO {t} SELECT * FROM src.{t} WHERE run_id NOT IN "
                        "(SELECT run_id FROM ns3_runs)")
        con.execute("INSERT OR IGNORE INTO ns3_pairs SELECT * FROM src.ns3_pairs")
    counts = {s: int(n) for s, n in con.execute(
        "SELECT split, count(*) FROM ns3_runs WHERE status = 'ok' GROUP BY 1").fetchall()}
    row = con.execute("SELECT count(*) FROM ns3_pairs").fetchone()
    counts["pairs"] = int(row[0]) if row else 0
    con.close()
    return counts


def evaluate_dir(model_dir: str | None, pairs_db: str) -> dict[str, Any]:
    """The shipped model's effect figures (the trained ones come from calibrate's report)."""
    from forge import db as fdb
    from forge.experiment_model import ExperimentModel
    from forge.experiment_model.effects import effects_section

    con = fdb.connect(pairs_db, read_only=True)
    try:
        return effects_section(con, ExperimentModel.load(model_dir), "heldout")
    finally:
        con.close()


def _row(name: str, rep: dict[str, Any]) -> str:
    cells = []
    for part in ("grid_pairs", "hotspot_pairs"):
        r = rep.get(part)
        if r is None:
            cells.append(" " * 30)
            continue
        o = r["model"]["dl_throughput_mbps"]["overall"]
        s20, sp = o["sign_agreement_gt20"], o["spearman_delta"]
        cells.append(f"{r['n_pairs']:>4} {s20 if s20 is not None else float('nan'):>8.3f} "
                     f"{sp if sp is not None else float('nan'):>8.3f}      ")
    a = rep.get("hotspot_absolute", {}).get("model", {}).get("dl_throughput_mbps", {})
    return (f"{name:<16}" + "".join(cells) + f"{a.get('median_ape', float('nan')):>8.3f} "
            f"{(a.get('congested') or {}).get('median_ape') or float('nan'):>8.3f} "
            f"{a.get('spearman', float('nan')):>8.3f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pairs-db", required=True)
    ap.add_argument("--db", default="build/em_pairs.duckdb")
    ap.add_argument("--weight", type=float, nargs="+", default=[1.0],
                    help="paired-loss weights to train beside weight 0")
    ap.add_argument("--ensemble", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=35)
    ap.add_argument("--out", default="build/bench_effects")
    args = ap.parse_args()
    from forge import db as fdb
    from forge.experiment_model.calibrate import CalibrateConfig, calibrate

    print("store:", build_store(args.db, args.pairs_db), flush=True)
    reports: dict[str, Any] = {"shipped": evaluate_dir(None, args.pairs_db)}
    for w in (0.0, *args.weight):
        out = Path(args.out) / f"w{w:g}"
        # The paired loss is the MLP's (the shipped architecture these runs compare against).
        cfg = CalibrateConfig(out_dir=out, ensemble=args.ensemble, epochs=args.epochs,
                              paired_weight=w, arch="mlp")
        con = fdb.connect(args.db)
        rep = calibrate(con, cfg, show_progress=False)
        con.close()
        s = rep["summary"]
        print(f"paired_weight {w:g}: held-out grid DL Spearman {s['heldout_dl_spearman']:.3f}, "
              f"median APE {s['heldout_dl_median_ape']:.3f}, congested "
              f"{s['heldout_dl_congested_median_ape']:.3f}", flush=True)
        # calibrate reports effects itself (held-out grid pairs, hotspot pairs): the store
        # holds the pairs.
        reports[f"paired_weight_{w:g}"] = rep["effects"] | {"calibrate_summary": s}
    print(f"\n{'':<16}{'held-out grid pairs':<36}{'hotspot pairs':<36}hotspot levels (DL)")
    print(f"{'model':<16}" + f"{'n':>4} {'sign>20%':>8} {'spearman':>8}      " * 2
          + f"{'APE':>8} {'cong.':>8} {'spearman':>8}")
    for name, rep in reports.items():
        print(_row(name, rep))
    path = Path(args.out) / "bench_effects.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(reports, indent=1) + "\n")
    print(f"full report: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

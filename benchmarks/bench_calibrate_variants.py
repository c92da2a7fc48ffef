"""Calibration variants side by side: held-out and calibration DL figures of models trained on
one store with a few `CalibrateConfig` fields changed.

    python benchmarks/bench_calibrate_variants.py --db build/corpus.duckdb \
        --variant epochs=30 --variant weight_decay=1e-2 [--out-root build/variants]

Each `--variant` is comma-separated FIELD=VALUE pairs of `forge.experiment_model.calibrate.
CalibrateConfig` (values parsed as numbers where they look like numbers); each model goes to
OUT_ROOT/<variant> with its report.json. Prints, per variant, DL median APE / congested / Spearman
on the held-out runs and the congested median APE on the calibration runs: the gap between the
two says how much the model fits runs it has seen beyond what carries to unseen ones.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from forge import db as fdb
from forge.experiment_model.calibrate import CalibrateConfig, calibrate


def parse_variant(text: str) -> dict[str, Any]:
    fields = {f.name for f in dataclasses.fields(CalibrateConfig)}
    out: dict[str, Any] = {}
    for part in filter(None, text.split(",")):
        key, _, raw = part.partition("=")
        if key not in fields:
            raise SystemExit(f"{key!r} is not a CalibrateConfig field")
        try:
            out[key] = int(raw)
        except ValueError:
            try:
                out[key] = float(raw)
            except ValueError:
                out[key] = raw
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--db", required=True)
    ap.add_argument("--variant", action="append", required=True)
    ap.add_argument("--out-root", default="build/variants")
    args = ap.parse_args()
    print("| variant | held-out DL APE / congested / Spearman | calibration congested APE |")
    print("|---|---|---|")
    for text in args.variant:
        kw = parse_variant(text)
        con = fdb.connect(args.db)
        try:
            rep = calibrate(con, CalibrateConfig(out_dir=Path(args.out_root) / text, **kw),
                            show_progress=False)
        finally:
            con.close()
        h, c = rep["heldout"]["dl_throughput_mbps"], rep["calibration"]["dl_throughput_mbps"]
        print(f"| {text} | {h['median_ape']:.3f} / {h['congested']['median_ape']:.3f} / "
              f"{h['spearman']:.3f} | {c['congested']['median_ape']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Print the Experiment Model figures of docs/BENCHMARKS.md from a calibration report.

    python benchmarks/em_report_tables.py [corpora/experiment_model/report.json]

The report itself is written by `python -m forge calibrate`; this only formats it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

KPIS = ("dl_throughput_mbps", "ul_throughput_mbps", "delay_ms", "ul_delay_ms", "loss_ratio",
        "sinr_db", "rsrp_dbm", "handovers")


def f(x: Any) -> str:
    return "-" if x is None else f"{x:.3f}"


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "corpora/experiment_model/report.json")
    r = json.loads(path.read_text())
    print(f"Model hash `{r['model_hash'][:16]}`; runs: {r['n_runs']}; UEs: {r['n_ues']}.\n")
    h = r["heldout"]["dl_throughput_mbps"]
    d = r["heldout"]["delay_ms"]
    print("| target (held-out) | required | measured |\n|---|---|---|")
    print(f"| DL throughput Spearman, all UEs | >= 0.95 | {f(h['spearman'])} |")
    print(f"| DL throughput median APE, all UEs | <= 0.10 | {f(h['median_ape'])} |")
    print(f"| DL throughput median APE, congested UEs | <= 0.20 | "
          f"{f(h['congested']['median_ape'])} |")
    print(f"| delay median APE, all UEs | <= 0.15 | {f(d['median_ape'])} |\n")
    nf = r["noise_floor"]
    print("Median APE over all UEs / over congested UEs, side by side (held-out split). "
          "`noise floor` is ns-3 itself: the same scenario under RngRun 1-4 "
          f"({nf['n_scenarios']} scenarios), deviation from the per-UE mean.\n")
    print("| KPI | Experiment Model | congested | offered-load baseline | congested | "
          "physics prior | congested | ns-3 noise floor | congested | model Spearman | "
          "model MAE |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for k in KPIS:
        m, b, p = r["heldout"][k], r["baseline_offered_load"][k], r["baseline_physics"][k]
        n = nf.get(k, {})
        print(f"| {k} | {f(m.get('median_ape'))} | {f(m['congested'].get('median_ape'))} | "
              f"{f(b.get('median_ape'))} | {f(b['congested'].get('median_ape'))} | "
              f"{f(p.get('median_ape'))} | {f(p['congested'].get('median_ape'))} | "
              f"{f(n.get('median_ape'))} | {f(n.get('congested', {}).get('median_ape'))} | "
              f"{f(m.get('spearman'))} | {f(m.get('mae'))} |")
    print(f"\nServing cell accuracy (held-out): {f(r['heldout_serving_cell_accuracy'])}. "
          f"Calibration split, for overfitting: DL median APE "
          f"{f(r['calibration']['dl_throughput_mbps']['median_ape'])}, congested "
          f"{f(r['calibration']['dl_throughput_mbps']['congested']['median_ape'])}, delay "
          f"{f(r['calibration']['delay_ms']['median_ape'])}.\n")
    print("Held-out breakdown (DL median APE all / congested, delay median APE):\n")
    print("| group | value | UEs | DL APE | DL APE congested | delay APE |")
    print("|---|---|---|---|---|---|")
    for group, rows in r["heldout_breakdown"].items():
        for v, row in rows.items():
            print(f"| {group} | {v} | {row['n']} | {f(row['dl_median_ape'])} | "
                  f"{f(row['dl_congested_median_ape'])} | {f(row['delay_median_ape'])} |")


if __name__ == "__main__":
    main()

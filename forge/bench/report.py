"""The bench report as files: report.json, report.md (the table) and success_by_difficulty.png."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _ci(a: dict[str, Any]) -> str:
    ci = a.get("ci95")
    if not ci or ci[0] is None:
        return _pct(a.get("success_rate"))
    return f"{_pct(a['success_rate'])} [{_pct(ci[0])}, {_pct(ci[1])}]"


def markdown(rep: dict[str, Any]) -> str:
    ts = rep["task_set"]
    k = rep["config"]["k"]
    sampled = (f", levels {ts['levels']}" if ts.get("levels") else "") + \
        (", sampled" if ts["sampled"] else "")
    lines = [f"Task set {ts['version']} ({ts['n_tasks']} tasks{sampled}"
             f", k = {k}, Experiment Model {rep['model_hash']}). Success (%) with its 95 % "
             "bootstrap interval over tasks; L1/L2/L3, action and qa are success rates (%).", "",
             f"| agent | success [95 % CI] | pass^{k} | SPL | L1 | L2 | L3 | action | qa | "
             "hand-written | tool calls | collateral UEs |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, a in rep["agents"].items():
        d, kd, src = a["by_difficulty"], a["by_kind"], a["by_source"]

        def g(block: dict[str, Any], key: str) -> str:
            return _pct(block[key]["success_rate"]) if key in block else "-"

        lines.append(
            f"| {name} | {_ci(a)} | {_pct(a['pass_k'])} | {_pct(a['spl'])} | {g(d, 'L1')} | "
            f"{g(d, 'L2')} | {g(d, 'L3')} | {g(kd, 'action')} | {g(kd, 'qa')} | "
            f"{g(src, 'handwritten')} | {a['calls']['mean_tool_calls']} | "
            f"{a['collateral']['mean_ues']} |")
    lines += ["", "Verifier stage pass rates (share of episodes passing each stage) and "
              "termination reasons:", "",
              "| agent | format | execution | outcome | claims | terminations |",
              "|---|---|---|---|---|---|"]
    for name, a in rep["agents"].items():
        s = a["stage_pass_rate"]
        term = ", ".join(f"{k2} {v}" for k2, v in a["termination"].items())
        lines.append(f"| {name} | {_pct(s['format'])} | {_pct(s['execution'])} | "
                     f"{_pct(s['outcome'])} | {_pct(s['claims'])} | {term} |")
    paired = rep.get("paired")
    if paired:
        lines += ["", f"Paired difference to {paired['base']} on the same tasks and seeds "
                      "(percentage points; 95 % bootstrap interval over tasks; tasks solved more "
                      "often / less often than it):", "",
                  "| agent | difference [95 % CI] | better on | worse on |", "|---|---|---|---|"]
        for name, d in paired["agents"].items():
            if d is None:
                lines.append(f"| {name} | - | - | - |")
                continue
            lines.append(f"| {name} | {100 * d['difference']:+.1f} "
                         f"[{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}] | "
                         f"{d['better_on']} | {d['worse_on']} |")
    chk = rep.get("ns3_check")
    if chk:
        lines += ["", f"ns-3 re-check ({chk['n_tasks']} tasks, trial 0; "
                      f"{chk['simulations']} ns-3 runs): success (%) under the Experiment Model vs "
                      "under ns-3 on the same episodes; Spearman rank correlation of agents: "
                      f"{chk['rank_correlation_spearman']}.", "",
                  "| agent | n | success (model) | success (ns-3) | agreement |",
                  "|---|---|---|---|---|"]
        for name, c in chk["agents"].items():
            lines.append(f"| {name} | {c['n']} | {_pct(c['success_model'])} | "
                         f"{_pct(c['success_ns3'])} | {_pct(c['agreement'])} |")
    return "\n".join(lines) + "\n"


def plot(rep: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(rep["agents"])
    levels = ["L1", "L2", "L3"]
    x = np.arange(len(names))
    w = 0.26
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(names) + 2), 3.8))
    for j, lv in enumerate(levels):
        vals = [100 * (rep["agents"][n]["by_difficulty"].get(lv, {}).get("success_rate") or 0)
                for n in names]
        ax.bar(x + (j - 1) * w, vals, w, label=lv)
    ax.set_xticks(x, [n if len(n) < 22 else n[:20] + ".." for n in names], rotation=20,
                  ha="right")
    ax.set_ylabel("success (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"forge bench {rep['task_set']['version']}: success by difficulty")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(rep: dict[str, Any], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md",
             "png": out / "success_by_difficulty.png"}
    paths["json"].write_text(json.dumps(rep, indent=1, sort_keys=False, default=str) + "\n")
    paths["md"].write_text(markdown(rep))
    plot(rep, paths["png"])
    return paths

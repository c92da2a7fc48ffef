"""The tool catalogue: every tool declared once, as data.

Each tool has a name, a description (what an LLM reads), an effect class and the JSON Schemas of
its arguments and of its result. `schemas/tools/<name>.json` and `schemas/tools.openai.json` are
generated from this table (`python -m forge.gym.catalogue --write`) and a test keeps them equal.
The handlers that implement the tools live in `forge.gym.handlers`, keyed by the same names; a
test checks that the two sets are identical and that every result validates against its schema.

Effect classes:
- observe: reads the (measured) state; never changes it.
- compute: a pure reasoning helper (statistics, checks, predictions); never changes the state.
- configure: changes the network configuration; every later observation reflects the Experiment
  Model's prediction of the new state. `rollback` undoes the last configure call.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from forge.scenario import BANDWIDTHS_RB, QCIS

Effect = Literal["observe", "compute", "configure"]
REPO = Path(__file__).resolve().parents[2]
TOOLS_DIR = REPO / "schemas" / "tools"
OPENAI_FILE = REPO / "schemas" / "tools.openai.json"


@dataclass(frozen=True)
class ToolSpec:
    name: str
    effect: Effect
    description: str
    args: dict[str, Any]
    result: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "effect": self.effect, "description": self.description,
                "args": self.args, "result": self.result}

    def to_openai(self) -> dict[str, Any]:
        """OpenAI function-calling format (also what TRL's `tools` column holds)."""
        return {"type": "function", "function": {
            "name": self.name,
            "description": f"[{self.effect}] {self.description}",
            "parameters": self.args,
        }}


# --- schema building blocks ----------------------------------------------------------------------
def obj(props: dict[str, Any], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": props,
            "required": [k for k in props if k not in optional], "additionalProperties": False}


def arr(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


NUM: dict[str, Any] = {"type": "number"}
NUM_NULL: dict[str, Any] = {"type": ["number", "null"]}
INT: dict[str, Any] = {"type": "integer"}
BOOL: dict[str, Any] = {"type": "boolean"}
STR: dict[str, Any] = {"type": "string"}
CELL: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": 6,
                        "description": "Cell index (0-based)."}
UE: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": 63,
                      "description": "UE index (0-based)."}
QCI: dict[str, Any] = {"type": "integer", "enum": list(QCIS),
                       "description": "QCI of the slice (1-4 GBR, 5-9 non-GBR)."}
K: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": 64, "default": 5,
                     "description": "How many entries to return."}
NO_ARGS = obj({})

UE_METRIC_ENUM = ["dl_throughput_mbps", "ul_throughput_mbps", "delay_ms", "loss_ratio",
                  "rsrp_dbm", "sinr_db", "cqi", "dl_satisfaction", "handovers"]
UE_METRIC: dict[str, Any] = {"type": "string", "enum": UE_METRIC_ENUM,
                             "description": "Per-UE KPI."}

UE_KPIS = obj({
    "ue": INT, "serving_cell": INT, "dl_offered_mbps": NUM, "dl_throughput_mbps": NUM,
    "ul_offered_mbps": NUM, "ul_throughput_mbps": NUM, "delay_ms": NUM_NULL, "loss_ratio": NUM,
    "rsrp_dbm": NUM_NULL, "sinr_db": NUM_NULL, "cqi": INT, "handovers": NUM,
    "dl_satisfaction": NUM, "qci": INT, "sla_ok": BOOL,
})
CELL_KPIS = obj({
    "cell": INT, "active": BOOL, "n_ues": INT, "dl_offered_mbps": NUM, "dl_throughput_mbps": NUM,
    "ul_throughput_mbps": NUM, "mean_delay_ms": NUM_NULL, "mean_sinr_db": NUM_NULL,
    "prb_utilization": NUM,
})
SUMMARY = obj({
    "n_cells": INT, "n_active_cells": INT, "n_ues": INT, "dl_offered_mbps": NUM,
    "dl_throughput_mbps": NUM, "ul_throughput_mbps": NUM, "mean_delay_ms": NUM_NULL,
    "min_dl_satisfaction": NUM, "sla_violations": INT, "total_power_w": NUM,
    "max_prb_utilization": NUM,
})
CHANGE_RESULT = obj({
    "applied": BOOL, "change_id": INT, "description": STR,
    "changed": arr(obj({"entity": STR, "field": STR, "old": {}, "new": {}})),
})
CONFIGURE_CALL: dict[str, Any] = obj({
    "tool": {"type": "string", "description": "Name of a configure tool."},
    "args": {"type": "object", "description": "Arguments of that tool."},
})
CONFIGURE_CALL["description"] = "The configure call to evaluate, as {tool, args}."

# --- the catalogue -------------------------------------------------------------------------------
_T = ToolSpec
TOOLS: tuple[ToolSpec, ...] = (
    # ---------------------------------------------------------------- observe (20)
    _T("list_cells", "observe",
       "List every cell with its position, radio configuration and number of served UEs.",
       NO_ARGS,
       obj({"cells": arr(obj({"cell": INT, "active": BOOL, "x_m": NUM, "y_m": NUM,
                              "tx_power_dbm": NUM, "bandwidth_rbs": INT, "scheduler": STR,
                              "n_ues": INT}))})),
    _T("list_ues", "observe",
       "List the UEs (optionally only those served by one cell) with serving cell, slice (QCI), "
       "application server and offered downlink rate.",
       obj({"cell": CELL}, optional=("cell",)),
       obj({"ues": arr(obj({"ue": INT, "serving_cell": INT, "qci": INT, "server": STR,
                            "mobility": STR, "dl_offered_mbps": NUM}))})),
    _T("get_cell_config", "observe",
       "Full configuration of one cell: power, bandwidth, scheduler, handover parameters.",
       obj({"cell": CELL}),
       obj({"cell": INT, "active": BOOL, "x_m": NUM, "y_m": NUM, "tx_power_dbm": NUM,
            "bandwidth_rbs": INT, "scheduler": STR, "ho_algorithm": STR,
            "ho_hysteresis_db": NUM, "ho_ttt_ms": INT})),
    _T("get_ue_config", "observe",
       "Full configuration of one UE: position, mobility, offered rates, packet size, QCI, "
       "server.",
       obj({"ue": UE}),
       obj({"ue": INT, "x_m": NUM, "y_m": NUM, "mobility": STR, "speed_mps": NUM,
            "dl_rate_mbps": NUM, "ul_rate_mbps": NUM, "packet_size_bytes": INT, "qci": INT,
            "server": STR})),
    _T("get_cell_kpis", "observe",
       "Measured KPIs of one cell: served UEs, offered and delivered throughput, mean delay and "
       "SINR, PRB utilisation.",
       obj({"cell": CELL}), CELL_KPIS),
    _T("get_ue_kpis", "observe",
       "Measured KPIs of one UE: throughput (DL/UL), end-to-end delay, loss, RSRP, SINR, CQI, "
       "handovers, satisfaction (delivered/offered) and SLA status.",
       obj({"ue": UE}), UE_KPIS),
    _T("get_radio_quality", "observe",
       "Radio quality of one UE on its serving cell: RSRP, SINR, CQI and the spectral efficiency "
       "of that CQI.",
       obj({"ue": UE}),
       obj({"ue": INT, "serving_cell": INT, "rsrp_dbm": NUM_NULL, "sinr_db": NUM_NULL,
            "cqi": INT, "spectral_efficiency_bps_hz": NUM})),
    _T("get_cell_radio_quality", "observe",
       "Radio quality distribution over the UEs of one cell: mean/min SINR and RSRP and a CQI "
       "histogram (low 0-6, mid 7-9, high 10-15).",
       obj({"cell": CELL}),
       obj({"cell": INT, "n_ues": INT, "mean_sinr_db": NUM_NULL, "min_sinr_db": NUM_NULL,
            "mean_rsrp_dbm": NUM_NULL, "min_rsrp_dbm": NUM_NULL,
            "cqi_histogram": obj({"low": INT, "mid": INT, "high": INT})})),
    _T("get_cell_load", "observe",
       "Load of one cell: PRB utilisation, offered load against its estimated capacity, and "
       "whether it is overloaded (PRB utilisation >= 0.9).",
       obj({"cell": CELL}),
       obj({"cell": INT, "active": BOOL, "n_ues": INT, "prb_utilization": NUM,
            "dl_offered_mbps": NUM, "dl_capacity_mbps": NUM_NULL, "overloaded": BOOL})),
    _T("get_network_load", "observe",
       "PRB utilisation and UE count of every cell.",
       NO_ARGS,
       obj({"cells": arr(obj({"cell": INT, "active": BOOL, "n_ues": INT,
                              "prb_utilization": NUM, "overloaded": BOOL}))})),
    _T("get_neighbors", "observe",
       "Neighbour relations of a cell: other cells with their distance and how many of this "
       "cell's UEs hear them within 6 dB of the serving cell (handover candidates).",
       obj({"cell": CELL}),
       obj({"cell": INT, "neighbors": arr(obj({"cell": INT, "distance_m": NUM, "active": BOOL,
                                               "ues_within_6db": INT}))})),
    _T("get_handover_stats", "observe",
       "Handover configuration and handover counts per cell (or for one cell).",
       obj({"cell": CELL}, optional=("cell",)),
       obj({"cells": arr(obj({"cell": INT, "ho_algorithm": STR, "ho_hysteresis_db": NUM,
                              "ho_ttt_ms": INT, "n_mobile_ues": INT, "handovers": NUM})),
            "total_handovers": NUM})),
    _T("get_alarms", "observe",
       "Active alarms derived from KPI thresholds: cell down, cell overload (PRB >= 0.9), UE low "
       "SINR (< 0 dB), high loss (> 5 %), delay over the QCI budget, low throughput (< 80 % of "
       "offered).",
       obj({"severity": {"type": "string", "enum": ["critical", "major", "minor"],
                         "description": "Only alarms of this severity."}},
           optional=("severity",)),
       obj({"count": INT, "alarms": arr(obj({"severity": STR, "type": STR, "entity": STR,
                                             "value": NUM_NULL, "threshold": NUM_NULL}))})),
    _T("get_slice_membership", "observe",
       "Which UEs belong to each slice (QCI), and whether the slice is GBR.",
       obj({"qci": QCI}, optional=("qci",)),
       obj({"slices": arr(obj({"qci": INT, "gbr": BOOL, "n_ues": INT, "ues": arr(INT)}))})),
    _T("get_slice_sla_status", "observe",
       "SLA status per slice: delay budget of the QCI, loss budget, violations and the violating "
       "UEs.",
       obj({"qci": QCI}, optional=("qci",)),
       obj({"slices": arr(obj({"qci": INT, "n_ues": INT, "delay_budget_ms": NUM,
                               "loss_budget": NUM, "mean_delay_ms": NUM_NULL,
                               "violations": INT, "violating_ues": arr(INT)}))})),
    _T("get_edge_placement", "observe",
       "Where each UE's application server runs (edge or cloud), the two core-to-server delays "
       "and each UE's measured end-to-end delay.",
       NO_ARGS,
       obj({"edge_delay_ms": NUM, "cloud_delay_ms": NUM,
            "ues": arr(obj({"ue": INT, "server": STR, "qci": INT, "delay_ms": NUM_NULL}))})),
    _T("get_energy_consumption", "observe",
       "Power drawn by each cell and in total, from the EARTH base-station power model "
       "(a model, not a measurement).",
       NO_ARGS,
       obj({"model": STR, "total_power_w": NUM,
            "cells": arr(obj({"cell": INT, "active": BOOL, "tx_power_dbm": NUM, "load": NUM,
                              "power_w": NUM}))})),
    _T("get_network_summary", "observe",
       "Network-wide KPIs: cells, UEs, total offered and delivered throughput, mean delay, "
       "worst satisfaction, SLA violations, total power, highest PRB utilisation.",
       NO_ARGS, SUMMARY),
    _T("get_change_history", "observe",
       "The configuration changes applied in this session, oldest first, and whether a rollback "
       "is possible.",
       NO_ARGS,
       obj({"can_rollback": BOOL,
            "changes": arr(obj({"change_id": INT, "tool": STR, "args": {"type": "object"},
                                "description": STR}))})),
    _T("get_ue_measurements", "observe",
       "A UE's measurement report: RSRP from every cell (null for cells that are off).",
       obj({"ue": UE}),
       obj({"ue": INT, "serving_cell": INT,
            "cells": arr(obj({"cell": INT, "active": BOOL, "rsrp_dbm": NUM_NULL}))})),
    # ---------------------------------------------------------------- compute (10)
    _T("compute_percentile", "compute",
       "Percentile of a per-UE KPI over all UEs or the UEs of one cell.",
       obj({"metric": UE_METRIC,
            "p": {"type": "number", "minimum": 0, "maximum": 100, "description": "Percentile."},
            "cell": CELL}, optional=("cell",)),
       obj({"metric": STR, "p": NUM, "n": INT, "value": NUM_NULL})),
    _T("aggregate_kpi", "compute",
       "Mean, min, max or sum of a per-UE KPI over all UEs, one cell's UEs or one slice's UEs.",
       obj({"metric": UE_METRIC,
            "agg": {"type": "string", "enum": ["mean", "min", "max", "sum"]},
            "cell": CELL, "qci": QCI}, optional=("cell", "qci")),
       obj({"metric": STR, "agg": STR, "n": INT, "value": NUM_NULL})),
    _T("check_sla", "compute",
       "Check SLAs (delay within the QCI budget, loss <= 1 %, GBR UEs get >= 95 % of their rate) "
       "for one UE, one slice, or all UEs; returns the violations with their reasons.",
       obj({"ue": UE, "qci": QCI}, optional=("ue", "qci")),
       obj({"checked": INT, "violations": INT,
            "results": arr(obj({"ue": INT, "qci": INT, "ok": BOOL, "delay_ms": NUM_NULL,
                                "delay_budget_ms": NUM, "loss_ratio": NUM,
                                "dl_satisfaction": NUM, "reasons": arr(STR)}))})),
    _T("estimate_capacity", "compute",
       "Closed-form DL capacity estimate of a cell for its current UEs, optionally under another "
       "bandwidth or transmit power (Shannon with an SNR gap, max 5.55 bit/s/Hz).",
       obj({"cell": CELL, "bandwidth_rbs": {"type": "integer", "enum": list(BANDWIDTHS_RB)},
            "tx_power_dbm": {"type": "number", "minimum": 0, "maximum": 46}},
           optional=("bandwidth_rbs", "tx_power_dbm")),
       obj({"cell": INT, "bandwidth_rbs": INT, "tx_power_dbm": NUM, "n_ues": INT,
            "capacity_mbps": NUM_NULL, "offered_mbps": NUM, "headroom_mbps": NUM_NULL})),
    _T("rank_worst_ues", "compute",
       "The k UEs with the worst value of a KPI (lowest throughput/SINR/RSRP/CQI/satisfaction, "
       "highest delay/loss/handovers).",
       obj({"metric": UE_METRIC, "k": K, "cell": CELL}, optional=("k", "cell")),
       obj({"metric": STR, "ranking": arr(obj({"ue": INT, "serving_cell": INT,
                                                "value": NUM_NULL}))})),
    _T("rank_busiest_cells", "compute",
       "The k active cells with the highest PRB utilisation.",
       obj({"k": K}, optional=("k",)),
       obj({"ranking": arr(obj({"cell": INT, "prb_utilization": NUM, "dl_throughput_mbps": NUM,
                                "n_ues": INT}))})),
    _T("what_if", "compute",
       "Predict, with the Experiment Model, the KPIs after a proposed configure call without "
       "applying it: network summary before/after, per-cell and most-affected-UE changes, and "
       "whether the prediction is within the model's calibration domain.",
       obj({"change": CONFIGURE_CALL}),
       obj({"change": {"type": "object"}, "before": SUMMARY, "after": SUMMARY,
            "cells": arr(obj({"cell": INT, "prb_before": NUM, "prb_after": NUM,
                              "dl_throughput_before": NUM, "dl_throughput_after": NUM})),
            "ues": arr(obj({"ue": INT, "dl_throughput_before": NUM, "dl_throughput_after": NUM,
                            "delay_before": NUM_NULL, "delay_after": NUM_NULL})),
            "in_domain": BOOL, "max_uncertainty": NUM})),
    _T("kpi_delta", "compute",
       "Predicted network KPIs now versus a baseline (the initial state, or the state before "
       "the last change), and their difference.",
       obj({"baseline": {"type": "string", "enum": ["initial", "previous"],
                         "default": "initial"}}, optional=("baseline",)),
       obj({"baseline": STR, "before": SUMMARY, "now": SUMMARY,
            "delta": {"type": "object", "additionalProperties": NUM}})),
    _T("estimate_energy_saving", "compute",
       "Power saved by switching a cell off (EARTH model) and where its UEs would be re-homed "
       "(strongest remaining cell).",
       obj({"cell": CELL}),
       obj({"cell": INT, "feasible": BOOL, "power_saved_w": NUM, "ues_rehomed": INT,
            "rehomed_to": arr(obj({"cell": INT, "n_ues": INT}))})),
    _T("sinr_to_cqi", "compute",
       "Map a SINR (dB) to the CQI an LTE UE would report and that CQI's spectral efficiency.",
       obj({"sinr_db": {"type": "number", "minimum": -50, "maximum": 60}}),
       obj({"sinr_db": NUM, "cqi": INT, "spectral_efficiency_bps_hz": NUM})),
    # ---------------------------------------------------------------- configure (12)
    _T("set_tx_power", "configure",
       "Set a cell's transmit power (dBm, 0-46).",
       obj({"cell": CELL, "tx_power_dbm": {"type": "number", "minimum": 0, "maximum": 46}}),
       CHANGE_RESULT),
    _T("set_bandwidth", "configure",
       "Set a cell's DL/UL bandwidth in resource blocks (6, 15, 25, 50, 75 or 100).",
       obj({"cell": CELL, "bandwidth_rbs": {"type": "integer", "enum": list(BANDWIDTHS_RB)}}),
       CHANGE_RESULT),
    _T("set_scheduler", "configure",
       "Set a cell's MAC scheduler: pf (proportional fair), rr (round robin), pss or cqa "
       "(QoS-aware, honour GBR).",
       obj({"cell": CELL, "scheduler": {"type": "string", "enum": ["pf", "rr", "pss", "cqa"]}}),
       CHANGE_RESULT),
    _T("set_handover_params", "configure",
       "Set a cell's A3 handover hysteresis (dB, 0-15) and/or time-to-trigger (ms, 0-5120).",
       obj({"cell": CELL, "hysteresis_db": {"type": "number", "minimum": 0, "maximum": 15},
            "ttt_ms": {"type": "integer", "minimum": 0, "maximum": 5120}},
           optional=("hysteresis_db", "ttt_ms")),
       CHANGE_RESULT),
    _T("set_handover_algorithm", "configure",
       "Enable (a3_rsrp) or disable (none) handovers on a cell.",
       obj({"cell": CELL, "algorithm": {"type": "string", "enum": ["none", "a3_rsrp"]}}),
       CHANGE_RESULT),
    _T("force_handover", "configure",
       "Move a UE to a target cell. The network has no per-UE attachment override (UEs camp on "
       "the strongest cell), so this steers power: the target cell's power is raised (or the "
       "serving cell's lowered) just enough for the target to become the UE's strongest cell; "
       "other UEs near the border may move too (reported).",
       obj({"ue": UE, "target_cell": CELL}),
       CHANGE_RESULT),
    _T("set_cell_state", "configure",
       "Switch a cell on or off (energy saving); its UEs move to the strongest remaining cell. "
       "The last active cell cannot be switched off.",
       obj({"cell": CELL, "active": BOOL}),
       CHANGE_RESULT),
    _T("set_ue_qci", "configure",
       "Move a UE to another slice by changing its bearer QCI (1-4 GBR, 5-9 non-GBR).",
       obj({"ue": UE, "qci": QCI}),
       CHANGE_RESULT),
    _T("set_ue_server", "configure",
       "Place a UE's application on the edge host (low delay) or the cloud (edge offload).",
       obj({"ue": UE, "server": {"type": "string", "enum": ["edge", "cloud"]}}),
       CHANGE_RESULT),
    _T("shape_traffic", "configure",
       "Traffic shaping: cap a UE's DL (and optionally UL) rate; rates below the cap are kept.",
       obj({"ue": UE,
            "max_dl_mbps": {"type": "number", "exclusiveMinimum": 0, "maximum": 150},
            "max_ul_mbps": {"type": "number", "minimum": 0, "maximum": 50}},
           optional=("max_ul_mbps",)),
       CHANGE_RESULT),
    _T("graceful_degradation", "configure",
       "Scale down the DL rate of every non-GBR UE of a cell by a factor (0.1-1), protecting "
       "GBR slices, to relieve an overloaded cell.",
       obj({"cell": CELL, "factor": {"type": "number", "minimum": 0.1, "maximum": 1.0}}),
       CHANGE_RESULT),
    _T("rollback", "configure",
       "Undo the last configuration change (fails if there is none).",
       NO_ARGS,
       obj({"applied": BOOL, "change_id": INT, "description": STR,
            "changes_left": INT})),
)

BY_NAME: dict[str, ToolSpec] = {t.name: t for t in TOOLS}
CONFIGURE_TOOLS = tuple(t.name for t in TOOLS if t.effect == "configure")


def openai_tools() -> list[dict[str, Any]]:
    return [t.to_openai() for t in TOOLS]


def render(obj_: Any) -> str:
    return json.dumps(obj_, indent=2, sort_keys=False) + "\n"


def generated_files() -> dict[Path, str]:
    """Every schema file this catalogue generates, with its exact content."""
    files = {TOOLS_DIR / f"{t.name}.json": render(t.to_json()) for t in TOOLS}
    files[OPENAI_FILE] = render(openai_tools())
    return files


def write_files() -> list[Path]:
    TOOLS_DIR.mkdir(parents=True, exist_ok=True)
    out = []
    for path, text in generated_files().items():
        path.write_text(text)
        out.append(path)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m forge.gym.catalogue",
                                 description="Write schemas/tools/*.json and tools.openai.json.")
    ap.add_argument("--write", action="store_true", help="(re)write the schema files")
    args = ap.parse_args(argv)
    if args.write:
        for p in write_files():
            print(p.relative_to(REPO))
    else:
        print(f"{len(TOOLS)} tools; use --write to generate the schema files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Implementations of the 42 tools declared in `forge.gym.catalogue`.

Observe and compute handlers are `f(env, args) -> result` and only read: the measured view of the
current step (`env.measured()`, model prediction plus seeded noise) or, for predictions, the
model itself. Configure handlers are pure functions `f(scenario, args) -> Change` that return the
new Scenario without touching the env; the env commits it (or `what_if` only predicts it), so a
configure call and its `what_if` share one code path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError

from forge.db import ForgeError
from forge.experiment_model import physics
from forge.gym import kpis as K
from forge.scenario import GBR_QCIS, CellConfig, Scenario, UeConfig

if TYPE_CHECKING:
    from forge.gym.env import NetworkEnv


class ToolError(ForgeError):
    """A tool call the env refuses: becomes a structured error observation, never a crash."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


@dataclass
class Change:
    scenario: Scenario
    description: str
    changed: list[dict[str, Any]] = field(default_factory=list)


# --- helpers -------------------------------------------------------------------------------------
def _cell(scn: Scenario, args: dict[str, Any], key: str = "cell") -> int:
    c = int(args[key])
    if c >= len(scn.cells):
        raise ToolError("out_of_range", f"{key} {c} does not exist: the network has "
                        f"{len(scn.cells)} cells (0-{len(scn.cells) - 1})", key)
    return c


def _ue(scn: Scenario, args: dict[str, Any], key: str = "ue") -> int:
    u = int(args[key])
    if u >= len(scn.ues):
        raise ToolError("out_of_range", f"{key} {u} does not exist: the network has "
                        f"{len(scn.ues)} UEs (0-{len(scn.ues) - 1})", key)
    return u


def _rebuild(scn: Scenario, cells: list[Any] | None = None, ues: list[Any] | None = None
             ) -> Scenario:
    """Validated copy (model_copy does not validate; the Scenario's invariants must hold).

    Only the entries a handler replaced are validated again, then the scenario-wide checks:
    the others are the scenario's own objects, already valid. Dumping and re-validating the
    whole scenario cost ~0.8 ms per configure call, about 5 % of a synthesis run.
    """
    upd: dict[str, Any] = {}
    for name, new, old, cls in (("cells", cells, scn.cells, CellConfig),
                                ("ues", ues, scn.ues, UeConfig)):
        if new is None:
            continue
        upd[name] = []
        # Handlers replace entries, never add or remove one (strict zip says so if one does).
        for i, (x, o) in enumerate(zip(new, old, strict=True)):
            try:
                upd[name].append(x if x is o else cls.model_validate(x.model_dump()))
            except ValidationError as e:
                raise _invalid(e, f"{name}.{i}.") from e
    out = scn.model_copy(update=upd)
    try:
        out.check_consistent()
    except ValueError as e:
        raise ToolError("invalid_state", f"the change would make the network invalid: {e}"
                        ) from e
    return out


def _invalid(e: ValidationError, prefix: str) -> ToolError:
    err = e.errors()[0]
    where = prefix + ".".join(str(x) for x in err["loc"])
    return ToolError("invalid_state", f"the change would make the network invalid: "
                     f"{where}: {err['msg']}")


def _set_cell(scn: Scenario, c: int, **upd: Any) -> tuple[Scenario, list[dict[str, Any]]]:
    old = scn.cells[c]
    cells = list(scn.cells)
    cells[c] = old.model_copy(update=upd)
    changed = [{"entity": f"cell:{c}", "field": k, "old": getattr(old, k), "new": v}
               for k, v in upd.items()]
    return _rebuild(scn, cells=cells), changed


def _set_ue(scn: Scenario, u: int, **upd: Any) -> tuple[Scenario, list[dict[str, Any]]]:
    old = scn.ues[u]
    ues = list(scn.ues)
    ues[u] = old.model_copy(update=upd)
    changed = [{"entity": f"ue:{u}", "field": k, "old": getattr(old, k), "new": v}
               for k, v in upd.items()]
    return _rebuild(scn, ues=ues), changed


def _summary(v: K.KpiView) -> dict[str, Any]:
    n = v.network
    return {k: n[k] for k in ("n_cells", "n_active_cells", "n_ues", "dl_offered_mbps",
                              "dl_throughput_mbps", "ul_throughput_mbps", "mean_delay_ms",
                              "min_dl_satisfaction", "sla_violations", "total_power_w",
                              "max_prb_utilization")}


def _ue_kpis(u: dict[str, Any]) -> dict[str, Any]:
    return {k: u[k] for k in ("ue", "serving_cell", "dl_offered_mbps", "dl_throughput_mbps",
                              "ul_offered_mbps", "ul_throughput_mbps", "delay_ms", "loss_ratio",
                              "rsrp_dbm", "sinr_db", "cqi", "handovers", "dl_satisfaction",
                              "qci", "sla_ok")}


def _select_ues(v: K.KpiView, scn: Scenario, args: dict[str, Any]) -> list[dict[str, Any]]:
    ues = v.ues
    if "cell" in args:
        c = _cell(scn, args)
        ues = [u for u in ues if u["serving_cell"] == c]
    if "qci" in args:
        ues = [u for u in ues if u["qci"] == args["qci"]]
    return ues


# "Worst" is low for these metrics and high for the others.
LOW_IS_BAD = {"dl_throughput_mbps", "ul_throughput_mbps", "rsrp_dbm", "sinr_db", "cqi",
              "dl_satisfaction"}


# --- observe -------------------------------------------------------------------------------------
def list_cells(env: NetworkEnv, args: dict[str, Any]) -> dict[str, Any]:
    scn, v = env.scenario, env.measured()
    pos = scn.enb_positions()
    return {"cells": [{"cell": i, "active": c.active, "x_m": pos[i][0], "y_m": pos[i][1],
                       "tx_power_dbm": c.tx_power_dbm, "bandwidth_rbs": c.bandwidth_rbs,
                       "scheduler": c.scheduler, "n_ues": v.cells[i]["n_ues"]}
                      for i, c in enumerate(scn.cells)]}


def list_ues(env: NetworkEnv, args: dict[str, Any]) -> dict[str, Any]:
    scn, v = env.scenario, env.measured()
    ues = _select_ues(v, scn, args)
    return {"ues": [{"ue": u["ue"], "serving_cell": u["serving_cell"], "qci": u["qci"],
                     "server": u["server"], "mobility": scn.ues[u["ue"]].mobility,
                     "dl_offered_mbps": u["dl_offered_mbps"]} for u in ues]}


def get_cell_config(env: NetworkEnv, args: dict[str, Any]) -> dict[str, Any]:
    scn = env.scenario
    c = _cell(scn, args)
    cfg, pos = scn.cells[c], scn.enb_positions()[c]
    return {"cell": c, "active": cfg.active, "x_m": pos[0], "y_m": pos[1],
            "tx_power_dbm": cfg.tx_power_dbm, "bandwidth_rbs": cfg.bandwidth_rbs,
            "scheduler": cfg.scheduler, "ho_algorithm": cfg.ho_algorithm,
            "ho_hysteresis_db": cfg.ho_hysteresis_db, "ho_ttt_ms": cfg.ho_ttt_ms}


def get_ue_config(env: NetworkEnv, args: dict[str, Any]) -> dict[str, Any]:
    scn = env.scenario
    u = _ue(scn, args)
    return {"ue": u, **scn.ues[u].model_dump()}


def get_cell_kpis(env: NetworkEnv, args: dict[str, Any]) -> dict[str, Any]:
    c = _cell(env.scenario, args)
    cell = env.measured().cells[c]
    return {k: cell[k] for k in ("cell", "active", "n_ues", "dl_offered_mbps",
                                 "dl_throughput_mbps", "ul_throughput_mbps", "mean_delay_ms",
                                 "mean_sinr_db", "prb_utilization")}


def get_ue_kpis(env: NetworkEnv, args: dict[str, Any]) -> dict[str, Any]:
    u = _ue(env.scenario, args)
    return _ue_kpis(env.measured().ues[u])


def get_radio_quality(env: NetworkEnv, args: dict[str, Any]) -> dict[str, Any]:
    u = _ue(env.scenario, args)
    r = env.measured().ues[u]
    return {"ue": u, "serving_cell": r["serving_cell"], "rsrp_dbm": r["rsrp_dbm"],
            "sinr_db": r["sinr_db"], "cqi": r["cqi"],
            "spectral_efficiency_bps_hz": K.efficiency_of(r["cqi"])}


def get_cell_radio_quality(env: NetworkEnv, args: dict[str, Any]) -> dict[str, Any]:
    c = _cell(env.scenario, args)
    mine = [u for u in env.measured().ues if u["serving_cell"] == c]
    sinr = [u["sinr_db"] for u in mine if u["sinr_db"] is not None]
    rsrp = [u["rsrp_dbm"] for u in mine if u["rsrp_dbm"] is not None]
    return {"cell": c, "n_ues": len(mine),
            "mean_sinr_db": sum(sinr) / len(sinr) if sinr else None,
            "min_sinr_db": min(sinr) if sinr else None,
            "mean_rsrp_dbm": sum(rsrp) / len(rsrp) if rsrp else None,
            "min_rsrp_dbm": min(rsrp) if rsrp else None,
            "cqi_histogram": {"low": sum(u["cqi"] <= 6 for u in mine),
                              "mid": sum(7 <= u["cqi"] <= 9 for u in mine),
                              "high": sum(u["cqi"] >= 10 for u in mine)}}


def get_cell_load(env: NetworkEnv, args: dict[str, Any]) -> dict[str, Any]:
    c = _cell(env.scenario, args)
    cell = env.measured().cells[c]
    return {"cell": c, "active": cell["active"], "n_ues": cell["n_ues"],
            "prb_utilization": cell["prb_utilization"],
            "dl_offered_mbps": cell["dl_offered_mbps"],
            "dl_capacity_mbps": cell["dl_capacity_mbps"],
            "overloaded": cell["prb_utilization"] >= K.OVERLOAD_PRB}


def get_network_load(env: NetworkEnv, args: dict[str, Any]) -> dict[str, Any]:
    return {"cells": [{"cell": c["cell"], "active": c["active"], "n_ues": c["n_ues"],
                       "prb_utilization": c["prb_utilization"],
                       "overloaded": c["prb_utilization"] >= K.OVERLOAD_PRB}
                      for c in env.measured().cells]}


def get_neighbors(env: NetworkEnv, args: dict[str, Any]) -> dict[str, Any]:
    scn = env.scenario
    c = _cell(scn, args)
    v = env.measured()
    pos = np.array(scn.enb_positions())
    rsrp = v.phys.rsrp_dbm_all
    mine = [u["ue"] for u in v.ues if u["serving_cell"] == c]
    out = []
    for n in range(len(scn.cells)):
        if n == c:
            continue
        within = sum(1 for u in mine if np.isfinite(rsrp[u, n]) and rsrp[u, c] - rsrp[u, n] <= 6)
        out.append({"cell": n, "distance_m": float(np.hypot(*(pos[n] - pos[c]))),
                    "active": scn.cells[n].active, "ues_within_6db": within})
    return {"cell": c, "neighbors": out}


def get_handover_stats(env: NetworkEnv, args: dict[str, Any]) -> dict[str, Any]:
    scn, v = env.scenario, env.measured()
    cells = [_cell(scn, args)] if "cell" in args else range(len(scn.cells))
    rows = []
    for c in cells:
        cfg = scn.cells[c]
        mine = [u for u in v.ues if u["serving_cell"] == c]
        rows.append({"cell": c, "ho_algorithm": cfg.ho_algorithm,
                     "ho_hysteresis_db": cfg.ho_hysteresis_db, "ho_ttt_ms": cfg.ho_ttt_ms,
                     "n_mobile_ues": sum(scn.ues[u["ue"]].mobility != "static" for u in mine),
                     "handovers": sum(u["handovers"] for u in mine)})
    return {"cells": rows, "total_handovers": sum(r["handovers"] for r in rows)}


def alarms_of(v: K.KpiView) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for c in v.cells:
        if not c["active"]:
            out.append({"severity": "major", "type": "cell_down", "entity": f"cell:{c['cell']}",
                        "value": None, "threshold": None})
        elif c["prb_utilization"] >= K.OVERLOAD_PRB:
            out.append({"severity": "major", "type": "cell_overload",
                        "entity": f"cell:{c['cell']}", "value": c["prb_utilization"],
                        "threshold": K.OVERLOAD_PRB})
    for u in v.ues:
        e = f"ue:{u['ue']}"
        if u["sinr_db"] is not None and u["sinr_db"] < 0.0:
            out.append({"severity": "minor", "type": "low_sinr", "entity": e,
                        "value": u["sinr_db"], "threshold": 0.0})
        if u["loss_ratio"] > 0.05:
            out.append({"severity": "critical", "type": "high_loss", "entity": e,
                        "value": u["loss_ratio"], "threshold": 0.05})
        budget = K.DELAY_BUDGET_MS[u["qci"]]
        if u["delay_ms"] is not None and u["delay_ms"] > budget:
            out.append({"severity": "major", "type": "delay_budget_exceeded", "entity": e,
                        "value": u["delay_ms"], "threshold": budget})
        if u["dl_satisfaction"] < 0.8:
            out.append({"severity": "minor", "type": "low_throughput", "entity": e,
                        "value": u["dl_satisfaction"], "threshold": 0.8})
    return out


def get_alarms(env: NetworkEnv, args: dict[str, Any]) -> dict[str, Any]:
    al = alarms_of(env.measured())
    if "severity" in args:
        al = [a for a in al if a["severity"] == args["severity"]]
    return {"count": len(al), "alarms": al}


def get_slice_membership(env: NetworkEnv, args: dict[str, Any]) -> dict[str, Any]:
    v = env.measured()
    qcis = [args["qci"]] if "qci" in args else sorted(v.qci)
    return {"slices": [{"qci": q, "gbr": q in GBR_QCIS,
                        "ues": (ues := [u["ue"] for u in v.ues if u["qci"] == q]),
                        "n_ues": len(ues)} for q in qcis]}


def get_slice_sla_status(env: NetworkEnv, args: dict[str, Any]) -> dict[str, Any]:
    v = env.measured()
    qcis = [args["qci"]] if "qci" in args else sorted(v.qci)
    out = []
    for q in qcis:
        mine = [u for u in v.ues if u["qci"] == q]
        delays = [u["delay_ms"] for u in mine if u["delay_ms"] is not None]
        bad = [u["ue"] for u in mine if not u["sla_ok"]]
        out.append({"qci": q, "n_ues": len(mine), "delay_budget_ms": K.DELAY_BUDGET_MS[q],
                    "loss_budget": K.LOSS_BUDGET,
                    "mean_delay_ms": sum(delays) / len(delays) if delays else None,
                    "violations": len(bad), "violating_ues": bad})
    return {"slices": out}


def get_edge_placement(env: NetworkEnv, args: dict[str, Any]) -> dict[str, Any]:
    scn, v = env.scenario, env.measured()
    return {"edge_delay_ms": scn.edge_delay_ms, "cloud_delay_ms": scn.cloud_delay_ms,
            "ues": [{"ue": u["ue"], "server": u["server"], "qci": u["qci"],
                     "delay_ms": u["delay_ms"]} for u in v.ues]}


def get_energy_consumption(env: NetworkEnv, args: dict[str, Any]) -> dict[str, Any]:
    v = env.measured()
    return {"model": K.POWER_MODEL, "total_power_w": v.network["total_power_w"],
            "cells": [{"cell": c["cell"], "active": c["active"],
                       "tx_power_dbm": c["tx_power_dbm"], "load": c["prb_utilization"],
                       "power_w": c["power_w"]} for c in v.cells]}


def get_network_summary(env: NetworkEnv, args: dict[str, Any]) -> dict[str, Any]:
    return _summary(env.measured())


def get_change_history(env: NetworkEnv, args: dict[str, Any]) -> dict[str, Any]:
    return {"can_rollback": bool(env.history), "changes": [dict(c) for _, c in env.history]}


def get_ue_measurements(env: NetworkEnv, args: dict[str, Any]) -> dict[str, Any]:
    scn = env.scenario
    u = _ue(scn, args)
    v = env.measured()
    row = v.phys.rsrp_dbm_all[u]
    # The serving cell's RSRP is the (noisy) measured one; others are physics plus the same offset
    # so the report is internally consistent.
    s = v.ues[u]["serving_cell"]
    meas = v.ues[u]["rsrp_dbm"]
    offset = (meas - row[s]) if meas is not None and np.isfinite(row[s]) else 0.0
    return {"ue": u, "serving_cell": s,
            "cells": [{"cell": c, "active": scn.cells[c].active,
                       "rsrp_dbm": float(row[c] + offset) if np.isfinite(row[c]) else None}
                      for c in range(len(scn.cells))]}


# --- compute -------------------------------------------------------------------------------------
def _values(ues: list[dict[str, Any]], metric: str) -> list[float]:
    return [float(u[metric]) for u in ues if u[metric] is not None]


def compute_percentile(env: NetworkEnv, args: dict[str, Any]) -> dict[str, Any]:
    vals = _values(_select_ues(env.measured(), env.scenario, args), args["metric"])
    return {"metric": args["metric"], "p": args["p"], "n": len(vals),
            "value": K.percentile(vals, args["p"])}


def aggregate_kpi(env: NetworkEnv, args: dict[str, Any]) -> dict[str, Any]:
    vals = _values(_select_ues(env.measured(), env.scenario, args), args["metric"])
    agg = args["agg"]
    value: float | None
    if not vals:
        value = None
    elif agg == "mean":
        value = sum(vals) / len(vals)
    elif agg == "min":
        value = min(vals)
    elif agg == "max":
        value = max(vals)
    else:
        value = sum(vals)
    return {"metric": args["metric"], "agg": agg, "n": len(vals), "value": value}


def check_sla(env: NetworkEnv, args: dict[str, Any]) -> dict[str, Any]:
    v = env.measured()
    ues = v.ues
    if "ue" in args:
        ues = [ues[_ue(env.scenario, args)]]
    if "qci" in args:
        ues = [u for u in ues if u["qci"] == args["qci"]]
    res = [{"ue": u["ue"], "qci": u["qci"], "ok": u["sla_ok"], "delay_ms": u["delay_ms"],
            "delay_budget_ms": K.DELAY_BUDGET_MS[u["qci"]], "loss_ratio": u["loss_ratio"],
            "dl_satisfaction": u["dl_satisfaction"], "reasons": list(u["sla_reasons"])}
           for u in ues]
    # A single UE is always reported; for groups only the violations (keeps observations short).
    shown = res if "ue" in args else [r for r in res if not r["ok"]]
    return {"checked": len(res), "violations": sum(not r["ok"] for r in res), "results": shown}


def estimate_capacity(env: NetworkEnv, args: dict[str, Any]) -> dict[str, Any]:
    scn = env.scenario
    c = _cell(scn, args)
    upd = {k: args[k] for k in ("bandwidth_rbs", "tx_power_dbm") if k in args}
    hypo = _set_cell(scn, c, **upd)[0] if upd else scn
    ph = physics.compute(hypo)
    mine = np.flatnonzero(ph.serving == c)
    offered = float(sum(hypo.ues[i].dl_rate_mbps for i in mine))
    active = hypo.cells[c].active and mine.size > 0
    cap = float(mine.size / np.sum(1.0 / np.maximum(ph.dl_cap_mbps[mine], 1e-6))) \
        if active else None
    return {"cell": c, "bandwidth_rbs": hypo.cells[c].bandwidth_rbs,
            "tx_power_dbm": hypo.cells[c].tx_power_dbm, "n_ues": int(mine.size),
            "capacity_mbps": cap, "offered_mbps": offered,
            "headroom_mbps": cap - offered if cap is not None else None}


def rank_worst_ues(env: NetworkEnv, args: dict[str, Any]) -> dict[str, Any]:
    metric, k = args["metric"], args.get("k", 5)
    ues = [u for u in _select_ues(env.measured(), env.scenario, args) if u[metric] is not None]
    ues.sort(key=lambda u: (u[metric] if metric in LOW_IS_BAD else -u[metric], u["ue"]))
    return {"metric": metric, "ranking": [{"ue": u["ue"], "serving_cell": u["serving_cell"],
                                           "value": u[metric]} for u in ues[:k]]}


def rank_busiest_cells(env: NetworkEnv, args: dict[str, Any]) -> dict[str, Any]:
    cells = [c for c in env.measured().cells if c["active"]]
    cells.sort(key=lambda c: (-c["prb_utilization"], -c["dl_throughput_mbps"], c["cell"]))
    return {"ranking": [{"cell": c["cell"], "prb_utilization": c["prb_utilization"],
                         "dl_throughput_mbps": c["dl_throughput_mbps"], "n_ues": c["n_ues"]}
                        for c in cells[:args.get("k", 5)]]}


def what_if(env: NetworkEnv, args: dict[str, Any]) -> dict[str, Any]:
    call = args["change"]
    tool = call["tool"]
    if tool == "rollback":
        if not env.history:
            raise ToolError("invalid_state", "nothing to roll back", "change.tool")
        new = env.history[-1][0]
    else:
        if tool not in CONFIGURE:
            raise ToolError("invalid_args", f"what_if needs a configure tool, not {tool!r}",
                            "change.tool")
        cargs = env.validate_args(tool, call["args"], prefix="change.args.")
        new = CONFIGURE[tool](env.scenario, cargs).scenario
    before = env.truth()
    pred, after = env.predict_view(new)
    cells = [{"cell": b["cell"], "prb_before": b["prb_utilization"],
              "prb_after": a["prb_utilization"], "dl_throughput_before": b["dl_throughput_mbps"],
              "dl_throughput_after": a["dl_throughput_mbps"]}
             for b, a in zip(before.cells, after.cells, strict=True)]
    # Ranked on the change rounded to the observation's precision: UEs that do not move must
    # tie and fall back to their index, not be ordered by float noise (a replay would differ).
    deltas = sorted(
        zip(before.ues, after.ues, strict=True),
        key=lambda ba: (-round(abs(ba[1]["dl_throughput_mbps"] - ba[0]["dl_throughput_mbps"])
                               + abs((ba[1]["delay_ms"] or 0) - (ba[0]["delay_ms"] or 0)) / 100,
                               6),
                        ba[0]["ue"]))
    ues = [{"ue": b["ue"], "dl_throughput_before": b["dl_throughput_mbps"],
            "dl_throughput_after": a["dl_throughput_mbps"], "delay_before": b["delay_ms"],
            "delay_after": a["delay_ms"]} for b, a in deltas[:5]]
    return {"change": {"tool": tool, "args": call["args"]}, "before": _summary(before),
            "after": _summary(after), "cells": cells, "ues": ues, "in_domain": pred.in_domain,
            "max_uncertainty": pred.max_uncertainty()}


def kpi_delta(env: NetworkEnv, args: dict[str, Any]) -> dict[str, Any]:
    base = args.get("baseline", "initial")
    if base == "initial":
        ref = env.initial_scenario
    else:
        ref = env.history[-1][0] if env.history else env.scenario
    b = _summary(env.predict_view(ref)[1])
    n = _summary(env.truth())
    delta = {k: n[k] - b[k] for k in n
             if isinstance(n[k], int | float) and isinstance(b[k], int | float)}
    return {"baseline": base, "before": b, "now": n, "delta": delta}


def estimate_energy_saving(env: NetworkEnv, args: dict[str, Any]) -> dict[str, Any]:
    scn = env.scenario
    c = _cell(scn, args)
    v = env.truth()
    cfg = scn.cells[c]
    others = [i for i, x in enumerate(scn.cells) if x.active and i != c]
    if not cfg.active or not others:
        return {"cell": c, "feasible": False, "power_saved_w": 0.0, "ues_rehomed": 0,
                "rehomed_to": []}
    mine = [u["ue"] for u in v.ues if u["serving_cell"] == c]
    rsrp = v.phys.rsrp_dbm_all
    dest: dict[int, int] = {}
    for u in mine:
        t = max(others, key=lambda i, u=u: float(rsrp[u, i]))  # type: ignore[misc]
        dest[t] = dest.get(t, 0) + 1
    saved = v.cells[c]["power_w"] - K.EARTH_P_SLEEP_W
    return {"cell": c, "feasible": True, "power_saved_w": saved, "ues_rehomed": len(mine),
            "rehomed_to": [{"cell": t, "n_ues": n} for t, n in sorted(dest.items())]}


def sinr_to_cqi(env: NetworkEnv, args: dict[str, Any]) -> dict[str, Any]:
    cqi = K.cqi_of(float(args["sinr_db"]))
    return {"sinr_db": args["sinr_db"], "cqi": cqi,
            "spectral_efficiency_bps_hz": K.efficiency_of(cqi)}


# --- configure (pure: scenario -> Change) --------------------------------------------------------
def set_tx_power(scn: Scenario, args: dict[str, Any]) -> Change:
    c = _cell(scn, args)
    new, ch = _set_cell(scn, c, tx_power_dbm=float(args["tx_power_dbm"]))
    return Change(new, f"cell {c} tx power {ch[0]['old']} -> {ch[0]['new']} dBm", ch)


def set_bandwidth(scn: Scenario, args: dict[str, Any]) -> Change:
    c = _cell(scn, args)
    new, ch = _set_cell(scn, c, bandwidth_rbs=int(args["bandwidth_rbs"]))
    return Change(new, f"cell {c} bandwidth {ch[0]['old']} -> {ch[0]['new']} RBs", ch)


def set_scheduler(scn: Scenario, args: dict[str, Any]) -> Change:
    c = _cell(scn, args)
    new, ch = _set_cell(scn, c, scheduler=args["scheduler"])
    return Change(new, f"cell {c} scheduler {ch[0]['old']} -> {ch[0]['new']}", ch)


def set_handover_params(scn: Scenario, args: dict[str, Any]) -> Change:
    c = _cell(scn, args)
    upd: dict[str, Any] = {}
    if "hysteresis_db" in args:
        upd["ho_hysteresis_db"] = float(args["hysteresis_db"])
    if "ttt_ms" in args:
        upd["ho_ttt_ms"] = int(args["ttt_ms"])
    if not upd:
        raise ToolError("invalid_args", "give hysteresis_db and/or ttt_ms", "hysteresis_db")
    new, ch = _set_cell(scn, c, **upd)
    return Change(new, f"cell {c} handover " + ", ".join(
        f"{x['field']} {x['old']} -> {x['new']}" for x in ch), ch)


def set_handover_algorithm(scn: Scenario, args: dict[str, Any]) -> Change:
    c = _cell(scn, args)
    new, ch = _set_cell(scn, c, ho_algorithm=args["algorithm"])
    return Change(new, f"cell {c} handover algorithm {ch[0]['old']} -> {ch[0]['new']}", ch)


FORCE_HO_MARGIN_DB = 1.0


def force_handover(scn: Scenario, args: dict[str, Any]) -> Change:
    u = _ue(scn, args)
    t = _cell(scn, args, "target_cell")
    if not scn.cells[t].active:
        raise ToolError("invalid_state", f"target cell {t} is switched off", "target_cell")
    ph = physics.compute(scn)
    s = int(ph.serving[u])
    if s == t:
        raise ToolError("invalid_state", f"UE {u} is already served by cell {t}", "target_cell")
    need = float(ph.rsrp_dbm_all[u, s] - ph.rsrp_dbm_all[u, t]) + FORCE_HO_MARGIN_DB
    raise_t = min(need, 46.0 - scn.cells[t].tx_power_dbm)
    lower_s = need - raise_t
    if lower_s > scn.cells[s].tx_power_dbm:
        raise ToolError("out_of_range", f"cell {t} is {need:.1f} dB weaker than cell {s} at UE "
                        f"{u}: no power setting within 0-46 dBm makes it the strongest",
                        "target_cell")
    cells = list(scn.cells)
    changed = []
    if raise_t > 0:
        new_p = round(scn.cells[t].tx_power_dbm + raise_t, 2)
        changed.append({"entity": f"cell:{t}", "field": "tx_power_dbm",
                        "old": scn.cells[t].tx_power_dbm, "new": new_p})
        cells[t] = cells[t].model_copy(update={"tx_power_dbm": new_p})
    if lower_s > 0:
        new_p = max(round(scn.cells[s].tx_power_dbm - lower_s, 2), 0.0)
        changed.append({"entity": f"cell:{s}", "field": "tx_power_dbm",
                        "old": scn.cells[s].tx_power_dbm, "new": new_p})
        cells[s] = cells[s].model_copy(update={"tx_power_dbm": new_p})
    new = _rebuild(scn, cells=cells)
    after = physics.compute(new).serving
    moved = [int(i) for i in np.flatnonzero(after != ph.serving)]
    for i in moved:
        changed.append({"entity": f"ue:{i}", "field": "serving_cell", "old": int(ph.serving[i]),
                        "new": int(after[i])})
    return Change(new, f"UE {u} handed over from cell {s} to cell {t} by power steering "
                       f"({len(moved)} UE(s) moved in total)", changed)


def set_cell_state(scn: Scenario, args: dict[str, Any]) -> Change:
    c = _cell(scn, args)
    active = bool(args["active"])
    if not active and sum(x.active for x in scn.cells) == 1 and scn.cells[c].active:
        raise ToolError("invalid_state", "cannot switch off the last active cell", "active")
    new, ch = _set_cell(scn, c, active=active)
    return Change(new, f"cell {c} switched {'on' if active else 'off'}", ch)


def set_ue_qci(scn: Scenario, args: dict[str, Any]) -> Change:
    u = _ue(scn, args)
    new, ch = _set_ue(scn, u, qci=int(args["qci"]))
    return Change(new, f"UE {u} moved from QCI {ch[0]['old']} to QCI {ch[0]['new']}", ch)


def set_ue_server(scn: Scenario, args: dict[str, Any]) -> Change:
    u = _ue(scn, args)
    new, ch = _set_ue(scn, u, server=args["server"])
    return Change(new, f"UE {u} server {ch[0]['old']} -> {ch[0]['new']}", ch)


def shape_traffic(scn: Scenario, args: dict[str, Any]) -> Change:
    u = _ue(scn, args)
    ue = scn.ues[u]
    upd: dict[str, Any] = {"dl_rate_mbps": min(ue.dl_rate_mbps, float(args["max_dl_mbps"]))}
    if "max_ul_mbps" in args:
        upd["ul_rate_mbps"] = min(ue.ul_rate_mbps, float(args["max_ul_mbps"]))
    new, ch = _set_ue(scn, u, **upd)
    return Change(new, f"UE {u} shaped: " + ", ".join(
        f"{x['field']} {x['old']} -> {x['new']}" for x in ch), ch)


def graceful_degradation(scn: Scenario, args: dict[str, Any]) -> Change:
    c = _cell(scn, args)
    f = float(args["factor"])
    serving = physics.compute(scn).serving
    ues = list(scn.ues)
    changed = []
    for i, ue in enumerate(scn.ues):
        if int(serving[i]) == c and ue.qci not in GBR_QCIS:
            new_rate = round(ue.dl_rate_mbps * f, 4)
            ues[i] = ue.model_copy(update={"dl_rate_mbps": max(new_rate, 1e-3)})
            changed.append({"entity": f"ue:{i}", "field": "dl_rate_mbps",
                            "old": ue.dl_rate_mbps, "new": ues[i].dl_rate_mbps})
    if not changed:
        raise ToolError("invalid_state", f"cell {c} serves no non-GBR UE to degrade", "cell")
    return Change(_rebuild(scn, ues=ues), f"cell {c}: {len(changed)} non-GBR UE(s) scaled "
                                          f"to {f:g} of their DL rate", changed)


Handler = Callable[["NetworkEnv", dict[str, Any]], dict[str, Any]]
Configure = Callable[[Scenario, dict[str, Any]], Change]

READ: dict[str, Handler] = {f.__name__: f for f in (
    list_cells, list_ues, get_cell_config, get_ue_config, get_cell_kpis, get_ue_kpis,
    get_radio_quality, get_cell_radio_quality, get_cell_load, get_network_load, get_neighbors,
    get_handover_stats, get_alarms, get_slice_membership, get_slice_sla_status,
    get_edge_placement, get_energy_consumption, get_network_summary, get_change_history,
    get_ue_measurements, compute_percentile, aggregate_kpi, check_sla, estimate_capacity,
    rank_worst_ues, rank_busiest_cells, what_if, kpi_delta, estimate_energy_saving, sinr_to_cqi,
)}
CONFIGURE: dict[str, Configure] = {f.__name__: f for f in (
    set_tx_power, set_bandwidth, set_scheduler, set_handover_params, set_handover_algorithm,
    force_handover, set_cell_state, set_ue_qci, set_ue_server, shape_traffic,
    graceful_degradation,
)}
# `rollback` is implemented by the env itself: it needs the history, not just the scenario.

"""The offline teacher's solver: a planner that explores with observe/compute tools, searches
configure actions with `what_if` (beam search over one- and two-change plans), applies the best
plan, re-measures and reports. QA tasks are answered with read-only tools or from the prompt.

The planner is a generator: it yields assistant turns and receives the observation of each
action (the parsed `<ans>` JSON), so the same code runs embedded (driven directly) and behind
HTTP (driven by replaying a transcript, see `forge.teacher.offline`). Everything it knows comes
from the prompt and the observations - it never peeks at the simulator state - and all its
randomness comes from the `random.Random` it is given, so a transcript replays exactly.

Realistic mistakes, at `mistake_rate` per tool call: a wrong argument name, a missing argument,
an out-of-range index, a misspelt tool. The env answers with an error observation and the planner
recovers by re-issuing the corrected call (an error-recovery sample). At `format_error_rate` per
turn it emits a malformed turn (unclosed tag, text after the action) that the synthesis loop
rejects at the parse stage.
"""

from __future__ import annotations

import json
import random
import re
import string
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

from forge.gym import kpis as K
from forge.gym.catalogue import BY_NAME, CONFIGURE_TOOLS
from forge.gym.tags import render_action
from forge.scenario import BANDWIDTHS_RB
from forge.teacher.prompts import CRITERION_HEAD, SNAPSHOT_HEAD, criterion_of

Obs = dict[str, Any]
PolicyGen = Generator[str, Obs | None, str]

TTT_STEPS = (40, 64, 80, 100, 128, 160, 256, 320, 480, 512, 640, 1024, 1280, 2560, 5120)
SUMMARY_KEYS = ("n_cells", "n_active_cells", "n_ues", "dl_offered_mbps", "dl_throughput_mbps",
                "ul_throughput_mbps", "mean_delay_ms", "min_dl_satisfaction", "sla_violations",
                "total_power_w", "max_prb_utilization")
LABEL = {"dl_throughput_mbps": "downlink throughput", "delay_ms": "end-to-end delay",
         "prb_utilization": "PRB utilisation", "total_power_w": "total power draw",
         "min_dl_satisfaction": "worst-UE satisfaction", "sla_violations": "SLA violations",
         "max_prb_utilization": "highest PRB utilisation", "mean_delay_ms": "mean delay",
         "dl_satisfaction": "satisfaction", "handovers": "handover count",
         "total_handovers": "handover count", "sinr_db": "SINR", "power_w": "power draw",
         "sla_ok": "SLA status", "mean_dl_satisfaction": "mean satisfaction",
         "ho_enabled": "handover algorithm", "ho_hysteresis_db": "A3 hysteresis",
         "ho_ttt_ms": "time-to-trigger", "gbr_scheduler": "GBR-aware scheduling"}
HO_SETTINGS = ("ho_enabled", "ho_hysteresis_db", "ho_ttt_ms")
# On/off cell metrics, reported in words (off, on) rather than as 0/1.
SWITCH_WORDS = {"ho_enabled": ("none", "a3_rsrp"), "gbr_scheduler": ("off", "on")}


@dataclass
class PolicyConfig:
    mistake_rate: float = field(default=0.03, metadata={
        "help": "Probability that a tool call is first issued wrong (then recovered)."})
    format_error_rate: float = field(default=0.01, metadata={
        "help": "Probability per turn of a malformed turn (the attempt is rejected)."})
    max_steps: int = field(default=24, metadata={"help": "Tool-call budget of one episode."})
    beam_width: int = field(default=2, metadata={"help": "Beam width of the what_if search."})
    max_candidates: int = field(default=4, metadata={
        "help": "Configure candidates evaluated per search level."})


# Share of episodes run "focused" (L2-sized) rather than thorough (L3), and of episodes whose
# ticket names the fix that apply it at once (L1) rather than after a what_if (L2). Tuned so that
# the verified action samples come out near the 30/45/25 L1/L2/L3 mix of the training set.
FOCUSED = 0.55
SHORT_NAMED = 0.6
FOCUSED_CALLS = 7   # the L2 ceiling
GBR = (1, 2, 3, 4)


def heaviest(ues: list[dict[str, Any]], exclude: int | None) -> dict[str, Any] | None:
    """The non-GBR UE asking for the most downlink (a traffic-shaping candidate), if any."""
    rows = [u for u in ues if u["ue"] != exclude and u["qci"] not in GBR and
            u["dl_offered_mbps"] > 0.5]
    return max(rows, key=lambda u: (u["dl_offered_mbps"], -u["ue"])) if rows else None


# --- goal helpers -------------------------------------------------------------------------------
def leaves(goal: dict[str, Any]) -> list[dict[str, Any]]:
    if "all" in goal:
        return [c for g in goal["all"] for c in leaves(g)]
    if "any" in goal:
        return [c for g in goal["any"] for c in leaves(g)]
    if "not" in goal:
        return []  # negated conditions are not steered towards
    return [goal] if "metric" in goal else []


def holds(v: float | None, op: str, t: float) -> bool:
    if v is None:
        return False
    return {"<": v < t, "<=": v <= t, ">": v > t, ">=": v >= t,
            "==": abs(v - t) < 1e-9, "!=": abs(v - t) >= 1e-9}[op]


def direction(op: str) -> float:
    return 1.0 if op in (">", ">=") else -1.0 if op in ("<", "<=") else 0.0


def _num(x: Any) -> float | None:
    if isinstance(x, bool):
        return float(x)
    return float(x) if isinstance(x, int | float) else None


def fmt(x: Any) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:g}"
    return str(x)


# --- reading a condition's value with the tools ------------------------------------------------
def reader(cond: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The read-only call that measures a goal condition."""
    kind, _, idx = cond["target"].partition(":")
    m = cond["metric"]
    if kind == "ue" and idx != "*":
        return "get_ue_kpis", {"ue": int(idx)}
    if kind == "ue":
        agg = "min" if direction(cond["op"]) > 0 else "max"
        return "aggregate_kpi", {"metric": m, "agg": agg}
    if kind == "cell" and idx == "*":
        return "get_network_load", {}
    if kind == "cell":
        c = int(idx)
        if m == "power_w":
            return "get_energy_consumption", {}
        if m in ("tx_power_dbm", "bandwidth_rbs", "gbr_scheduler"):
            return "get_cell_config", {"cell": c}
        if m == "handovers" or m in HO_SETTINGS:
            return "get_handover_stats", {"cell": c}
        return "get_cell_kpis", {"cell": c}
    if kind == "qci":
        q = int(idx)
        if m in ("dl_throughput_mbps", "min_dl_satisfaction"):
            return "aggregate_kpi", {"metric": "dl_satisfaction" if m != "dl_throughput_mbps"
                                     else m, "agg": "min" if m != "dl_throughput_mbps"
                                     else "sum", "qci": q}
        return "get_slice_sla_status", {"qci": q}
    if m in SUMMARY_KEYS:
        return "get_network_summary", {}
    if m == "total_handovers":
        return "get_handover_stats", {}
    if m == "p5_dl_throughput_mbps":
        return "compute_percentile", {"metric": "dl_throughput_mbps", "p": 5}
    agg_metric = {"max_delay_ms": ("delay_ms", "max"), "mean_loss_ratio": ("loss_ratio", "mean"),
                  "mean_dl_satisfaction": ("dl_satisfaction", "mean")}.get(m)
    if agg_metric:
        return "aggregate_kpi", {"metric": agg_metric[0], "agg": agg_metric[1]}
    return "get_network_summary", {}


def extract(cond: dict[str, Any], tool: str, r: dict[str, Any] | None) -> float | None:
    """The condition's value from the reader's result."""
    if r is None:
        return None
    kind, _, idx = cond["target"].partition(":")
    m = cond["metric"]
    if tool in ("aggregate_kpi", "compute_percentile"):
        return _num(r.get("value"))
    if tool == "get_network_load":
        vals = [c["prb_utilization"] for c in r["cells"] if c["active"]]
        return max(vals) if vals else None
    if tool == "get_energy_consumption":
        if kind == "cell":
            return next((_num(c["power_w"]) for c in r["cells"] if c["cell"] == int(idx)), None)
        return _num(r.get("total_power_w"))
    if tool == "get_handover_stats":
        if kind == "cell":
            row = next((c for c in r["cells"] if c["cell"] == int(idx)), None)
            if row is None:
                return None
            if m == "ho_enabled":
                return float(K.ho_enabled(row["ho_algorithm"]))
            return _num(row[m if m in HO_SETTINGS else "handovers"])
        return _num(r.get("total_handovers"))
    if tool == "get_cell_config" and m == "gbr_scheduler":
        return float(K.gbr_scheduler(str(r.get("scheduler"))))
    if tool == "get_slice_sla_status":
        s = r["slices"][0] if r.get("slices") else {}
        key = {"sla_violations": "violations"}.get(m, m)
        return _num(s.get(key))
    return _num(r.get(m))


def predicted(cond: dict[str, Any], wi: dict[str, Any], now: float | None,
              offered: float | None, serving: int | None = None) -> float | None:
    """A condition's value after a change, read from a what_if result (None if not covered).

    what_if lists only the most affected UEs; for another UE the planner assumes its rate
    scales like its serving cell's delivered throughput (capped at what it asks for)."""
    kind, _, idx = cond["target"].partition(":")
    m = cond["metric"]
    if kind == "network" and m in wi["after"]:
        return _num(wi["after"][m])
    if kind == "cell" and idx != "*":
        c = next((x for x in wi["cells"] if x["cell"] == int(idx)), None)
        if c is None:
            return None
        if m == "prb_utilization":
            return _num(c["prb_after"])
        if m == "dl_throughput_mbps":
            return _num(c["dl_throughput_after"])
        return None
    if kind == "cell":
        return max((x["prb_after"] for x in wi["cells"]), default=None) if \
            m == "prb_utilization" else None
    if kind == "ue" and idx != "*":
        u = next((x for x in wi["ues"] if x["ue"] == int(idx)), None)
        if m in ("dl_throughput_mbps", "dl_satisfaction"):
            thr = _num(u["dl_throughput_after"]) if u else (
                now * offered if m == "dl_satisfaction" and now is not None and offered
                else now)
            if u is None and thr is not None and serving is not None:
                c = next((x for x in wi["cells"] if x["cell"] == serving), None)
                if c and c["dl_throughput_before"] > 0:
                    thr *= c["dl_throughput_after"] / c["dl_throughput_before"]
                    if offered:
                        thr = min(thr, offered)
            if thr is None:
                return None
            return thr / offered if m == "dl_satisfaction" and offered else thr
        if m == "delay_ms":
            return _num(u["delay_after"]) if u else now
    return None


# --- the planner ---------------------------------------------------------------------------------
THINK = {
    "measure": ["First I measure the KPI the goal is about.", "Start by reading the current value "
                "of the target KPI.", "Let me see where the target KPI stands now.",
                "Measure the baseline before touching anything."],
    "constraint": ["Also check the network-wide side condition.", "Read the constraint's current "
                   "value too.", "The goal has a second condition; measure it as well."],
    "config": ["Look at the serving cell's configuration.", "Which radio settings does this cell "
               "run with?", "Check the cell's power, bandwidth and scheduler."],
    "measurements": ["Which other cells does this UE hear, and how strongly?", "Check the UE's "
                     "measurement report for a better cell.", "Look for a stronger neighbour in "
                     "the UE's measurements."],
    "whatif": ["Predict what {c} would do before applying it.", "Evaluate {c} with the model.",
               "What would {c} change? Ask the Experiment Model.", "Simulate {c} first."],
    "apply": ["Apply the best plan: {c}.", "The search favours {c}; applying it.",
              "Go ahead with {c}.", "{c} looks best on the predictions; apply it."],
    "remeasure": ["Re-measure the target KPI after the change.", "Check the effect on the "
                  "target KPI.", "Did it work? Measure again.", "Verify the result."],
    "rollback": ["That made things worse; roll it back.", "Undo the last change, it did not "
                 "help."],
    "trial_rollback": ["The trial change falls short of the target; roll it back before "
                       "the fallback.", "Not enough: undo the trial change as the ticket says."],
    "retry": ["Not enough to reach the target; roll it back and try the next best change.",
              "Short of the goal. Undo it and apply the runner-up instead."],
    "explore2": ["Tentatively apply {c} to look one step further.", "Try {c} and see what a "
                 "second change could add."],
    "undo_probe": ["Undo the probe change before deciding.", "Roll back the tentative change."],
    "delta": ["Compare the whole network with where it started.", "Check the network-wide "
              "effect against the initial state.", "Did the fix cost the rest of the network? "
              "Compare with the baseline."],
    "history": ["Confirm which changes are in place before reporting.", "List the applied "
                "changes for the record."],
    "cqi": ["What CQI would a 6 dB better SINR give?", "Translate a 6 dB SINR gain into CQI."],
    "cells": ["List the cells with their radio settings.", "An overview of every cell's "
              "configuration first."],
    "sharers": ["Who else is served by cell {c}?", "List the UEs sharing cell {c}.",
                "Which UEs load cell {c}?"],
}


class Planner:
    def __init__(self, rng: random.Random, cfg: PolicyConfig) -> None:
        self.rng = rng
        self.cfg = cfg
        self.steps = 0
        # (condition, value now, offered rate) steered on when the goal's own KPI is not
        # covered by what_if results (slice counters).
        self.proxy: tuple[dict[str, Any], float | None, float | None] | None = None
        self.focused = False
        self.serving: int | None = None
        self._last_key = ""
        self._last_result: dict[str, Any] | None = None
        self._results: list[dict[str, Any]] = []   # every successful call's result, in order

    # -- turn helpers ---------------------------------------------------------------------------
    def think(self, key: str, **kw: str) -> str:
        return self.rng.choice(THINK[key]).format(**kw)

    def _mistake(self, tool: str, args: dict[str, Any]) -> dict[str, Any] | None:
        """A plausible wrong version of a call, or None."""
        kinds = ["typo"]
        if args:
            kinds += ["rename", "drop"]
        if any(k in args for k in ("cell", "ue")):
            kinds.append("range")
        k = self.rng.choice(kinds)
        if k == "typo":
            bad = tool[:-1] if tool.endswith("s") else tool + "s"
            return {"tool": bad, "args": args}
        key = self.rng.choice(sorted(args))
        if k == "rename":
            new = dict(args)
            new[f"{key}_id" if not key.endswith("_id") else "id"] = new.pop(key)
            return {"tool": tool, "args": new}
        if k == "drop":
            return {"tool": tool, "args": {x: v for x, v in args.items() if x != key}}
        # One past the schema's largest index, so the call always fails: the schema's own
        # maximum (cell 6, UE 63) exists in the largest networks, where the "mistake" read
        # another entity and its result was taken for the intended one.
        idx_key = "ue" if "ue" in args else "cell"
        return {"tool": tool, "args": {**args, idx_key: 64 if idx_key == "ue" else 7}}

    def call(self, tool: str, args: dict[str, Any], thought: str
             ) -> Generator[str, Obs | None, dict[str, Any] | None]:
        """One tool call (maybe first issued wrong and recovered); its result or None.

        A read-only call identical to the call just made (and answered) is not issued again:
        nothing changed in between, so its result is reused. Asking twice in a row taught a
        model to repeat itself (10 % of action trajectories did, e.g. the network summary read
        as the goal's KPI and again as its side condition)."""
        key = json.dumps([tool, args], sort_keys=True)
        if tool not in CONFIGURE_TOOLS and key == self._last_key and \
                self._last_result is not None:
            return self._last_result
        result = yield from self._call(tool, args, thought)
        self._last_key, self._last_result = key, result
        if result is not None:
            self._results.append(result)
        return result

    def _call(self, tool: str, args: dict[str, Any], thought: str
              ) -> Generator[str, Obs | None, dict[str, Any] | None]:
        if self.rng.random() < self.cfg.format_error_rate:
            bad = render_action(tool, args, thought)
            yield (bad[:-len("</action>")] if self.rng.random() < 0.5
                   else bad + "\nI will wait for the result.")
            raise _Stop  # a malformed turn ends the attempt; the loop never answers it
        if self.steps < self.cfg.max_steps - 2 and self.rng.random() < self.cfg.mistake_rate:
            wrong = self._mistake(tool, args)
            if wrong is not None:
                self.steps += 1
                obs = yield render_action(wrong["tool"], wrong["args"], thought)
                if obs is not None and obs.get("ok") and obs.get("tool") == tool and \
                        wrong["args"] == args and isinstance(obs.get("result"), dict):
                    return obs.get("result")  # the "mistake" happened to be valid
                err = (obs or {}).get("error") or {}
                thought = (f"The call failed ({err.get('code', 'error')}: "
                           f"{str(err.get('message', ''))[:120]}). "
                           + self.rng.choice(["Fixing the call.", "Correcting it and retrying.",
                                              "Let me issue it properly."]))
        self.steps += 1
        obs = yield render_action(tool, args, thought)
        # Only the result of the call just made is used: a transcript written by someone else
        # (or replayed with another seed) may answer a different call.
        if obs is None or not obs.get("ok") or obs.get("tool") != tool or \
                not isinstance(obs.get("result"), dict):
            return None
        return obs.get("result")

    def cite(self, text: str) -> str:
        """A question's final answer, opened by the observed field it reports, written exactly
        as the observation has it (`"loss_ratio":0.004`).

        Why: a small model trained on answers that only name the metric in words ("UE 4's
        packet loss ratio is ...") learned to call the right tool but not to carry the number
        over; it wrote plausible figures from no observation. Quoting the field makes the copy
        an induction pattern (after `"loss_ratio":` comes what followed it in the
        observation); measured on the 1M-parameter model it taught the key, not yet the value
        (docs/BENCHMARKS.md). Only a value that one field of the latest result holding it has
        is cited (several fields with that value: nothing is quoted)."""
        m = re.search(r"<answer>(.*?)</answer>", text)
        if m is None:
            return text
        for res in reversed(self._results):
            hits = {(k, json.dumps(v)) for k, v in _fields(res)
                    if isinstance(v, (int, float, str)) and not isinstance(v, bool)
                    and fmt(v) == m.group(1)}
            if len(hits) == 1:
                k, v = hits.pop()
                return f"Observed {json.dumps(k)}:{v}. {text}"
            if hits:
                return text
        return text

    def budget(self, n: int) -> bool:
        return self.steps + n <= self.cfg.max_steps

    # -- QA ---------------------------------------------------------------------------------------
    def qa(self, text: str) -> PolicyGen:
        whole = text.lower().split("put the final answer")[0]
        if SNAPSHOT_HEAD.lower() in whole:
            return self._qa_snapshot(text, whole)
        low = question_of(whole)
        if "in general" in low:  # concept questions are marked; entity questions never are
            for pat, ans, why in CONCEPTS:
                if re.search(pat, low):
                    return self.rng.choice(why) + f" <answer>{ans}</answer>"
        multi = yield from self.qa_multi(low)
        if multi is not None:
            return multi
        ue = _ids(r"\bue\s*#?(\d+)", low)
        cell = _ids(r"\bcell\s*#?(\d+)", low)
        qci = _ids(r"\bqci\s*(\d)", low)
        if qci is not None and ue is None and cell is None and \
                re.search(r"delay|latency", low) and not re.search(r"how many ue|violat", low):
            r = yield from self.call("get_slice_sla_status", {"qci": qci},
                                     f"The SLA status of the QCI {qci} slice gives its delays.")
            row = r["slices"][0] if r and r["slices"] else None
            if re.search(r"budget", low):
                v = row["delay_budget_ms"] if row else None
                return (f"The QCI {qci} slice has a delay budget of {fmt(v)} ms. "
                        f"<answer>{fmt(v)}</answer>")
            v = row["mean_delay_ms"] if row else None
            return (f"The UEs of the QCI {qci} slice see {fmt(v)} ms on average. "
                    f"<answer>{fmt(v)}</answer>")
        if re.search(r"handover", low):
            if cell is not None:
                r = yield from self.call("get_handover_stats", {"cell": cell},
                                         f"Read cell {cell}'s handover statistics.")
                v = r["cells"][0]["handovers"] if r and r["cells"] else None
                return (f"Cell {cell}'s UEs made {fmt(v)} handovers. "
                        f"<answer>{fmt(v)}</answer>")
            r = yield from self.call("get_handover_stats", {},
                                     "The handover statistics give the network total.")
            v = r["total_handovers"] if r else None
            return f"The network logged {fmt(v)} handovers. <answer>{fmt(v)}</answer>"
        if cell is not None and re.search(r"neighbou?r", low):
            r = yield from self.call("get_neighbors", {"cell": cell},
                                     f"List cell {cell}'s neighbours.")
            nbs = r["neighbors"] if r else []
            if not nbs:
                return f"Cell {cell} has no neighbour listed. <answer>none</answer>"
            if re.search(r"closest|nearest", low):
                n = min(nbs, key=lambda x: (x["distance_m"], x["cell"]))
                return (f"Cell {n['cell']} is the nearest neighbour, {fmt(n['distance_m'])} m "
                        f"away. <answer>{n['cell']}</answer>")
            n = max(nbs, key=lambda x: (x["ues_within_6db"], -x["cell"]))
            return (f"Of cell {cell}'s neighbours, cell {n['cell']} is heard nearly as well as the "
                    f"server by the most of its UEs. <answer>{n['cell']}</answer>")
        if cell is not None and re.search(r"sinr", low):
            r = yield from self.call("get_cell_radio_quality", {"cell": cell},
                                     f"Read the radio quality of cell {cell}'s UEs.")
            v = r["mean_sinr_db"] if r else None
            return (f"Cell {cell}'s UEs see a mean SINR of {fmt(v)} dB. "
                    f"<answer>{fmt(v)}</answer>")
        if re.search(r"utili[sz]ation of the (busiest|most loaded) cell|(busiest|most loaded) "
                     r"cell run at|how loaded is the busiest", low):
            r = yield from self.call("rank_busiest_cells", {"k": 2},
                                     "Rank the cells by PRB utilisation.")
            top = r["ranking"][0] if r and r["ranking"] else None
            if top is None:
                return "No active cell reported. <answer>none</answer>"
            load = fmt(top["prb_utilization"])
            return (f"The busiest cell, cell {top['cell']}, runs at PRB utilisation {load}. "
                    f"<answer>{load}</answer>")
        if re.search(r"busiest|most loaded", low) and re.search(r"worst|lowest|smallest", low):
            r = yield from self.call("rank_busiest_cells", {"k": 3},
                                     "Find the busiest cell first.")
            if not r or not r["ranking"]:
                return "I could not rank the cells. <answer>unknown</answer>"
            c = r["ranking"][0]["cell"]
            w = yield from self.call("rank_worst_ues", {"metric": "dl_throughput_mbps", "k": 3,
                                                         "cell": c},
                                     f"Now the worst UE served by cell {c}.")
            if not w or not w["ranking"]:
                return f"Cell {c} serves no UE. <answer>none</answer>"
            u = w["ranking"][0]
            return (f"Cell {c} is the busiest; its worst UE is UE {u['ue']} at "
                    f"{fmt(u['value'])} Mbps. <answer>{u['ue']}</answer>")
        if re.search(r"busiest|most loaded|highest (prb|load|utili)", low) and cell is None:
            r = yield from self.call("rank_busiest_cells", {"k": 3},
                                     self.rng.choice(["Rank the cells by PRB utilisation.",
                                                      "Which cells carry the most load?"]))
            top = r["ranking"][0] if r and r["ranking"] else None
            if top is None:
                return "No active cell reported. <answer>none</answer>"
            return (f"Cell {top['cell']} is the busiest, at PRB utilisation "
                    f"{fmt(top['prb_utilization'])}. <answer>{top['cell']}</answer>")
        if re.search(r"worst|most starved|lowest satisfaction|smallest share", low) and \
                ue is None:
            r = yield from self.call("rank_worst_ues", {"metric": "dl_satisfaction", "k": 3},
                                     "Rank the UEs by satisfaction (delivered/offered).")
            top = r["ranking"][0] if r and r["ranking"] else None
            if top is None:
                return "No UE reported. <answer>none</answer>"
            return (f"UE {top['ue']} is the worst served, with satisfaction "
                    f"{fmt(top['value'])}. <answer>{top['ue']}</answer>")
        if qci is not None and re.search(r"how many (ues|terminals)|count the ues|number of ues",
                                         low) and not re.search(r"sla|violat", low):
            r = yield from self.call("get_slice_membership", {"qci": qci},
                                     f"The membership of the QCI {qci} slice lists its UEs.")
            v = r["slices"][0]["n_ues"] if r and r["slices"] else None
            return f"The QCI {qci} slice has {fmt(v)} UEs. <answer>{fmt(v)}</answer>"
        if ue is None and cell is None and re.search(r"active cells|switched on|are active",
                                                     low):
            r = yield from self.call("get_network_summary", {},
                                     "The network summary counts the active cells.")
            v = r["n_active_cells"] if r else None
            return f"{fmt(v)} cells are active. <answer>{fmt(v)}</answer>"
        if re.search(r"how many", low) and re.search(r"sla|violat", low):
            if qci is not None:
                r = yield from self.call("get_slice_sla_status", {"qci": qci},
                                         f"Read the SLA status of the QCI {qci} slice.")
                v = r["slices"][0]["violations"] if r and r["slices"] else None
            else:
                r = yield from self.call("get_network_summary", {},
                                         "The network summary counts SLA violations.")
                v = r["sla_violations"] if r else None
            return f"There are {fmt(v)} SLA violations. <answer>{fmt(v)}</answer>"
        if re.search(r"how many (ues|terminals)|count the ues|number of ues", low) and \
                cell is not None:
            r = yield from self.call("get_cell_kpis", {"cell": cell},
                                     f"Read cell {cell}'s KPIs.")
            v = r["n_ues"] if r else None
            return f"Cell {cell} serves {fmt(v)} UEs. <answer>{fmt(v)}</answer>"
        if ue is not None and re.search(r"\bsla\b|service level", low):
            r = yield from self.call("check_sla", {"ue": ue}, f"Check UE {ue}'s SLA.")
            res = r["results"][0] if r and r["results"] else None
            if res is None:
                return "The SLA check returned nothing. <answer>unknown</answer>"
            because = ", ".join(res["reasons"]) or "all budgets are met"
            return (f"UE {ue} {'meets' if res['ok'] else 'violates'} its SLA ({because}). "
                    f"<answer>{'yes' if res['ok'] else 'no'}</answer>")
        ue_reads = (
            (r"uplink", "get_ue_kpis", "ul_throughput_mbps", "UE {ue} sends {v} Mbps uplink."),
            (r"satisf|share of its offered|delivered (over|divided by) offered",
             "get_ue_kpis", "dl_satisfaction", "UE {ue} gets {v} of its offered rate."),
            (r"\bloss|lost", "get_ue_kpis", "loss_ratio",
             "UE {ue}'s packet loss ratio is {v}."),
            (r"rsrp|received power|how strong", "get_radio_quality", "rsrp_dbm",
             "UE {ue} measures an RSRP of {v} dBm."),
        )
        for pat, tool, key, say in ue_reads:
            if ue is not None and re.search(pat, low):
                r = yield from self.call(tool, {"ue": ue}, f"Read UE {ue}'s "
                                         + ("radio quality." if tool == "get_radio_quality"
                                            else "KPIs."))
                v = r[key] if r else None
                return f"{say.format(ue=ue, v=fmt(v))} <answer>{fmt(v)}</answer>"
        if ue is not None and re.search(r"\bserv(es|ing|ed)\b|which cell|attached to", low):
            r = yield from self.call("get_ue_kpis", {"ue": ue}, f"Read UE {ue}'s KPIs.")
            v = r["serving_cell"] if r else None
            return f"UE {ue} is served by cell {fmt(v)}. <answer>{fmt(v)}</answer>"
        if ue is not None and re.search(r"sinr|signal.to.interference", low):
            r = yield from self.call("get_radio_quality", {"ue": ue},
                                     f"Read UE {ue}'s radio quality.")
            v = r["sinr_db"] if r else None
            return f"UE {ue} sees an SINR of {fmt(v)} dB. <answer>{fmt(v)}</answer>"
        if ue is not None and re.search(r"delay|latency|end.to.end|how long", low):
            r = yield from self.call("get_ue_kpis", {"ue": ue}, f"Read UE {ue}'s KPIs.")
            v = r["delay_ms"] if r else None
            return f"UE {ue}'s end-to-end delay is {fmt(v)} ms. <answer>{fmt(v)}</answer>"
        if ue is not None:
            r = yield from self.call("get_ue_kpis", {"ue": ue}, f"Read UE {ue}'s KPIs.")
            v = r["dl_throughput_mbps"] if r else None
            return (f"UE {ue} currently gets {fmt(v)} Mbps downlink. "
                    f"<answer>{fmt(v)}</answer>")
        if cell is not None and re.search(r"utili|prb|\bload|fraction of its resource", low):
            r = yield from self.call("get_cell_load", {"cell": cell}, f"Read cell {cell}'s load.")
            v = r["prb_utilization"] if r else None
            return (f"Cell {cell} runs at PRB utilisation {fmt(v)}. "
                    f"<answer>{fmt(v)}</answer>")
        cell_cfg = ((r"schedul", "scheduler", "Cell {c} runs the {v} scheduler."),
                    (r"transmit power|tx power|radiate", "tx_power_dbm",
                     "Cell {c} transmits at {v} dBm."),
                    (r"bandwidth|resource blocks|\brbs?\b", "bandwidth_rbs",
                     "Cell {c} has {v} resource blocks."))
        for pat, key, say in cell_cfg:
            if cell is not None and re.search(pat, low):
                r = yield from self.call("get_cell_config", {"cell": cell},
                                         f"Read cell {cell}'s configuration.")
                v = r[key] if r else None
                return f"{say.format(c=cell, v=fmt(v))} <answer>{fmt(v)}</answer>"
        if cell is not None and re.search(r"delay|latency", low):
            r = yield from self.call("get_cell_kpis", {"cell": cell}, f"Read cell {cell}'s KPIs.")
            v = r["mean_delay_ms"] if r else None
            return (f"UEs of cell {cell} see {fmt(v)} ms on average. "
                    f"<answer>{fmt(v)}</answer>")
        if cell is not None and re.search(r"power|energy|watt|consum", low):
            r = yield from self.call("get_energy_consumption", {},
                                     "Read the power model's per-cell figures.")
            v = next((c["power_w"] for c in r["cells"] if c["cell"] == cell), None) if r \
                else None
            return f"Cell {cell} draws {fmt(v)} W. <answer>{fmt(v)}</answer>"
        if cell is not None:
            r = yield from self.call("get_cell_kpis", {"cell": cell}, f"Read cell {cell}'s KPIs.")
            v = r["dl_throughput_mbps"] if r else None
            return f"Cell {cell} delivers {fmt(v)} Mbps. <answer>{fmt(v)}</answer>"
        if re.search(r"power|energy|watt|consum", low):
            r = yield from self.call("get_energy_consumption", {},
                                     "Read the network's power draw.")
            v = r["total_power_w"] if r else None
            return f"The network draws {fmt(v)} W in total. <answer>{fmt(v)}</answer>"
        r = yield from self.call("get_network_summary", {}, "Read the network summary.")
        v = (r["mean_delay_ms"] if re.search(r"delay|latency", low) else
             r["dl_throughput_mbps"]) if r else None
        return f"The network-wide figure is {fmt(v)}. <answer>{fmt(v)}</answer>"

    # -- multi-step questions (aggregation, comparison across cells or slices, what-if) -----------
    def qa_multi(self, low: str) -> Generator[str, Obs | None, str | None]:
        """Questions that need several calls; None when the question is none of them."""
        low = canonical_multi(low)
        m = AGG_CELL_RE.search(low)
        if m:
            hl, agg, metric = m["hl"], AGG_WORDS[m["agg"]], AGG_METRICS[m["metric"]]
            return (yield from self._per_cell(hl, metric, [("aggregate_kpi", agg)]))
        m = PCT_CELL_RE.search(low)
        if m:
            p = float(m["p"])
            return (yield from self._per_cell(m["hl"], AGG_METRICS[m["metric"]],
                                              [("compute_percentile", p)]))
        m = GAP_CELL_RE.search(low)
        if m:
            return (yield from self._per_cell("highest", AGG_METRICS[m["metric"]],
                                              [("aggregate_kpi", "mean"),
                                               ("aggregate_kpi", AGG_WORDS[m["agg"]])]))
        m = SPREAD_CELL_RE.search(low)
        if m:
            return (yield from self._per_cell("highest", AGG_METRICS[m["metric"]],
                                              [("compute_percentile", float(m["p1"])),
                                               ("compute_percentile", float(m["p2"]))]))
        m = AGG_SLICE_RE.search(low)
        if m:
            return (yield from self._per_slice(m["hl"], AGG_WORDS[m["agg"]],
                                               AGG_METRICS[m["metric"]]))
        m = WHATIF_BUSY_RE.search(low)
        if m:
            c = int(m["cell"])
            change: dict[str, Any] = (
                {"tool": "set_cell_state", "args": {"cell": c, "active": False}}
                if m["off"] else
                {"tool": "set_bandwidth", "args": {"cell": c, "bandwidth_rbs": int(m["rbs"])}})
            wi = yield from self.call("what_if", {"change": change},
                                      self.think("whatif", c=describe_change(change)))
            if not wi or not wi["cells"]:
                return "The prediction failed. <answer>unknown</answer>"
            top = max(wi["cells"], key=lambda x: (x["prb_after"], -x["cell"]))
            return (f"After that change the model expects cell {top['cell']} to be the most "
                    f"loaded. <answer>{top['cell']}</answer>")
        m = CAPACITY_RE.search(low)
        if m:
            c, bw = int(m["cell"]), int(m["rbs"])
            r = yield from self.call("estimate_capacity", {"cell": c, "bandwidth_rbs": bw},
                                     f"Closed-form capacity of cell {c} at {bw} RBs.")
            v = r["capacity_mbps"] if r else None
            return (f"That is the closed-form capacity of cell {c} for its current UEs. "
                    f"<answer>{fmt(v)}</answer>")
        m = CQI_GAIN_RE.search(low)
        ue = _ids(r"\bue\s*#?(\d+)", low)
        if m and ue is not None:
            rq = yield from self.call("get_radio_quality", {"ue": ue},
                                      f"Read UE {ue}'s SINR first.")
            if not rq or rq.get("sinr_db") is None:
                return f"UE {ue} reports no SINR. <answer>unknown</answer>"
            s = round(rq["sinr_db"] + float(m["d"]), 1)
            r = yield from self.call("sinr_to_cqi", {"sinr_db": s},
                                     f"Map {fmt(s)} dB to a CQI.")
            v = r["cqi"] if r else None
            return (f"Adding the gain to the SINR UE {ue} measures now and looking the result "
                    f"up in the CQI table gives the answer. <answer>{fmt(v)}</answer>")
        m = CQI_OF_RE.search(low)
        if m:
            s = float(m["sinr"])
            r = yield from self.call("sinr_to_cqi", {"sinr_db": s}, "Look the SINR up in the CQI "
                                     "table.")
            v = r["cqi"] if r else None
            return f"That is the CQI the table gives. <answer>{fmt(v)}</answer>"
        m = LIST_MAX_RE.search(low)
        if m:
            r = yield from self.call("list_cells", {}, "List the cells with their settings.")
            if not r:
                return "The cell list is not available. <answer>unknown</answer>"
            key = LIST_MAX[m["what"]]
            top = max(r["cells"], key=lambda c: (c[key], -c["cell"]))
            return f"Cell {top['cell']} tops that list. <answer>{top['cell']}</answer>"
        m = HEAVY_UE_RE.search(low)
        cell = _ids(r"\bcell\s*#?(\d+)", low)
        if m and cell is not None:
            r = yield from self.call("list_ues", {"cell": cell}, f"List the UEs of cell {cell}.")
            if not r or not r["ues"]:
                return f"Cell {cell} serves no UE. <answer>none</answer>"
            top = max(r["ues"], key=lambda u: (u["dl_offered_mbps"], -u["ue"]))
            return (f"UE {top['ue']} asks for the most downlink traffic on cell {cell}. "
                    f"<answer>{top['ue']}</answer>")
        m = SERVER_OF_RE.search(low)
        if m and ue is not None:
            r = yield from self.call("get_edge_placement", {},
                                     "Read where every UE's application runs.")
            row = next((u for u in r["ues"] if u["ue"] == ue), None) if r else None
            if row is None:
                return f"UE {ue} is not listed. <answer>unknown</answer>"
            return (f"UE {ue}'s application runs on the {row['server']} host. "
                    f"<answer>{row['server']}</answer>")
        return None

    def _per_cell(self, hl: str, metric: str, steps: list[tuple[str, Any]]
                  ) -> Generator[str, Obs | None, str]:
        """List the cells, compute each step per active cell with UEs, answer the extreme
        (of the one value, or of the gap between two values)."""
        lc = yield from self.call("list_cells", {}, "First list the cells and their UE counts.")
        if not lc:
            return "The cell list is not available. <answer>unknown</answer>"
        vals: dict[int, list[float]] = {}
        for c in [x["cell"] for x in lc["cells"] if x["active"] and x["n_ues"] > 0]:
            row = []
            for tool, a in steps:
                args: dict[str, Any] = ({"metric": metric, "agg": a, "cell": c}
                                        if tool == "aggregate_kpi" else
                                        {"metric": metric, "p": a, "cell": c})
                r = yield from self.call(tool, args, f"Now cell {c}.")
                if r is not None and r.get("value") is not None:
                    row.append(float(r["value"]))
            if len(row) == len(steps):
                vals[c] = row
        if not vals:
            return "No cell has UEs with that KPI. <answer>none</answer>"
        score = {c: (abs(v[0] - v[1]) if len(v) == 2 else v[0]) for c, v in vals.items()}
        best = (max if hl in ("highest", "largest") else min)(
            sorted(score), key=lambda c: score[c])
        return f"Cell {best} stands out. <answer>{best}</answer>"

    def _per_slice(self, hl: str, agg: str, metric: str) -> Generator[str, Obs | None, str]:
        sm = yield from self.call("get_slice_membership", {}, "Which slices are there?")
        if not sm:
            return "The slice list is not available. <answer>unknown</answer>"
        vals: dict[int, float] = {}
        for q in [s["qci"] for s in sm["slices"] if s["n_ues"] > 0]:
            r = yield from self.call("aggregate_kpi", {"metric": metric, "agg": agg, "qci": q},
                                     f"Now the QCI {q} slice.")
            if r is not None and r.get("value") is not None:
                vals[q] = float(r["value"])
        if not vals:
            return "No slice has UEs with that KPI. <answer>none</answer>"
        best = (max if hl == "highest" else min)(sorted(vals), key=lambda q: vals[q])
        return f"The QCI {best} slice stands out. <answer>{best}</answer>"

    def _qa_snapshot(self, text: str, low: str) -> str:
        raw = text[text.lower().index(SNAPSHOT_HEAD.lower()) + len(SNAPSHOT_HEAD):]
        raw = raw.split("\n\n")[0]
        try:
            snap = json.loads(raw)
        except ValueError:
            return "The snapshot is not readable. <answer>unknown</answer>"
        cells = [c for c in snap.get("cells", []) if c.get("active", True)]
        ues = snap.get("ues", [])
        lead = self.rng.choice(["From the snapshot in the prompt,", "Reading the snapshot,",
                                "The KPIs given above show that"])
        if re.search(r"busiest|most loaded|highest", low):
            c = max(cells, key=lambda x: (x["prb_utilization"], -x["cell"]))
            return (f"{lead} cell {c['cell']} has the highest PRB utilisation "
                    f"({fmt(c['prb_utilization'])}). <answer>{c['cell']}</answer>")
        if "lowest" in low or "worst" in low:
            u = min(ues, key=lambda x: (x["dl_throughput_mbps"], x["ue"]))
            return (f"{lead} UE {u['ue']} has the lowest downlink throughput "
                    f"({fmt(u['dl_throughput_mbps'])} Mbps). <answer>{u['ue']}</answer>")
        if "overloaded" in low:
            ids = [c["cell"] for c in cells if c["prb_utilization"] >= 0.9]
            return (f"{lead} the cells at or above PRB utilisation 0.9 are "
                    f"{', '.join(f'cell {i}' for i in ids) or 'none'}. "
                    f"<answer>{', '.join(map(str, ids))}</answer>")
        cid = _ids(r"\bcell\s*#?(\d+)", low.split(SNAPSHOT_HEAD.lower())[0])
        c = next((x for x in cells if x["cell"] == cid), None)
        if c is None:
            return f"{lead} no such active cell is listed. <answer>none</answer>"
        return f"{lead} cell {cid} serves {c['n_ues']} UEs. <answer>{c['n_ues']}</answer>"

    # -- action -----------------------------------------------------------------------------------
    def action(self, goal: dict[str, Any], text: str = "") -> PolicyGen:
        conds = leaves(goal)
        if not conds:
            return "The success criterion has no condition I can steer towards; no change made."
        prim, others = conds[0], conds[1:]
        # Depth: a focused operator reads only what its candidates need and scores as many
        # changes as fit in FOCUSED_CALLS tool calls (L2); a thorough one explores more, scores
        # more, searches two-change plans and checks the network-wide effect (L3). A ticket that
        # names its fix is applied directly (L1) or after one what_if (L2).
        trial = trial_and_fix(text)
        named = trial[1] if trial is not None else requested_change(text)
        self.focused = self.rng.random() < (SHORT_NAMED if named is not None else FOCUSED)
        tool, args = reader(prim)
        r0 = yield from self.call(tool, args, self.think("measure"))
        v0 = extract(prim, tool, r0)
        offered = _num(r0.get("dl_offered_mbps")) if r0 and tool == "get_ue_kpis" else None
        base_others = []
        for c in others[:2]:
            t2, a2 = reader(c)
            r2 = yield from self.call(t2, a2, self.think("constraint"))
            base_others.append(extract(c, t2, r2))
        # A ticket that names its fix is a work order: the change is made even when the reading
        # (noisy) already looks good enough.
        if named is None and holds(v0, prim["op"], prim["value"]) and all(
                holds(v, c["op"], c["value"]) for v, c in zip(base_others, others, strict=False)):
            return (f"The {LABEL.get(prim['metric'], prim['metric'])} is already "
                    f"{fmt(v0)}, which meets the target of {fmt(prim['value'])}; no change is "
                    f"needed.")
        plan: list[dict[str, Any]] = []
        scored: list[tuple[int, float, dict[str, Any]]] = []
        ctx: dict[str, Any] = {}
        if trial is not None:
            # The ticket asks for a change to be tried first: apply it, re-measure, and roll it
            # back for the fallback fix when it falls short.
            yield from self.call(trial[0]["tool"], trial[0]["args"],
                                 self.think("apply", c=describe_change(trial[0])))
            rt = yield from self.call(tool, args, self.think("remeasure"))
            vt = extract(prim, tool, rt)
            if holds(vt, prim["op"], prim["value"]):
                return self.report(prim, others, v0, vt, [], [describe_change(trial[0])],
                                   False)
            yield from self.call("rollback", {}, self.think("trial_rollback"))
            plan = [trial[1]]
        elif named is not None:
            # The task names its fix: check the prediction first unless focused, then apply.
            if not self.focused:
                yield from self.call("what_if", {"change": named},
                                     self.think("whatif", c=describe_change(named)))
            plan = [named]
        else:
            ctx = yield from self.explore(prim, r0)
            self.serving = ctx.get("cell") if ctx.get("kind") == "ue" else None
            cands = self.candidates(prim, ctx)
            if self.focused:
                # Leave room for apply, re-measure and the side conditions' re-reads.
                room = FOCUSED_CALLS - self.steps - 2 - min(len(others), 2)
                cands = cands[:max(1, min(3, room))]
            else:
                cands = cands[:self.cfg.max_candidates]
            scored = yield from self.score(cands, prim, others, v0, offered)
        if scored:
            best = scored[0]
            plan = [best[2]]
            if not best[0] and not self.focused and self.budget(6) and len(scored) > 1:
                two = yield from self.beam(scored[: self.cfg.beam_width], prim, others, offered,
                                           ctx)
                if two is not None and (two[0], two[1]) > (best[0], best[1]):
                    plan = two[2]
        applied: list[str] = []
        for ch in plan:
            r = yield from self.call(ch["tool"], ch["args"],
                                     self.think("apply", c=describe_change(ch)))
            if r is not None:
                applied.append(r["description"])
        r1 = yield from self.call(tool, args, self.think("remeasure"))
        v1 = extract(prim, tool, r1)
        if applied and v0 is not None and v1 is not None and \
                (v1 - v0) * direction(prim["op"]) < 0 and self.budget(2):
            rb = yield from self.call("rollback", {}, self.think("rollback"))
            if rb is not None:
                applied.pop()
                r1 = yield from self.call(tool, args, self.think("remeasure"))
                v1 = extract(prim, tool, r1)
        if applied and len(plan) == 1 and len(scored) > 1 and v1 is not None and \
                not holds(v1, prim["op"], prim["value"]) and self.budget(4):
            # Short of the target: undo the change and try the runner-up instead.
            rb = yield from self.call("rollback", {}, self.think("retry"))
            if rb is not None:
                applied.pop()
                nxt = scored[1][2]
                r = yield from self.call(nxt["tool"], nxt["args"],
                                         self.think("apply", c=describe_change(nxt)))
                if r is not None:
                    applied.append(r["description"])
                r1 = yield from self.call(tool, args, self.think("remeasure"))
                v1 = extract(prim, tool, r1)
        after_others = []
        for c in others[:2]:
            t2, a2 = reader(c)
            r2 = yield from self.call(t2, a2, self.think("constraint"))
            after_others.append(extract(c, t2, r2))
        net = False
        if applied and not self.focused and self.budget(2) and \
                self.rng.random() < (0.5 if named is None else 0.4):
            # Before/after at network level: did the fix cost the rest of the network?
            d = yield from self.call("kpi_delta", {"baseline": "initial"},
                                     self.think("delta"))
            net = d is not None
        if applied and not self.focused and named is None and self.budget(2) and \
                self.rng.random() < 0.3:
            yield from self.call("get_change_history", {}, self.think("history"))
        return self.report(prim, others, v0, v1, after_others, applied, net)

    def explore(self, prim: dict[str, Any], r0: dict[str, Any] | None
                ) -> Generator[str, Obs | None, dict[str, Any]]:
        """Observe what the candidate generator needs (serving cell, neighbours, loads)."""
        kind, _, idx = prim["target"].partition(":")
        m = prim["metric"]
        ctx: dict[str, Any] = {"kind": kind, "metric": m}
        thorough = not self.focused
        if kind == "ue" and idx != "*":
            u = int(idx)
            ctx["ue"] = u
            ctx["cell"] = r0.get("serving_cell") if r0 else None
            ctx["qci"] = r0.get("qci") if r0 else None
            if m in ("delay_ms", "sla_ok"):
                ctx["server"] = yield from self._server_of(u, ctx)
            if m != "handovers":
                meas = yield from self.call("get_ue_measurements", {"ue": u},
                                            self.think("measurements"))
                if meas:
                    others = [c for c in meas["cells"] if c["active"] and
                              c["cell"] != meas["serving_cell"] and c["rsrp_dbm"] is not None]
                    if others:
                        ctx["neighbor"] = max(others, key=lambda c: c["rsrp_dbm"])["cell"]
            if thorough and m == "dl_throughput_mbps" and self.rng.random() < 0.5:
                # What a 6 dB stronger signal would be worth in CQI terms.
                rq = yield from self.call("get_radio_quality", {"ue": u},
                                          "How good is its radio link?")
                if rq and rq.get("sinr_db") is not None:
                    yield from self.call("sinr_to_cqi",
                                         {"sinr_db": round(rq["sinr_db"] + 6.0, 1)},
                                         self.think("cqi"))
            if thorough and ctx["cell"] is not None and self.rng.random() < 0.6:
                yield from self._sharers(ctx, exclude=u)
        elif kind == "cell" and idx != "*":
            ctx["cell"] = int(idx)
            if thorough and m == "prb_utilization" and self.rng.random() < 0.5:
                yield from self._sharers(ctx, exclude=None)
        elif kind == "qci" and r0 and r0.get("slices") and r0["slices"][0]["violating_ues"]:
            if thorough and self.rng.random() < 0.5:
                yield from self.call("get_slice_membership", {"qci": int(idx)},
                                     "Who is in this slice?")
            u = r0["slices"][0]["violating_ues"][0]
            k = yield from self.call("get_ue_kpis", {"ue": u},
                                     f"UE {u} violates the slice SLA; look at it.")
            server = yield from self._server_of(u)
            slow = bool(k and k.get("delay_ms") and k["delay_ms"] > 100)
            ctx.update(kind="ue", ue=u, cell=k.get("serving_cell") if k else None,
                       qci=int(idx), server=server, slice=True,
                       metric="delay_ms" if slow else "dl_throughput_mbps")
            # what_if does not report slice counters: steer on the violating UE instead.
            pm = "delay_ms" if slow else "dl_throughput_mbps"
            if k is not None:
                self.proxy = ({"target": f"ue:{u}", "metric": pm,
                               "op": "<=" if slow else ">=", "value": 0.0},
                              _num(k.get(pm)), _num(k.get("dl_offered_mbps")))
        elif m in ("total_power_w",) or (kind == "cell" and m == "power_w"):
            if self.rng.random() < 0.5:
                load = yield from self.call("get_network_load", {},
                                            "Which cells carry little traffic?")
                key = "prb_utilization"
            else:
                load = yield from self.call("get_energy_consumption", {},
                                            "Which cells draw power for little load?")
                key = "load"
            if load:
                act = [c for c in load["cells"] if c["active"]]
                ctx["quiet"] = [c["cell"] for c in sorted(
                    act, key=lambda c: (c[key], c["cell"]))][:3]
                ctx["n_active"] = len(act)
                for c in ctx["quiet"][:2]:
                    if self.budget(10) and self.rng.random() < 0.6:
                        yield from self.call("estimate_energy_saving", {"cell": c},
                                             f"What would switching cell {c} off save?")
        elif m in ("total_handovers", "handovers"):
            hs = yield from self.call("get_handover_stats", {}, "Where do handovers happen?")
            if hs and hs["cells"]:
                ctx["cell"] = max(hs["cells"], key=lambda c: (c["handovers"], -c["cell"]))["cell"]
        elif m in ("max_prb_utilization", "prb_utilization"):
            r = yield from self.call("rank_busiest_cells", {"k": 2}, "Find the busiest cells.")
            if r and r["ranking"]:
                ctx["cell"] = r["ranking"][0]["cell"]
                ctx["kind"], ctx["metric"] = "cell", "prb_utilization"
        else:  # network-wide rate/delay/SLA or percentile goals: work on the worst UE
            metric = "delay_ms" if "delay" in m else "dl_satisfaction"
            r = yield from self.call("rank_worst_ues", {"metric": metric, "k": 3},
                                     "Which UEs suffer most?")
            if r and r["ranking"]:
                w = r["ranking"][0]
                ctx.update(ue=w["ue"], cell=w["serving_cell"], kind="ue",
                           metric="delay_ms" if metric == "delay_ms" else "dl_throughput_mbps")
                if m not in SUMMARY_KEYS:
                    # what_if reports no percentile: steer on the worst UE's own rate.
                    self.proxy = ({"target": f"ue:{w['ue']}", "metric": "dl_throughput_mbps",
                                   "op": ">=", "value": 0.0}, _num(w.get("value")), None)
        if ctx.get("cell") is not None and self.budget(12):
            if m not in ("handovers", "total_handovers") and self.rng.random() < 0.3:
                lc = yield from self.call("list_cells", {}, self.think("cells"))
                ctx["cell_cfg"] = next((c for c in lc["cells"] if c["cell"] == ctx["cell"]),
                                       None) if lc else None
            else:
                ctx["cell_cfg"] = yield from self.call("get_cell_config", {"cell": ctx["cell"]},
                                                       self.think("config"))
            cfg = ctx["cell_cfg"] or {}
            if thorough and ctx.get("kind") == "cell" and m == "prb_utilization" and \
                    cfg.get("bandwidth_rbs") in BANDWIDTHS_RB[:-1] and self.rng.random() < 0.5:
                wider = BANDWIDTHS_RB[BANDWIDTHS_RB.index(cfg["bandwidth_rbs"]) + 1]
                yield from self.call("estimate_capacity", {"cell": ctx["cell"],
                                                           "bandwidth_rbs": wider},
                                     f"How much capacity would {wider} RBs give this cell?")
            elif thorough and self.rng.random() < 0.7 and self.budget(14):
                # (0.35 left these three reads near 1 % of samples once named fixes were
                # mostly applied without an exploration.)
                yield from self.call(self.rng.choice(["get_neighbors", "get_cell_radio_quality",
                                                      "get_cell_load"]),
                                     {"cell": ctx["cell"]}, "A little more context on this cell.")
        if thorough and self.rng.random() < 0.2 and self.budget(14):
            yield from self.call("get_alarms", {}, "Any alarms that point at the cause?")
        return ctx

    def _server_of(self, u: int, ctx: dict[str, Any] | None = None
                   ) -> Generator[str, Obs | None, str | None]:
        """Where UE u's application runs: from its configuration or the edge placement."""
        if self.rng.random() < 0.5:
            ep = yield from self.call("get_edge_placement", {},
                                      "Where do the applications run, edge or cloud?")
            row = next((x for x in ep["ues"] if x["ue"] == u), None) if ep else None
            return row["server"] if row else None
        cfg = yield from self.call("get_ue_config", {"ue": u},
                                   "Where does this UE's application run?")
        if cfg and ctx is not None:
            ctx["mobile"] = cfg.get("mobility") != "static"
        return cfg.get("server") if cfg else None

    def _sharers(self, ctx: dict[str, Any], exclude: int | None
                 ) -> Generator[str, Obs | None, None]:
        """Who shares the cell: the heaviest other non-GBR UE is a traffic-shaping candidate."""
        lu = yield from self.call("list_ues", {"cell": ctx["cell"]},
                                  self.think("sharers", c=str(ctx["cell"])))
        if lu:
            me = next((x for x in lu["ues"] if x["ue"] == exclude), None)
            if me is not None:
                ctx["mobile"] = me["mobility"] != "static"
            heavy = heaviest(lu["ues"], exclude)
            if heavy is not None:
                ctx["heavy"] = (heavy["ue"], heavy["dl_offered_mbps"])

    def candidates(self, prim: dict[str, Any], ctx: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cell, cfg, m = ctx.get("cell"), ctx.get("cell_cfg") or {}, ctx.get("metric", "")
        if ctx.get("quiet") is not None:
            if ctx.get("n_active", 0) > 1:
                out += [{"tool": "set_cell_state", "args": {"cell": c, "active": False}}
                        for c in ctx["quiet"][:2]]
            return out
        bw = cfg.get("bandwidth_rbs")
        p = cfg.get("tx_power_dbm")
        if m in ("handovers", "total_handovers") and cell is not None:
            hyst = float(cfg.get("ho_hysteresis_db", 3.0))
            ttt = int(cfg.get("ho_ttt_ms", 256))
            nxt = next((t for t in TTT_STEPS if t > ttt), None)
            out.append({"tool": "set_handover_params",
                        "args": {"cell": cell, "hysteresis_db": min(15.0, hyst + 3.0)}})
            if nxt:
                out.append({"tool": "set_handover_params", "args": {"cell": cell,
                                                                    "ttt_ms": nxt}})
            if cfg.get("ho_algorithm", "a3_rsrp") != "none":
                out.append({"tool": "set_handover_algorithm",
                            "args": {"cell": cell, "algorithm": "none"}})
            return out
        if ctx.get("ue") is not None and ctx.get("server") == "cloud":
            out.append({"tool": "set_ue_server", "args": {"ue": ctx["ue"], "server": "edge"}})
        if cell is not None and bw in BANDWIDTHS_RB and bw != BANDWIDTHS_RB[-1]:
            out.append({"tool": "set_bandwidth", "args": {
                "cell": cell, "bandwidth_rbs": BANDWIDTHS_RB[BANDWIDTHS_RB.index(bw) + 1]}})
        if ctx.get("kind") == "ue" and ctx.get("neighbor") is not None:
            out.append({"tool": "force_handover", "args": {"ue": ctx["ue"],
                                                           "target_cell": ctx["neighbor"]}})
        if ctx.get("kind") == "ue" and ctx.get("mobile") and cell is not None and \
                cfg.get("ho_algorithm", "none") != "none":
            # A moving UE's rate and delay depend on when it hands over: earlier (less
            # hysteresis), later, or not at all on this cell.
            hyst = float(cfg.get("ho_hysteresis_db", 3.0))
            out.append({"tool": "set_handover_algorithm",
                        "args": {"cell": cell, "algorithm": "none"}})
            if hyst >= 2.0:
                out.append({"tool": "set_handover_params",
                            "args": {"cell": cell, "hysteresis_db": hyst - 2.0}})
        if ctx.get("heavy") is not None:
            hu, hoff = ctx["heavy"]
            out.append({"tool": "shape_traffic", "args": {
                "ue": hu, "max_dl_mbps": round(max(0.1, 0.3 * hoff), 2)}})
        if cell is not None and p is not None:
            if ctx.get("kind") == "ue" and m != "delay_ms" and p < 46:
                out.append({"tool": "set_tx_power", "args": {
                    "cell": cell, "tx_power_dbm": round(min(46.0, p + 6.0), 1)}})
            if ctx.get("kind") == "cell" and p >= 6:
                out.append({"tool": "set_tx_power", "args": {
                    "cell": cell, "tx_power_dbm": round(p - 6.0, 1)}})
        if cell is not None and (ctx.get("kind") == "cell" or m == "delay_ms"):
            f = self.rng.choice([0.5, 0.6, 0.7])
            out.append({"tool": "graceful_degradation", "args": {"cell": cell, "factor": f}})
        if cell is not None and bw in BANDWIDTHS_RB and bw < 50 and \
                BANDWIDTHS_RB.index(bw) + 2 < len(BANDWIDTHS_RB):
            out.append({"tool": "set_bandwidth", "args": {
                "cell": cell, "bandwidth_rbs": BANDWIDTHS_RB[BANDWIDTHS_RB.index(bw) + 2]}})
        if ctx.get("qci") in GBR and cell is not None and \
                cfg.get("scheduler") not in ("pss", "cqa"):
            out.append({"tool": "set_scheduler", "args": {"cell": cell, "scheduler": "pss"}})
        elif ctx.get("kind") == "ue" and cell is not None and cfg.get("scheduler") == "pf" and \
                m == "dl_throughput_mbps":
            # Round robin gives a starved UE an equal share of the time instead of one
            # weighted by its channel.
            out.append({"tool": "set_scheduler", "args": {"cell": cell, "scheduler": "rr"}})
        if ctx.get("slice") and ctx.get("ue") is not None and ctx.get("qci") in (5, 7):
            # A bearer mapped to a stricter class than its traffic needs: best effort (QCI 9)
            # has the loosest delay budget.
            out.append({"tool": "set_ue_qci", "args": {"ue": ctx["ue"], "qci": 9}})
        return out

    def _value(self, wi: dict[str, Any], prim: dict[str, Any], others: list[dict[str, Any]],
               now: float | None, offered: float | None) -> tuple[int, float]:
        """(confidence, progress): confidence 2 if every checkable condition is predicted to
        hold and the primary one still holds with the prediction moved two model standard
        deviations the wrong way (`max_uncertainty` of the what_if: headroom for the model's
        error, which the operator's verifier also demands), 1 if they hold on the mean
        prediction only, else 0."""
        v = predicted(prim, wi, now, offered, self.serving)
        if v is None and self.proxy is not None:
            pc, pnow, poff = self.proxy
            pv = predicted(pc, wi, pnow, poff, self.serving)
            prog = 0.0 if pv is None or pnow is None else \
                (pv - pnow) * direction(pc["op"]) / max(abs(pnow), 1e-6)
            return 0, prog
        ok_all = holds(v, prim["op"], prim["value"])
        for c in others:
            pv = predicted(c, wi, None, None)
            if pv is not None and not holds(pv, c["op"], c["value"]):
                ok_all = False
        prog = 0.0 if v is None or now is None else \
            (v - now) * direction(prim["op"]) / max(abs(now), 1e-6)
        if not ok_all or v is None:
            return 0, prog
        u = _num(wi.get("max_uncertainty")) or 0.0
        safe = holds(v * (1.0 - 2.0 * u * direction(prim["op"])), prim["op"], prim["value"])
        return (2 if safe else 1), prog

    def score(self, cands: list[dict[str, Any]], prim: dict[str, Any],
              others: list[dict[str, Any]], v0: float | None, offered: float | None
              ) -> Generator[str, Obs | None, list[tuple[int, float, dict[str, Any]]]]:
        out = []
        for c in cands:
            if not self.budget(4):
                break
            wi = yield from self.call("what_if", {"change": c},
                                      self.think("whatif", c=describe_change(c)))
            if wi is not None:
                ok, prog = self._value(wi, prim, others, v0, offered)
                out.append((ok, prog, c))
        out.sort(key=lambda s: (-s[0], -s[1]))
        return [s for s in out if s[0] or s[1] > 0]

    def beam(self, beams: list[tuple[int, float, dict[str, Any]]], prim: dict[str, Any],
             others: list[dict[str, Any]], offered: float | None, ctx: dict[str, Any]
             ) -> Generator[str, Obs | None, tuple[int, float, list[dict[str, Any]]] | None]:
        """Depth-2 beam search: apply each beam's change tentatively, what_if the follow-ups
        on the changed network, roll back; return the best two-change plan."""
        best: tuple[int, float, list[dict[str, Any]]] | None = None
        for _ok1, prog1, first in beams:
            if not self.budget(5):
                break
            r = yield from self.call(first["tool"], first["args"],
                                     self.think("explore2", c=describe_change(first)))
            if r is None:
                continue
            # The tentative change moved the baseline: follow-ups are scored from there.
            cfg = dict(ctx.get("cell_cfg") or {})
            if first["tool"] == "set_bandwidth" and first["args"].get("cell") == ctx.get("cell"):
                cfg["bandwidth_rbs"] = first["args"]["bandwidth_rbs"]
            if first["tool"] == "set_tx_power" and first["args"].get("cell") == ctx.get("cell"):
                cfg["tx_power_dbm"] = first["args"]["tx_power_dbm"]
            nctx = {**ctx, "cell_cfg": cfg,
                    "server": "edge" if first["tool"] == "set_ue_server" else ctx.get("server")}
            if first["tool"] == "force_handover":
                nctx.update(cell=first["args"]["target_cell"], neighbor=None, cell_cfg={})
            # A power, bandwidth (RSRP is power per resource element) or on/off change can
            # move the UE to the neighbour by itself; a forced handover there would then be
            # refused (invalid_state), so it is not a follow-up.
            moves = first["tool"] in ("set_tx_power", "set_cell_state", "set_bandwidth")
            follow = [c for c in self.candidates(prim, nctx) if c != first and
                      not (moves and c["tool"] == "force_handover")][:2]
            for c in follow:
                if not self.budget(4):
                    break
                wi = yield from self.call("what_if", {"change": c},
                                          self.think("whatif", c=describe_change(c)))
                if wi is None:
                    continue
                # Progress is measured from the original baseline: prog1 plus the follow-up's.
                now = _num(wi["before"].get(prim["metric"])) if prim["target"] == "network" \
                    else None
                ok, prog = self._value(wi, prim, others, now, offered)
                cand = (ok, prog1 + max(prog, 0.0), [first, c])
                if best is None or (cand[0], cand[1]) > (best[0], best[1]):
                    best = cand
            yield from self.call("rollback", {}, self.think("undo_probe"))
        return best

    def report(self, prim: dict[str, Any], others: list[dict[str, Any]], v0: float | None,
               v1: float | None, after_others: list[float | None], applied: list[str],
               net: bool = False) -> str:
        label = LABEL.get(prim["metric"], prim["metric"].replace("_", " "))
        who = {"network": "the network"}.get(prim["target"], prim["target"].replace(":", " ")
                                             .replace("ue ", "UE ").replace("cell *", "all cells"))
        met = holds(v1, prim["op"], prim["value"]) and all(
            holds(v, c["op"], c["value"]) for v, c in zip(after_others, others, strict=False))
        if applied:
            what = self.rng.choice(["I applied: ", "Change made: ", "Applied "]) + \
                "; ".join(applied) + "."
        else:
            what = "None of the evaluated changes was predicted to help, so I changed nothing."
        move = self.rng.choice([f"The {label} of {who} went from {fmt(v0)} to {fmt(v1)}.",
                                f"For {who}, the {label} moved from {fmt(v0)} to {fmt(v1)}.",
                                f"Measured {label} ({who}): {fmt(v0)} before, {fmt(v1)} after."])
        words = SWITCH_WORDS.get(prim["metric"])
        if words is not None:
            def say(x: float | None) -> str:
                return "unknown" if x is None else words[1] if x else words[0]
            move = f"The {label} of {who} went from {say(v0)} to {say(v1)}."
        side = ""
        if others and after_others:
            side = " " + "; ".join(
                f"{LABEL.get(c['metric'], c['metric'])} is now {fmt(v)}"
                for c, v in zip(others, after_others, strict=False)) + "."
        verdict = (self.rng.choice(["The target is met.", "The goal holds now.",
                                    "This meets the success criterion."]) if met else
                   self.rng.choice([f"The target of {fmt(prim['value'])} is not reached.",
                                    "The success criterion is still not met.",
                                    "This falls short of the target."]))
        if net:
            side += self.rng.choice([" I also compared the whole network with its initial "
                                     "state.", " The network-wide comparison with the initial "
                                     "state is in the log above."])
        return f"{what} {move}{side} {verdict}"


class _Stop(Exception):
    """Raised inside the generator after a malformed turn: the attempt ends there."""


# Sentences that carry the question itself, as opposed to the framing around it (persona,
# site facts, motivation): a question mark, a request verb opening it (or opening what follows a
# colon), or a question word.
_ASK_RE = re.compile(r"\?|(^|:\s*)(is|does|are|report|count|find|name|identify|check|give|tell|"
                     r"list)\b|\b(what|which|how (many|much|long|good|strong|loaded|"
                     r"satisfied))\b")
_ENTITY_RE = re.compile(r"\b(ue|cell|qci)\s*#?\d")


def question_of(text: str) -> str:
    """The question sentences of a prompt (all of it when none stands out). Framing such as
    "Site facts: 38 attached UEs", "Quote the figure you observed" or "Cell 2 runs the pf
    scheduler" must not steer the reading: matched against the whole prompt, "attached" and
    "observed" read as a serving-cell question and a stated fact names the wrong entity. When
    the question names no entity it refers back to the sentence just before it ("UE 4 is near a
    weak cell. What does it get?")."""
    parts = [p.strip() for p in re.split(r"(?<=[.?!])\s+", text) if p.strip()]
    asks = [i for i, p in enumerate(parts) if _ASK_RE.search(p)]
    if not asks:
        return text
    if not any(_ENTITY_RE.search(parts[i]) for i in asks) and asks[0] > 0 and \
            _ENTITY_RE.search(parts[asks[0] - 1]):
        asks.insert(0, asks[0] - 1)
    return " ".join(parts[i] for i in asks)


# The vocabulary of multi-step questions, shared with the task writer (forge.teacher.proposer)
# which phrases them: per-UE KPIs and aggregations by the words a question uses for them.
AGG_METRICS = {"downlink throughput": "dl_throughput_mbps", "end-to-end delay": "delay_ms",
               "sinr": "sinr_db", "satisfaction": "dl_satisfaction", "rsrp": "rsrp_dbm"}
AGG_WORDS = {"mean": "mean", "average": "mean", "total": "sum", "minimum": "min",
             "maximum": "max"}
_M = "(?P<metric>" + "|".join(AGG_METRICS) + ")"
_A = "(?P<agg>" + "|".join(AGG_WORDS) + ")"
# Other wordings of the phrases those regexes read: the task writer varies multi-step questions
# with them (their few templates otherwise saturate the ROUGE-L filter: 60 % of one pattern's
# proposals were near-duplicates by 6,000), and the planner maps them back (`canonical_multi`)
# before matching. Canonical phrase -> variants; no variant is another phrase's canonical form.
MULTI_SYNONYMS: dict[str, tuple[str, ...]] = {
    "largest gap": ("biggest gap", "widest gap", "largest difference", "biggest difference"),
    "largest spread": ("widest spread", "biggest spread", "largest distance"),
    "between the mean and the": ("between the average and the",
                                 "between the mean value and the"),
    "downlink throughput": ("downlink rate", "dl throughput", "downlink data rate"),
    "end-to-end delay": ("end-to-end latency", "e2e delay", "packet delay"),
    "satisfaction": ("satisfaction score", "service satisfaction"),
    "rsrp": ("reference signal received power", "received signal power (rsrp)"),
    "sinr": ("signal-to-interference-plus-noise ratio", "sinr level"),
    "which cell's ues": ("which cell's users", "which cell's terminals"),
}
_CANONICAL = {v: k for k, vs in MULTI_SYNONYMS.items() for v in vs}
_VARIANT_RE = re.compile(r"(?<![\w-])(" + "|".join(
    re.escape(v) for v in sorted(_CANONICAL, key=len, reverse=True)) + r")(?![\w-])")


def canonical_multi(low: str) -> str:
    """A lower-cased question with every `MULTI_SYNONYMS` variant put back in canonical form."""
    return _VARIANT_RE.sub(lambda m: _CANONICAL[m.group(1)], low)


AGG_CELL_RE = re.compile(r"which cell'?s ues (?:have|see|get) the (?P<hl>highest|lowest) "
                         + _A + " " + _M)
PCT_CELL_RE = re.compile(r"which cell has the (?P<hl>highest|lowest) (?P<p>\d+)(?:th|st|nd|rd)"
                         r"[- ]percentile (?:ue )?" + _M)
GAP_CELL_RE = re.compile(r"largest gap between the mean and the " + _A + " " + _M)
SPREAD_CELL_RE = re.compile(r"largest spread between (?:its |the )?(?P<p1>\d+)(?:th)? and "
                            r"(?:its |the )?(?P<p2>\d+)(?:th)?[- ]percentile (?:ue )?" + _M)
AGG_SLICE_RE = re.compile(r"which slice(?: \(qci\))? has the (?P<hl>highest|lowest) " + _A
                          + " " + _M)
WHATIF_BUSY_RE = re.compile(r"if cell (?P<cell>\d+) were (?:(?P<off>switched off)|widened to "
                            r"(?P<rbs>\d+) (?:rbs|resource blocks))")
CAPACITY_RE = re.compile(r"capacity .*?cell (?P<cell>\d+) .*?(?P<rbs>\d+) (?:rbs|resource "
                         r"blocks)")
CQI_GAIN_RE = re.compile(r"sinr (?:rose|improved|went up) by (?P<d>\d+(?:\.\d+)?) ?db")
CQI_OF_RE = re.compile(r"cqi\)? .*?sinr of (?P<sinr>-?\d+(?:\.\d+)?) ?db")
LIST_MAX = {"transmits at the highest power": "tx_power_dbm",
            "has the widest bandwidth": "bandwidth_rbs", "serves the most ues": "n_ues"}
LIST_MAX_RE = re.compile(r"which cell (?P<what>" + "|".join(LIST_MAX) + ")")
HEAVY_UE_RE = re.compile(r"which (?:ue|terminal) (?:of|on) cell \d+ (?:asks for|requests|"
                         r"offers) the most downlink")
SERVER_OF_RE = re.compile(r"(?:edge|cloud),? or (?:in )?(?:the )?(?:edge|cloud)")


def _ids(pat: str, text: str) -> int | None:
    m = re.search(pat, text)
    return int(m.group(1)) if m else None


# How the planner (and the task writer) names a configure call: one or more phrases per tool
# (a tool with optional arguments has one phrase per argument set). The same table reads a phrase
# back: a task that names its fix ("fix it by widening cell 2 to 50 RBs") is solved by applying
# that change. Field types come from the tool's JSON Schema.
CHANGE_PHRASES: dict[str, tuple[str, ...]] = {
    "set_bandwidth": ("widening cell {cell} to {bandwidth_rbs} RBs",),
    "set_tx_power": ("setting cell {cell} to {tx_power_dbm} dBm",),
    "force_handover": ("moving UE {ue} to cell {target_cell}",),
    "set_ue_server": ("serving UE {ue} from the {server}",),
    "graceful_degradation": ("scaling cell {cell}'s non-GBR traffic by {factor}",),
    "set_scheduler": ("switching cell {cell} to the {scheduler} scheduler",),
    "set_cell_state": ("switching cell {cell} {active}",),
    "set_handover_params": ("setting cell {cell}'s handover hysteresis to {hysteresis_db} dB",
                            "setting cell {cell}'s time-to-trigger to {ttt_ms} ms"),
    "set_handover_algorithm": ("setting cell {cell}'s handover algorithm to {algorithm}",),
    "set_ue_qci": ("remapping UE {ue}'s bearer to QCI {qci}",),
    "shape_traffic": ("capping UE {ue}'s downlink at {max_dl_mbps} Mbps",),
}
_UE = r"(?:ue|terminal|user equipment)"  # the action paraphraser's words for a UE
_FIELD_RE = {"integer": r"(\d+)", "number": r"(-?\d+(?:\.\d+)?)", "boolean": r"(on|off)",
             "string": r"([a-z][a-z0-9_]*)"}


def _phrase_re(template: str, tool: str) -> tuple[re.Pattern[str], list[tuple[str, str]]]:
    props = BY_NAME[tool].args["properties"]
    fields: list[tuple[str, str]] = []
    out = ""
    for lit, name, _, _ in string.Formatter().parse(template.lower()):
        out += re.escape(lit).replace(r"ue\ ", _UE + r"\ ")
        if name:
            typ = props[name].get("type", "string")
            fields.append((name, typ))
            out += _FIELD_RE[typ]
    return re.compile(out), fields


_CHANGE_RE = [(tool, *_phrase_re(t, tool)) for tool, ts in CHANGE_PHRASES.items() for t in ts]


def requested_change(text: str) -> dict[str, Any] | None:
    """The configure call an instruction asks for by name, if any."""
    low = text.lower()
    for tool, rx, fields in _CHANGE_RE:
        m = rx.search(low)
        if not m:
            continue
        conv = {"integer": int, "number": float, "boolean": lambda x: x == "on", "string": str}
        try:
            return {"tool": tool, "args": {name: conv[typ](m[i + 1])  # type: ignore[operator]
                                           for i, (name, typ) in enumerate(fields)}}
        except ValueError:  # a number that does not parse: not a usable instruction
            return None
    return None


TRIAL_RE = re.compile(r"roll it back|undo it")


def trial_and_fix(text: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(change to try first, fallback) when a ticket names two changes in order and says to
    roll the first back if it falls short ("try X first; if not enough, undo it and do Y")."""
    low = text.lower()
    if not TRIAL_RE.search(low):
        return None
    conv = {"integer": int, "number": float, "boolean": lambda x: x == "on", "string": str}
    found: list[tuple[int, dict[str, Any]]] = []
    for tool, rx, fields in _CHANGE_RE:
        for m in rx.finditer(low):
            try:
                found.append((m.start(), {"tool": tool, "args": {
                    name: conv[typ](m[i + 1])  # type: ignore[operator]
                    for i, (name, typ) in enumerate(fields)}}))
            except ValueError:
                return None
    found.sort(key=lambda x: x[0])
    if len(found) != 2 or found[0][1] == found[1][1]:
        return None
    return found[0][1], found[1][1]


def describe_change(c: dict[str, Any]) -> str:
    a, t = c["args"], c["tool"]
    for template in CHANGE_PHRASES.get(t, ()):
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f}
        if names == set(a):
            return template.format(**{k: ("on" if v else "off") if isinstance(v, bool)
                                       else v for k, v in a.items()})
    return t


# Concept questions answered from knowledge (no tools). Explanations avoid numbers that the
# question does not contain: the claims verifier checks every number of a final answer.
CONCEPTS: list[tuple[str, str, list[str]]] = [
    (r"hysteresis", "fewer", [
        "A larger A3 hysteresis asks a neighbour to be clearly stronger before a handover "
        "triggers, so borderline UEs stop bouncing between cells: fewer handovers, at the cost "
        "of slower reaction.",
        "Raising the hysteresis widens the margin a neighbour must exceed; ping-pong drops and "
        "handovers become fewer, although late handovers get more likely."]),
    (r"time.to.trigger|\bttt\b", "fewer", [
        "A longer time-to-trigger requires the entry condition to hold for longer before a "
        "handover, which filters out short fades: fewer handovers.",
        "With a longer time-to-trigger, transient crossings no longer trigger; handovers "
        "become fewer and ping-pong is suppressed."]),
    (r"switch(ing)? .*off|sleep", "lower", [
        "A sleeping cell draws its sleep power instead of its static active power, so the "
        "network's total power becomes lower, while its UEs move to neighbours.",
        "Switching a cell off removes its active consumption; total power goes lower but its "
        "UEs load the remaining cells."]),
    (r"edge", "lower", [
        "Serving the application from the edge host shortens the core-to-server path, so the "
        "end-to-end delay becomes lower.",
        "The edge host sits next to the gateway, so moving the server there makes the delay "
        "lower."]),
    (r"bandwidth|resource blocks", "higher", [
        "More resource blocks give the scheduler more spectrum per subframe: capacity gets "
        "higher and PRB utilisation for the same traffic drops.",
        "Widening the carrier raises the cell's capacity, so it becomes higher."]),
    (r"gbr|guaranteed", "pss", [
        "Of the schedulers available, the priority set scheduler honours guaranteed bit rates "
        "first; pss is the usual choice (cqa too).",
        "Use pss: it serves GBR bearers up to their guaranteed rate before sharing the rest."]),
]


def _fields(x: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) of a JSON result, nested ones included."""
    if isinstance(x, dict):
        for k, v in x.items():
            yield k, v
            yield from _fields(v)
    elif isinstance(x, list):
        for v in x:
            yield from _fields(v)


def solve_gen(user_text: str, rng: random.Random, cfg: PolicyConfig,
              _stop: type[Exception] = _Stop) -> PolicyGen:
    """The planner for one task prompt, as a generator of assistant turns. A prompt with a
    success criterion is an action task, anything else a question.

    (`_stop` binds the exception class locally: a generator still open at interpreter exit is
    closed after the module's globals are cleared, and `except _Stop` then raised a TypeError
    that Python printed as "Exception ignored".)"""
    p = Planner(rng, cfg)
    try:
        goal = criterion_of(user_text)
        if goal is not None:
            return (yield from p.action(goal, user_text.split(CRITERION_HEAD)[0]))
        return p.cite((yield from p.qa(user_text)))
    except _stop:
        return ""

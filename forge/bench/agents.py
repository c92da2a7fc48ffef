"""Agents for `forge bench`: every agent is a chat model (messages in, next assistant turn out),
driven through the same closed-loop episode runner as synthesis (`forge.synth.solve`).

Spec strings (`--agent`, repeatable):

| spec                  | what it is                                                              |
|-----------------------|-------------------------------------------------------------------------|
| `noop`                | answers at once and changes nothing (the floor)                         |
| `random`              | reads the network size, then 1-3 random valid tool calls, then stops     |
| `threshold-rule`      | six if-then operator rules over observe tools (below), at most 2 changes |
| `mape-k`              | monitor-analyse-plan-execute over alarms with a 6-rule knowledge base   |
| `greedy-what-if`      | tries single configure changes with `what_if`, applies the best         |
| `teacher`             | the offline teacher that made the training data                         |
| `openai:MODEL@URL`    | any OpenAI-compatible endpoint (key from the environment only)          |
| `hf:PATH`             | a local transformers checkpoint (`hf:smollm2` = the shipped SmolLM2)    |

The rule agents read only what an operator's tools show them (the observations) and the ticket;
`greedy-what-if` and `teacher` also read the ticket's success criterion (goal JSON) when it is
there. A scripted agent is a generator: it yields assistant turns and receives each observation
(the parsed `<ans>` JSON), like the offline teacher's planner.
"""

from __future__ import annotations

import json
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, ClassVar

from forge.gym.catalogue import BY_NAME, TOOLS
from forge.gym.tags import ANS_CLOSE, ANS_OPEN, render_action
from forge.scenario import BANDWIDTHS_RB
from forge.teacher.base import Completion, GenParams, TeacherError, estimate_tokens
from forge.teacher.prompts import criterion_of

Obs = dict[str, Any]
Policy = Generator[str, Obs | None, str]
SyncChat = Callable[[list[dict[str, Any]], GenParams], Completion]

BUILTIN = ("noop", "random", "threshold-rule", "mape-k", "greedy-what-if", "teacher")
MAX_POWER_DBM = 46.0


class AgentError(TeacherError):
    """An agent spec that cannot be built (unknown name, missing checkpoint, bad URL)."""


# --- the protocol -------------------------------------------------------------------------------
class Agent(ABC):
    """An agent makes one fresh chat per episode (`episode(seed)`): rule agents keep their state
    in it; model agents are stateless per call or keep a KV cache per episode."""

    name: str = "agent"
    kind: str = "scripted"          # scripted | teacher | openai | hf
    is_async: bool = False

    @abstractmethod
    def episode(self, seed: int) -> SyncChat: ...


def _obs(content: str) -> Obs | None:
    s = content.strip()
    if s.startswith(ANS_OPEN) and s.endswith(ANS_CLOSE):
        try:
            out = json.loads(s[len(ANS_OPEN):-len(ANS_CLOSE)])
        except ValueError:
            return None
        return out if isinstance(out, dict) else None
    return None


class ScriptedAgent(Agent):
    """Adapter from a policy generator to the chat protocol."""

    @abstractmethod
    def policy(self, user_text: str, rng: random.Random) -> Policy: ...

    def episode(self, seed: int) -> SyncChat:
        rng = random.Random(seed)
        state: dict[str, Any] = {"gen": None, "done": False}

        def chat(messages: list[dict[str, Any]], params: GenParams) -> Completion:
            gen: Policy | None = state["gen"]
            try:
                if gen is None:
                    user = next(str(m["content"]) for m in messages if m["role"] == "user")
                    gen = state["gen"] = self.policy(user, rng)
                    text = next(gen)
                else:
                    text = gen.send(_obs(str(messages[-1].get("content", ""))))
            except StopIteration as stop:
                text = str(stop.value or "Done.")
            prompt = sum(estimate_tokens(str(m.get("content", ""))) for m in messages)
            return Completion(text, "stop", prompt, estimate_tokens(text))

        return chat


def _result(o: Obs | None) -> dict[str, Any]:
    if o and o.get("ok") and isinstance(o.get("result"), dict):
        return o["result"]
    return {}


def _described(obs: Obs | None, label: str) -> str:
    """A change for the final report, in the gym's own words (its `description`, quoted as
    observed, so the claims stage finds every figure where the agent read it)."""
    d = _result(obs).get("description")
    return f"{label}: {d}" if d else label


def call(tool: str, args: dict[str, Any] | None = None, thought: str = "") -> str:
    return render_action(tool, args or {}, thought)


# --- noop and random ------------------------------------------------------------------------------
class NoopAgent(ScriptedAgent):
    name = "noop"

    def policy(self, user_text: str, rng: random.Random) -> Policy:
        return "The network looks fine as it is; I make no changes."
        yield ""  # makes this a generator  # pragma: no cover


def random_args(tool: str, rng: random.Random, n_cells: int, n_ues: int) -> dict[str, Any]:
    """Valid random arguments from a tool's JSON Schema (indices within the network)."""
    schema = BY_NAME[tool].args
    props: dict[str, Any] = schema.get("properties", {})
    req = set(schema.get("required", []))
    out: dict[str, Any] = {}
    for k, spec in props.items():
        if k not in req and rng.random() < 0.5:
            continue
        if k in ("cell", "target_cell"):
            out[k] = rng.randrange(n_cells)
        elif k == "ue":
            out[k] = rng.randrange(n_ues)
        elif k == "change":
            sub = rng.choice([t.name for t in TOOLS if t.effect == "configure"
                              and t.name != "rollback"])
            out[k] = {"tool": sub, "args": random_args(sub, rng, n_cells, n_ues)}
        elif "enum" in spec:
            out[k] = rng.choice(spec["enum"])
        elif spec.get("type") == "boolean":
            out[k] = rng.random() < 0.5
        elif spec.get("type") in ("integer", "number"):
            lo = spec.get("minimum", 0)
            hi = spec.get("maximum", lo + 100)
            v = rng.uniform(lo, hi)
            out[k] = round(v) if spec["type"] == "integer" else round(v, 2)
        else:
            out[k] = rng.choice(["a", "b"])
    return out


class RandomAgent(ScriptedAgent):
    name = "random"

    def policy(self, user_text: str, rng: random.Random) -> Policy:
        s = _result((yield call("get_network_summary", {}, "First, the size of the network.")))
        n_cells, n_ues = int(s.get("n_cells") or 1), int(s.get("n_ues") or 1)
        names = [t.name for t in TOOLS]
        for _ in range(rng.randint(1, 3)):
            tool = rng.choice(names)
            yield call(tool, random_args(tool, rng, n_cells, n_ues))
        return "Done: I made the random calls above and stop here."


# --- operator rules ---------------------------------------------------------------------------
def _bigger_bw(rbs: int) -> int | None:
    i = BANDWIDTHS_RB.index(rbs) if rbs in BANDWIDTHS_RB else -1
    return BANDWIDTHS_RB[i + 1] if 0 <= i < len(BANDWIDTHS_RB) - 1 else None


def _best_neighbour(meas: dict[str, Any], margin_db: float) -> int | None:
    """The strongest active non-serving cell within `margin_db` of the serving cell's RSRP."""
    serving = meas.get("serving_cell")
    cells = [c for c in meas.get("cells", []) if c.get("active") and c.get("rsrp_dbm") is not None]
    s = next((c["rsrp_dbm"] for c in cells if c["cell"] == serving), None)
    others = [c for c in cells if c["cell"] != serving]
    if s is None or not others:
        return None
    best = max(others, key=lambda c: (c["rsrp_dbm"], -c["cell"]))
    return int(best["cell"]) if best["rsrp_dbm"] >= s - margin_db else None


class ThresholdRuleAgent(ScriptedAgent):
    """Six if-then rules of a NOC runbook, checked in order on fresh measurements; at most
    `max_changes` changes per ticket:
    R1 a cell at PRB utilisation >= 0.9 gets the next larger bandwidth;
    R2 the worst-satisfied UE with SINR < 3 dB gets +3 dB on its serving cell;
    R3 that UE, if still starved (< 0.5 satisfaction), is handed to its best neighbour when the
       neighbour is within 6 dB;
    R4 a UE over its QCI delay budget that is served from the cloud moves to the edge;
    R5 a cell with SLA violations in a GBR slice switches to the QoS-aware scheduler (cqa);
    R6 when every UE is served (min satisfaction >= 0.95), an active cell without UEs is
       switched off to save energy."""

    name = "threshold-rule"
    max_changes = 2

    def policy(self, user_text: str, rng: random.Random) -> Policy:
        applied: list[str] = []
        summ = _result((yield call("get_network_summary", {}, "Check the network-wide KPIs.")))
        load = _result((yield call("get_network_load", {}, "Rule R1: look for overloaded cells.")))
        cells = [c for c in load.get("cells", []) if c.get("active")]
        hot = sorted((c for c in cells if c.get("prb_utilization", 0) >= 0.9),
                     key=lambda c: -c["prb_utilization"])
        if hot:
            c = hot[0]["cell"]
            cfg = _result((yield call("get_cell_config", {"cell": c})))
            bw = _bigger_bw(int(cfg.get("bandwidth_rbs", 100)))
            if bw is not None:
                obs = yield call("set_bandwidth", {"cell": c, "bandwidth_rbs": bw},
                           f"R1: cell {c} is overloaded; widen it to {bw} RBs.")
                applied.append(_described(obs, "R1"))
        worst = _result((yield call("rank_worst_ues", {"metric": "dl_satisfaction", "k": 1},
                                    "Rules R2-R3: the worst-served UE.")))
        rank = worst.get("ranking") or []
        if rank and len(applied) < self.max_changes:
            ue, sat = int(rank[0]["ue"]), float(rank[0].get("value") or 0.0)
            rq = _result((yield call("get_radio_quality", {"ue": ue})))
            serving = rq.get("serving_cell")
            if rq.get("sinr_db") is not None and rq["sinr_db"] < 3.0 and serving is not None:
                cfg = _result((yield call("get_cell_config", {"cell": serving})))
                p = float(cfg.get("tx_power_dbm", MAX_POWER_DBM))
                if p < MAX_POWER_DBM:
                    newp = min(MAX_POWER_DBM, p + 3.0)
                    obs = yield call("set_tx_power", {"cell": serving, "tx_power_dbm": newp},
                               f"R2: UE {ue} has low SINR; raise cell {serving} to {newp} dBm.")
                    applied.append(_described(obs, "R2"))
            elif sat < 0.5 and len(applied) < self.max_changes:
                meas = _result((yield call("get_ue_measurements", {"ue": ue})))
                nb = _best_neighbour(meas, 6.0)
                if nb is not None:
                    obs = yield call("force_handover", {"ue": ue, "target_cell": nb},
                               f"R3: UE {ue} is starved; hand it to cell {nb}.")
                    applied.append(_described(obs, "R3"))
        if len(applied) < self.max_changes and (summ.get("sla_violations") or 0) > 0:
            edge = _result((yield call("get_edge_placement", {}, "R4: delay budgets.")))
            sla = _result((yield call("check_sla", {})))
            viol = [r for r in sla.get("results", []) if not r.get("ok", True)]
            late = {int(r["ue"]) for r in viol if "delay" in " ".join(map(str, r["reasons"]))}
            cloud = [u for u in edge.get("ues", []) if u.get("server") == "cloud"
                     and int(u["ue"]) in late]
            if cloud:
                ue = int(cloud[0]["ue"])
                obs = yield call("set_ue_server", {"ue": ue, "server": "edge"},
                           f"R4: UE {ue} misses its delay budget from the cloud; use the edge.")
                applied.append(_described(obs, "R4"))
            elif viol and len(applied) < self.max_changes:
                v0 = viol[0]
                kpis = _result((yield call("get_ue_kpis", {"ue": int(v0["ue"])})))
                cell = kpis.get("serving_cell")
                if cell is not None and int(kpis.get("qci", 9)) <= 4:
                    obs = yield call("set_scheduler", {"cell": int(cell), "scheduler": "cqa"},
                               f"R5: GBR violations on cell {cell}; use the QoS-aware scheduler.")
                    applied.append(_described(obs, "R5"))
        if len(applied) < self.max_changes and (summ.get("min_dl_satisfaction") or 0) >= 0.95:
            idle = [c for c in cells if c.get("n_ues", 0) == 0]
            if idle and len(cells) > 1:
                c = idle[0]["cell"]
                obs = yield call("set_cell_state", {"cell": c, "active": False},
                           f"R6: everyone is served and cell {c} carries no UE; switch it off.")
                applied.append(_described(obs, "R6"))
        if not applied:
            return "No rule fired; I made no changes."
        return "Applied: " + "; ".join(applied)


class MapeKAgent(ScriptedAgent):
    """Monitor (alarms) - Analyse (the most severe alarm, mapped to a plan by a 6-rule knowledge
    base) - Plan - Execute, then monitor again: a plan that did not lower the weighted alarm
    score is rolled back and never tried again. Up to `iterations` loops.
    Knowledge base: cell_down -> switch the cell on; cell_overload -> next bandwidth (else
    graceful degradation 0.7); low_sinr -> +3 dB on the serving cell; delay_budget_exceeded ->
    edge server (else cqa scheduler); low_throughput -> handover to a neighbour within 6 dB (else
    +3 dB); high_loss -> cqa scheduler on the serving cell."""

    name = "mape-k"
    iterations = 3
    SEVERITY: ClassVar[dict[str, float]] = {"critical": 3.0, "major": 2.0, "minor": 1.0}

    def _score(self, alarms: dict[str, Any]) -> float:
        return sum(self.SEVERITY.get(a.get("severity", "minor"), 1.0)
                   for a in alarms.get("alarms", []))

    def policy(self, user_text: str, rng: random.Random) -> Policy:
        tried: set[str] = set()
        kept: list[str] = []
        alarms = _result((yield call("get_alarms", {}, "Monitor: current alarms.")))
        for _ in range(self.iterations):
            ranked = sorted(alarms.get("alarms", []),
                            key=lambda a: (-self.SEVERITY.get(a.get("severity"), 1.0),
                                           str(a.get("entity"))))
            plan: tuple[str, dict[str, Any], str] | None = None
            for a in ranked:
                p = yield from self._plan(a)
                if p is not None and json.dumps(p[:2], sort_keys=True) not in tried:
                    plan = p
                    break
            if plan is None:
                break
            tool, args, why = plan
            tried.add(json.dumps([tool, args], sort_keys=True))
            before = self._score(alarms)
            res = yield call(tool, args, f"Plan: {why}")
            if not (res or {}).get("ok"):
                continue
            alarms = _result((yield call("get_alarms", {}, "Monitor again after the change.")))
            if self._score(alarms) >= before:
                yield call("rollback", {}, "The change did not reduce the alarms; undo it.")
                alarms = _result((yield call("get_alarms", {})))
            else:
                kept.append(_described(res, tool))
        if not kept:
            return "MAPE-K loop found no change that reduces the alarms; nothing changed."
        return "MAPE-K applied: " + "; ".join(kept)

    @staticmethod
    def _power_up(cell: int, why: str) -> Generator[str, Obs | None,
                                                    tuple[str, dict[str, Any], str] | None]:
        """+3 dB on a cell, if it has headroom."""
        cfg = _result((yield call("get_cell_config", {"cell": cell})))
        p = float(cfg.get("tx_power_dbm", MAX_POWER_DBM))
        if p >= MAX_POWER_DBM:
            return None
        return "set_tx_power", {"cell": cell, "tx_power_dbm": min(MAX_POWER_DBM, p + 3.0)}, why

    def _plan(self, a: dict[str, Any]) -> Generator[str, Obs | None,
                                                     tuple[str, dict[str, Any], str] | None]:
        kind, _, idx = str(a.get("entity", "")).partition(":")
        t = a.get("type")
        if not idx.isdigit():
            return None
        i = int(idx)
        if t == "cell_down":
            return "set_cell_state", {"cell": i, "active": True}, f"cell {i} is down"
        if t == "cell_overload":
            cfg = _result((yield call("get_cell_config", {"cell": i})))
            bw = _bigger_bw(int(cfg.get("bandwidth_rbs", 100)))
            if bw is not None:
                return "set_bandwidth", {"cell": i, "bandwidth_rbs": bw}, f"cell {i} overloaded"
            return "graceful_degradation", {"cell": i, "factor": 0.7}, f"cell {i} overloaded"
        if kind != "ue":
            return None
        kpis = _result((yield call("get_ue_kpis", {"ue": i})))
        serving = kpis.get("serving_cell")
        if serving is None:
            return None
        if t == "low_sinr":
            return (yield from self._power_up(serving, f"UE {i} low SINR"))
        if t == "delay_budget_exceeded":
            cfg = _result((yield call("get_ue_config", {"ue": i})))
            if cfg.get("server") == "cloud":
                return "set_ue_server", {"ue": i, "server": "edge"}, f"UE {i} over its budget"
            return "set_scheduler", {"cell": serving, "scheduler": "cqa"}, f"UE {i} late"
        if t == "low_throughput":
            meas = _result((yield call("get_ue_measurements", {"ue": i})))
            nb = _best_neighbour(meas, 6.0)
            if nb is not None:
                return "force_handover", {"ue": i, "target_cell": nb}, f"UE {i} starved"
            return (yield from self._power_up(serving, f"UE {i} starved"))
        if t == "high_loss":
            return "set_scheduler", {"cell": serving, "scheduler": "cqa"}, f"UE {i} loses packets"
        return None


# --- greedy what-if ---------------------------------------------------------------------------
def goal_leaves(goal: dict[str, Any]) -> list[dict[str, Any]]:
    if "all" in goal:
        return [c for g in goal["all"] for c in goal_leaves(g)]
    if "any" in goal:
        return [c for g in goal["any"] for c in goal_leaves(g)]
    return [goal] if "metric" in goal else []


def _holds(v: float, op: str, t: float) -> bool:
    return {"<": v < t, "<=": v <= t, ">": v > t, ">=": v >= t, "==": abs(v - t) < 1e-9,
            "!=": abs(v - t) >= 1e-9}[op]


def predicted_value(cond: dict[str, Any], wi: dict[str, Any]) -> float | None:
    """A goal condition's value after a change, as far as a what_if result shows it."""
    kind, _, idx = str(cond["target"]).partition(":")
    m = cond["metric"]
    if kind == "network":
        v = wi.get("after", {}).get(m)
        return float(v) if isinstance(v, int | float) else None
    if kind == "cell" and idx.isdigit():
        c = next((x for x in wi.get("cells", []) if x["cell"] == int(idx)), None)
        key = {"prb_utilization": "prb_after", "dl_throughput_mbps": "dl_throughput_after"}.get(m)
        return float(c[key]) if c and key else None
    if kind == "cell" and m == "prb_utilization":
        return max((float(x["prb_after"]) for x in wi.get("cells", [])), default=None)
    if kind == "ue" and idx.isdigit():
        u = next((x for x in wi.get("ues", []) if x["ue"] == int(idx)), None)
        key = {"dl_throughput_mbps": "dl_throughput_after", "delay_ms": "delay_after"}.get(m)
        if u and key and u.get(key) is not None:
            return float(u[key])
    return None


def goal_score(goal: dict[str, Any], wi: dict[str, Any], now: dict[str, float]) -> float:
    """Conditions that hold after the change (where the what_if shows them; else the value
    measured now), plus a small bonus for moving the others the right way."""
    score = 0.0
    for k, c in enumerate(goal_leaves(goal)):
        v = predicted_value(c, wi)
        base = now.get(str(k))
        if v is None:
            v = base
        if v is None:
            continue
        if _holds(v, c["op"], float(c["value"])):
            score += 1.0
        elif base is not None:
            sign = 1.0 if c["op"] in (">", ">=") else -1.0
            score += 0.1 * max(-1.0, min(1.0, sign * (v - base) / (abs(base) + 1e-6)))
    return score


class GreedyWhatIfAgent(ScriptedAgent):
    """Reads the ticket's success criterion, evaluates single configure changes with `what_if`
    (power up/down per active cell, the next bandwidth, the QoS scheduler, switching a cell off,
    handing the worst UE to its best neighbour, edge placement of the worst UE; at most
    `max_candidates`), applies the best if it beats doing nothing, and reports. A search-based
    upper reference for one-change fixes."""

    name = "greedy-what-if"
    max_candidates = 12

    def policy(self, user_text: str, rng: random.Random) -> Policy:
        goal = criterion_of(user_text)
        if goal is None:
            return "This ticket states no checkable success criterion; I make no changes."
        summ = _result((yield call("get_network_summary", {}, "Network-wide KPIs first.")))
        cfgs: list[dict[str, Any]] = []
        for c in range(int(summ.get("n_cells") or 0)):
            cfgs.append(_result((yield call("get_cell_config", {"cell": c}))))
            if len(cfgs) >= 4:
                break
        worst = _result((yield call("rank_worst_ues", {"metric": "dl_satisfaction", "k": 1})))
        rank = worst.get("ranking") or []
        cands: list[tuple[str, dict[str, Any]]] = []
        for cfg in cfgs:
            cell, p, bw = cfg.get("cell"), cfg.get("tx_power_dbm"), cfg.get("bandwidth_rbs")
            if cell is None or not cfg.get("active", True):
                continue
            if p is not None and p < MAX_POWER_DBM:
                cands.append(("set_tx_power", {"cell": cell, "tx_power_dbm": min(46.0, p + 3)}))
            if p is not None and p > 10:
                cands.append(("set_tx_power", {"cell": cell, "tx_power_dbm": p - 3}))
            nb = _bigger_bw(int(bw)) if bw is not None else None
            if nb is not None:
                cands.append(("set_bandwidth", {"cell": cell, "bandwidth_rbs": nb}))
            if len(cfgs) > 1:
                cands.append(("set_cell_state", {"cell": cell, "active": False}))
        if rank:
            ue = int(rank[0]["ue"])
            meas = _result((yield call("get_ue_measurements", {"ue": ue})))
            nb2 = _best_neighbour(meas, 10.0)
            if nb2 is not None:
                cands.insert(0, ("force_handover", {"ue": ue, "target_cell": nb2}))
            cands.append(("set_ue_server", {"ue": ue, "server": "edge"}))
        # Candidates that touch the goal's own entities first.
        named = {str(c["target"]) for c in goal_leaves(goal)}
        cands.sort(key=lambda tc: -int(f"cell:{tc[1].get('cell')}" in named
                                       or f"ue:{tc[1].get('ue')}" in named))
        cands = cands[:self.max_candidates]
        now: dict[str, float] = {}
        best: tuple[float, str, dict[str, Any]] | None = None
        base_score: float | None = None
        for tool, args in cands:
            wi = _result((yield call("what_if", {"change": {"tool": tool, "args": args}},
                                     f"What if {tool} {json.dumps(args)}?")))
            if not wi:
                continue
            if base_score is None:
                # The `before` side of the first what_if is the state now.
                now = {}
                before = {**wi, "after": wi.get("before", {}),
                          "cells": [{**c, "prb_after": c["prb_before"],
                                     "dl_throughput_after": c["dl_throughput_before"]}
                                    for c in wi.get("cells", [])],
                          "ues": [{**u, "dl_throughput_after": u["dl_throughput_before"],
                                   "delay_after": u["delay_before"]} for u in wi.get("ues", [])]}
                for k, cond in enumerate(goal_leaves(goal)):
                    v = predicted_value(cond, before)
                    if v is not None:
                        now[str(k)] = v
                base_score = goal_score(goal, before, now)
            if not wi.get("in_domain", True):
                continue
            s = goal_score(goal, wi, now)
            if best is None or s > best[0]:
                best = (s, tool, args)
        if best is None or base_score is None or best[0] <= base_score:
            return "No single change improves the goal according to the model; nothing changed."
        _, tool, args = best
        done = _result((yield call(tool, args, "Apply the best candidate.")))
        after = _result((yield call("get_network_summary", {}, "Re-measure.")))
        what = done.get("description") or tool
        return (f"Applied the best single change: {what}. The network's worst-UE satisfaction "
                f"is now {after.get('min_dl_satisfaction')} and its total power draw is now "
                f"{after.get('total_power_w')} W.")


# --- model agents ---------------------------------------------------------------------------
class TeacherAgent(Agent):
    """The offline teacher (planner), as in synthesis."""

    name = "teacher"
    kind = "teacher"

    def __init__(self, model: Any, resolver: Callable[[str], Any]) -> None:
        from forge.teacher.offline import OfflineTeacher

        self.teacher = OfflineTeacher(model, resolver)

    def episode(self, seed: int) -> SyncChat:
        return self.teacher.complete


@dataclass
class AgentSpec:
    spec: str
    kind: str            # builtin | openai | hf
    name: str
    model: str | None = None
    base_url: str | None = None
    path: str | None = None


def parse_spec(spec: str) -> AgentSpec:
    """`noop` | ... | `openai:MODEL@BASE_URL` | `hf:PATH` -> AgentSpec (clear errors)."""
    s = spec.strip()
    if s in BUILTIN:
        return AgentSpec(s, "builtin", s)
    if s.startswith("openai:"):
        rest = s[len("openai:"):]
        model, sep, url = rest.partition("@")
        if not sep or not model or not url.startswith(("http://", "https://")):
            raise AgentError(f"--agent {spec!r}: write openai:MODEL@BASE_URL, e.g. "
                             "openai:offline-planner-v1@http://127.0.0.1:8000/v1")
        return AgentSpec(s, "openai", s, model=model, base_url=url)
    if s.startswith("hf:"):
        path = s[len("hf:"):]
        if not path:
            raise AgentError(f"--agent {spec!r}: write hf:PATH (a checkpoint dir) or hf:smollm2")
        return AgentSpec(s, "hf", s, path=path)
    raise AgentError(f"unknown agent {spec!r}: one of {', '.join(BUILTIN)}, openai:MODEL@URL, "
                     "hf:PATH")


SCRIPTED: dict[str, type[ScriptedAgent]] = {
    "noop": NoopAgent, "random": RandomAgent, "threshold-rule": ThresholdRuleAgent,
    "mape-k": MapeKAgent, "greedy-what-if": GreedyWhatIfAgent}


def make_scripted(name: str) -> ScriptedAgent:
    cls = SCRIPTED[name]
    return cls()

"""A small scripted operator: real closed-loop trajectories without an LLM.

It makes tasks from a scenario and solves them through `NetworkEnv.step` only (every observation
in a trajectory is what the env returned): read the situation with observe tools, compare a few
candidate fixes with `what_if`, apply the best, re-measure, and answer quoting what it measured.
Issue 4 replaces it with a teacher LLM; it stays useful for benchmarks and the ground-truth audit.

Task thresholds are set near the frontier on purpose: the planner predicts (with the same model)
the KPI before any change (v0) and after the best candidate fix (v*), and puts the threshold
either between them (reachable, but not met initially) or beyond v* (out of reach), at a random
fraction of |v* - v0|. So about half of the trajectories pass the outcome stage and half fail it,
and neither verdict is trivial - which is what the audit needs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

from forge.gym import handlers as H
from forge.gym.env import CachedModel, NetworkEnv, Predictor
from forge.gym.goals import AllOf, AnswerGoal, Condition, ExpectedAnswer, Ref, TaskGoal
from forge.gym.tags import render_action
from forge.gym.trajectory import (
    EnvSpec,
    Message,
    Provenance,
    Task,
    Trajectory,
    difficulty_of,
)
from forge.scenario import BANDWIDTHS_RB, Scenario

SYSTEM_PROMPT = (
    "You are an LTE network operator agent. You act only through the tools described to you. "
    "Each turn, either call exactly one tool by ending your message with "
    '<action>{"tool": NAME, "args": {...}}</action>, after which the tool result arrives as '
    "<ans>...</ans>, or give your final answer (no action). Quote only numbers you observed. "
    "For questions, put the answer in <answer>...</answer>."
)
ACTION_KINDS = ("ue_throughput", "cell_load", "ue_delay", "energy")
QA_KINDS = ("qa_busiest_cell", "qa_ue_throughput")
MIN_GAIN = 0.05  # a task needs the best fix to move the KPI by >= 5 %


@dataclass
class Plan:
    kind: str
    instruction: str
    goal: TaskGoal
    # The script of the solver: a list of ("call", call) / ("what_if", [calls]) items.
    entity: int
    candidates: list[dict[str, Any]]
    margin: float = 0.0  # threshold distance from v*, as a fraction of |v* - v0| (signed)


def _bigger_bw(rbs: int) -> int | None:
    i = BANDWIDTHS_RB.index(rbs)
    return BANDWIDTHS_RB[i + 1] if i + 1 < len(BANDWIDTHS_RB) else None


def _apply(scn: Scenario, call: dict[str, Any]) -> Scenario | None:
    try:
        return H.CONFIGURE[call["tool"]](scn, call["args"]).scenario
    except H.ToolError:
        return None


def _threshold(v0: float, best: float, rng: random.Random) -> tuple[float, float]:
    """Threshold between v0 and v* (reachable) or beyond v* (not), at a random distance."""
    m = rng.uniform(0.15, 0.6)
    reach = rng.random() < 0.5
    t = best - m * (best - v0) if reach else best + m * (best - v0)
    return round(t, 3), (m if reach else -m)


def plan_task(scn: Scenario, model: CachedModel, kind: str, rng: random.Random) -> Plan | None:
    """A task of `kind` for `scn` with a near-frontier threshold, or None if it does not fit."""
    _, v = model.view(scn)
    ues, cells = v.ues, v.cells
    if kind == "qa_busiest_cell":
        act = sorted((c for c in cells if c["active"]), key=lambda c: -c["prb_utilization"])
        if len(act) < 2 or act[0]["prb_utilization"] - act[1]["prb_utilization"] < 0.1:
            return None
        goal: TaskGoal = AnswerGoal(answer=ExpectedAnswer(type="integer",
                                                          value=act[0]["cell"]))
        return Plan(kind, "Which cell has the highest PRB utilisation right now? Give the cell "
                          "index.", goal, act[0]["cell"], [])
    if kind == "qa_ue_throughput":
        u = rng.randrange(len(ues))
        goal = AnswerGoal(answer=ExpectedAnswer(type="number", ref=Ref(
            target=f"ue:{u}", metric="dl_throughput_mbps"), tol_rel=0.08, tol_abs=0.01))
        return Plan(kind, f"What downlink throughput (Mbps) does UE {u} currently get?", goal,
                    u, [])

    if kind in ("ue_throughput", "ue_delay"):
        if kind == "ue_throughput":
            u = min(range(len(ues)), key=lambda i: (ues[i]["dl_satisfaction"], i))
            metric, better = "dl_throughput_mbps", 1.0
            entity: int
        else:
            u = max(range(len(ues)), key=lambda i: (ues[i]["delay_ms"] or 0.0, -i))
            metric, better = "delay_ms", -1.0
        s = ues[u]["serving_cell"]
        c = scn.cells[s]
        cands = []
        if (bw := _bigger_bw(c.bandwidth_rbs)) is not None:
            cands.append({"tool": "set_bandwidth", "args": {"cell": s, "bandwidth_rbs": bw}})
        if kind == "ue_throughput":
            if c.tx_power_dbm < 46:
                cands.append({"tool": "set_tx_power", "args": {
                    "cell": s, "tx_power_dbm": round(min(46.0, c.tx_power_dbm + 6.0), 1)}})
            other = [i for i, x in enumerate(scn.cells) if x.active and i != s]
            if other:
                t = max(other, key=lambda i: v.phys.rsrp_dbm_all[u, i])
                cands.append({"tool": "force_handover", "args": {"ue": u, "target_cell": t}})
        else:
            if scn.ues[u].server == "cloud":
                cands.append({"tool": "set_ue_server", "args": {"ue": u, "server": "edge"}})
            cands.append({"tool": "graceful_degradation", "args": {"cell": s, "factor": 0.6}})
        target = f"ue:{u}"
        entity = u
    elif kind == "cell_load":
        act = [x for x in cells if x["active"] and x["n_ues"] > 0]
        if not act:
            return None
        s = max(act, key=lambda x: (x["prb_utilization"], -x["cell"]))["cell"]
        c = scn.cells[s]
        metric, better = "prb_utilization", -1.0
        cands = [{"tool": "graceful_degradation", "args": {"cell": s, "factor": 0.6}}]
        if (bw := _bigger_bw(c.bandwidth_rbs)) is not None:
            cands.insert(0, {"tool": "set_bandwidth", "args": {"cell": s, "bandwidth_rbs": bw}})
        if sum(x.active for x in scn.cells) > 1 and c.tx_power_dbm >= 6:
            cands.append({"tool": "set_tx_power", "args": {
                "cell": s, "tx_power_dbm": round(c.tx_power_dbm - 6.0, 1)}})
        target, entity = f"cell:{s}", s
    elif kind == "energy":
        act = [x for x in cells if x["active"]]
        if len(act) < 3:
            return None
        quiet = sorted(act, key=lambda x: (x["prb_utilization"], x["cell"]))[:2]
        cands = [{"tool": "set_cell_state", "args": {"cell": x["cell"], "active": False}}
                 for x in quiet]
        metric, better, target, entity = "total_power_w", -1.0, "network", quiet[0]["cell"]
    else:
        raise ValueError(f"unknown task kind {kind!r}")

    from forge.gym.goals import lookup

    v0 = lookup(v, target, metric)
    outs = []
    for call in cands:
        new = _apply(scn, call)
        if new is not None:
            val = lookup(model.view(new)[1], target, metric)
            if val is not None:
                outs.append(val)
    if v0 is None or not outs:
        return None
    best = max(outs) if better > 0 else min(outs)
    if (best - v0) * better < MIN_GAIN * max(abs(v0), 1e-3):
        return None
    t_val, margin = _threshold(v0, best, rng)
    op: Literal[">=", "<="] = ">=" if better > 0 else "<="
    cond = Condition(target=target, metric=metric, op=op, value=t_val)

    if kind == "energy":
        floor = round(0.5 * v.network["min_dl_satisfaction"], 3)
        goal = AllOf(all=[cond, Condition(target="network", metric="min_dl_satisfaction",
                                          op=">=", value=floor)])
        text = (f"Save energy: bring the total network power to at most {t_val} W while every UE "
                f"keeps at least {floor} of its offered downlink rate.")
    elif kind == "ue_throughput":
        goal, text = cond, (f"UE {entity} complains about slow downloads. Raise its downlink "
                            f"throughput to at least {t_val} Mbps.")
    elif kind == "ue_delay":
        goal, text = cond, (f"UE {entity} sees high end-to-end delay. Bring its downlink delay "
                            f"to at most {t_val} ms.")
    else:
        goal, text = cond, (f"Cell {entity} is congested. Bring its PRB utilisation down to at "
                            f"most {t_val}.")
    return Plan(kind, text, goal, entity, cands, margin)


class _Recorder:
    def __init__(self, env: NetworkEnv) -> None:
        self.env = env
        self.messages: list[Message] = []
        self.last: dict[str, Any] | None = None

    def call(self, tool: str, args: dict[str, Any], thought: str) -> dict[str, Any] | None:
        obs = self.env.step({"tool": tool, "args": args})
        self.messages.append(Message(role="assistant", content=render_action(tool, args,
                                                                             thought)))
        self.messages.append(Message(role="tool", content=obs.render()))
        return obs.result if obs.ok else None


def _fmt(x: Any) -> str:
    return "n/a" if x is None else f"{x:g}" if isinstance(x, float) else str(x)


def solve(plan: Plan, scn: Scenario, model: CachedModel, env_seed: int, task_id: str,
          teacher: str = "scripted-v1") -> Trajectory:
    env = NetworkEnv(scn, seed=env_seed, model=model)
    rec = _Recorder(env)
    final: str
    if plan.kind == "qa_busiest_cell":
        r = rec.call("rank_busiest_cells", {"k": 3}, "Rank the cells by PRB utilisation.")
        top = r["ranking"][0] if r and r["ranking"] else None
        final = ("No active cell reported." if top is None else
                 f"Cell {top['cell']} is the busiest, at PRB utilisation "
                 f"{_fmt(top['prb_utilization'])}. <answer>{top['cell']}</answer>")
    elif plan.kind == "qa_ue_throughput":
        r = rec.call("get_ue_kpis", {"ue": plan.entity}, "Read the UE's KPIs.")
        thr = r["dl_throughput_mbps"] if r else None
        final = (f"UE {plan.entity} currently gets {_fmt(thr)} Mbps downlink. "
                 f"<answer>{_fmt(thr)}</answer>")
    else:
        final = _solve_action(plan, rec)
    rec.messages.append(Message(role="assistant", content=final))
    msgs = [Message(role="system", content=SYSTEM_PROMPT),
            Message(role="user", content=plan.instruction), *rec.messages]
    n_actions = sum(1 for m in rec.messages if m.role == "tool")
    task = Task(id=task_id, instruction=plan.instruction,
                kind="qa" if plan.kind.startswith("qa_") else "action",
                scenario_id=scn.scenario_id, scenario=scn, goal=plan.goal,
                difficulty=difficulty_of(n_actions), env=EnvSpec(seed=env_seed))
    return Trajectory(id=f"{task_id}/{teacher}", task=task, messages=msgs,
                      provenance=Provenance(teacher=teacher, generation={
                          "kind": plan.kind, "threshold_margin": round(plan.margin, 4)},
                          model_hash=model.model_hash))


def _read(rec: _Recorder, plan: Plan) -> tuple[str, dict[str, Any], str, Any]:
    """The observe call that measures the goal's KPI, and how to extract it."""
    if plan.kind in ("ue_throughput", "ue_delay"):
        key = "dl_throughput_mbps" if plan.kind == "ue_throughput" else "delay_ms"
        return "get_ue_kpis", {"ue": plan.entity}, key, None
    if plan.kind == "cell_load":
        return "get_cell_load", {"cell": plan.entity}, "prb_utilization", None
    return "get_network_summary", {}, "total_power_w", None


def _solve_action(plan: Plan, rec: _Recorder) -> str:
    tool, args, key, _ = _read(rec, plan)
    r0 = rec.call(tool, args, "First, measure the KPI the task is about.")
    if plan.kind == "energy":
        rec.call("get_network_load", {}, "Check which cells carry little traffic.")
        for c in plan.candidates:
            rec.call("estimate_energy_saving", {"cell": c["args"]["cell"]},
                     f"Estimate what switching cell {c['args']['cell']} off would save.")
    scored = []
    for c in plan.candidates:
        r = rec.call("what_if", {"change": c}, f"Predict the effect of {c['tool']}.")
        if r is not None:
            scored.append((_predicted(plan, r, key), c))
    cond = plan.goal.all[0] if isinstance(plan.goal, AllOf) else plan.goal
    assert isinstance(cond, Condition)
    better = 1.0 if cond.op == ">=" else -1.0
    usable = [(p, c) for p, c in scored if p is not None]
    if not usable:
        return "None of the candidate changes could be evaluated; I made no change."
    usable.sort(key=lambda s: -better * s[0])
    best = usable[0][1]
    applied = rec.call(best["tool"], best["args"], "Apply the most promising change.")
    r1 = rec.call(tool, args, "Measure again after the change.")
    if plan.kind == "energy":
        rec.call("get_energy_consumption", {}, "Confirm the power draw per cell.")
    before = r0.get(key) if r0 else None
    after = r1.get(key) if r1 else None
    met = after is not None and (after >= cond.value if better > 0 else after <= cond.value)
    desc = applied["description"] if applied else "no change"
    unit = {"dl_throughput_mbps": "Mbps", "delay_ms": "ms", "total_power_w": "W"}.get(key, "")
    verdict = ("The target is met." if met else
               f"The target of {_fmt(cond.value)} is not reached with this change.")
    return (f"I applied: {desc}. The measured {key} went from {_fmt(before)} to "
            f"{_fmt(after)} {unit}. {verdict}").replace("  ", " ")


def _predicted(plan: Plan, r: dict[str, Any], key: str) -> float | None:
    if plan.kind in ("ue_throughput", "ue_delay"):
        field = "dl_throughput" if key == "dl_throughput_mbps" else "delay"
        for u in r["ues"]:
            if u["ue"] == plan.entity:
                return u[f"{field}_after"]
        return _unchanged(r, plan, field)
    if plan.kind == "cell_load":
        return r["cells"][plan.entity]["prb_after"]
    return r["after"]["total_power_w"]


def _unchanged(r: dict[str, Any], plan: Plan, field: str) -> float:
    # The UE is not among the most affected ones: its KPI barely moves; rank it as "no gain".
    return -1e9 if field == "dl_throughput" else 1e9


def generate(n: int, model: Predictor, seed: int = 0, kinds: tuple[str, ...] | None = None,
             require_in_domain: bool = True, max_tries: int | None = None,
             scenario_seed_base: int = 9_000_000) -> list[Trajectory]:
    """n scripted trajectories over freshly sampled scenarios (seeds from scenario_seed_base)."""
    from forge.ns3.grid import sample_scenario

    cm = model if isinstance(model, CachedModel) else CachedModel(model)
    kinds = kinds or ACTION_KINDS + QA_KINDS
    rng = random.Random(seed)
    out: list[Trajectory] = []
    tries = 0
    limit = max_tries if max_tries is not None else 20 * n + 20
    while len(out) < n and tries < limit:
        k = tries
        tries += 1
        scn = sample_scenario(scenario_seed_base + seed * 100_000 + k)
        pred, _ = cm.view(scn)
        if require_in_domain and not pred.in_domain:
            continue
        kind = kinds[len(out) % len(kinds)]
        plan = plan_task(scn, cm, kind, rng)
        if plan is None:
            continue
        out.append(solve(plan, scn, cm, env_seed=k, task_id=f"scripted-{seed}-{k}-{kind}"))
    return out

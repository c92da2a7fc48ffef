"""Proposal validation: teacher text -> accepted tasks and counted rejects (datatrove-style).

A proposal answer is JSON lines. Each line is checked in order - JSON, schema, goal grammar,
scenario exists, the goal names entities the scenario has, kind matches goal - then against the
pool (exact duplicate, ROUGE-L near-duplicate). A failing line becomes a `task_rejects` row with
its reason and raw text; nothing raises.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from forge.gym.goals import AnswerGoal, TaskGoal, goal_problems
from forge.scenario import Scenario
from forge.synth.dedup import RougeIndex
from forge.synth.store import hid, task_id_of

_GOAL = TypeAdapter(TaskGoal)


class ProposedTask(BaseModel):
    """One line of a proposal answer (what PROPOSE_SYSTEM asks for)."""

    model_config = ConfigDict(extra="ignore")
    instruction: str = Field(min_length=10, max_length=8000)
    kind: Literal["action", "qa"]
    difficulty: Literal["L1", "L2", "L3"] = "L2"
    family: str | None = None
    scenario_id: str = Field(min_length=1, max_length=64)
    goal: dict[str, Any]
    pattern: str | None = Field(None, max_length=40)


@dataclass
class Validated:
    tasks: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)


def validate_proposals(text: str, finish_reason: str, *, pool: dict[str, Scenario],
                       index: RougeIndex, known_ids: set[str], rnd: int, teacher: str,
                       gen_run_id: str, parents: list[str], prompt_key: str) -> Validated:
    out = Validated()

    def reject(reason: str, msg: str, raw: str, k: int) -> None:
        out.reasons[reason] += 1
        out.rejects.append({"reject_id": "rj-" + hid(gen_run_id, rnd, prompt_key, k, raw),
                            "gen_run_id": gen_run_id, "round": rnd, "teacher": teacher,
                            "reason": reason, "message": msg[:1000], "raw_text": raw[:20000]})

    lines = [ln for ln in text.splitlines() if ln.strip()]
    for k, line in enumerate(lines):
        if finish_reason == "length" and k == len(lines) - 1:
            reject("truncated", "the answer was cut off by max_tokens", line, k)
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            reject("not_json", f"not a JSON object: {e}", line, k)
            continue
        try:
            p = ProposedTask.model_validate(obj)
        except ValidationError as e:
            err = e.errors()[0]
            reject("schema_invalid", f"{'.'.join(map(str, err['loc']))}: {err['msg']}", line, k)
            continue
        try:
            goal = _GOAL.validate_python(p.goal)
        except ValidationError as e:
            reject("bad_goal", f"goal: {e.errors()[0]['msg']}"[:500], line, k)
            continue
        scn = pool.get(p.scenario_id)
        if scn is None:
            reject("unknown_scenario", f"scenario {p.scenario_id} is not in the pool", line, k)
            continue
        probs = goal_problems(goal, len(scn.cells), len(scn.ues))
        if probs:
            reject("goal_entities", "; ".join(probs), line, k)
            continue
        if (p.kind == "qa") != isinstance(goal, AnswerGoal):
            reject("kind_goal_mismatch", "qa tasks need an answer goal, action tasks a KPI "
                                         "predicate", line, k)
            continue
        goal_json = _GOAL.dump_python(goal, mode="json", by_alias=True, exclude_none=True)
        tid = task_id_of(p.instruction, scn.scenario_id, goal_json)
        if tid in known_ids:
            reject("duplicate", f"task {tid} is already in the pool", line, k)
            continue
        dup = index.near_duplicate(p.instruction)
        if dup is not None:
            reject("near_duplicate", f"ROUGE-L {dup[1]:.3f} >= {index.threshold} against pool "
                                     f"instruction #{dup[0]}", line, k)
            continue
        index.add(p.instruction)
        known_ids.add(tid)
        out.tasks.append({"task_id": tid, "instruction": p.instruction, "kind": p.kind,
                          "difficulty": p.difficulty, "scenario_id": scn.scenario_id,
                          "family": scn.family, "goal": goal_json, "source": "generated",
                          "pattern": p.pattern, "parent_tasks": parents, "round": rnd,
                          "teacher": teacher, "gen_run_id": gen_run_id})
    return out

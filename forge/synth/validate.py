"""Proposal validation: teacher text -> accepted tasks and counted rejects (datatrove-style).

A proposal answer is asked for as JSON lines, but models also answer with pretty-printed
objects, a JSON array, a `{"tasks": [...]}` wrapper, Markdown fences or a sentence of prose
around them: `split_proposals` reads JSON values wherever they start, so one pretty-printed
object is one proposal (it used to be a dozen `not_json` rejects, one per line). Each proposal
is checked in order - JSON, schema, goal grammar, scenario exists, the goal names entities the
scenario has, kind matches goal - then against the pool (exact duplicate, ROUGE-L
near-duplicate). A failing proposal (or an unparseable stretch of text) becomes a
`task_rejects` row with its reason and raw text; nothing raises.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from forge.gym.goals import AnswerGoal, TaskGoal, goal_problems
from forge.scenario import Scenario
from forge.synth.dedup import RougeIndex
from forge.synth.store import hid, task_id_of

_GOAL = TypeAdapter(TaskGoal)
_DECODER = json.JSONDecoder()
_FENCE = re.compile(r"^\s*```[\w-]*\s*$")
# Where a JSON value may open on a line: at its first non-blank character, or after a list
# marker ("1. {...}", "- {...}") that chat models like to add.
_OPEN = re.compile(r"^\s*(?:(?:\d+[.)]|[-*\u2022])\s*)?([{\[])")
_MARKER = re.compile(r"(?:\d+[.)]|[-*\u2022])")


def _unwrap(obj: Any) -> list[Any]:
    """Proposals inside one decoded JSON value: an array's items, or the list of a wrapper
    object such as {"tasks": [...]} (an object without an instruction and with exactly one
    list of objects)."""
    if isinstance(obj, list):
        return [x for item in obj for x in _unwrap(item)] if obj else [obj]
    if isinstance(obj, dict) and "instruction" not in obj:
        lists = [v for v in obj.values() if isinstance(v, list) and v
                 and all(isinstance(x, dict) for x in v)]
        if len(lists) == 1:
            return list(lists[0])
    return [obj]


def split_proposals(text: str) -> list[tuple[str, Any, bool]]:
    """Cut a proposal answer into (raw text, decoded value or None, parsed) segments, in order.

    A JSON object or array is read wherever a line starts with `{` or `[` (so JSON lines,
    pretty-printed objects and arrays all work); Markdown fence lines are dropped. Text that
    does not decode - prose, a broken or cut-off object - is one segment up to the next line
    where a JSON value does decode, so a broken pretty-printed object is one reject, not one
    per line. Prose is dropped when the answer holds some JSON."""
    lines = [ln for ln in text.splitlines(keepends=True) if not _FENCE.match(ln)]
    body = "".join(lines)
    # Offsets of line starts whose first non-blank character may open a JSON value.
    starts, off = [], 0
    for ln in lines:
        m = _OPEN.match(ln)
        if m:
            starts.append(off + m.start(1))
        off += len(ln)

    def decode_at(pos: int) -> tuple[Any, int] | None:
        try:
            return _DECODER.raw_decode(body, pos)
        except ValueError:
            return None

    out: list[tuple[str, Any, bool]] = []
    pos, n = 0, len(body)
    si = 0
    while pos < n:
        while pos < n and body[pos] in " \t\r\n,":
            pos += 1
        if pos >= n:
            break
        got = decode_at(pos) if body[pos] in "{[" else None
        if got is not None:
            obj, end = got
            items = _unwrap(obj)
            if len(items) == 1 and items[0] is obj:
                out.append((body[pos:end].strip(), obj, True))
            else:
                out += [(json.dumps(x), x, True) for x in items]
            pos = end
            continue
        # Not decodable here: the bad stretch runs to the next line start that decodes.
        while si < len(starts) and starts[si] <= pos:
            si += 1
        end = n
        for j in range(si, len(starts)):
            if decode_at(starts[j]) is not None:
                end = starts[j]
                break
        raw = body[pos:end].strip()
        if raw and not _MARKER.fullmatch(raw):
            out.append((raw, None, False))
        pos = end
    if any(parsed for _, _, parsed in out):
        # Prose around the JSON ("Here are the tasks:") is chatter, not a failed proposal;
        # text that opens like JSON but does not decode stays a reject, and an answer with no
        # JSON at all is all rejects.
        out = [x for x in out if x[2] or x[0][:1] in ("{", "[")]
    return out


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

    segments = split_proposals(text)
    if not segments:
        # Nothing to read (blank, or only fences): still one reject, so that no answer goes
        # unrecorded.
        if finish_reason == "length":
            reject("truncated", "the answer was cut off by max_tokens before any text", text, 0)
        else:
            reject("empty_answer", f"the answer holds no text (finish_reason "
                                   f"{finish_reason!r})", text, 0)
    for k, (line, obj, parsed) in enumerate(segments):
        if finish_reason == "length" and k == len(segments) - 1 and not parsed:
            # Only text that does not decode was cut: a complete object before the cut is
            # kept like any other.
            reject("truncated", "the answer was cut off by max_tokens", line, k)
            continue
        if not parsed:
            try:
                json.loads(line)
                msg = "not a JSON object"
            except ValueError as e:
                msg = f"not JSON: {e}"
            reject("not_json", msg, line, k)
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

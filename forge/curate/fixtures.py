"""Pool fixtures: store gym `Trajectory` objects in the 0002 pool tables, and derive controlled
duplicates from them (exact copies, light instruction edits, paraphrases, error-recovery
variants, rejected attempts).

Used by the tests and by benchmarks/make_pool.py to build realistic pools from real scripted
trajectories (forge.gym.scripted) while the teacher pipeline (issue 4) is not available. A pool
built this way is a timing and dedup-quality fixture, not training data.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable
from typing import Any

import duckdb
import pyarrow as pa

from forge.gym.env import NetworkEnv, Predictor
from forge.gym.tags import parse_action, parse_ans, render_action
from forge.gym.trajectory import Message, Trajectory, difficulty_of


def _calls(tr: Trajectory) -> tuple[list[str], int, bool]:
    """(tool names called, failed steps, error recovery) from the messages."""
    tools: list[str] = []
    failed = 0
    recovered = False
    last_failed = False
    for m in tr.messages:
        if m.role == "assistant":
            call, problem = parse_action(m.content) if "<action>" in m.content else (None, None)
            if problem is None and isinstance(call, dict) and "tool" in call:
                tools.append(str(call["tool"]))
        elif m.role == "tool":
            obs, problem = parse_ans(m.content)
            ok = problem is None and isinstance(obs, dict) and obs.get("ok", False)
            if not ok:
                failed += 1
            elif last_failed:
                recovered = True
            last_failed = not ok
    return tools, failed, recovered


def pool_rows(tr: Trajectory, status: str = "verified", attempt: int = 0,
              reject_stage: str | None = None, uncertain: bool = False,
              teacher: str | None = None) -> dict[str, dict[str, Any]]:
    """The scenarios/tasks/trajectories rows of one trajectory (issue 4's pool contract)."""
    t = tr.task
    tools, failed, recovered = _calls(tr)
    scn = t.scenario
    doc = tr.model_dump(mode="json")
    return {
        "scenarios": {"scenario_id": t.scenario_id, "seed": scn.seed if scn else 0,
                      "family": scn.family if scn else "custom",
                      "scenario": json.dumps(scn.model_dump(mode="json")) if scn else "{}",
                      "source": "sampled"},
        "tasks": {"task_id": t.id, "instruction": t.instruction, "kind": t.kind,
                  "difficulty": t.difficulty, "scenario_id": t.scenario_id,
                  "family": scn.family if scn else "custom",
                  "goal": json.dumps(t.goal.model_dump(mode="json")), "source": "generated",
                  "round": tr.provenance.round, "teacher": teacher or tr.provenance.teacher},
        "trajectories": {
            "traj_id": tr.id, "task_id": t.id, "attempt": attempt, "status": status,
            "kind": t.kind, "difficulty": difficulty_of(len(tools)), "n_actions": len(tools),
            "n_failed_steps": failed, "tools": tools, "error_recovery": recovered,
            "uncertain": uncertain, "reject_stage": reject_stage,
            "reject_reason": f"{reject_stage}_failed" if reject_stage else None,
            "trajectory": json.dumps(doc), "teacher": teacher or tr.provenance.teacher,
            "round": tr.provenance.round, "model_hash": tr.provenance.model_hash},
    }


_TYPES = {"tools": pa.list_(pa.string())}


def insert_pool(con: duckdb.DuckDBPyConnection, rows: Iterable[dict[str, dict[str, Any]]]
                ) -> int:
    """Bulk-insert `pool_rows` outputs (scenarios and tasks de-duplicated by key)."""
    by: dict[str, dict[str, dict[str, Any]]] = {"scenarios": {}, "tasks": {}, "trajectories": {}}
    keys = {"scenarios": "scenario_id", "tasks": "task_id", "trajectories": "traj_id"}
    for r in rows:
        for tbl, row in r.items():
            by[tbl].setdefault(row[keys[tbl]], row)
    for tbl, got in by.items():
        if not got:
            continue
        existing = {k for (k,) in con.execute(f"SELECT {keys[tbl]} FROM {tbl}").fetchall()}
        new = [v for k, v in got.items() if k not in existing]
        if not new:
            continue
        cols = list(new[0])
        arrow = pa.table({c: pa.array([v[c] for v in new], _TYPES.get(c)) for c in cols})
        con.register("_fixture_rows", arrow)
        con.execute(f"INSERT INTO {tbl} ({', '.join(cols)}) SELECT {', '.join(cols)} "
                    f"FROM _fixture_rows")
        con.unregister("_fixture_rows")
    return len(by["trajectories"])


# -- controlled variants ----------------------------------------------------------------------
def copy_as(tr: Trajectory, new_id: str) -> Trajectory:
    """An exact duplicate (same task, same messages) under another trajectory id."""
    return tr.model_copy(update={"id": new_id})


_LIGHT = [("Raise", "Increase"), ("Bring", "Get"), ("right now", "now"), ("at least", "at least"),
          ("complains about", "complains of")]


def light_edit(tr: Trajectory, new_id: str, rng: random.Random) -> Trajectory:
    """A near-duplicate: one word swapped or a filler added to the instruction (new task id)."""
    text = tr.task.instruction
    a, b = rng.choice(_LIGHT)
    edited = text.replace(a, b, 1) if a in text and a != b else f"Please: {text}"
    return _with_instruction(tr, edited, new_id)


_PARA = [
    (r"^UE (\d+) complains about slow downloads\. Raise its downlink throughput to at least "
     r"([\d.]+) Mbps\.$",
     "The user on UE {0} says downloads are sluggish; get its DL rate up to {1} Mbps or more."),
    (r"^Cell (\d+) is congested\. Bring its PRB utilisation down to at most ([\-\d.]+)\.$",
     "Cell {0} is overloaded - reduce its resource-block usage so it does not exceed {1}."),
    (r"^UE (\d+) sees high end-to-end delay\. Bring its downlink delay to at most ([\d.]+) ms\.$",
     "Latency on UE {0} is too high; lower the downlink delay to {1} ms or below."),
    (r"^Which cell has the highest PRB utilisation right now\? Give the cell index\.$",
     "Tell me the index of the cell whose PRB utilisation is currently the highest."),
    (r"^What downlink throughput \(Mbps\) does UE (\d+) currently get\?$",
     "How many Mbps of downlink throughput is UE {0} getting at the moment?"),
]


def paraphrase(tr: Trajectory, new_id: str) -> Trajectory | None:
    """A semantic duplicate: the same task reworded (no shared 3-grams with the original in most
    templates), or None if no template matches."""
    text = tr.task.instruction
    for pat, repl in _PARA:
        m = re.match(pat, text)
        if m:
            return _with_instruction(tr, repl.format(*m.groups()), new_id)
    return None


def _with_instruction(tr: Trajectory, text: str, new_id: str) -> Trajectory:
    task = tr.task.model_copy(update={"instruction": text, "id": new_id.split("/")[0]})
    msgs = [Message(role=m.role, content=text if m.role == "user" else m.content)
            for m in tr.messages]
    return tr.model_copy(update={"id": new_id, "task": task, "messages": msgs})


def with_error_recovery(tr: Trajectory, model: Predictor, new_id: str | None = None
                        ) -> Trajectory:
    """Insert, before the first action, the same call with an argument the tool's schema rejects
    and the env's real error observation; the original call then recovers from it."""
    assert tr.task.scenario is not None
    msgs = list(tr.messages)
    k = next(i for i, m in enumerate(msgs) if m.role == "assistant" and "<action>" in m.content)
    call, _ = parse_action(msgs[k].content)
    bad = {"tool": call["tool"], "args": {**call.get("args", {}), "verbose": True}}
    obs = NetworkEnv(tr.task.scenario, seed=tr.task.env.seed, model=model).step(bad)
    fail = [Message(role="assistant", content=render_action(bad["tool"], bad["args"],
                                                            "Check the situation first.")),
            Message(role="tool", content=obs.render())]
    n = sum(1 for m in msgs if m.role == "tool") + 1
    task = tr.task.model_copy(update={"difficulty": difficulty_of(n)})
    return tr.model_copy(update={"id": new_id or tr.id, "task": task,
                                 "messages": msgs[:k] + fail + msgs[k:]})

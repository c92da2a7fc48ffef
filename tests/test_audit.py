"""`python -m forge.audit --from-store`: verified trajectories of a store, re-simulated in ns-3."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from forge import db as fdb
from forge.audit import load_verified, main
from forge.gym.closed_form import ClosedFormModel
from forge.gym.env import CachedModel, NetworkEnv
from forge.gym.goals import Condition
from forge.gym.scripted import SYSTEM_PROMPT
from forge.gym.tags import render_action
from forge.gym.trajectory import EnvSpec, Message, Provenance, Task, Trajectory, difficulty_of
from forge.scenario import CellConfig, Scenario, UeConfig
from forge.synth.store import insert_trajectories

MODEL = CachedModel(ClosedFormModel())


def tiny_congested() -> Scenario:
    """One 6-RB cell, two UEs asking for 8 Mbps each: congested in ns-3 and in the model;
    at 100 RBs both get their rate. One simulated second keeps the ns-3 runs short."""
    return Scenario(cells=[CellConfig(bandwidth_rbs=6, tx_power_dbm=40)],
                    ues=[UeConfig(x_m=80, y_m=0, dl_rate_mbps=8.0),
                         UeConfig(x_m=-60, y_m=40, dl_rate_mbps=8.0)],
                    sim_time_s=1.0)


def _trajectory(scn: Scenario, calls: list[dict], goal: Condition, tid: str) -> Trajectory:
    env = NetworkEnv(scn, seed=0, model=MODEL)
    msgs = [Message(role="system", content=SYSTEM_PROMPT),
            Message(role="user", content="Raise UE 0's downlink throughput to 6 Mbps.")]
    for c in calls:
        obs = env.step(c)
        msgs += [Message(role="assistant", content=render_action(c["tool"], c["args"], "Go.")),
                 Message(role="tool", content=obs.render())]
    msgs.append(Message(role="assistant", content="Done."))
    n = len(calls)
    task = Task(id=tid, instruction=msgs[1].content, kind="action", scenario_id=scn.scenario_id,
                scenario=scn, goal=goal, difficulty=difficulty_of(n), env=EnvSpec(seed=0))
    return Trajectory(id=f"{tid}/test", task=task, messages=msgs,
                      provenance=Provenance(teacher="test", generation={},
                                            model_hash=MODEL.model_hash))


def _store(path: Path, trajs: list[tuple[Trajectory, str]], drop_scenario: bool = False) -> str:
    con = fdb.connect(path)
    rows = []
    for t, status in trajs:
        d = json.loads(t.model_dump_json(by_alias=True))
        if drop_scenario:
            d["task"]["scenario"] = None
            con.execute("INSERT INTO scenarios (scenario_id, seed, family, scenario, source) "
                        "VALUES (?, ?, ?, ?, 'sampled') ON CONFLICT DO NOTHING",
                        [t.task.scenario_id, 0, "custom", t.task.scenario.model_dump_json()])
        rows.append({"traj_id": t.id, "task_id": t.task.id, "attempt": 0, "status": status,
                     "kind": "action", "difficulty": t.task.difficulty,
                     "n_actions": len(t.messages) // 2 - 1, "n_failed_steps": 0,
                     "tools": [], "error_recovery": False, "uncertain": False,
                     "trajectory": d, "teacher": "test", "round": 0,
                     "model_hash": MODEL.model_hash})
    insert_trajectories(con, rows)
    con.close()
    return str(path)


GOAL = Condition(target="ue:0", metric="dl_throughput_mbps", op=">=", value=6.0)
FIX = [{"tool": "get_ue_kpis", "args": {"ue": 0}},
       {"tool": "set_bandwidth", "args": {"cell": 0, "bandwidth_rbs": 100}},
       {"tool": "get_ue_kpis", "args": {"ue": 0}}]


def test_sample_reads_verified_action_trajectories_only(tmp_path):
    scn = tiny_congested()
    good = _trajectory(scn, FIX, GOAL, "a")
    bad = _trajectory(scn, FIX[:1], GOAL, "b")
    db = _store(tmp_path / "s.duckdb", [(good, "verified"), (bad, "rejected")],
                drop_scenario=True)
    trajs, pool = load_verified(db, sample=5, seed=0)
    assert pool == 1 and [t.id for t in trajs] == [good.id]
    # The scenario came from the store's scenarios table.
    assert trajs[0].task.scenario is not None
    assert trajs[0].task.scenario.scenario_id == scn.scenario_id


def test_bad_arguments_fail_with_clear_errors(tmp_path, capsys):
    assert main(["--from-store", str(tmp_path / "missing.duckdb"), "--closed-form"]) == 2
    assert "no such store" in capsys.readouterr().err
    empty = tmp_path / "empty.duckdb"
    fdb.connect(empty).close()
    assert main(["--from-store", str(empty), "--closed-form"]) == 2
    assert "no verified action trajectory" in capsys.readouterr().err
    assert main(["--from-store", str(empty), "--sample", "0", "--closed-form"]) == 2


@pytest.mark.ns3
def test_audit_resimulates_initial_and_final_state(tmp_path):
    scn = tiny_congested()
    fixed = _trajectory(scn, FIX, GOAL, "fixed")
    # The same task "solved" by changing nothing that helps: the goal fails in ns-3 at the end.
    idle = _trajectory(scn, [FIX[0], {"tool": "set_scheduler",
                                      "args": {"cell": 0, "scheduler": "rr"}}], GOAL, "idle")
    db = _store(tmp_path / "s.duckdb", [(fixed, "verified"), (idle, "verified")])
    out = tmp_path / "audit.json"
    assert main(["--from-store", db, "--sample", "2", "--closed-form", "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    rows = {r["id"]: r for r in rep["rows"]}
    assert rep["audited"] == 2 and rep["errors"] == []
    # ns-3 agrees: congested at 6 RBs (problem exists), fixed at 100 RBs, not by the scheduler.
    assert rows[fixed.id]["ns3_holds_initial"] is False
    assert rows[fixed.id]["ns3_holds_final"] is True
    assert rows[idle.id]["ns3_holds_final"] is False
    assert rep["goal_holds_final_ns3"] == 0.5
    assert rep["problem_exists_initially_ns3"] == 1.0
    assert rep["problem_absent"] == []
    # Three distinct states (6 RBs, 100 RBs, rr scheduler): the shared initial one runs once.
    assert (rep["ns3_runs_simulated"], rep["ns3_runs_reused"]) == (3, 0)
    assert [f["id"] for f in rep["failures"]] == [idle.id]

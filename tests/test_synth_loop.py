"""The Self-Instruct loop end to end (offline teacher, in-process), bad teacher output, and a
real kill -9 in the middle of a run followed by a resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

from forge import db as fdb
from forge.gym.trajectory import Trajectory
from forge.synth.loop import GenerateConfig, Generator, run_generate
from forge.teacher.base import Completion, GenParams
from forge.teacher.prompts import is_proposal
from verifiers import TrajectoryVerifier

REPO = Path(__file__).resolve().parents[1]
SMALL = {"model": "closed-form", "workers": 1, "n_sampled_scenarios": 48}


def _counts(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    q = {
        "seed_tasks": "SELECT count(*) FROM tasks WHERE source = 'seed'",
        "gen_tasks": "SELECT count(*) FROM tasks WHERE source = 'generated'",
        "verified": "SELECT count(*) FROM trajectories WHERE status = 'verified'",
        "rejected": "SELECT count(*) FROM trajectories WHERE status = 'rejected'",
        "recovery": "SELECT count(*) FROM trajectories WHERE status = 'verified' AND "
                    "error_recovery",
        "qa": "SELECT count(*) FROM trajectories WHERE status = 'verified' AND kind = 'qa'",
        "action": "SELECT count(*) FROM trajectories WHERE status = 'verified' AND "
                  "kind = 'action' AND difficulty IN ('L2', 'L3')",
        "rejects": "SELECT count(*) FROM task_rejects",
    }
    return {k: con.execute(v).fetchone()[0] for k, v in q.items()}  # type: ignore[index]


def test_small_run_grows_the_pool_and_rerun_adds_nothing(tmp_path: Path) -> None:
    db = str(tmp_path / "f.duckdb")
    cfg = GenerateConfig(rounds=2, tasks_per_round=24, db=db, **SMALL)  # type: ignore[arg-type]
    rep = run_generate(cfg)
    assert rep.status == "completed"
    con = fdb.connect(db)
    c = _counts(con)
    assert c["seed_tasks"] >= 120 and c["gen_tasks"] >= 20
    assert c["verified"] >= 100 and c["rejected"] > 0 and c["recovery"] > 0
    assert c["qa"] > 20 and c["action"] > 20
    # Generated tasks of round 2 were proposed from seeds and verified round-1 tasks.
    parents = con.execute("SELECT parent_tasks FROM tasks WHERE round = 2").fetchall()
    gen_ids = {r[0] for r in con.execute("SELECT task_id FROM tasks WHERE round = 1").fetchall()}
    assert any(set(json.loads(p[0])) & gen_ids for p in parents)
    # Stored verified trajectories are schema-valid and re-verify.
    rows = con.execute("SELECT trajectory FROM trajectories WHERE status = 'verified' "
                       "ORDER BY traj_id LIMIT 15").fetchall()
    from forge.gym.closed_form import ClosedFormModel

    v = TrajectoryVerifier(ClosedFormModel())
    for (t,) in rows:
        assert v.passed(v.verify(Trajectory.model_validate_json(t)))
    # Rejected attempts keep their reason (and raw text when unparseable).
    bad = con.execute("SELECT count(*) FROM trajectories WHERE status = 'rejected' AND "
                      "(reject_stage IS NULL OR reject_reason IS NULL)").fetchone()
    assert bad == (0,)
    run = con.execute("SELECT status, params FROM generation_runs").fetchall()
    assert run[0][0] == "completed" and json.loads(run[0][1])["rounds"] == 2
    con.close()
    rep2 = run_generate(cfg)
    assert rep2.stats.get("tasks_added", 0) == 0 and rep2.stats.get("trajectories_added", 0) == 0


def test_target_verified_stops_between_rounds_and_the_mix_follows_action_share(
        tmp_path: Path) -> None:
    db = str(tmp_path / "f.duckdb")
    cfg = GenerateConfig(rounds=4, tasks_per_round=32, db=db, target_verified=1,
                         action_share=0.75, **SMALL)  # type: ignore[arg-type]
    assert run_generate(cfg).status == "completed"
    con = fdb.connect(db)
    # The seeds alone pass the target, so the run stops after its first round.
    assert con.execute("SELECT max(round) FROM tasks").fetchone() == (1,)
    kinds = dict(con.execute("SELECT kind, count(*) FROM tasks WHERE round = 1 GROUP BY kind")
                 .fetchall())
    assert kinds["action"] >= 2 * kinds.get("qa", 0), kinds
    con.close()


class StubTeacher:
    """Teacher output that is broken in every way the spec lists."""

    name = "stub"

    def __init__(self, scenario_id: str) -> None:
        self.sid = scenario_id

    async def chat(self, messages: list[dict[str, Any]], params: GenParams) -> Completion:
        if is_proposal(messages):
            goal = {"answer": {"type": "integer", "ref": {"target": "network",
                                                          "metric": "n_ues"}}}
            lines = [json.dumps({"instruction": text, "kind": "qa", "scenario_id": self.sid,
                                 "goal": goal, "difficulty": "L1"}) for text in (
                "GARBAGE: reply in a way nobody can parse please",
                "UNKNOWN tool names are used to answer this question about UEs",
                "LOOP forever on the same call instead of answering",
                "LONG exploration: read every single UE before you answer",
                "CUT off mid-sentence by the token limit of the endpoint")]
            lines += ["{not json", json.dumps({"instruction": "Unknown scenario task here",
                                               "kind": "qa", "scenario_id": "nope",
                                               "goal": goal})]
            return Completion("\n".join(lines), "stop")
        user = messages[1]["content"]
        n = sum(1 for m in messages if m["role"] == "assistant")
        if user.startswith("GARBAGE"):
            return Completion('Let me look. <action>{"tool": "get_network_summary", "args": '
                              '{}</action>', "stop")
        if user.startswith("UNKNOWN"):
            if n == 0:
                return Completion('<action>{"tool": "get_all_the_things", "args": {}}</action>')
            return Completion("I could not find the tool. <answer>0</answer>")
        if user.startswith("LOOP"):
            return Completion('<action>{"tool": "get_network_summary", "args": {}}</action>')
        if user.startswith("LONG"):
            # Alternating calls: not a loop, but never an answer.
            return Completion(f'<action>{{"tool": "get_ue_kpis", "args": {{"ue": {n % 2}}}}}'
                              '</action>')
        return Completion("The answer is", "length")


def test_bad_teacher_output_is_recorded_not_raised(tmp_path: Path) -> None:
    db = str(tmp_path / "bad.duckdb")
    cfg = GenerateConfig(rounds=1, tasks_per_round=8, db=db, teacher="stub", max_steps=6,
                         solve_seeds=False, **SMALL)  # type: ignore[arg-type]
    g = Generator(cfg)
    g._teacher = StubTeacher(sorted(g.pool)[0])
    rep = g.run()
    assert rep.status == "completed"
    con = fdb.connect(db)
    rows = dict(((r[0].split()[0], r[1]), r[2:]) for r in con.execute(
        "SELECT t.instruction, x.attempt, x.status, x.reject_stage, x.reject_reason, "
        "x.raw_text, x.n_failed_steps FROM trajectories x JOIN tasks t USING (task_id)"
    ).fetchall())
    assert rows[("GARBAGE:", 0)][1:3] == ("parse", "action_not_json")
    assert rows[("GARBAGE:", 0)][3].startswith("Let me look.")
    assert rows[("GARBAGE:", 1)][1] == "parse"   # retried once, kept both attempts
    assert rows[("UNKNOWN", 0)][4] == 1          # an error observation, not a crash
    assert rows[("LOOP", 0)][1:3] == ("budget", "loop")
    assert rows[("LONG", 0)][1:3] == ("budget", "step_budget")
    assert rows[("CUT", 0)][1:3] == ("parse", "truncated")
    reasons = {r[0] for r in con.execute("SELECT reason FROM task_rejects").fetchall()}
    assert {"not_json", "unknown_scenario"} <= reasons
    raw = con.execute("SELECT raw_text FROM task_rejects WHERE reason = 'not_json'").fetchone()
    assert raw == ("{not json",)


def _state(db: str) -> tuple[set[tuple[str, str]], set[str], int]:
    con = duckdb.connect(db, read_only=True)
    try:
        trajs = set(con.execute("SELECT traj_id, status FROM trajectories").fetchall())
        tasks = {r[0] for r in con.execute("SELECT task_id FROM tasks").fetchall()}
        dups = con.execute("SELECT count(*) - count(DISTINCT task_id || '/' || attempt) "
                           "FROM trajectories").fetchone()[0]  # type: ignore[index]
    finally:
        con.close()
    return trajs, tasks, dups


def _cmd(db: str) -> list[str]:
    return [sys.executable, "-m", "forge", "generate", "--rounds", "3", "--tasks-per-round",
            "16", "--workers", "1", "--model", "closed-form", "--n-sampled-scenarios", "48",
            "--batch-size", "16", "--db", db]


def test_kill_and_resume_continues_without_duplicates(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ref = str(tmp_path / "ref.duckdb")
    subprocess.run(_cmd(ref), check=True, env=env, cwd=REPO, capture_output=True, timeout=300)
    want = _state(ref)
    db = str(tmp_path / "killed.duckdb")
    for i, trigger in enumerate(("round 1/3", "round 2/3")):
        p = subprocess.Popen(_cmd(db), env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)
        assert p.stderr is not None
        for line in p.stderr:
            if trigger in line:
                break
        # Kill -9 in the middle of the next round (proposing, solving or writing).
        time.sleep(0.2 * i)
        killed = p.poll() is None
        if killed:
            os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
        if i == 0:
            assert killed
            partial = _state(db)
            assert partial[0] < want[0]      # it really stopped early...
            assert partial[0] <= want[0]     # ...and what it stored is what a full run stores
            assert partial[2] == 0
    subprocess.run(_cmd(db), check=True, env=env, cwd=REPO, capture_output=True, timeout=300)
    got = _state(db)
    assert got[2] == 0
    assert got[0] == want[0] and got[1] == want[1]


def test_cli_rejects_bad_flags(tmp_path: Path) -> None:
    from forge.__main__ import main

    with pytest.raises(SystemExit):
        main(["generate", "--rounds", "x"])
    assert main(["generate", "--teacher", "nope", "--rounds", "0", "--db",
                 str(tmp_path / "x.duckdb"), "--model", "closed-form"]) == 2


def _proposal(sid: str, text: str) -> dict[str, Any]:
    return {"instruction": text, "kind": "qa", "scenario_id": sid, "difficulty": "L1",
            "goal": {"answer": {"type": "integer", "ref": {"target": "network",
                                                           "metric": "n_ues"}}}}


def _validate(text: str, pool: dict[str, Any], finish: str = "stop") -> Any:
    from forge.synth.dedup import RougeIndex
    from forge.synth.validate import validate_proposals

    return validate_proposals(text, finish, pool=pool, index=RougeIndex(0.99), known_ids=set(),
                              rnd=1, teacher="t", gen_run_id="g", parents=[], prompt_key="0")


def test_proposals_are_read_from_pretty_printed_fenced_and_wrapped_json() -> None:
    """Small models answer in every JSON layout but the one asked for (JSON lines); one
    pretty-printed object used to become a dozen not_json rejects, one per line."""
    from forge.synth.scenarios import full_pool

    pool = full_pool(48)
    sid = sorted(pool)[0]
    a, b = (_proposal(sid, f"How many UEs are attached to the network {w}?")
            for w in ("right now", "at this moment"))
    layouts = {
        "jsonl": f"{json.dumps(a)}\n{json.dumps(b)}",
        "pretty": json.dumps(a, indent=2) + "\n\n" + json.dumps(b, indent=4),
        "fenced": f"Here are two tasks:\n```json\n{json.dumps(a, indent=2)}\n```\n```\n"
                  f"{json.dumps(b)}\n```\nLet me know if you need more.",
        "array": json.dumps([a, b], indent=2),
        "wrapper": json.dumps({"tasks": [a, b]}, indent=2),
        "numbered": f"1. {json.dumps(a)}\n2. {json.dumps(b)}",
    }
    for name, text in layouts.items():
        v = _validate(text, pool)
        assert len(v.tasks) == 2 and not v.rejects, (name, v.reasons)
    # A broken pretty-printed object is one reject with its whole text, and what follows it
    # is still read.
    broken = json.dumps(a, indent=2).replace('"kind": "qa",', '"kind": "qa"')
    v = _validate(broken + "\n" + json.dumps(b, indent=2), pool)
    assert len(v.tasks) == 1 and v.reasons == {"not_json": 1}
    assert v.rejects[0]["raw_text"] == broken
    # Cut off by max_tokens: the object that was cut is `truncated`; the complete one before
    # it is kept.
    cut = json.dumps(a, indent=2) + "\n" + json.dumps(b, indent=2)[:60]
    v = _validate(cut, pool, finish="length")
    assert len(v.tasks) == 1 and v.reasons == {"truncated": 1}
    # An answer with no JSON at all is a reject, not nothing.
    assert _validate("I cannot help with that.", pool).reasons == {"not_json": 1}
    assert _validate("```\n```\n", pool).reasons == {"empty_answer": 1}
    assert _validate("", pool, finish="length").reasons == {"truncated": 1}


class SilentTeacher:
    """A teacher whose every answer is unusable: nothing can be accepted or verified."""

    name = "silent"

    async def chat(self, messages: list[dict[str, Any]], params: GenParams) -> Completion:
        return Completion("Sure! Here you go.", "stop")


def test_run_that_produces_nothing_says_so_and_attempts_are_kept(tmp_path: Path) -> None:
    db = str(tmp_path / "empty.duckdb")
    cfg = GenerateConfig(rounds=1, tasks_per_round=8, db=db, teacher="silent",
                         solve_seeds=False, **SMALL)  # type: ignore[arg-type]
    logs: list[str] = []
    for _ in range(2):
        g = Generator(cfg, log=logs.append)
        g._teacher = SilentTeacher()
        rep = g.run()
        assert rep.status == "empty" and "nothing was produced" in rep.summary()
    assert any("no proposed task was accepted" in m and "not_json" in m for m in logs)
    con = fdb.connect(db)
    from forge.synth import store

    # The second run did not overwrite the first: both attempts are on record.
    att = store.run_attempts(con, rep.gen_run_id)
    assert [a["status"] for a in att] == ["empty", "empty"]
    assert att[0]["stats"]["reject_reasons"]["propose/not_json"] == 1
    # An attempt that never finished (killed) reads `interrupted` once the run starts again.
    store.start_run(con, rep.gen_run_id, cfg.run_params())
    store.start_run(con, rep.gen_run_id, cfg.run_params())
    assert [a["status"] for a in store.run_attempts(con, rep.gen_run_id)] == \
        ["empty", "empty", "interrupted", "running"]
    con.close()


def test_token_caps_and_timeout_are_flags_and_shape_the_run_id_as_they_should() -> None:
    import argparse

    from forge.synth.cli import add_config_args, config_from_args

    p = argparse.ArgumentParser()
    add_config_args(p)
    cfg = config_from_args(p.parse_args(["--request-timeout", "900", "--max-tokens", "96",
                                         "--proposal-max-tokens", "512"]))
    assert (cfg.request_timeout, cfg.max_tokens, cfg.proposal_max_tokens) == (900.0, 96, 512)
    # Caps shape the output (another run id); the timeout and retries do not (a rerun with a
    # longer timeout continues the same run).
    base = GenerateConfig()
    assert GenerateConfig(request_timeout=900, max_retries=2).run_id() == base.run_id()
    assert GenerateConfig(max_tokens=96).run_id() != base.run_id()
    assert GenerateConfig(proposal_max_tokens=512).run_id() != base.run_id()


def _lane_of(xs: list[int]) -> list[tuple[int, str]]:
    import threading

    return [(x, threading.current_thread().name) for x in xs]


def test_lanes_run_every_item_once_in_its_preferred_lane_unless_idle() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from forge.synth.loop import run_in_lanes

    lanes = [ThreadPoolExecutor(1, thread_name_prefix=f"lane{k}") for k in range(2)]
    try:
        items = list(range(40))
        # 30 items prefer lane 0, 10 lane 1: lane 1 runs out and takes work from lane 0.
        prefer = [0 if i < 30 else 1 for i in items]
        seen: dict[int, int] = {}
        for idxs, lane, res in run_in_lanes(lanes, _lane_of, items, prefer, 3):  # type: ignore[arg-type]
            assert [x for x, _ in res] == [items[i] for i in idxs]
            assert all(name.startswith(f"lane{lane}") for _, name in res)
            for i in idxs:
                assert i not in seen
                seen[i] = lane
        assert sorted(seen) == items
        assert all(seen[i] == 1 for i in range(30, 40))  # its own items stay in lane 1
        # Lane 0 runs its items from the front and lane 1 steals from the back, so lane 0's
        # share is a prefix, at least its first two chunks, however the threads are scheduled
        # (counting a share failed under load: a starved lane 0 keeps fewer).
        kept = sorted(i for i in range(30) if seen[i] == 0)
        assert kept == list(range(len(kept))) and len(kept) >= 6
        # Nothing to steal: each lane runs exactly its own.
        seen.clear()
        even = [i % 2 for i in items]
        for idxs, lane, _ in run_in_lanes(lanes, _lane_of, items, even, 2):  # type: ignore[arg-type]
            seen.update(dict.fromkeys(idxs, lane))
        assert sorted(seen) == items
    finally:
        for ex in lanes:
            ex.shutdown()


def test_two_worker_processes_make_what_one_makes(tmp_path: Path) -> None:
    """Tasks are proposed and solved in two worker processes (each task in the one that
    proposed it): the store ends byte for byte as an in-process run's."""
    out = []
    for w in (1, 2):
        db = str(tmp_path / f"w{w}.duckdb")
        run_generate(GenerateConfig(rounds=1, tasks_per_round=16, db=db,  # type: ignore[arg-type]
                                    **{**SMALL, "workers": w}))
        con = fdb.connect(db)
        out.append((con.execute("SELECT task_id, instruction FROM tasks ORDER BY 1").fetchall(),
                    con.execute("SELECT traj_id, status, trajectory::VARCHAR FROM trajectories "
                                "ORDER BY 1").fetchall()))
        con.close()
    assert len(out[0][1]) > 100
    assert out[0] == out[1]

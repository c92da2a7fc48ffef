"""Claims bound to what they name: parsing, and mutated final answers of teacher trajectories.

The teacher trajectories are made here, with the offline teacher's planner
(forge.teacher.policy.solve_gen) driving a NetworkEnv on the closed-form model, so the test
depends on neither trained model files nor a store. benchmarks/bench_claims.py runs the same
mutations over a generated pool with the shipped model.
"""

from __future__ import annotations

import json
import random

import pytest

from benchmarks.bench_claims import mutations
from forge.gym.closed_form import ClosedFormModel
from forge.gym.env import CachedModel, NetworkEnv
from forge.gym.scripted import ACTION_KINDS, SYSTEM_PROMPT, plan_task
from forge.gym.tags import parse_action
from forge.gym.trajectory import EnvSpec, Message, Provenance, Task, Trajectory, difficulty_of
from forge.ns3.grid import sample_scenario
from forge.teacher.policy import PolicyConfig, solve_gen
from forge.teacher.prompts import task_prompt
from verifiers import TrajectoryVerifier
from verifiers.base import Context
from verifiers.claims import check_claims, parse_claims
from verifiers.format import check_format

MODEL = CachedModel(ClosedFormModel())


def _bind(text: str) -> list[tuple[str, str | None, tuple[str, ...] | None, str | None]]:
    return [(c.literal, c.entity, tuple(sorted(c.families)) if c.families else None, c.phase)
            for c in parse_claims(text) if not c.in_answer_tag]


def test_figures_bind_to_entity_metric_and_phase():
    assert _bind("The downlink throughput of UE 5 went from 1.2 to 2.4 Mbps.") == [
        ("1.2", "ue:5", ("dl_throughput",), "before"), ("2.4", "ue:5", ("dl_throughput",),
                                                        "after")]
    assert _bind("Measured end-to-end delay (UE 3): 80.5 before, 41 after.") == [
        ("80.5", "ue:3", ("delay",), "before"), ("41", "ue:3", ("delay",), "after")]
    assert _bind("Cell 2 runs at PRB utilisation 0.93.") == [("0.93", "cell:2", ("prb",), None)]
    assert _bind("For qci 8, the SLA violations moved from 1 to 0.") == [
        ("1", "qci:8", ("sla_violations",), "before"), ("0", "qci:8", ("sla_violations",),
                                                        "after")]
    # Identifiers are not figures; <answer> content is left to the outcome stage.
    mbps = ("capacity", "dl_offered", "dl_throughput", "ul_offered", "ul_throughput")
    assert _bind("Cell 3 is the busiest; its worst UE is UE 1 at 0.392 Mbps. <answer>1</answer>"
                 ) == [("0.392", "ue:1", mbps, None)]
    assert _bind("total power draw is now 812.5 W.") == [("812.5", None, ("power",), "after")]
    # A digit inside a name (the a3_rsrp algorithm, QCI9) is no figure either.
    assert _bind("The handover algorithm of cell 4 went from a3_rsrp to none.") == []
    assert _bind("Cell 2 now runs A3 with 6 dB of hysteresis.") == [
        ("6", "cell:2", ("hysteresis",), None)]


def test_quoted_observation_text_is_not_a_claim():
    desc = "cell 0 tx power 7.3 -> 13.3 dBm"
    assert [c.literal for c in parse_claims(f"I applied: {desc}. Done.", [desc])] == []


def _teacher_trajectory(seed: int, kind: str) -> Trajectory | None:
    """One action episode of the offline teacher's planner on a closed-form env."""
    rng = random.Random(seed)
    scn = sample_scenario(9_100_000 + seed)
    plan = plan_task(scn, MODEL, kind, rng)
    if plan is None:
        return None
    goal = json.loads(plan.goal.model_dump_json(by_alias=True, exclude_none=True))
    user = task_prompt(plan.instruction, "action", goal)
    env = NetworkEnv(scn, seed=seed, model=MODEL)
    gen = solve_gen(user, random.Random(seed), PolicyConfig(mistake_rate=0.0,
                                                            format_error_rate=0.0))
    msgs = [Message(role="system", content=SYSTEM_PROMPT), Message(role="user", content=user)]
    try:
        turn = next(gen)
        while True:
            call, problem = parse_action(turn)
            assert problem is None, turn
            obs = env.step(call)
            msgs += [Message(role="assistant", content=turn),
                     Message(role="tool", content=obs.render())]
            turn = gen.send(json.loads(obs.render()[5:-6]))
    except StopIteration as stop:
        final = str(stop.value)
    msgs.append(Message(role="assistant", content=final))
    n = sum(m.role == "tool" for m in msgs)
    task = Task(id=f"t-{seed}", instruction=user, kind="action", scenario_id=scn.scenario_id,
                scenario=scn, goal=plan.goal, difficulty=difficulty_of(n), env=EnvSpec(seed=seed))
    return Trajectory(id=f"t-{seed}/teacher", task=task, messages=msgs,
                      provenance=Provenance(teacher="offline-planner", generation={},
                                            model_hash=MODEL.model_hash))


@pytest.fixture(scope="module")
def teacher_pool() -> list[dict]:
    v = TrajectoryVerifier(MODEL)
    out = []
    for seed in range(40):
        t = _teacher_trajectory(seed, ACTION_KINDS[seed % len(ACTION_KINDS)])
        if t is None:
            continue
        d = json.loads(t.model_dump_json(by_alias=True))
        rs = v.verify(d)
        # Claims judge what was said, whether or not the goal was reached: keep every
        # trajectory that is well-formed and replays exactly.
        if len(rs) >= 2 and rs[0].passed and rs[1].passed:
            out.append(d)
    assert len(out) >= 12
    return out


def _ctx(d: dict) -> Context:
    ctx = Context(raw=d)
    assert check_format(ctx, None).passed
    return ctx


def test_teacher_answers_pass_as_written(teacher_pool):
    for d in teacher_pool:
        r = check_claims(_ctx(d))
        assert r.passed, (d["messages"][-1]["content"], r.to_dict())
        assert r.details["n_bound"] >= 1  # the rule is exercised, not skipped


def test_mutated_answers_are_rejected(teacher_pool):
    rng = random.Random(0)
    seen = {"scaled": 0, "swapped": 0, "misattributed": 0}
    old_caught = dict.fromkeys(seen, 0)
    for d in teacher_pool:
        ctx = _ctx(d)
        for kind, text in mutations(ctx.final, ctx, rng).items():
            ctx.final = text
            r = check_claims(ctx)
            seen[kind] += 1
            old_caught[kind] += not check_claims(ctx, bind=False).passed
            if kind == "swapped":
                assert (r.status, r.reason) == ("fail", "wrong_phase"), text
            elif not r.passed:
                assert r.reason in ("ungrounded_number", "misattributed_number",
                                    "wrong_phase"), r.to_dict()
            if kind == "misattributed":
                # The figure is observed (elsewhere): only binding can catch it.
                assert not r.passed or _tolerated(text), text
    assert min(seen.values()) >= 5, seen
    # Swaps and misattributions pass the old any-observed-number rule.
    assert old_caught["swapped"] == 0 and old_caught["misattributed"] == 0


def _tolerated(text: str) -> bool:
    """A replaced figure written so coarsely (0, 1) that its precision covers the original."""
    return any(c.literal in ("0", "1") for c in parse_claims(text))


def test_a_stale_value_reported_as_the_result_is_caught(teacher_pool):
    # "is now X" where X is the value measured before the change: wrong_phase.
    for d in teacher_pool:
        ctx = _ctx(d)
        before = [c for c in parse_claims(ctx.final) if c.phase == "before"]
        after = [c for c in parse_claims(ctx.final) if c.phase == "after"]
        if not before or not after or abs(before[0].value - after[0].value) < \
                0.05 * max(abs(after[0].value), 1e-3):
            continue
        ctx.final = (f"The {'delay' if 'delay' in ctx.final else 'downlink throughput'} "
                     f"is now {before[0].literal}.")
        ctx.final = ctx.final.replace("The ", f"The {_who(after[0].entity)} ", 1) \
            if after[0].entity else ctx.final
        r = check_claims(ctx)
        if after[0].families and {"delay", "dl_throughput"} & set(after[0].families):
            assert not r.passed, (ctx.final, r.to_dict())
            return
    pytest.skip("no teacher answer with a UE throughput or delay move in this pool")


def _who(entity: str) -> str:
    kind, _, idx = entity.partition(":")
    return {"ue": "UE", "cell": "cell", "qci": "QCI"}.get(kind, kind) + f" {idx}'s"

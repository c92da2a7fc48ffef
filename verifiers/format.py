"""Stage 1, format: schema-valid, well-formed tags, strict turn structure, a final answer."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import ValidationError

from forge.gym import tags
from forge.gym.goals import goal_problems
from forge.gym.trajectory import Trajectory, difficulty_of
from forge.scenario import Scenario
from verifiers.base import Context, Stage, VerifierResult, fail, ok

MAX_ACTIONS = 64
Resolver = Callable[[str], Scenario | None]


def check_format(ctx: Context, resolver: Resolver | None = None) -> VerifierResult:
    st: Stage = "format"
    if not isinstance(ctx.raw, dict):
        return fail(st, "not_object", f"a trajectory is a JSON object, not "
                                      f"{type(ctx.raw).__name__}")
    try:
        traj = Trajectory.model_validate(ctx.raw)
    except ValidationError as e:
        errs = [{"loc": ".".join(str(x) for x in err["loc"]), "msg": err["msg"][:200]}
                for err in e.errors()[:5]]
        return fail(st, "schema_invalid", f"{e.error_count()} schema error(s), first at "
                                          f"{errs[0]['loc'] or '<root>'}: {errs[0]['msg']}",
                    errors=errs)
    ctx.traj = traj
    msgs = traj.messages
    if msgs[0].role != "system" or msgs[1].role != "user":
        return fail(st, "bad_role_order", "a trajectory starts with a system then a user message",
                    roles=[m.role for m in msgs[:2]])
    i, n = 2, len(msgs)
    while i < n:
        m = msgs[i]
        if m.role == "tool":
            code = "extra_tool_message" if msgs[i - 1].role == "tool" else "orphan_tool_message"
            return fail(st, code, f"message {i}: tool message without a preceding action",
                        index=i)
        if m.role != "assistant":
            return fail(st, "bad_role_order", f"message {i}: unexpected role {m.role!r} after "
                                              f"the user instruction", index=i)
        if not tags.has_action(m.content):
            if i != n - 1:
                return fail(st, "bad_role_order", f"message {i}: assistant turn without an "
                                                  f"action before the end", index=i)
            if not m.content.strip():
                return fail(st, "missing_final_answer", "the final answer is empty", index=i)
            if tags.ANS_OPEN in m.content or tags.ANS_CLOSE in m.content:
                return fail(st, "assistant_wrote_observation",
                            "the final answer contains an <ans> tag", index=i)
            problem = tags.final_problem(m.content)
            if problem is not None:
                return fail(st, problem.code, f"message {i}: {problem.message}", index=i)
            ctx.final = m.content
            break
        call, problem = tags.parse_action(m.content)
        if problem is not None:
            return fail(st, problem.code, f"message {i}: {problem.message}", index=i)
        if i + 1 >= n or msgs[i + 1].role != "tool":
            return fail(st, "unanswered_action", f"message {i}: action not answered by a tool "
                                                 f"message", index=i)
        obs, problem = tags.parse_ans(msgs[i + 1].content)
        if problem is not None:
            return fail(st, problem.code, f"message {i + 1}: {problem.message}", index=i + 1)
        ctx.actions.append((i, call))
        ctx.observations.append((i + 1, obs))
        i += 2
    else:
        return fail(st, "missing_final_answer", "the trajectory ends without a final answer")
    n_act = len(ctx.actions)
    if n_act > MAX_ACTIONS:
        return fail(st, "too_many_steps", f"{n_act} actions > {MAX_ACTIONS}")
    if difficulty_of(n_act) != traj.task.difficulty:
        return fail(st, "difficulty_mismatch", f"{n_act} actions is {difficulty_of(n_act)}, "
                                               f"task says {traj.task.difficulty}",
                    actions=n_act)
    scn = traj.task.scenario
    if scn is None and resolver is not None:
        scn = resolver(traj.task.scenario_id)
    if scn is None:
        return fail(st, "scenario_missing", f"scenario {traj.task.scenario_id} is neither "
                                            f"embedded nor resolvable")
    if scn.scenario_id != traj.task.scenario_id:
        return fail(st, "scenario_mismatch", f"embedded scenario hashes to {scn.scenario_id}, "
                                             f"task says {traj.task.scenario_id}")
    problems = goal_problems(traj.task.goal, len(scn.cells), len(scn.ues))
    if problems:
        return fail(st, "goal_invalid", "; ".join(problems))
    ctx.scenario = scn
    return ok(st, actions=n_act)

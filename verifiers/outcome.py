"""Stage 3, outcome: the goal holds on the final replayed state (model prediction, no noise);
for qa tasks the final answer matches the expected one. Verdicts the model cannot back
(out of its calibration domain, or within its uncertainty of the threshold) are `uncertain`."""

from __future__ import annotations

from forge.gym.goals import AnswerGoal, evaluate, match_answer
from verifiers.base import Context, Stage, VerifierResult, fail, ok


def check_outcome(ctx: Context) -> VerifierResult:
    st: Stage = "outcome"
    assert ctx.traj is not None and ctx.env is not None
    goal = ctx.traj.task.goal
    pred = ctx.env.prediction()
    view = ctx.env.truth()
    domain = {"in_domain": pred.in_domain, "domain_issues": pred.domain_issues[:5]}
    if isinstance(goal, AnswerGoal):
        r = match_answer(goal, ctx.final, view)
        details = {"expected": r.expected, "got": r.got, **domain}
        if r.ok and goal.answer.ref is not None and not pred.in_domain:
            return VerifierResult(st, "uncertain", "out_of_domain",
                                  "answer matches a prediction outside the calibration domain",
                                  details)
        if not r.ok:
            return fail(st, r.reason, f"expected answer {r.expected!r}, got {r.got!r}",
                        **details)
        return ok(st, "answer matches", **details)
    g = evaluate(goal, view)
    details = {"conditions": [c.to_dict() for c in g.conditions[:20]], **domain}
    if not g.certain:
        reason = "out_of_domain" if not pred.in_domain else "uncertain_prediction"
        return VerifierResult(st, "uncertain", reason,
                              f"goal {'holds' if g.holds else 'fails'} under the model, but the "
                              f"prediction cannot back that verdict ({reason})",
                              {"holds": g.holds, **details})
    if not g.holds:
        bad = next((c for c in g.conditions if not c.holds), None)
        msg = (f"{bad.target}.{bad.metric} = {bad.value} is not {bad.op} {bad.threshold}"
               if bad else "goal does not hold")
        return fail(st, "goal_not_met", msg, **details)
    return ok(st, "goal holds", **details)

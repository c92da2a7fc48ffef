import pytest
from pydantic import TypeAdapter, ValidationError

from forge.gym.closed_form import ClosedFormModel
from forge.gym.env import CachedModel
from forge.gym.goals import AnswerGoal, TaskGoal, evaluate, goal_problems, match_answer
from forge.gym.trajectory import difficulty_of
from tests.test_gym_env import small_scenario

GOAL = TypeAdapter(TaskGoal)
VIEW = CachedModel(ClosedFormModel()).view(small_scenario())[1]


def g(obj):
    return GOAL.validate_python(obj)


def test_conditions_and_combinators():
    thr = VIEW.ues[3]["dl_throughput_mbps"]
    assert evaluate(g({"target": "ue:3", "metric": "dl_throughput_mbps", "op": ">=",
                       "value": thr - 0.1}), VIEW).holds
    assert not evaluate(g({"target": "ue:3", "metric": "dl_throughput_mbps", "op": ">",
                           "value": thr + 0.1}), VIEW).holds
    yes = {"metric": "n_ues", "op": "==", "value": 5}
    no = {"metric": "n_ues", "op": "<", "value": 5}
    assert evaluate(g({"all": [yes, {"any": [no, yes]}]}), VIEW).holds
    assert not evaluate(g({"all": [yes, no]}), VIEW).holds
    assert evaluate(g({"not": no}), VIEW).holds
    r = evaluate(g({"target": "ue:*", "metric": "rsrp_dbm", "op": ">", "value": -200}), VIEW)
    assert r.holds and len(r.conditions) == 5
    assert evaluate(g({"target": "cell:*", "metric": "active", "op": "==", "value": 1}),
                    VIEW).holds
    assert evaluate(g({"target": "qci:1", "metric": "n_ues", "op": "==", "value": 1}),
                    VIEW).holds


@pytest.mark.parametrize("bad", [
    {"target": "ue:1", "metric": "prb_utilization", "op": ">=", "value": 1},
    {"target": "antenna:1", "metric": "n_ues", "op": ">=", "value": 1},
    {"metric": "n_ues", "op": "=>", "value": 1},
    {"metric": "n_ues", "op": ">=", "value": 1, "extra": 1},
    {"all": []},
    {"answer": {"type": "number"}},
    {"answer": {"type": "string", "ref": {"target": "ue:1", "metric": "cqi"}}},
])
def test_invalid_goals_are_rejected(bad):
    with pytest.raises(ValidationError):
        g(bad)


def test_goal_problems_name_missing_entities():
    assert goal_problems(g({"target": "cell:3", "metric": "n_ues", "op": ">", "value": 0}), 3,
                         5) == ["cell:3 does not exist (3 cells)"]
    assert goal_problems(g({"target": "ue:4", "metric": "cqi", "op": ">", "value": 0}), 3, 5) == []


def test_answers():
    thr = VIEW.ues[0]["dl_throughput_mbps"]
    ref = g({"answer": {"type": "number", "ref": {"target": "ue:0",
                                                  "metric": "dl_throughput_mbps"},
                        "tol_rel": 0.05}})
    assert isinstance(ref, AnswerGoal)
    assert match_answer(ref, f"about <answer>{thr * 1.02:.3f}</answer>", VIEW).ok
    assert match_answer(ref, f"<answer>{thr * 1.2:.3f}</answer>", VIEW).reason == \
        "answer_mismatch"
    assert match_answer(ref, f"{thr}", VIEW).reason == "answer_missing"
    cell = g({"answer": {"type": "integer", "value": 2}})
    assert match_answer(cell, "<answer>cell 2</answer>", VIEW).ok
    assert not match_answer(cell, "<answer>1</answer>", VIEW).ok
    b = g({"answer": {"type": "boolean", "value": True}})
    assert match_answer(b, "<answer>Yes</answer>", VIEW).ok
    lst = g({"answer": {"type": "list", "value": [3, 1]}})
    assert match_answer(lst, "<answer>[1, 3]</answer>", VIEW).ok
    assert not match_answer(lst, "<answer>1</answer>", VIEW).ok


def test_difficulty_bands():
    assert [difficulty_of(n) for n in (0, 3, 4, 7, 8, 20)] == ["L1", "L1", "L2", "L2", "L3",
                                                                "L3"]


def _with_spread(spreads):
    """The closed-form view of the small scenario, with a given ensemble spread per UE."""
    from forge.experiment_model import physics
    from forge.gym import kpis as K

    scn = small_scenario()
    pred = ClosedFormModel().predict([scn])[0]
    unc = [{"dl_throughput_rel": s, "delay_rel": s} for s in spreads]
    return K.build_view(scn, pred.ues, physics.compute(scn), True, [], unc)


def test_an_aggregate_is_as_uncertain_as_the_ues_that_decide_it():
    base = _with_spread([0.0] * 5)
    worst = min(range(5), key=lambda i: base.ues[i]["dl_satisfaction"])
    other = next(i for i in range(5) if i != worst
                 and base.ues[i]["dl_satisfaction"] > 2 * base.ues[worst]["dl_satisfaction"])
    low = base.network["min_dl_satisfaction"]
    goal = g({"target": "network", "metric": "min_dl_satisfaction", "op": ">=",
              "value": round(0.8 * low, 6)})
    # A wide spread on a UE far above the minimum cannot move the minimum below the threshold.
    spreads = [0.0] * 5
    spreads[other] = 0.2
    r = evaluate(goal, _with_spread(spreads))
    assert r.holds and r.certain
    # The same spread on the UE that sets the minimum can.
    spreads = [0.0] * 5
    spreads[worst] = 0.2
    r = evaluate(goal, _with_spread(spreads))
    assert r.holds and not r.certain


def test_sla_counts_inherit_the_delay_spread():
    base = _with_spread([0.0] * 5)
    n = base.network["sla_violations"]
    goal = g({"target": "network", "metric": "sla_violations", "op": "<=", "value": n})
    assert evaluate(goal, base).certain
    # With a 60 % delay spread some UE's delay can cross its budget: the count is not certain.
    r = evaluate(goal, _with_spread([0.6] * 5))
    assert r.holds and not r.certain


def test_one_ue_band_is_the_full_band_of_that_ue():
    v = _with_spread([0.1, 0.3, 0.0, 0.6, 0.2])
    full = v.band(2.0)
    for i in range(5):
        rows = v.band_ue(2.0, i)
        if rows is None:
            assert i == 2  # no spread: the band is the prediction
            continue
        for side in (0, 1):
            assert rows[side] == full[side].ues[i]


def test_sla_counts_inherit_the_loss_spread():
    # A UE a hair over its loss budget is a violation only as certain as its loss prediction:
    # the audit found QCI-9 violation counts the model called certain and ns-3 did not have,
    # all of them driven by loss near the 1 % budget.
    from forge.experiment_model import physics
    from forge.gym import kpis as K

    scn = small_scenario()
    pred = ClosedFormModel().predict([scn])[0]
    ues = [dict(u, loss_ratio=0.0) for u in pred.ues]
    ues[1]["loss_ratio"] = K.LOSS_BUDGET + 0.003
    ph = physics.compute(scn)

    def view(loss_abs):
        unc = [{"dl_throughput_rel": 0.0, "delay_rel": 0.0, "loss_abs": 0.0} for _ in ues]
        unc[1]["loss_abs"] = loss_abs
        return K.build_view(scn, ues, ph, True, [], unc)

    base = view(0.0)
    assert "loss" in base.ues[1]["sla_reasons"]
    n = base.network["sla_violations"]
    goal = g({"target": "network", "metric": "sla_violations", "op": "<", "value": n})
    r = evaluate(goal, base)
    assert not r.holds and r.certain          # no spread: the violation is certain
    r = evaluate(goal, view(0.01))            # 1.3 points over, 2 x 1 point of spread
    assert not r.holds and not r.certain
    lo, hi = view(0.01).band(2.0)
    assert hi.ues[1]["loss_ratio"] < K.LOSS_BUDGET < lo.ues[1]["loss_ratio"]
    assert r.holds is False and evaluate(goal, view(0.001)).certain   # a narrow spread: certain

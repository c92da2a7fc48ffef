import pytest

from forge.gym.closed_form import ClosedFormModel
from forge.gym.env import CachedModel
from forge.gym.goals import Condition, evaluate
from tests.test_gym_env import small_scenario


@pytest.mark.ns3
def test_audit_evaluates_goals_on_real_ns3_kpis(tmp_path):
    from forge.audit import ns3_view
    from forge.ns3.simulate import simulate

    scn = small_scenario()
    res = simulate(scn, tmp_path / "run")
    view = ns3_view(scn, res["ues"])
    assert len(view.ues) == len(scn.ues) and len(view.cells) == len(scn.cells)
    # An uncongested GBR UE near its cell gets (almost) its offered rate in ns-3 as in the model.
    goal = Condition(target="ue:3", metric="dl_satisfaction", op=">=", value=0.9)
    assert evaluate(goal, view).holds
    assert evaluate(goal, CachedModel(ClosedFormModel()).view(scn)[1]).holds

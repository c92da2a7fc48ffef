"""Regenerate the hand-made bad trajectories: `python tests/data/bad_trajectories/make.py`.

Each file `<stage>__<reason>.json` is one valid scripted trajectory (closed-form model, so the
files do not depend on trained model files) with one deliberate defect; the test suite asserts
that `forge.verify` rejects it at that stage with that reason. `good.json` is the unmodified base.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

from forge.gym.closed_form import ClosedFormModel
from forge.gym.scripted import generate

HERE = Path(__file__).parent


def main() -> None:
    m = ClosedFormModel()
    good = None
    goal_met = None
    qa = None
    for t in generate(40, m, seed=5):
        d = json.loads(t.model_dump_json(by_alias=True))
        kind = t.provenance.generation["kind"]
        from verifiers import TrajectoryVerifier

        ok = TrajectoryVerifier.passed(TrajectoryVerifier(m).verify(d))
        if kind == "ue_throughput" and ok and good is None:
            good = d
        if kind == "ue_throughput" and not ok and goal_met is None:
            goal_met = d
        if kind == "qa_ue_throughput" and ok and qa is None:
            qa = d
    assert good and goal_met and qa
    bad: dict[str, dict] = {"good": good, "outcome__goal_not_met": goal_met}

    def mut(name: str, base: dict | None = None) -> dict:
        d = copy.deepcopy(base or good)
        bad[name] = d
        return d

    msgs = lambda d: d["messages"]  # noqa: E731
    del mut("format__schema_invalid")["task"]["kind"]
    d = mut("format__bad_role_order")
    msgs(d)[0], msgs(d)[1] = msgs(d)[1], msgs(d)[0]
    d = mut("format__multiple_actions")
    msgs(d)[2]["content"] += msgs(d)[2]["content"].split("\n")[-1]
    d = mut("format__malformed_tag")
    msgs(d)[3]["content"] = msgs(d)[3]["content"].replace("</ans>", "")
    d = mut("format__action_not_json")
    msgs(d)[2]["content"] = msgs(d)[2]["content"].replace('"args"', "args")
    d = mut("format__unanswered_action")
    del msgs(d)[3]
    d = mut("format__orphan_tool_message")
    msgs(d).insert(2, {"role": "tool", "content": '<ans>{"ok":true}</ans>'})
    d = mut("format__extra_tool_message")
    msgs(d).insert(4, copy.deepcopy(msgs(d)[3]))
    d = mut("format__missing_final_answer")
    msgs(d).pop()
    d = mut("format__text_after_action")
    msgs(d)[2]["content"] += "\nThe UE now gets 9 Mbps."
    d = mut("format__assistant_wrote_observation")
    msgs(d)[-1]["content"] += ' <ans>{"ok":true}</ans>'
    d = mut("format__malformed_answer")
    msgs(d)[-1]["content"] += " <answer>1. <answer>1</answer>"
    d = mut("format__no_explanation")
    msgs(d)[-1]["content"] = "<answer>ok</answer>"
    mut("format__difficulty_mismatch")["task"]["difficulty"] = "L3"
    mut("format__scenario_mismatch")["task"]["scenario"]["cells"][0]["tx_power_dbm"] = 12.0
    d = mut("format__goal_invalid")
    d["task"]["goal"]["target"] = "ue:63"
    # execution: an edited number, an invented observation, a call whose result was swapped
    d = mut("execution__observation_mismatch")
    msgs(d)[-2]["content"] = msgs(d)[-2]["content"].replace('"dl_throughput_mbps":',
                                                            '"dl_throughput_mbps":1', 1)
    d = mut("execution__observation_mismatch_invented")
    msgs(d)[3]["content"] = ('<ans>{"ok":true,"tool":"get_ue_kpis","result":{"ue":0,'
                             '"dl_throughput_mbps":99.0}}</ans>')
    d = mut("execution__model_mismatch")
    d["provenance"]["model_hash"] = "0123456789abcdef-some-other-model"
    msgs(d)[-2]["content"] = msgs(d)[-2]["content"].replace('"delay_ms":', '"delay_ms":1', 1)
    # outcome: a qa answer that does not match, and one with no <answer> tag
    d = mut("outcome__answer_mismatch", qa)
    msgs(d)[-1]["content"] = "UE gets 1234.5 Mbps. <answer>1234.5</answer>"
    d = mut("outcome__answer_missing", qa)
    msgs(d)[-1]["content"] = msgs(d)[-1]["content"].split("<answer>")[0]
    # claims: a KPI that was never observed
    d = mut("claims__ungrounded_number")
    msgs(d)[-1]["content"] += " Cell load is now 0.4321 and delay fell to 17.77 ms."
    # claims: before and after swapped (both figures were observed, at the other time)
    d = mut("claims__wrong_phase")
    final = msgs(d)[-1]["content"]
    m = re.search(r"from (\S+) to (\S+)", final)
    assert m, final
    msgs(d)[-1]["content"] = final[:m.start()] + f"from {m[2]} to {m[1]}" + final[m.end():]
    # claims: a figure observed, but for another metric (the UE's offered rate as its delay)
    d = mut("claims__misattributed_number")
    obs = json.loads(msgs(d)[-2]["content"][5:-6])["result"]
    msgs(d)[-1]["content"] += (f" UE {obs['ue']}'s end-to-end delay is now "
                               f"{obs['dl_offered_mbps']} ms.")
    for name, d in bad.items():
        (HERE / f"{name}.json").write_text(json.dumps(d, indent=1) + "\n")
    print(f"wrote {len(bad)} files")


if __name__ == "__main__":
    main()

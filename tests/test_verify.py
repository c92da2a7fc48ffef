import json
from pathlib import Path

import pytest

from forge.experiment_model import ScenarioPrediction
from forge.gym.closed_form import ClosedFormModel
from forge.gym.scripted import generate
from forge.verify import main as verify_main
from verifiers import STAGES, TrajectoryVerifier, verify_trajectory

BAD = Path(__file__).parent / "data" / "bad_trajectories"
MODEL = ClosedFormModel()


def _load(name: str) -> dict:
    return json.loads((BAD / f"{name}.json").read_text())


def test_the_base_of_the_bad_corpus_passes_every_stage():
    rs = verify_trajectory(_load("good"), MODEL)
    assert [r.stage for r in rs] == list(STAGES) and all(r.passed for r in rs), rs[-1]


BAD_FILES = sorted(p.stem for p in BAD.glob("*__*.json"))


def test_the_corpus_covers_every_stage():
    assert {f.split("__")[0] for f in BAD_FILES} == set(STAGES)
    assert len(BAD_FILES) >= 20


@pytest.mark.parametrize("name", BAD_FILES)
def test_each_bad_trajectory_fails_at_its_stage_with_its_reason(name):
    stage, reason = name.split("__")
    reason = {"observation_mismatch_invented": "observation_mismatch"}.get(reason, reason)
    rs = verify_trajectory(_load(name), MODEL)
    last = rs[-1]
    assert not TrajectoryVerifier.passed(rs)
    assert (last.stage, last.reason) == (stage, reason), last.to_dict()
    assert all(r.passed for r in rs[:-1])
    assert last.message


def test_scripted_trajectories_replay_exactly_and_mostly_pass():
    trajs = generate(12, MODEL, seed=3)
    v = TrajectoryVerifier(MODEL)
    verdicts = [v.verify(json.loads(t.model_dump_json(by_alias=True))) for t in trajs]
    for rs in verdicts:
        assert rs[0].passed and rs[1].passed, rs[-1].to_dict()
        assert rs[-1].reason in ("ok", "goal_not_met"), rs[-1].to_dict()
    outcomes = {rs[2].passed for rs in verdicts}
    assert outcomes == {True, False}  # thresholds near the frontier: both verdicts occur


class _UnsureModel(ClosedFormModel):
    """Closed form, but with a large ensemble spread or out of domain: verdicts become unsure."""

    def __init__(self, spread: float, in_domain: bool) -> None:
        self.spread, self.in_domain = spread, in_domain

    def predict(self, scenarios):
        out = []
        for p in super().predict(scenarios):
            out.append(ScenarioPrediction(
                ues=p.ues, cells=p.cells, in_domain=self.in_domain,
                domain_issues=[] if self.in_domain else ["feature x out of range"],
                uncertainty=[{"dl_throughput_rel": self.spread, "delay_rel": self.spread}
                             for _ in p.ues]))
        return out


@pytest.mark.parametrize(("spread", "in_domain", "reason"), [
    (5.0, True, "uncertain_prediction"), (0.0, False, "out_of_domain")])
def test_unsure_predictions_are_flagged_not_trusted(spread, in_domain, reason):
    model = _UnsureModel(spread, in_domain)
    traj = generate(1, model, seed=1, kinds=("ue_throughput",), require_in_domain=False)[0]
    rs = verify_trajectory(json.loads(traj.model_dump_json(by_alias=True)), model)
    assert rs[-1].stage == "outcome" and rs[-1].status == "uncertain"
    assert rs[-1].reason == reason and not rs[-1].passed


def test_cli_rejects_malformed_lines_and_summarises(tmp_path, capsys):
    good = (BAD / "good.json").read_text().replace("\n", "")
    lines = [good.encode(), b"not json", good[: len(good) // 2].encode(), b"\xff\xfe\x00\x01",
             b'"' + b"x" * 3_000_000 + b'"', b"[]", (BAD / "claims__ungrounded_number.json")
             .read_text().replace("\n", "").encode()]
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out.jsonl"
    summ = tmp_path / "summary.json"
    rc = verify_main([str(src), "--out", str(out), "--summary", str(summ), "--closed-form",
                      "--max-line-bytes", "1000000"])
    assert rc == 0
    verdicts = [json.loads(x) for x in out.read_text().splitlines()]
    assert [v["line"] for v in verdicts] == list(range(1, 8))
    assert [v["reason"] for v in verdicts] == [
        "ok", "not_json", "not_json", "not_utf8", "line_too_long", "not_object",
        "ungrounded_number"]
    assert verdicts[0]["passed"] and not any(v["passed"] for v in verdicts[1:])
    s = json.loads(summ.read_text())
    assert s["total"] == 7 and s["passed"] == 1
    assert s["stages"]["format"]["reasons"]["not_json"] == 2
    assert s["stages"]["claims"]["failed"] == 1
    assert "passed: 1/7" in capsys.readouterr().out


def test_cli_exits_nonzero_only_on_io_errors(tmp_path):
    assert verify_main([str(tmp_path / "missing.jsonl"), "--closed-form"]) == 2
    assert verify_main([str(BAD / "good.json"), "--closed-form",
                        "--out", str(tmp_path / "no" / "dir" / "x.jsonl")]) == 2
    assert verify_main([str(BAD / "good.json"), "--model-dir", str(tmp_path)]) == 2

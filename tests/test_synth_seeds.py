"""Seed tasks: schema file in sync, enough of them, each valid and tied to its scenario."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from forge.synth import seeds as S


@pytest.fixture(scope="module")
def seed_tasks() -> list[S.SeedTask]:
    return S.load_seeds()


def test_schema_file_matches_model() -> None:
    assert S.SCHEMA_FILE.read_text() == S.render_schema(), \
        "run `python -m forge.synth.seeds --write`"


def test_enough_seeds_and_balanced(seed_tasks: list[S.SeedTask]) -> None:
    assert len(seed_tasks) >= 120
    kinds = Counter(t.kind for t in seed_tasks)
    assert 0.4 <= kinds["action"] / len(seed_tasks) <= 0.6
    assert {t.difficulty for t in seed_tasks if t.kind == "action"} == {"L1", "L2", "L3"}
    assert len({t.family for t in seed_tasks}) >= 6
    assert len({t.instruction for t in seed_tasks}) == len(seed_tasks)


def test_every_seed_is_consistent(seed_tasks: list[S.SeedTask]) -> None:
    problems = {t.id: S.check(t) for t in seed_tasks}
    assert {k: v for k, v in problems.items() if v} == {}


def test_bad_line_is_reported_with_file_and_line(tmp_path) -> None:
    good = S.SEED_DIR.joinpath("seed_tasks.jsonl").read_text().splitlines()[0]
    bad = json.loads(good)
    bad["goal"] = {"target": "network", "metric": "speed", "op": ">=", "value": 1}
    (tmp_path / "x.jsonl").write_text(good + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(S.SeedTaskError, match=r"x.jsonl:2"):
        S.load_seeds(tmp_path)
    (tmp_path / "x.jsonl").write_text(good + "\n" + good + "\n")
    with pytest.raises(S.SeedTaskError, match="duplicate id"):
        S.load_seeds(tmp_path)


def test_seed_goals_fit_the_current_physics(seed_tasks: list[S.SeedTask]) -> None:
    """Seed thresholds sit near what changes reach under the default physics (the shipped
    Experiment Model); if the gym or the model change, rerun
    `python -m forge.synth.seed_authoring` (this test says so)."""
    from forge.gym.env import CachedModel
    from forge.synth.loop import load_model
    from forge.synth.scenarios import full_pool
    from forge.synth.solve import SolveConfig, solve_sync, to_row
    from forge.teacher.offline import OfflineConfig, OfflineTeacher
    from verifiers import TrajectoryVerifier

    model = CachedModel(load_model("auto"))
    teacher = OfflineTeacher(model, full_pool(8).get,
                             OfflineConfig(mistake_rate=0.0, format_error_rate=0.0))
    v = TrajectoryVerifier(model)
    ok: Counter[str] = Counter()
    for s in seed_tasks:
        task = {"task_id": s.id, "instruction": s.instruction, "kind": s.kind,
                "goal": s.goal_json(), "scenario_id": s.scenario_id}
        ep = solve_sync(task, s.scenario(), teacher.complete, model, SolveConfig(), 0)
        ok[s.kind] += to_row(task, s.scenario(), ep, 0, "t", model, v, 0, None)["status"] \
            == "verified"
    n = Counter(s.kind for s in seed_tasks)
    assert ok["action"] >= 0.55 * n["action"], "stale seeds: rerun forge.synth.seed_authoring"
    assert ok["qa"] >= 0.85 * n["qa"], "stale seeds: rerun forge.synth.seed_authoring"

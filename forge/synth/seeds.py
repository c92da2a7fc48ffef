"""Seed tasks: the hand-written start of the Self-Instruct pool (`corpora/seed_tasks/*.jsonl`).

Each line is a `SeedTask`. Its scenario is given by a sampling seed (`scenario_seed`, and
`handover` for the mobility corner of the space), so a seed task is self-contained and its
`scenario_id` is checked against the regenerated scenario. `schemas/seed_task.schema.json` is
generated from the model (`python -m forge.synth.seeds --write`); a test keeps them equal.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from forge.db import ForgeError
from forge.gym.goals import AnswerGoal, TaskGoal, goal_problems
from forge.ns3.grid import FAMILIES
from forge.scenario import Scenario
from forge.synth.scenarios import sampled

REPO = Path(__file__).resolve().parents[2]
SEED_DIR = REPO / "corpora" / "seed_tasks"
SCHEMA_FILE = REPO / "schemas" / "seed_task.schema.json"


class SeedTaskError(ForgeError):
    """A seed task file has an invalid line."""


class SeedTask(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=80, description="Stable id, e.g. seed-a-017.")
    instruction: str = Field(min_length=10, max_length=8000,
                             description="What the operator asks, in plain language.")
    kind: Literal["action", "qa"] = Field(description="action: change the network to reach "
                                                      "the goal; qa: answer a question.")
    difficulty: Literal["L1", "L2", "L3"] = Field(description="Intended difficulty (L1 <= 3 "
                                                               "tool calls, L2 4-7, L3 >= 8).")
    family: str = Field(description="Scenario family (forge.ns3.grid.FAMILIES).")
    pattern: str = Field(min_length=1, max_length=40,
                         description="Task pattern the offline teacher can compose from.")
    scenario_seed: int = Field(ge=0, description="sample_scenario(seed) gives the scenario.")
    handover: bool = Field(False, description="Sample from the handover corner of the space.")
    scenario_id: str = Field(min_length=16, max_length=16,
                             description="Content hash of that scenario (checked).")
    goal: TaskGoal = Field(description="Goal predicate (action) or expected answer (qa), in "
                                       "forge's goal language.")

    @model_validator(mode="after")
    def _consistent(self) -> SeedTask:
        if self.family not in FAMILIES:
            raise ValueError(f"family {self.family!r} is not one of {', '.join(FAMILIES)}")
        if (self.kind == "qa") != isinstance(self.goal, AnswerGoal):
            raise ValueError("qa tasks have an answer goal; action tasks a KPI predicate")
        return self

    def scenario(self) -> Scenario:
        return sampled(self.scenario_seed, handover=self.handover)

    def goal_json(self) -> dict[str, Any]:
        return self.goal.model_dump(mode="json", by_alias=True, exclude_none=True)


def check(task: SeedTask) -> list[str]:
    """Problems a schema cannot see: the scenario hash, its family, the goal's entities."""
    scn = task.scenario()
    out = []
    if scn.scenario_id != task.scenario_id:
        out.append(f"scenario_id {task.scenario_id} != {scn.scenario_id} of seed "
                   f"{task.scenario_seed}")
    if scn.family != task.family:
        out.append(f"family {task.family} != scenario family {scn.family}")
    out += goal_problems(task.goal, len(scn.cells), len(scn.ues))
    return out


def load_seeds(seed_dir: Path = SEED_DIR) -> list[SeedTask]:
    """Every seed task, validated; a bad line raises SeedTaskError naming file and line."""
    out: list[SeedTask] = []
    seen: set[str] = set()
    for f in sorted(seed_dir.glob("*.jsonl")):
        for i, line in enumerate(f.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                t = SeedTask.model_validate_json(line)
            except ValidationError as e:
                raise SeedTaskError(f"{f.name}:{i}: {e.errors()[0]['msg']}") from e
            if t.id in seen:
                raise SeedTaskError(f"{f.name}:{i}: duplicate id {t.id}")
            seen.add(t.id)
            out.append(t)
    return out


def render_schema() -> str:
    schema = SeedTask.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "seed_task.schema.json"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m forge.synth.seeds",
                                 description="Check the seed tasks; --write the JSON Schema.")
    ap.add_argument("--write", action="store_true", help="write schemas/seed_task.schema.json")
    args = ap.parse_args(argv)
    if args.write:
        SCHEMA_FILE.write_text(render_schema())
        print(SCHEMA_FILE)
    seeds = load_seeds()
    bad = [(t.id, p) for t in seeds for p in check(t)]
    for tid, p in bad:
        print(f"{tid}: {p}")
    print(f"{len(seeds)} seed tasks, {len(bad)} problem(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())

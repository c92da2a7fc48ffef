"""The trajectory contract: pydantic models are the single source of truth.

`schemas/trajectory.schema.json` is generated from `Trajectory` (`python -m forge.gym.trajectory
--write`) and a test asserts the file equals the generated schema. Issue 4 stores these objects,
issue 5 curates and exports them; both should import these models rather than re-describe them.

    {"schema_version": 1, "id": ..., "task": {id, instruction, kind, scenario_id, scenario, goal,
     difficulty, env}, "messages": [{"role", "content"}, ...], "provenance": {teacher,
     generation, parent_tasks, round, model_hash}}
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from forge.gym import kpis as K
from forge.gym.goals import AnswerGoal, TaskGoal
from forge.scenario import Scenario

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schemas" / "trajectory.schema.json"
MAX_CONTENT_CHARS = 200_000
Difficulty = Literal["L1", "L2", "L3"]


def difficulty_of(n_actions: int) -> Difficulty:
    """L1: <= 3 tool calls, L2: 4-7, L3: >= 8."""
    return "L1" if n_actions <= 3 else "L2" if n_actions <= 7 else "L3"


def parse_levels(text: str | None) -> set[str]:
    """A comma-separated difficulty filter ("L1", "l1,L2") as a set; empty = no filter.
    Raises ValueError on anything but L1, L2, L3."""
    want = {x.strip().upper() for x in (text or "").split(",") if x.strip()}
    if not want <= {"L1", "L2", "L3"}:
        raise ValueError(f"levels {text!r}: expected L1, L2 and/or L3, comma-separated")
    return want


def parse_kinds(text: str | None) -> set[str]:
    """A comma-separated kind filter ("qa", "qa,action") as a set; empty = no filter.
    Raises ValueError on anything but qa and action."""
    want = {x.strip().lower() for x in (text or "").split(",") if x.strip()}
    if not want <= {"qa", "action"}:
        raise ValueError(f"kinds {text!r}: expected qa and/or action, comma-separated")
    return want


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "tool"]
    content: str = Field(max_length=MAX_CONTENT_CHARS)


class EnvSpec(BaseModel):
    """Everything besides the scenario that a replay needs to reproduce the observations."""

    model_config = ConfigDict(extra="forbid")
    seed: int = Field(default=0, ge=0, description="Seeds the measurement noise with (seed, step).")
    noise_rel: float = Field(default=K.NOISE_REL, ge=0.0, le=0.5)
    noise_db: float = Field(default=K.NOISE_DB, ge=0.0, le=10.0)


class Task(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=200)
    instruction: str = Field(min_length=1, max_length=20_000)
    kind: Literal["action", "qa"]
    scenario_id: str = Field(min_length=1, max_length=64)
    scenario: Scenario | None = Field(
        None, description="The scenario itself; may be omitted when the verifier is given a "
                          "resolver (e.g. a store lookup by scenario_id).")
    goal: TaskGoal
    difficulty: Difficulty
    env: EnvSpec = Field(default_factory=lambda: EnvSpec())

    @model_validator(mode="after")
    def _goal_fits_kind(self) -> Task:
        if (self.kind == "qa") != isinstance(self.goal, AnswerGoal):
            raise ValueError("qa tasks have an answer goal; action tasks a KPI predicate")
        return self


class Provenance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    teacher: str = Field(description="Who produced the trajectory (model name or 'scripted').")
    generation: dict[str, Any] = Field(default_factory=dict,
                                       description="Generation parameters (temperature, ...).")
    parent_tasks: list[str] = Field(default_factory=list, description="Seed task ids.")
    round: int = Field(default=0, ge=0)
    model_hash: str = Field(default="", description="Experiment Model the observations came from.")


class Trajectory(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = 1
    id: str = Field(min_length=1, max_length=200)
    task: Task
    messages: list[Message] = Field(min_length=3)
    provenance: Provenance


def json_schema() -> dict[str, Any]:
    return Trajectory.model_json_schema()


def render_schema() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m forge.gym.trajectory")
    ap.add_argument("--write", action="store_true", help="write schemas/trajectory.schema.json")
    if ap.parse_args(argv).write:
        SCHEMA_FILE.write_text(render_schema())
        print(SCHEMA_FILE)
    else:
        print(render_schema(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Verifier results and the context the four stages share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from forge.gym.env import NetworkEnv
from forge.gym.trajectory import Trajectory
from forge.scenario import Scenario

Stage = Literal["format", "execution", "outcome", "claims"]
STAGES: tuple[Stage, ...] = ("format", "execution", "outcome", "claims")
Status = Literal["pass", "fail", "uncertain"]


@dataclass
class VerifierResult:
    """One stage's verdict. `passed` is True only for status "pass"; "uncertain" (the model's
    prediction cannot be trusted for this verdict) is not a pass."""

    stage: Stage
    status: Status
    reason: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    cost_s: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "passed": self.passed, "status": self.status,
                "reason": self.reason, "message": self.message, "details": self.details,
                "cost_s": round(self.cost_s, 6)}


def ok(stage: Stage, message: str = "ok", **details: Any) -> VerifierResult:
    return VerifierResult(stage, "pass", "ok", message, details)


def fail(stage: Stage, reason: str, message: str, **details: Any) -> VerifierResult:
    return VerifierResult(stage, "fail", reason, message, details)


@dataclass
class Context:
    """What earlier stages learned, for later ones."""

    raw: Any
    traj: Trajectory | None = None
    scenario: Scenario | None = None
    # (message index, parsed call) per assistant action; (message index, observation) per tool.
    actions: list[tuple[int, Any]] = field(default_factory=list)
    observations: list[tuple[int, Any]] = field(default_factory=list)
    final: str = ""
    env: NetworkEnv | None = None

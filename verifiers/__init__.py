"""Trajectory verifiers: format -> execution -> outcome -> claims.

    from verifiers import TrajectoryVerifier, verify_trajectory
    v = TrajectoryVerifier(model)                  # shares a prediction cache over many calls
    results = v.verify(traj)                       # list[VerifierResult], stops at first failure
    passed = v.passed(results)

Each stage returns a `VerifierResult` (stage, status pass/fail/uncertain, reason code, message,
details, cost). A trajectory passes only if all four stages pass, in order; the first stage that
does not pass ends verification (later stages would judge garbage). Nothing in a trajectory can
raise out of `verify`: unexpected errors become an `internal_error` result of the running stage.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from forge.gym.env import CachedModel, Predictor
from forge.gym.trajectory import Trajectory
from forge.scenario import Scenario
from verifiers.base import STAGES, Context, Stage, VerifierResult, fail
from verifiers.claims import check_claims
from verifiers.execution import check_execution
from verifiers.format import check_format
from verifiers.outcome import check_outcome

__all__ = ["STAGES", "TrajectoryVerifier", "VerifierResult", "verify_trajectory"]

Resolver = Callable[[str], Scenario | None]


class TrajectoryVerifier:
    def __init__(self, model: Predictor, resolver: Resolver | None = None) -> None:
        self.model = model if isinstance(model, CachedModel) else CachedModel(model)
        self.resolver = resolver

    def verify(self, traj: Any) -> list[VerifierResult]:
        """`traj`: a parsed JSON object (dict) or a `Trajectory`."""
        return self.verify_many([traj])[0]

    def verify_many(self, trajs: list[Any]) -> list[list[VerifierResult]]:
        """Verify a batch: after the format stage, every state the replays will need is
        predicted in one batched model call (the model's cost is mostly per call, not per
        scenario), then each trajectory runs its remaining stages."""
        ctxs = [Context(raw=t.model_dump(mode="json", by_alias=True)
                        if isinstance(t, Trajectory) else t) for t in trajs]
        firsts = [self._run(ctx, only_format=True) for ctx in ctxs]
        needed = []
        for ctx, first in zip(ctxs, firsts, strict=True):
            if first[0].passed:
                # Prefetch is an optimisation; the replay itself reports any problem.
                with contextlib.suppress(Exception):
                    needed.extend(reachable_states(ctx))
        if needed:
            self.model.warm(needed)
        return [first if not first[0].passed else first + self._run(ctx, only_format=False)
                for ctx, first in zip(ctxs, firsts, strict=True)]

    def _run(self, ctx: Context, only_format: bool) -> list[VerifierResult]:
        stages: list[tuple[Stage, Callable[[], VerifierResult]]] = [
            ("format", lambda: check_format(ctx, self.resolver)),
            ("execution", lambda: check_execution(ctx, self.model)),
            ("outcome", lambda: check_outcome(ctx)),
            ("claims", lambda: check_claims(ctx)),
        ]
        stages = stages[:1] if only_format else stages[1:]
        out = []
        for stage, run in stages:
            t0 = time.perf_counter()
            try:
                r = run()
            except Exception as e:  # a verifier bug must not end a verification run
                r = fail(stage, "internal_error", f"{type(e).__name__}: {e}")
            r.cost_s = time.perf_counter() - t0
            out.append(r)
            if not r.passed:
                break
        return out

    @staticmethod
    def passed(results: list[VerifierResult]) -> bool:
        return len(results) == len(STAGES) and all(r.passed for r in results)


def reachable_states(ctx: Context) -> list[Scenario]:
    """The scenarios a replay will predict: the initial one, every configured one and every
    `what_if` target (derived with the same pure configure functions the env uses)."""
    from forge.gym import handlers as H

    assert ctx.scenario is not None
    cur = ctx.scenario
    stack: list[Scenario] = []
    out = [cur]
    for _, call in ctx.actions:
        if not isinstance(call, dict) or not isinstance(call.get("args"), dict):
            continue
        tool, args = call.get("tool"), call["args"]
        if tool == "what_if" and isinstance(args.get("change"), dict):
            tool, args, commit = args["change"].get("tool"), args["change"].get("args"), False
        else:
            commit = True
        if tool == "rollback":
            if commit and stack:
                cur = stack.pop()
            continue
        f = H.CONFIGURE.get(tool) if isinstance(tool, str) else None
        if f is None or not isinstance(args, dict):
            continue
        try:
            new = f(cur, args).scenario
        except Exception:
            continue
        out.append(new)
        if commit:
            stack.append(cur)
            cur = new
    return out


def verify_trajectory(traj: Any, model: Predictor, resolver: Resolver | None = None
                      ) -> list[VerifierResult]:
    """One-off verification; for many trajectories reuse a `TrajectoryVerifier` (its cache)."""
    return TrajectoryVerifier(model, resolver).verify(traj)

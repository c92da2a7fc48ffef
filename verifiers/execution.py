"""Stage 2, execution: replay every action on a fresh env; recorded observations must match.

Observations are rounded to 3 decimals when rendered, so numbers are compared with
|recorded - replayed| <= ABS_TOL + REL_TOL * |replayed|: this absorbs rounding and float noise
across platforms, and nothing else. Structure, strings and booleans must match exactly.
"""

from __future__ import annotations

import json
from typing import Any

from forge.gym.env import CachedModel, NetworkEnv
from verifiers.base import Context, Stage, VerifierResult, fail, ok

ABS_TOL = 2e-3
REL_TOL = 1e-4


def first_difference(rec: Any, rep: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """Where two JSON values differ beyond the numeric tolerance (None if they agree)."""
    if isinstance(rep, bool) or isinstance(rec, bool):
        return None if (type(rec) is type(rep) and rec == rep) else (path or "$", rec, rep)
    if isinstance(rep, int | float) and isinstance(rec, int | float):
        return None if abs(rec - rep) <= ABS_TOL + REL_TOL * abs(rep) else (path or "$", rec,
                                                                             rep)
    if isinstance(rep, dict) and isinstance(rec, dict):
        if list(rec) != list(rep):
            keys = sorted(set(rec) ^ set(rep)) or ["<order>"]
            return (f"{path}.{keys[0]}" if path else str(keys[0]), sorted(rec), sorted(rep))
        for k in rep:
            d = first_difference(rec[k], rep[k], f"{path}.{k}" if path else str(k))
            if d:
                return d
        return None
    if isinstance(rep, list) and isinstance(rec, list):
        if len(rec) != len(rep):
            return (f"{path}[len]", len(rec), len(rep))
        for j, (a, b) in enumerate(zip(rec, rep, strict=True)):
            d = first_difference(a, b, f"{path}[{j}]")
            if d:
                return d
        return None
    return None if rec == rep else (path or "$", rec, rep)


def check_execution(ctx: Context, model: CachedModel) -> VerifierResult:
    st: Stage = "execution"
    assert ctx.traj is not None and ctx.scenario is not None  # format passed
    spec = ctx.traj.task.env
    env = NetworkEnv(ctx.scenario, seed=spec.seed, model=model, noise_rel=spec.noise_rel,
                     noise_db=spec.noise_db)
    recorded_hash = ctx.traj.provenance.model_hash
    for k, ((_, call), (oi, rec)) in enumerate(zip(ctx.actions, ctx.observations, strict=True)):
        obs = env.step(call)
        replayed = json.loads(obs.to_json())
        d = first_difference(rec, replayed)
        if d is not None:
            path, a, b = d
            other_model = bool(recorded_hash) and recorded_hash != model.model_hash
            reason = "model_mismatch" if other_model else "observation_mismatch"
            return fail(st, reason,
                        f"step {k} (message {oi}): recorded observation differs from the replay "
                        f"at {path}: {str(a)[:80]} != {str(b)[:80]}"
                        + (f" (recorded with model {recorded_hash[:12]}, replayed with "
                           f"{model.model_hash[:12]})" if other_model else ""),
                        step=k, message_index=oi, path=path, recorded=str(a)[:200],
                        replayed=str(b)[:200])
    ctx.env = env
    return ok(st, steps=env.steps, failed_steps=env.failed_steps)

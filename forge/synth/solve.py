"""Closed-loop episodes: the teacher emits one `<action>` per turn, the gym executes it, the
observation goes back inside `<ans>`, until a final answer or the step budget. Every finished
episode goes through the four verifiers; every attempt becomes one `trajectories` row.

Pre-verifier rejections (kept with their raw text, never raised):
- parse: the turn is not parseable (`forge.gym.tags`: unbalanced tag, text after the action,
  JSON that does not parse, several actions) or was cut off by max_tokens (`truncated`);
- budget: more tool calls than `max_steps` (`step_budget`) or the same call repeated
  `loop_repeats` times in a row (`loop`).
A rejected attempt is retried with another sampling seed up to `max_attempts` times. A tool call
that errors is not a rejection: the error observation goes back to the teacher, which can
recover; such trajectories are labelled `error_recovery` when a later call succeeds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from forge.gym.env import CachedModel, NetworkEnv
from forge.gym.tags import has_action, parse_action
from forge.gym.trajectory import (
    EnvSpec,
    Message,
    Provenance,
    Task,
    Trajectory,
    difficulty_of,
)
from forge.scenario import Scenario
from forge.synth.store import hid
from forge.teacher.base import BudgetExhausted, Completion, GenParams
from forge.teacher.prompts import solve_system_prompt, task_prompt
from verifiers import TrajectoryVerifier

SyncChat = Callable[[list[dict[str, Any]], GenParams], Completion]
AsyncChat = Callable[[list[dict[str, Any]], GenParams], Awaitable[Completion]]
# Several conversations answered together: (indices of the runs, their messages) -> turns.
BatchChat = Callable[[list[int], list[list[dict[str, Any]]]], list[Completion]]


@dataclass
class SolveConfig:
    max_steps: int = field(default=24, metadata={"help": "Tool calls allowed per episode."})
    max_attempts: int = field(default=2, metadata={
        "help": "Attempts per task when an attempt is rejected before verification."})
    loop_repeats: int = field(default=3, metadata={
        "help": "The same call this many times in a row is a loop: the attempt is rejected."})
    temperature: float = field(default=0.7, metadata={"help": "Teacher sampling temperature."})
    max_tokens: int = field(default=1024, metadata={"help": "max_tokens of each teacher turn."})


@dataclass
class Episode:
    messages: list[dict[str, str]]
    n_failed: int = 0
    reject: tuple[str, str, str] | None = None   # (stage, reason, message)
    raw_text: str | None = None
    tools: list[str] = field(default_factory=list)
    recovered: bool = False
    usage: tuple[int, int] = (0, 0)


class EpisodeRun:
    """The state machine of one episode: the one closed loop that synthesis, `forge bench` and
    RL rollouts share. `feed` takes the agent's next turn; the env answers tool calls; `ep`
    holds the conversation so far and `env` the network (its final state when `finished`).
    Drive it with `drive_sync`/`drive_async`, or turn by turn (RL builds token ids as it goes).
"""

    def __init__(self, task: dict[str, Any], scn: Scenario, model: CachedModel,
                 env_seed: int, cfg: SolveConfig, user_text: str | None = None) -> None:
        self.cfg = cfg
        self.env_seed = env_seed   # the verifiers replay the episode in an env of this seed
        self.env = NetworkEnv(scn, seed=env_seed, model=model)
        # `user_text` replaces the standard task prompt (e.g. a ticket without its goal JSON).
        user = user_text if user_text is not None else task_prompt(
            task["instruction"], task["kind"], task["goal"])
        self.ep = Episode([{"role": "system", "content": solve_system_prompt()},
                           {"role": "user", "content": user}])
        self.calls: list[str] = []
        self.pending_error = False
        self.done = False

    def feed(self, c: Completion) -> None:
        ep = self.ep
        ep.usage = (ep.usage[0] + c.prompt_tokens, ep.usage[1] + c.completion_tokens)
        text = c.text
        if c.finish_reason == "length":
            self._reject("parse", "truncated", "the turn was cut off by max_tokens", text)
            return
        if not has_action(text):
            if not text.strip():
                self._reject("parse", "empty_turn", "the teacher returned an empty turn", text)
                return
            ep.messages.append({"role": "assistant", "content": text})
            self.done = True
            return
        call, problem = parse_action(text)
        if problem is not None:
            self._reject("parse", problem.code, problem.message, text)
            return
        if len(self.ep.tools) >= self.cfg.max_steps:
            self._reject("budget", "step_budget", f"more than {self.cfg.max_steps} tool calls",
                         text)
            return
        key = json.dumps(call, sort_keys=True)
        self.calls.append(key)
        if len(self.calls) >= self.cfg.loop_repeats and \
                len(set(self.calls[-self.cfg.loop_repeats:])) == 1:
            self._reject("budget", "loop", f"the same call {self.cfg.loop_repeats} times in a "
                                           f"row: {key[:120]}", text)
            return
        obs = self.env.step(call)
        ep.messages.append({"role": "assistant", "content": text})
        ep.messages.append({"role": "tool", "content": obs.render()})
        ep.tools.append(obs.tool or str(call.get("tool") if isinstance(call, dict) else "?"))
        if not obs.ok:
            ep.n_failed += 1
            self.pending_error = True
        elif self.pending_error:
            ep.recovered = True
            self.pending_error = False

    def _reject(self, stage: str, reason: str, msg: str, raw: str) -> None:
        self.ep.reject = (stage, reason, msg)
        self.ep.raw_text = raw
        self.done = True

    @property
    def finished(self) -> bool:
        return self.done


def params_for(task_id: str, attempt: int, cfg: SolveConfig) -> GenParams:
    # The sampling seed is a function of (task, attempt): a rerun asks the same questions (and
    # hits the LLM cache), a retry asks differently.
    return GenParams(temperature=cfg.temperature, max_tokens=cfg.max_tokens,
                     seed=int(hid(task_id, attempt, n=8), 16))


def drive_sync(run: EpisodeRun, chat: SyncChat, params: GenParams) -> Episode:
    """Run an episode to its end with a synchronous chat model. An exception of `chat` (an
    endpoint that fails for good) propagates; `run.ep` keeps the conversation up to it."""
    return drive_lockstep([run], lambda live, convs: [chat(convs[0], params)])[0]


def drive_lockstep(runs: list[EpisodeRun], chat: BatchChat) -> list[Episode]:
    """Run several episodes side by side, one turn of every unfinished run per round:
    `chat(live, conversations)` answers the runs `live` (indices into `runs`) together, which
    lets a local model decode their turns as one batch (`forge.bench.hf.generate_together`).
    Each run still follows its own state machine; only the generation is shared."""
    for _ in range(2 * max(r.cfg.max_steps for r in runs) + 2):
        live = [i for i, r in enumerate(runs) if not r.finished]
        if not live:
            break
        for i, c in zip(live, chat(live, [runs[i].ep.messages for i in live]), strict=True):
            runs[i].feed(c)
    for r in runs:
        if not r.finished:
            r._reject("budget", "step_budget", "no final answer within the turn budget", "")
    return [r.ep for r in runs]


async def drive_async(run: EpisodeRun, chat: AsyncChat, params: GenParams) -> Episode:
    for _ in range(2 * run.cfg.max_steps + 2):
        run.feed(await chat(run.ep.messages, params))
        if run.finished:
            return run.ep
    run._reject("budget", "step_budget", "no final answer within the turn budget", "")
    return run.ep


def solve_sync(task: dict[str, Any], scn: Scenario, chat: SyncChat, model: CachedModel,
               cfg: SolveConfig, attempt: int) -> Episode:
    run = EpisodeRun(task, scn, model, env_seed=attempt, cfg=cfg)
    return drive_sync(run, chat, params_for(task["task_id"], attempt, cfg))


async def solve_async(task: dict[str, Any], scn: Scenario, chat: AsyncChat,
                      model: CachedModel, cfg: SolveConfig, attempt: int) -> Episode:
    run = EpisodeRun(task, scn, model, env_seed=attempt, cfg=cfg)
    return await drive_async(run, chat, params_for(task["task_id"], attempt, cfg))


def to_row(task: dict[str, Any], scn: Scenario, ep: Episode, attempt: int, teacher: str,
           model: CachedModel, verifier: TrajectoryVerifier, rnd: int, gen_run_id: str | None,
           ) -> dict[str, Any]:
    """Verify an episode and turn it into a `trajectories` row."""
    n_actions = len(ep.tools)
    traj_id = "tr-" + hid(task["task_id"], teacher, model.model_hash, attempt)
    base = {"traj_id": traj_id, "task_id": task["task_id"], "attempt": attempt,
            "kind": task["kind"], "difficulty": difficulty_of(n_actions),
            "n_actions": n_actions, "n_failed_steps": ep.n_failed, "tools": ep.tools,
            "error_recovery": ep.recovered and ep.n_failed > 0, "teacher": teacher,
            "round": rnd, "model_hash": model.model_hash, "gen_run_id": gen_run_id,
            "raw_text": ep.raw_text}
    if ep.reject is not None:
        stage, reason, msg = ep.reject
        return {**base, "status": "rejected", "uncertain": False, "reject_stage": stage,
                "reject_reason": reason, "reject_message": msg[:2000], "verdicts": None,
                "trajectory": {"messages": ep.messages}}
    t0 = time.perf_counter()
    traj = Trajectory(
        id=traj_id,
        task=Task(id=task["task_id"], instruction=task["instruction"], kind=task["kind"],
                  scenario_id=scn.scenario_id, scenario=scn, goal=task["goal"],
                  difficulty=difficulty_of(n_actions), env=EnvSpec(seed=attempt)),
        messages=[Message(role=m["role"], content=m["content"])  # type: ignore[arg-type]
                  for m in ep.messages],
        provenance=Provenance(teacher=teacher, round=rnd, model_hash=model.model_hash,
                              parent_tasks=[task["task_id"]],
                              generation={"attempt": attempt, "pattern": task.get("pattern"),
                                          "source": task.get("source")}))
    results = verifier.verify(traj)
    passed = verifier.passed(results)
    last = results[-1]
    verdicts = [r.to_dict() for r in results]
    verdicts.append({"stage": "_timing", "verify_s": round(time.perf_counter() - t0, 6)})
    return {**base, "status": "verified" if passed else "rejected",
            "uncertain": any(r.status == "uncertain" for r in results),
            "reject_stage": None if passed else last.stage,
            "reject_reason": None if passed else last.reason,
            "reject_message": None if passed else last.message[:2000],
            "verdicts": verdicts, "trajectory": traj.model_dump(mode="json", by_alias=True)}


def needs_retry(row: dict[str, Any]) -> bool:
    """Retry only what a new sample can fix: parse/budget rejections."""
    return row["status"] == "rejected" and row["reject_stage"] in ("parse", "budget")


__all__ = ["BudgetExhausted", "Episode", "EpisodeRun", "SolveConfig", "drive_async",
           "drive_sync", "needs_retry", "solve_async", "solve_sync", "to_row"]

"""Stage 2: entropy-aware RL in the gym (`python -m forge train rl`).

TRL's `GRPOTrainer` with GSPO (sequence-level importance ratios, `importance_sampling_level=
"sequence"` with `loss_type="grpo"`) and clip-higher (`epsilon_high > epsilon`), on closed-loop
multi-turn rollouts: `rollout_func` runs each prompt as a whole episode through the same episode
runner as synthesis and the bench (`forge.synth.solve.EpisodeRun`), with the policy being trained
generating every assistant turn (`forge.bench.hf.HFEpisode`). Token ids and the loss mask are
built as the episode is generated: the model's own tokens carry loss (env_mask 1), observation
tokens and role headers none (0), exactly like SFT's mask. Nothing is re-tokenised.

Reward, one TRL reward function per component (each logged by TRL as rewards/<name>/mean, the
weights in `reward_weights`):
- `task_success`: 1 when the four verifiers pass (outcome judged by the Experiment Model);
- `format_valid`: 1 unless the episode ended on an unparseable or cut-off turn;
- `tool_efficiency`: minus the number of tool calls (a penalty per turn);
- `token_penalty`: minus lambda_tok * tokens, lambda_tok following the dual update
  lambda_tok <- max(0, lambda_tok + eta * (mean tokens - B)) toward a budget of B generated
  tokens per episode (Agent-GSPO), updated once per batch;
- `repetition`: minus the number of identical consecutive tool calls.

Entropy: TRL logs the policy entropy every step. On by default: adaptive entropy control (TRL's
`use_adaptive_entropy`, Skywork-OR1: an entropy bonus switched on only when entropy falls below a
target, the guard against collapse; the target is by default a share of the starting policy's
own entropy, measured on frontier rollouts) and entropy-guided exploration at rollout time
(a turn whose first-token distribution is uncertain is sampled at a higher temperature:
T = T0 * (1 + alpha * H / log V)). Off by default: training only on the top-entropy token quantile
(`top_entropy_quantile` < 1): with a few-million-parameter policy and a few dozen steps it
discards most of an already small signal; turn it on for larger runs.

Prompts: the curated RL prompt set (train split) of an export, filtered to the frontier: tasks
on which the SFT policy's pass rate over `frontier_rollouts` rollouts is neither 0 nor 1. With
`dynamic_sampling` (DAPO), groups that carry no success signal during training are replaced by
groups of fresh prompts from outside the frontier pool.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

from forge.db import ForgeError
from forge.train.model import check_bf16_setting


class RLDataError(ForgeError):
    """An RL prompt set that cannot be used."""


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class RLRunConfig:
    model: str = _f("build/train/sft/checkpoint", "The SFT checkpoint to start from.")
    data: str = _f("build/curated/forge-5k", "Export of `python -m forge.curate` whose "
                   "parquet/rl_prompts.parquet holds the RL prompts.")
    out: str = _f("build/train/rl", "Output: checkpoint/, metrics.json, rl.png.")
    steps: int = _f(30, "Optimizer steps.")
    prompts_per_step: int = _f(2, "Distinct prompts per step (each rolled out "
                               "num_generations times).")
    num_generations: int = _f(4, "Rollouts per prompt (GRPO's group).")
    lr: float = _f(2e-5, "Learning rate (2e-4 degraded a tiny SFT policy's format within 20 "
                   "steps: docs/BENCHMARKS.md).")
    temperature: float = _f(0.7, "Base sampling temperature of rollouts (a few-million-"
                            "parameter policy writes malformed tags at 1.0).")
    entropy_guided_alpha: float = _f(0.5, "Entropy-guided exploration: T = T0 * (1 + alpha "
                                     "* H / log V) per turn (0 = off).")
    max_turn_tokens: int = _f(160, "max tokens of one generated turn.")
    max_tool_calls: int = _f(8, "Tool calls allowed per rollout episode.")
    max_context: int = _f(1024, "Context limit of an episode in tokens.")
    rollout_batch: int = _f(8, "Episodes run side by side, their turns decoded as one batch "
                            "(a CPU decodes 8 sequences in ~2.5x the time of one; 1 = one at "
                            "a time).")
    importance_sampling_level: str = _f("sequence", "sequence = GSPO (default), token = GRPO.")
    epsilon: float = _f(3e-4, "Lower clip of the importance ratio (GSPO's sequence-level "
                        "ratio needs a small range).")
    epsilon_high: float = _f(4e-4, "Upper clip (clip-higher: above epsilon).")
    scale_rewards: str = _f("batch", "Advantage scaling (TRL's scale_rewards): group (each "
                            "group's reward std), batch (one std over the batch) or none. batch "
                            "keeps a group whose rollouts differ only in the small shaping "
                            "terms (calls, format) from getting the advantages of one that "
                            "differs in success.")
    beta: float = _f(0.0, "KL coefficient to the reference model (0: none, no reference "
                     "model kept).")
    use_adaptive_entropy: bool = _f(True, "TRL's adaptive entropy control (guard against "
                                    "entropy collapse).")
    entropy_target: float = _f(0.0, "Target mean token entropy (nats) of adaptive control: "
                               "the bonus is on while the entropy is below it. 0 = auto: "
                               "entropy_target_ratio x the starting policy's entropy, measured "
                               "on its frontier rollouts (a fixed target above that entropy "
                               "keeps the bonus on, and rising, from the first step).")
    entropy_target_ratio: float = _f(0.6, "Auto target as a share of the starting policy's "
                                     "entropy: the guard acts when entropy falls below it.")
    top_entropy_quantile: float = _f(1.0, "Train only on this top quantile of tokens by "
                                     "entropy (1.0 = all tokens).")
    w_success: float = _f(1.0, "Weight of task_success.")
    w_format: float = _f(0.2, "Weight of format_valid.")
    w_efficiency: float = _f(0.02, "Weight of tool_efficiency (per tool call).")
    w_tokens: float = _f(1.0, "Weight of token_penalty (its scale is lambda_tok).")
    w_repetition: float = _f(0.1, "Weight of repetition (per repeated call).")
    token_budget: int = _f(200, "B: generated tokens per episode the dual update aims at.")
    token_eta: float = _f(2e-5, "eta: step size of the lambda_tok dual update.")
    token_lambda0: float = _f(0.0, "Initial lambda_tok.")
    levels: str = _f("", "Only RL prompts of these difficulties, comma-separated (e.g. L1); "
                     "empty = all. A policy whose context cannot hold L2/L3 episodes learns "
                     "nothing from them.")
    qa_share: float = _f(0.0, "Share of questions among the RL prompts drawn (frontier pool "
                         "and dynamic-sampling reserve), like train sft --qa-share; 0 = the "
                         "export's own mix (about half on L1, where the bench asks three "
                         "questions in four).")
    frontier_pool: int = _f(32, "RL prompts whose SFT pass rate is measured.")
    frontier_rollouts: int = _f(4, "Rollouts per prompt to measure it.")
    frontier_greedy: int = _f(0, "Greedy misses first: N > 0 rolls each pooled prompt out once "
                              "more at temperature 0 (as forge bench decodes) and lists each "
                              "frontier prompt whose greedy episode fails N more times in the "
                              "RL prompt set (sampled rollouts sometimes solve it, greedy "
                              "decoding does not: a gain there changes what the bench sees). "
                              "0 = off.")
    dynamic_sampling: int = _f(0, "Dynamic sampling (DAPO): per step, up to this many groups "
                               "whose rollouts all succeeded or all failed (no success signal, "
                               "no gradient with --scale-rewards none) are replaced by the "
                               "group of a fresh RL prompt from outside the frontier pool, kept "
                               "if its rollouts disagree; a prompt whose whole group succeeded "
                               "is retired and a fresh one takes its place at later steps. "
                               "0 = off.")
    bf16: str = _f("auto", "bf16 autocast for the policy's forward and backward passes "
                   "(rollouts decode in float32): on, off, or auto (on where bf16 is native and "
                   "the model has >= 20M parameters; see forge train sft --help).")
    seed: int = _f(0, "Seed of prompt order, environments and sampling.")
    threads: int = _f(0, "torch CPU threads (0 = torch's default).")
    quick: bool = _f(False, "Minutes-long smoke run: 3 steps, frontier 6 x 2.")

    def effective(self) -> RLRunConfig:
        c = RLRunConfig(**asdict(self))
        if c.quick:
            c.steps = min(c.steps, 3)
            c.frontier_pool = min(c.frontier_pool, 6)
            c.frontier_rollouts = min(c.frontier_rollouts, 2)
        if c.importance_sampling_level not in ("sequence", "token"):
            raise ForgeError("--importance-sampling-level must be sequence or token")
        check_bf16_setting(c.bf16)
        if c.scale_rewards not in ("group", "batch", "none"):
            raise ForgeError("--scale-rewards must be group, batch or none")
        if not 0.0 <= c.qa_share < 1.0:
            raise ForgeError(f"--qa-share must be in [0, 1), not {c.qa_share}")
        if c.entropy_target < 0 or not 0 < c.entropy_target_ratio <= 1:
            raise ForgeError("--entropy-target must be >= 0 (0 = auto) and "
                             "--entropy-target-ratio in (0, 1]")
        if c.epsilon_high < c.epsilon:
            raise ForgeError("clip-higher needs --epsilon-high >= --epsilon")
        return c


# --- prompts ------------------------------------------------------------------------------------
@dataclass
class RLTask:
    task: dict[str, Any]          # the runner's task dict
    scenario: Any                 # forge.scenario.Scenario
    messages: list[dict[str, str]]  # system + user (the prompt)


def load_rl_tasks(data: str | Path, levels: str = "") -> list[RLTask]:
    """The train-split RL prompts of an export, each with its network (embedded in the stored
    task) and the prompt messages the episode starts from; bench networks are refused.
    `levels` (e.g. "L1" or "L1,L2") keeps only those difficulties."""
    from forge.gym.trajectory import parse_levels

    try:
        want = parse_levels(levels)
    except ValueError as e:
        raise RLDataError(str(e)) from None
    from forge.bench.decontam import default_guard
    from forge.gym.trajectory import Task
    from forge.teacher.prompts import solve_system_prompt, task_prompt

    p = Path(data)
    f = p / "parquet" / "rl_prompts.parquet" if p.is_dir() else p
    if not f.is_file():
        raise RLDataError(f"no RL prompt set at {f} (export one with python -m forge.curate)")
    import duckdb

    con = duckdb.connect()
    try:
        cur = con.execute(f"SELECT * FROM read_parquet('{f}') ORDER BY task_id")
        cols = [d[0] for d in cur.description]
        rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()
    missing = {"task", "split", "task_id"} - set(cols)
    if missing:
        raise RLDataError(f"{f}: missing columns {sorted(missing)}")
    guard = default_guard()
    out = []
    for r in rows:
        if r["split"] != "train" or r["task"] is None:
            # No task object: its only stored attempts were rejected before verification.
            continue
        if want and r.get("difficulty") not in want:
            continue
        t = Task.model_validate_json(r["task"])
        if t.scenario is None:
            raise RLDataError(f"{f}: task {t.id} carries no scenario")
        if guard is not None and t.scenario_id in guard.scenario_ids:
            raise RLDataError(f"{f}: task {t.id} is on a bench network: the bench must stay "
                              "held out")
        goal = t.goal.model_dump(mode="json", by_alias=True, exclude_none=True)
        task = {"task_id": t.id, "instruction": t.instruction, "kind": t.kind, "goal": goal}
        out.append(RLTask(task, t.scenario, [
            {"role": "system", "content": solve_system_prompt()},
            {"role": "user", "content": task_prompt(t.instruction, t.kind, goal)}]))
    if not out:
        raise RLDataError(f"{f}: no train-split RL prompts"
                          + (f" of levels {levels}" if want else ""))
    return out


# --- rollouts ------------------------------------------------------------------------------------
@dataclass
class Rollout:
    prompt_ids: list[int]
    completion_ids: list[int]
    env_mask: list[int]
    success: bool
    format_ok: bool
    n_calls: int
    n_tokens: int
    repeats: int
    termination: str
    turns: list[tuple[int, int]]   # [start, end) of each generated turn, within the completion


@contextmanager
def plain_forward(model: Any) -> Iterator[Any]:
    """The model's own float32 forward for the duration of a rollout. Inside the trainer,
    accelerate wraps `model.forward` in bf16 autocast (and TRL patches it for its fused LM
    head): autocast casts every weight again for each generated token, which halved the
    decoding speed of SmolLM2 on CPU (29.1 -> 11.1 tokens/s). Rollouts sample from the float32
    weights; the trainer's wrappers are put back afterwards."""
    saved = model.__dict__.pop("forward", None)
    try:
        yield model
    finally:
        if saved is not None:
            model.forward = saved


def entropy_temperature(alpha: float, vocab: int) -> Any:
    """Entropy-guided exploration: the turn's temperature grows with the normalised entropy of
    its first-token distribution (where the policy hesitates about its next call)."""
    import torch

    log_v = math.log(max(2, vocab))

    def fn(logits: Any, t0: float) -> float:
        if alpha <= 0 or t0 <= 0:
            return t0
        p = torch.softmax(logits.float(), dim=-1)
        h = float(-(p * torch.log(p.clamp_min(1e-12))).sum())
        return t0 * (1.0 + alpha * h / log_v)

    return fn


def rollout(agent: Any, t: RLTask, em: Any, verifier: Any, cfg: RLRunConfig, seed: int
            ) -> Rollout:
    """One closed-loop episode by the policy (see `rollouts`)."""
    return rollouts(agent, [t], em, verifier, cfg, [seed])[0]


def rollouts(agent: Any, tasks: list[RLTask], em: Any, verifier: Any, cfg: RLRunConfig,
             seeds: list[int]) -> list[Rollout]:
    """Closed-loop episodes by the policy, `cfg.rollout_batch` at a time side by side (their
    turns decoded as one batch); the token record comes from each episode itself."""
    out: list[Rollout] = []
    step = max(1, cfg.rollout_batch)
    for k in range(0, len(tasks), step):
        out += _rollout_group(agent, tasks[k:k + step], em, verifier, cfg, seeds[k:k + step])
    return out


def _rollout_group(agent: Any, tasks: list[RLTask], em: Any, verifier: Any,
                   cfg: RLRunConfig, seeds: list[int]) -> list[Rollout]:
    from forge.bench.hf import HFEpisode, drive_together
    from forge.synth.solve import EpisodeRun, SolveConfig
    from forge.teacher.base import GenParams

    scfg = SolveConfig(max_steps=cfg.max_tool_calls, max_attempts=1,
                       temperature=cfg.temperature, max_tokens=cfg.max_turn_tokens)
    runs = [EpisodeRun(t.task, t.scenario, em, env_seed=s % 1000, cfg=scfg,
                       user_text=t.messages[1]["content"]) for t, s in zip(tasks, seeds,
                                                                           strict=True)]
    eps = [HFEpisode(agent, s) for s in seeds]
    params = [GenParams(temperature=cfg.temperature, max_tokens=cfg.max_turn_tokens, seed=s)
              for s in seeds]
    # A policy that breaks the runner scores 0 on the episodes still going; the batch goes on.
    for i, err in drive_together(runs, eps, params).items():
        runs[i]._reject("parse", "agent_error", err, "")
    return [_record(agent.codec, t, run, ep, em, verifier)
            for t, run, ep in zip(tasks, runs, eps, strict=True)]


def _record(codec: Any, t: RLTask, run: Any, ep: Any, em: Any, verifier: Any) -> Rollout:
    """The rollout of a finished episode: its token record, verdict and reward inputs."""
    from forge.synth.solve import to_row

    n_prompt = len(codec.encode(t.messages)[0]) + len(codec.assistant_prefix())
    ids, mask = ep.ids, ep.mask
    # The completion ends at the last generated token (EOS unless the turn was cut off); the
    # newline after a final <|im_end|> is framing, not part of the completion.
    end = ep.turns[-1][1] if ep.turns else n_prompt
    # The verifiers replay the episode in an env of the seed given as `attempt`: it must be the
    # seed the episode ran with, or every noisy observation the policy quoted looks wrong
    # (before session 15 it was 0 for every rollout: most correct answers scored 0).
    row = to_row(t.task, t.scenario, run.ep, run.env_seed, "policy", em, verifier, 0, None)
    calls = [m["content"] for m in run.ep.messages if m["role"] == "assistant"
             and "<action>" in m["content"]]
    repeats = sum(1 for a, b in pairwise(calls)
                  if a.split("<action>")[-1] == b.split("<action>")[-1])
    rej = run.ep.reject
    completion, env_mask = ids[n_prompt:end], mask[n_prompt:end]
    if not completion:
        # No token was generated (the prompt filled the context, or the agent failed before its
        # first token): TRL reads every completion's last token, so the episode ends on one
        # EOS that carries no loss (its reward still counts in the group's advantages).
        completion, env_mask = [codec.eos_id], [0]
    return Rollout(prompt_ids=ids[:n_prompt], completion_ids=completion,
                   env_mask=env_mask, success=row["status"] == "verified",
                   format_ok=not (rej and rej[0] == "parse"), n_calls=len(run.ep.tools),
                   n_tokens=sum(env_mask), repeats=repeats,
                   termination="answer" if rej is None else f"{rej[0]}/{rej[1]}",
                   turns=[(a - n_prompt, b - n_prompt) for a, b in ep.turns])


class TokenPenalty:
    """minus lambda_tok * tokens, with the dual update toward the budget B per batch."""

    __name__ = "token_penalty"

    def __init__(self, budget: int, eta: float, lam0: float) -> None:
        self.budget, self.eta, self.lam = budget, eta, lam0
        self.history: list[float] = []

    def __call__(self, prompts: Any = None, completions: Any = None, **kw: Any) -> list[float]:
        tokens = [float(x) for x in kw["n_tokens"]]
        out = [-self.lam * x for x in tokens]
        mean = sum(tokens) / max(1, len(tokens))
        self.lam = max(0.0, self.lam + self.eta * (mean - self.budget))
        self.history.append(self.lam)
        return out


def _component(name: str, key: str, fn: Any) -> Any:
    def reward(prompts: Any = None, completions: Any = None, **kw: Any) -> list[float]:
        return [float(fn(x)) for x in kw[key]]

    reward.__name__ = name
    return reward


def reward_functions(cfg: RLRunConfig) -> tuple[list[Any], list[float], TokenPenalty]:
    tok = TokenPenalty(cfg.token_budget, cfg.token_eta, cfg.token_lambda0)
    funcs = [_component("task_success", "success", lambda s: 1.0 if s else 0.0),
             _component("format_valid", "format_ok", lambda s: 1.0 if s else 0.0),
             _component("tool_efficiency", "n_calls", lambda n: -float(n)),
             tok,
             _component("repetition", "repeats", lambda n: -float(n))]
    weights = [cfg.w_success, cfg.w_format, cfg.w_efficiency, cfg.w_tokens, cfg.w_repetition]
    return funcs, weights, tok


class RolloutFunc:
    """TRL's `rollout_func`: one closed-loop episode per prompt received (TRL hands the prompts
    over already repeated num_generations times, each group's copies consecutive). With
    `dynamic_sampling` > 0, prompts from `reserve` (RL prompts outside the frontier pool, used
    from the end) stand in for groups without a success signal; the completions then belong to
    the stand-in's prompt ids, which is what TRL trains on (the reward functions read only the
    rollouts' own fields)."""

    def __init__(self, tasks: list[RLTask], cfg: RLRunConfig, codec: Any, em: Any,
                 verifier: Any, reserve: list[RLTask] | None = None) -> None:
        self.by_user = {t.messages[1]["content"]: t for t in tasks}
        self.cfg, self.codec, self.em, self.verifier = cfg, codec, em, verifier
        self.reserve = list(reserve or [])
        self.retired: set[str] = set()
        self.calls = 0
        self.received: list[int] = []
        self.log: list[dict[str, Any]] = []

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, Any]:
        from forge.bench.hf import HFAgent

        model = trainer.accelerator.unwrap_model(trainer.model)
        was_training = model.training
        model.eval()
        agent = HFAgent.from_model(model, self.codec, max_context=self.cfg.max_context)
        agent.temperature_fn = entropy_temperature(self.cfg.entropy_guided_alpha,
                                                   len(self.codec.tokenizer))
        self.received.append(len(prompts))
        g = self.cfg.num_generations
        tasks = []
        for p in prompts:
            user = next(m["content"] for m in p if m["role"] == "user")
            task = self.by_user.get(user)
            if task is None:
                raise RLDataError("rollout_func got a prompt that is not in the RL set")
            tasks.append(task)
        group_tasks = tasks[::g]
        # A prompt whose whole group succeeded before is retired: a fresh prompt takes its place
        # at no extra cost (it would most likely succeed again and teach nothing).
        swapped = 0
        for k, t in enumerate(group_tasks):
            if t.task["task_id"] in self.retired and self.reserve:  # (dynamic sampling only)
                group_tasks[k] = self.reserve.pop()
                swapped += 1
        base = self.cfg.seed * 1_000_003 + self.calls * 997
        t0 = time.perf_counter()
        try:
            with plain_forward(model):
                outs = self._groups(agent, group_tasks, base)
                # Dynamic sampling (DAPO): a group whose rollouts all succeed or all fail has no
                # success signal. Up to `dynamic_sampling` of them per call are replaced by the
                # group of a fresh prompt, kept if its rollouts disagree.
                flat = [k for k in range(len(group_tasks)) if _uniform(outs[k * g:(k + 1) * g])]
                if self.cfg.dynamic_sampling:
                    self.retired |= {group_tasks[k].task["task_id"] for k in flat
                                     if all(o.success for o in outs[k * g:(k + 1) * g])}
                tries = flat[:self.cfg.dynamic_sampling]
                fresh = [self.reserve.pop() for _ in tries[:len(self.reserve)]]
                cand = self._groups(agent, fresh, base + 500) if fresh else []
                replaced = 0
                for j, k in enumerate(tries[:len(fresh)]):
                    if not _uniform(cand[j * g:(j + 1) * g]):
                        outs[k * g:(k + 1) * g] = cand[j * g:(j + 1) * g]
                        replaced += 1
        finally:
            if was_training:
                model.train()
        self.calls += 1
        self.log.append({"call": self.calls, "episodes": len(outs) + len(cand),
                         "rollout_s": round(time.perf_counter() - t0, 2),
                         "success": sum(o.success for o in outs) / max(1, len(outs)),
                         "retired_swapped": swapped, "uniform_groups": len(flat),
                         "resampled": len(fresh), "replaced": replaced,
                         "terminations": [o.termination for o in outs]})
        return {"prompt_ids": [o.prompt_ids for o in outs],
                "completion_ids": [o.completion_ids for o in outs],
                "logprobs": None,
                "env_mask": [o.env_mask for o in outs],
                "success": [o.success for o in outs], "format_ok": [o.format_ok for o in outs],
                "n_calls": [o.n_calls for o in outs], "n_tokens": [o.n_tokens for o in outs],
                "repeats": [o.repeats for o in outs]}


    def _groups(self, agent: Any, tasks: list[RLTask], base: int) -> list[Rollout]:
        """num_generations rollouts of each task, consecutive (TRL's group layout)."""
        g = self.cfg.num_generations
        flat = [t for t in tasks for _ in range(g)]
        return rollouts(agent, flat, self.em, self.verifier, self.cfg,
                        [base + i for i in range(len(flat))])


def _uniform(group: list[Rollout]) -> bool:
    """All rollouts of the group succeeded, or all failed: no success signal in it."""
    return len({o.success for o in group}) <= 1


def policy_entropy(model: Any, outs: list[Rollout], limit: int = 8) -> float:
    """Mean token entropy (nats, at temperature 1) of `model` over the policy's own tokens
    (env_mask 1) of up to `limit` rollouts: the figure TRL logs as `entropy` during training,
    measured here once before it (one forward pass per rollout, no gradient)."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for o in outs[:limit]:
            if not any(o.env_mask):
                continue
            ids = torch.tensor([o.prompt_ids + o.completion_ids])
            n = len(o.prompt_ids)
            # The logits at position i predict token i + 1: completion token j is predicted at
            # n - 1 + j.
            logits = model(input_ids=ids).logits[0, n - 1:n - 1 + len(o.completion_ids)]
            logp = torch.log_softmax(logits.float(), dim=-1)
            ent = -(logp.exp() * logp).sum(-1)
            m = torch.tensor(o.env_mask, dtype=torch.bool)
            total += float(ent[m].sum())
            count += int(m.sum())
    return total / count if count else 0.0


# --- frontier -------------------------------------------------------------------------------------
def frontier(tasks: list[RLTask], model: Any, codec: Any, em: Any, verifier: Any,
             cfg: RLRunConfig, log: Any) -> tuple[list[RLTask], dict[str, Any]]:
    """The tasks on which the policy's pass rate over `frontier_rollouts` is in (0, 1)."""
    from forge.bench.hf import HFAgent

    rng = random.Random(cfg.seed)
    pool = rng.sample(tasks, min(cfg.frontier_pool, len(tasks)))
    agent = HFAgent.from_model(model, codec, max_context=cfg.max_context)
    n = cfg.frontier_rollouts
    runs = rollouts(agent, [t for t in pool for _ in range(n)], em, verifier, cfg,
                    [cfg.seed * 7919 + 31 * i + r for i in range(len(pool)) for r in range(n)])
    rates = [sum(o.success for o in runs[i * n:(i + 1) * n]) / n for i in range(len(pool))]
    front = [t for t, r in zip(pool, rates, strict=True) if 0 < r < 1]
    greedy_info: dict[str, Any] = {}
    if cfg.frontier_greedy > 0:
        # One greedy episode per pooled prompt, on the seed of its first sampled rollout.
        greedy = rollouts(agent, pool, em, verifier, replace(cfg, temperature=0.0),
                          [cfg.seed * 7919 + 31 * i for i in range(len(pool))])
        ok = {t.task["task_id"]: o.success for t, o in zip(pool, greedy, strict=True)}
        front, greedy_info = weight_greedy_misses(front, ok, cfg.frontier_greedy)
        greedy_info["solved"] = sum(ok.values())
        greedy_info["pass_rate"] = round(greedy_info["solved"] / max(1, len(ok)), 4)
    # The starting policy's entropy, for the automatic target of adaptive entropy control:
    # one rollout of each pooled prompt (up to 16), spread over the pool. Session 16 measured it
    # on the first 8 rollouts of the frontier's prompts only: with a frontier of 4 prompts that
    # gave 0.25 nats against 0.12-0.14 in the other runs, and a target that switched the bonus
    # on in half the steps.
    h0 = policy_entropy(model, runs[::n], limit=16)
    info: dict[str, Any] = {"pool": len(pool), "rollouts_each": cfg.frontier_rollouts,
            "pass_rate_hist": {"0": sum(r == 0 for r in rates), "1": sum(r == 1 for r in rates),
                               "between": sum(0 < r < 1 for r in rates)},
            "mean_pass_rate": round(sum(rates) / max(1, len(rates)), 4),
            "policy_entropy": round(h0, 4), "pool_task_ids": [t.task["task_id"] for t in pool]}
    # Per kind: questions and work orders reach the frontier at different rates, and the bench
    # weighs them differently (three questions in four on L1).
    by_kind = {}
    for kind in sorted({t.task["kind"] for t in pool}):
        rk = [r for t, r in zip(pool, rates, strict=True) if t.task["kind"] == kind]
        by_kind[kind] = {"pool": len(rk), "between": sum(0 < r < 1 for r in rk),
                         "mean_pass_rate": round(sum(rk) / len(rk), 4)}
    info["by_kind"] = by_kind
    if greedy_info:
        info["greedy"] = greedy_info
    if len(front) < cfg.prompts_per_step:
        # Too few frontier tasks to fill a step: the solvable ones (rate > 0) first, then the
        # rest; said in the metrics, not hidden.
        order = sorted(range(len(pool)), key=lambda k: (-(0 < rates[k] < 1), -rates[k], k))
        front = [pool[k] for k in order[:max(cfg.prompts_per_step * 4, len(front))]]
        info["fallback"] = "fewer frontier tasks than prompts_per_step: padded by pass rate"
    log("frontier: " + str({k: v for k, v in info.items() if k != "pool_task_ids"}))
    return front, info


def weight_greedy_misses(front: list[RLTask], greedy_ok: dict[str, bool], extra: int
                         ) -> tuple[list[RLTask], dict[str, Any]]:
    """The frontier with each prompt whose greedy episode failed listed `extra` more times.

    GRPO learns from the frontier's sampled groups, but the bench decodes greedily: a prompt
    that sampling sometimes solves and greedy decoding does not is where a step can change the
    bench's answer, while one that greedy already solves can only be kept solved."""
    misses = [t for t in front if not greedy_ok.get(t.task["task_id"], True)]
    return front + misses * extra, {"misses": len(misses), "frontier": len(front),
                                    "extra_copies": extra}


# --- the run --------------------------------------------------------------------------------
def run_rl(cfg: RLRunConfig, log: Any = print) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from forge.gym.env import CachedModel
    from forge.synth.loop import load_model
    from forge.train.model import (
        codec_for,
        load_checkpoint,
        save_checkpoint,
        score_labelled_positions_only,
        use_bf16,
    )
    from forge.train.sft import mix_indices
    from verifiers import TrajectoryVerifier

    cfg = cfg.effective()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model, tok = load_checkpoint(cfg.model)
    codec = codec_for(cfg.model, tok)
    tasks = load_rl_tasks(cfg.data, cfg.levels)
    tasks = [tasks[i] for i in mix_indices([t.task["kind"] for t in tasks], cfg.qa_share,
                                           cfg.seed)]
    em = CachedModel(load_model("experiment"), maxsize=20000)
    verifier = TrajectoryVerifier(em)
    t0 = time.perf_counter()
    front, finfo = frontier(tasks, model, codec, em, verifier, cfg, log)
    finfo["wall_s"] = round(time.perf_counter() - t0, 1)
    target = cfg.entropy_target or cfg.entropy_target_ratio * finfo["policy_entropy"]
    finfo["entropy_target"] = round(target, 4)
    ds = Dataset.from_list([{"prompt": t.messages} for t in front])
    funcs, weights, tokpen = reward_functions(cfg)
    pool = set(finfo.pop("pool_task_ids"))
    reserve = [t for t in tasks if t.task["task_id"] not in pool]
    random.Random(cfg.seed + 1).shuffle(reserve)
    rf = RolloutFunc(front, cfg, codec, em, verifier, reserve)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    gcfg = GRPOConfig(
        # bf16 autocast covers the policy's forward and backward passes only; rollouts run
        # outside it (casting every weight per generated token would cost more than it saves).
        output_dir=str(out / "trainer"), use_cpu=not torch.cuda.is_available(),
        bf16=use_bf16(cfg.bf16, model),
        max_steps=cfg.steps, learning_rate=cfg.lr, lr_scheduler_type="constant",
        per_device_train_batch_size=cfg.prompts_per_step * cfg.num_generations,
        gradient_accumulation_steps=1, num_generations=cfg.num_generations,
        importance_sampling_level=cfg.importance_sampling_level, loss_type="grpo",
        epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high, beta=cfg.beta,
        scale_rewards=cfg.scale_rewards,
        use_adaptive_entropy=cfg.use_adaptive_entropy, entropy_target=target,
        top_entropy_quantile=cfg.top_entropy_quantile, reward_weights=weights,
        mask_truncated_completions=False, max_completion_length=cfg.max_context,
        logging_steps=1, save_strategy="no", report_to=[], seed=cfg.seed,
        dataloader_num_workers=0, shuffle_dataset=True)
    score_labelled_positions_only()   # the prompt's positions carry no label: not scored
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=gcfg, train_dataset=ds,
                          processing_class=tok, rollout_func=rf)
    t1 = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t1
    ck = save_checkpoint(trainer.model, tok, out / "checkpoint",
                         meta={"codec": codec.meta(), "stage": "rl",
                               "parent": str(cfg.model), "config": asdict(cfg)})
    hist = [h for h in trainer.state.log_history if "loss" in h or "reward" in h]
    metrics = {"config": asdict(cfg), "checkpoint": str(ck), "frontier": finfo,
               "steps": trainer.state.global_step, "train_s": round(train_s, 1),
               "bf16": gcfg.bf16,
               "steps_per_min": round(60 * trainer.state.global_step / max(train_s, 1e-9), 3),
               "lambda_tok": tokpen.history, "rollouts": rf.log,
               "prompts_received_per_call": rf.received, "history": hist}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=str) + "\n")
    plot_rl(hist, tokpen.history, out / "rl.png")
    log(f"RL: {metrics['steps']} steps in {train_s:.0f} s ({metrics['steps_per_min']} "
        f"steps/min); checkpoint {ck}")
    return metrics


def plot_rl(hist: list[dict[str, Any]], lam: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    steps = [h.get("step", i + 1) for i, h in enumerate(hist)]
    for key in sorted({k for h in hist for k in h if k.startswith("rewards/") and
                       k.endswith("/mean")}):
        axes[0].plot(steps, [h.get(key) for h in hist], label=key.split("/")[1])
    axes[0].plot(steps, [h.get("reward") for h in hist], "k--", label="total")
    axes[0].set_title("reward components")
    axes[0].legend(fontsize=7)
    axes[1].plot(steps, [h.get("entropy") for h in hist])
    axes[1].set_title("policy entropy (nats)")
    axes[2].plot(range(1, len(lam) + 1), lam)
    axes[2].set_title("lambda_tok (dual update)")
    for ax in axes:
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

"""`forge bench`: run agents in closed loop on the held-out task set and score them.

Every episode goes through the synthesis episode runner (`forge.synth.solve.EpisodeRun`) and the
four verifiers, exactly as a synthesized trajectory does; success means all four stages pass.
Per agent, k trials per task (environment seeds 0..k-1: the measurement noise differs, and so
does the agent's sampling seed). Episodes land in DuckDB (`bench_runs`, `bench_episodes`) as
they finish: a killed run started again continues with what is missing, and the report is
computed from the stored episodes only, so the same agent and seed give the same report.

Failures of the agent (an unparseable turn, a loop, the step budget) are recorded results.
Failures of its endpoint (a server that stops answering) are kept apart: such episodes are
counted in `termination` and excluded from the success denominators; an endpoint that does not
answer at all stops the run with a clear error before any episode.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import multiprocessing as mp
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from forge import db as fdb
from forge.bench import metrics as M
from forge.bench.agents import (
    Agent,
    AgentError,
    AgentSpec,
    TeacherAgent,
    make_scripted,
    parse_spec,
)
from forge.bench.tasks import BenchError, BenchTask, TaskSet, load_task_set, stratified_sample
from forge.gym import handlers as H
from forge.gym.env import CachedModel
from forge.gym.trajectory import parse_levels
from forge.scenario import Scenario
from forge.synth.solve import (
    EpisodeRun,
    SolveConfig,
    drive_async,
    drive_sync,
    to_row,
)
from forge.synth.store import hid
from forge.teacher.base import GenParams, TeacherError, TeacherUnreachable
from verifiers import STAGES, TrajectoryVerifier

DEFAULT_AGENTS = ("noop", "random", "threshold-rule", "mape-k", "greedy-what-if", "teacher")


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class BenchConfig:
    """Parameters of `python -m forge bench` and the `forge/bench` deployment."""

    agents: list[str] = field(default_factory=lambda: list(DEFAULT_AGENTS), metadata={
        "help": "Agent specs: noop, random, threshold-rule, mape-k, greedy-what-if, teacher, "
                "openai:MODEL@URL, hf:PATH."})
    tasks: str | None = _f(None, "Task set: a version under corpora/bench (default v2) or a "
                           "directory.")
    k: int = _f(4, "Trials per task (environment seeds 0..k-1); pass^k uses all of them.")
    seed: int = _f(0, "Run seed: the agents' sampling seeds and the sample of --sample.")
    sample: int | None = _f(None, "Evaluate a stratified sample of this many tasks (slow "
                            "agents); default: all.")
    levels: str | None = _f(None, "Only tasks of these difficulties, comma-separated (e.g. L1 "
                            "or L1,L2); default: all. Applied before --sample.")
    name: str = _f("default", "Report name: the report goes to build/bench/<name>/.")
    out: str | None = _f(None, "Report directory (default build/bench/<name>).")
    db: str | None = _f(None, "DuckDB store (default $FORGE_DB or ./forge.duckdb).")
    workers: int = _f(0, "Worker processes for the built-in agents (0 = one per core).")
    max_steps: int = _f(24, "Tool calls allowed per episode (as in synthesis).")
    max_tokens: int = _f(384, "max_tokens of each model turn (openai/hf agents).")
    temperature: float = _f(0.0, "Sampling temperature of model agents (0 = greedy).")
    goal_json: bool = _f(True, "Show action tasks' success criterion (goal JSON) in the "
                         "ticket, as in synthesis; --no-goal-json gives the plain ticket.")
    format: str = _f("text", "openai agents: text (<action> tags) or tools (native "
                     "tool calling).")
    concurrency: int = _f(4, "openai agents: requests in flight.")
    timeout_s: float = _f(120.0, "openai agents: per-request timeout in seconds.")
    max_context: int | None = _f(None, "hf agents: context limit in tokens (default: the "
                                 "model's).")
    batch: int = _f(8, "hf agents: episodes run side by side, their turns decoded as one "
                    "batch (faster on a CPU too; greedy results are the same).")
    threads: int = _f(0, "hf agents: torch CPU threads (0 = 1 for models under 20M "
                      "parameters, else torch's default).")
    ns3_check: int = _f(0, "Re-simulate the final state of this many episodes per agent in "
                        "real ns-3 and re-judge them there.")
    fresh: bool = _f(False, "Recompute episodes already stored for the same agent and "
                     "options.")
    compare_to: str | None = _f(None, "One of the --agent specs: also report every other "
                                "agent's paired difference to it on the same tasks (success "
                                "difference with a 95 % bootstrap interval over tasks).")
    train_data: str | None = _f(None, "A curated export (or its parquet dir) the agent was "
                                "trained on: stop if it overlaps the task set.")

    def run_id(self, spec: AgentSpec, ts: TaskSet, model_hash: str, agent_hash: str) -> str:
        keep = {"agent": spec.spec, "agent_hash": agent_hash, "tasks": ts.content_hash,
                "k": self.k, "seed": self.seed, "max_steps": self.max_steps,
                "max_tokens": self.max_tokens, "temperature": self.temperature,
                "goal_json": self.goal_json, "format": self.format, "model": model_hash,
                "max_context": self.max_context}
        return "bench-" + hid(keep, n=16)

    def solve_cfg(self) -> SolveConfig:
        return SolveConfig(max_steps=self.max_steps, max_attempts=1, temperature=self.temperature,
                           max_tokens=self.max_tokens)


# --- one episode -------------------------------------------------------------------------------
def user_text(task: BenchTask, goal_json: bool) -> str | None:
    """The ticket: None means the synthesis task prompt (with the goal JSON for action tasks)."""
    if goal_json or task.kind != "action":
        return None
    return task.instruction


def named_ues(goal: dict[str, Any]) -> set[int]:
    out: set[int] = set()

    def walk(g: Any) -> None:
        if isinstance(g, dict):
            t = g.get("target")
            if isinstance(t, str) and t.startswith("ue:") and t[3:].isdigit():
                out.add(int(t[3:]))
            for v in g.values():
                walk(v)
        elif isinstance(g, list):
            for v in g:
                walk(v)

    walk(goal)
    return out


def collateral(run: EpisodeRun, goal: dict[str, Any]) -> int:
    """UEs the task did not name that end worse off: their SLA broke, or their DL throughput
    fell by more than 10 % (and 0.05 Mbps), on the model's noiseless prediction."""
    env = run.env
    if not env.history:
        return 0
    v0 = env.model.view(env.initial_scenario)[1]
    v1 = env.truth()
    skip = named_ues(goal)
    n = 0
    for a, b in zip(v0.ues, v1.ues, strict=True):
        if a["ue"] in skip:
            continue
        if (a["sla_ok"] and not b["sla_ok"]) or \
                b["dl_throughput_mbps"] < 0.9 * a["dl_throughput_mbps"] - 0.05:
            n += 1
    return n


TERMINATION = {None: "answer", ("parse", "truncated"): "truncated",
               ("budget", "step_budget"): "step_budget", ("budget", "loop"): "loop"}


def episode_row(task: BenchTask, scn: Scenario, run: EpisodeRun, trial: int, agent_name: str,
                model: CachedModel, verifier: TrajectoryVerifier, error: tuple[str, str] | None,
                wall_s: float) -> dict[str, Any]:
    ep = run.ep
    n_conf = sum(1 for t in ep.tools if t in H.CONFIGURE or t == "rollback")
    base = {"task_id": task.task_id, "trial": trial, "kind": task.kind,
            "difficulty": task.difficulty, "family": task.family, "source": task.source,
            "n_calls": len(ep.tools), "n_configure": n_conf, "n_failed": ep.n_failed,
            "prompt_tokens": ep.usage[0], "completion_tokens": ep.usage[1],
            "wall_s": round(wall_s, 4), "messages": ep.messages,
            "final_scenario": json.loads(run.env.scenario.model_dump_json())
            if run.env.history else None}
    stages: dict[str, str | None] = dict.fromkeys(STAGES)
    if error is not None:
        return {**base, "success": False, "termination": error[0], "stages": stages,
                "reject_stage": None, "reject_reason": None, "collateral": 0,
                "error": error[1][:2000]}
    row = to_row(task.as_task(), scn, ep, trial, agent_name, model, verifier, 0, None)
    for v in row["verdicts"] or []:
        if v.get("stage") in stages:
            stages[v["stage"]] = v["status"]
    rej = ep.reject[:2] if ep.reject else None
    term = TERMINATION.get(rej, "parse_error" if rej and rej[0] == "parse" else "answer")
    return {**base, "success": row["status"] == "verified", "termination": term,
            "stages": stages, "reject_stage": row["reject_stage"],
            "reject_reason": row["reject_reason"], "collateral": collateral(run, task.goal),
            "error": None}


def params_of(cfg: BenchConfig, agent: str, task_id: str, trial: int) -> GenParams:
    return GenParams(temperature=cfg.temperature, max_tokens=cfg.max_tokens,
                     seed=int(hid(agent, task_id, trial, cfg.seed, n=8), 16))


def _new_run(task: BenchTask, scn: Scenario, trial: int, cfg: BenchConfig,
             model: CachedModel) -> EpisodeRun:
    return EpisodeRun(task.as_task(), scn, model, env_seed=trial, cfg=cfg.solve_cfg(),
                      user_text=user_text(task, cfg.goal_json))


def run_episode(agent: Agent, task: BenchTask, scn: Scenario, trial: int, cfg: BenchConfig,
                model: CachedModel, verifier: TrajectoryVerifier) -> dict[str, Any]:
    run = _new_run(task, scn, trial, cfg, model)
    params = params_of(cfg, agent.name, task.task_id, trial)
    t0 = time.perf_counter()
    error: tuple[str, str] | None = None
    try:
        drive_sync(run, agent.episode(params.seed or 0), params)
    except TeacherError as e:
        error = ("endpoint_error", f"{type(e).__name__}: {e}")
    except Exception as e:  # an agent's bug is its failure, not the bench's crash
        error = ("agent_error", f"{type(e).__name__}: {e}")
    return episode_row(task, scn, run, trial, agent.name, model, verifier, error,
                       time.perf_counter() - t0)


def run_episodes_together(agent: Any, jobs: list[tuple[BenchTask, Scenario, int]],
                          cfg: BenchConfig, model: CachedModel, verifier: TrajectoryVerifier
                          ) -> list[dict[str, Any]]:
    """`run_episode` for several episodes of an `hf:` agent side by side, their turns decoded
    as one batch (`forge.bench.hf.drive_together`). Greedy decoding gives the tokens of
    one-at-a-time runs. An exception fails the episodes still running; `wall_s` is each
    episode's share of the batch's wall time."""
    from forge.bench.hf import drive_together

    runs = [_new_run(t, scn, trial, cfg, model) for t, scn, trial in jobs]
    params = [params_of(cfg, agent.name, t.task_id, trial) for t, _, trial in jobs]
    eps = [agent.episode(p.seed or 0) for p in params]
    t0 = time.perf_counter()
    errors = {i: ("agent_error", msg) for i, msg in drive_together(runs, eps, params).items()}
    share = (time.perf_counter() - t0) / max(1, len(jobs))
    return [episode_row(t, scn, run, trial, agent.name, model, verifier, errors.get(i), share)
            for i, ((t, scn, trial), run) in enumerate(zip(jobs, runs, strict=True))]


# --- workers (built-in agents) -----------------------------------------------------------------
_W: dict[str, Any] = {}


def _init_worker(tasks_dir: str) -> None:
    from forge.synth.loop import load_model
    from forge.threads import one_thread_per_worker

    if mp.parent_process() is not None:
        one_thread_per_worker()
    ts = load_task_set(tasks_dir)
    model = CachedModel(load_model("experiment"), maxsize=20000)
    _W.update(ts=ts, model=model, verifier=TrajectoryVerifier(model),
              by_id={t.task_id: t for t in ts.tasks}, agents={})


def _agent(spec: str) -> Agent:
    a = _W["agents"].get(spec)
    if a is None:
        a = _W["agents"][spec] = (TeacherAgent(_W["model"], _W["ts"].scenarios.get)
                                  if spec == "teacher" else make_scripted(spec))
    return a


def _run_jobs(jobs: list[tuple[str, str, int, dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for spec, task_id, trial, cfgd in jobs:
        cfg = BenchConfig(**cfgd)
        t = _W["by_id"][task_id]
        out.append(run_episode(_agent(spec), t, _W["ts"].scenario(t.scenario_id), trial, cfg,
                               _W["model"], _W["verifier"]))
    return out


# --- the run --------------------------------------------------------------------------------
class Bench:
    def __init__(self, cfg: BenchConfig, con: duckdb.DuckDBPyConnection | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.con = con or fdb.connect(cfg.db)
        self.log = log or (lambda m: print(m, file=sys.stderr, flush=True))
        self.ts = load_task_set(cfg.tasks)
        pool = list(self.ts.tasks)
        try:
            want = parse_levels(cfg.levels)
        except ValueError as e:
            raise BenchError(f"--{e}") from None
        if want:
            pool = [t for t in pool if t.difficulty in want]
        # Episodes are stored per (run, task, trial), so a filtered or sampled run reuses the
        # episodes of a full one with the same options, and the other way round.
        self.tasks = stratified_sample(pool, cfg.sample, cfg.seed) if cfg.sample else pool
        if not self.tasks:
            raise BenchError(f"task set {self.ts.path} holds no task"
                             + (f" of levels {cfg.levels}" if cfg.levels else ""))
        self.specs = [parse_spec(a) for a in cfg.agents]
        if cfg.compare_to is not None and cfg.compare_to not in cfg.agents:
            raise BenchError(f"--compare-to {cfg.compare_to}: not one of the --agent specs "
                             f"({', '.join(cfg.agents)})")
        if cfg.train_data:
            check_overlap(self.ts, cfg.train_data)
        self._model: CachedModel | None = None
        self._executor: ProcessPoolExecutor | None = None
        # Wall time of the episodes run in this invocation (kept out of the agents' entries,
        # which are a function of the stored episodes only).
        self.timing: dict[str, dict[str, Any]] = {}

    @property
    def model(self) -> CachedModel:
        if self._model is None:
            from forge.synth.loop import load_model

            self._model = CachedModel(load_model("experiment"), maxsize=20000)
        return self._model

    def _pool(self) -> ProcessPoolExecutor | None:
        n = self.cfg.workers or (os.cpu_count() or 1)
        if n <= 1:
            return None
        if self._executor is None:
            ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
            self._executor = ProcessPoolExecutor(n, mp_context=ctx, initializer=_init_worker,
                                                 initargs=(str(self.ts.path),))
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None

    # -- per agent -----------------------------------------------------------------------------
    def agent_hash(self, spec: AgentSpec) -> str:
        if spec.kind == "hf" and spec.path and spec.path != "smollm2":
            p = Path(spec.path)
            h = hashlib.sha256()
            for f in sorted(p.glob("*")) if p.is_dir() else []:
                if f.is_file() and f.suffix in (".safetensors", ".json", ".bin"):
                    h.update(f.name.encode())
                    h.update(f.read_bytes())
            return h.hexdigest()[:16]
        return ""

    def run(self) -> dict[str, Any]:
        results: dict[str, str] = {}
        try:
            for spec in self.specs:
                results[spec.spec] = self.run_agent(spec)
        finally:
            self.close()
        return self.report(results)

    def run_agent(self, spec: AgentSpec) -> str:
        cfg = self.cfg
        ah = self.agent_hash(spec)
        rid = cfg.run_id(spec, self.ts, self.model.model_hash, ah)
        if cfg.fresh:
            with fdb.transaction(self.con):
                self.con.execute("DELETE FROM bench_episodes WHERE bench_run_id = ?", [rid])
                self.con.execute("DELETE FROM bench_runs WHERE bench_run_id = ?", [rid])
        done = {(r[0], r[1]) for r in self.con.execute(
            "SELECT task_id, trial FROM bench_episodes WHERE bench_run_id = ?", [rid]).fetchall()}
        jobs = [(t, k) for t in self.tasks for k in range(cfg.k) if (t.task_id, k) not in done]
        params = {**asdict(cfg), "agent": spec.spec, "agent_hash": ah}
        params.pop("agents", None)
        with fdb.transaction(self.con):
            self.con.execute(
                "INSERT INTO bench_runs (bench_run_id, agent, task_set, task_set_hash, k, seed, "
                "n_tasks, status, params) VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?) "
                "ON CONFLICT (bench_run_id) DO UPDATE SET status = 'running', "
                "n_tasks = excluded.n_tasks",
                [rid, spec.spec, self.ts.version, self.ts.content_hash, cfg.k, cfg.seed,
                 len(self.tasks), json.dumps(params, default=str)])
        self.log(f"{spec.spec}: {len(self.tasks)} tasks x {cfg.k} trials "
                 f"({len(done)} episodes already stored, {len(jobs)} to run)")
        status = "failed"
        t0 = time.perf_counter()
        try:
            if spec.kind == "builtin":
                self._run_builtin(spec, rid, jobs)
            elif spec.kind == "hf":
                self._run_hf(spec, rid, jobs)
            else:
                self._run_openai(spec, rid, jobs)
            status = "completed"
        except TeacherUnreachable:
            status = "endpoint_error"
            raise
        finally:
            with fdb.transaction(self.con):
                self.con.execute("UPDATE bench_runs SET status = ?, finished_at = "
                                 "current_timestamp WHERE bench_run_id = ?", [status, rid])
        el = time.perf_counter() - t0
        self.timing[spec.spec] = {"episodes_run": len(jobs), "elapsed_s": round(el, 2),
                                  "episodes_per_s": round(len(jobs) / el, 2) if jobs else None,
                                  "workers": (self.cfg.workers or os.cpu_count() or 1)
                                  if spec.kind == "builtin" else 1}
        self.log(f"{spec.spec}: done in {el:.1f} s")
        return rid

    def _store(self, rid: str, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        cols = ["bench_run_id", "task_id", "trial", "kind", "difficulty", "family", "source",
                "success", "termination", "stages", "reject_stage", "reject_reason", "n_calls",
                "n_configure", "n_failed", "collateral", "prompt_tokens", "completion_tokens",
                "wall_s", "final_scenario", "messages", "error"]
        vals = []
        for r in rows:
            vals.append([rid if c == "bench_run_id" else
                         json.dumps(r[c]) if c in ("stages", "messages", "final_scenario")
                         and r[c] is not None else r[c] for c in cols])
        with fdb.transaction(self.con):
            self.con.executemany(
                f"INSERT INTO bench_episodes ({', '.join(cols)}) VALUES "
                f"({', '.join('?' * len(cols))}) ON CONFLICT DO NOTHING", vals)

    def _progress(self) -> Any:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        return Progress("[bold]{task.description}", BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), console=Console(stderr=True))

    def _run_builtin(self, spec: AgentSpec, rid: str, jobs: list[tuple[BenchTask, int]]) -> None:
        cfgd = asdict(self.cfg)
        items = [(spec.spec, t.task_id, k, cfgd) for t, k in jobs]
        ex = self._pool()
        prog = self._progress()
        with prog:
            bar = prog.add_task(spec.spec, total=len(items))
            chunk = 16
            parts = [items[i:i + chunk] for i in range(0, len(items), chunk)]
            results: Iterable[list[dict[str, Any]]]
            if ex is None:
                if not _W:
                    _init_worker(str(self.ts.path))
                results = map(_run_jobs, parts)
            else:
                results = ex.map(_run_jobs, parts)
            buf: list[dict[str, Any]] = []
            for rows in results:
                buf += rows
                prog.advance(bar, len(rows))
                if len(buf) >= 64:
                    self._store(rid, buf)
                    buf = []
            self._store(rid, buf)

    def _run_hf(self, spec: AgentSpec, rid: str, jobs: list[tuple[BenchTask, int]]) -> None:
        from forge.bench.hf import HFAgent
        from forge.teacher.prompts import solve_system_prompt

        assert spec.path is not None
        agent = HFAgent(spec.path, max_context=self.cfg.max_context, threads=self.cfg.threads)
        agent.warm_prefix(solve_system_prompt())
        verifier = TrajectoryVerifier(self.model)
        prog = self._progress()
        with prog:
            bar = prog.add_task(spec.spec, total=len(jobs))
            step = max(1, self.cfg.batch)
            for b in range(0, len(jobs), step):
                part = [(t, self.ts.scenario(t.scenario_id), k) for t, k in jobs[b:b + step]]
                rows = run_episodes_together(agent, part, self.cfg, self.model, verifier)
                self._store(rid, rows)
                prog.advance(bar, len(rows))

    def _run_openai(self, spec: AgentSpec, rid: str, jobs: list[tuple[BenchTask, int]]) -> None:
        from forge.teacher.openai_client import OpenAITeacher

        cfg = self.cfg
        teacher = OpenAITeacher.from_env(self.con, base_url=spec.base_url, model=spec.model,
                                         concurrency=cfg.concurrency,
                                         native_tools=cfg.format == "tools",
                                         timeout_s=cfg.timeout_s)
        verifier = TrajectoryVerifier(self.model)

        async def go() -> None:
            await teacher.preflight()  # an unreachable endpoint stops here, before any episode
            sem = asyncio.Semaphore(max(1, cfg.concurrency))
            prog = self._progress()
            streak = {"n": 0}

            async def one(t: BenchTask, k: int) -> None:
                async with sem:
                    scn = self.ts.scenario(t.scenario_id)
                    run = EpisodeRun(t.as_task(), scn, self.model, env_seed=k,
                                     cfg=cfg.solve_cfg(), user_text=user_text(t, cfg.goal_json))
                    params = params_of(cfg, spec.spec, t.task_id, k)
                    t0 = time.perf_counter()
                    error: tuple[str, str] | None = None
                    try:
                        await drive_async(run, teacher.chat, params)
                    except TeacherError as e:
                        error = ("endpoint_error", f"{type(e).__name__}: {e}")
                    except Exception as e:  # e.g. an HTTP error the client did not absorb
                        error = ("endpoint_error", f"{type(e).__name__}: {e}")
                    row = episode_row(t, scn, run, k, spec.spec, self.model, verifier, error,
                                      time.perf_counter() - t0)
                    teacher.flush()
                    self._store(rid, [row])
                    streak["n"] = streak["n"] + 1 if error else 0
                    prog.advance(bar)
                    if streak["n"] >= 2 * max(1, cfg.concurrency) + 3:
                        raise TeacherUnreachable(
                            f"{spec.spec}: {streak['n']} episodes in a row ended with an endpoint "
                            f"error (last: {row['error']}); stopping")

            with prog:
                bar = prog.add_task(spec.spec, total=len(jobs))
                await asyncio.gather(*(one(t, k) for t, k in jobs))

        try:
            asyncio.run(go())
        finally:
            teacher.flush()

    # -- report --------------------------------------------------------------------------------
    def episodes(self, rid: str) -> list[dict[str, Any]]:
        ids = [t.task_id for t in self.tasks]
        cur = self.con.execute(
            "SELECT task_id, trial, kind, difficulty, family, source, success, termination, "
            "stages, n_calls, n_configure, n_failed, collateral, prompt_tokens, "
            "completion_tokens, wall_s FROM bench_episodes WHERE bench_run_id = ? AND "
            "trial < ? AND list_contains(?, task_id) ORDER BY task_id, trial",
            [rid, self.cfg.k, ids])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def report(self, runs: dict[str, str]) -> dict[str, Any]:
        ref = {t.task_id: t.ref_calls for t in self.tasks}
        agents = {name: summarise(self.episodes(rid), ref, self.cfg.k, self.cfg.seed)
                  for name, rid in runs.items()}
        for name, rid in runs.items():
            with fdb.transaction(self.con):
                self.con.execute("UPDATE bench_runs SET summary = ? WHERE bench_run_id = ?",
                                 [json.dumps(agents[name]), rid])
        rep: dict[str, Any] = {
            "task_set": {"version": self.ts.version, "path": str(self.ts.path),
                         "hash": self.ts.content_hash, "n_tasks": len(self.tasks),
                         "sampled": bool(self.cfg.sample), "levels": self.cfg.levels},
            "config": {k: v for k, v in asdict(self.cfg).items() if k not in ("db", "out")},
            "model_hash": self.model.model_hash, "bench_runs": runs, "agents": agents,
            "timing": self.timing}
        base = self.cfg.compare_to
        if base is not None and base in runs:
            ref_trials = _trials(self.episodes(runs[base]))
            rep["paired"] = {"base": base, "agents": {
                name: M.paired_difference(ref_trials, _trials(self.episodes(rid)),
                                          seed=self.cfg.seed)
                for name, rid in runs.items() if name != base}}
        if self.cfg.ns3_check:
            from forge.bench.ns3check import ns3_check

            rep["ns3_check"] = ns3_check(self, runs, self.cfg.ns3_check)
        return rep


def _trials(eps: list[dict[str, Any]]) -> dict[str, list[bool]]:
    by: dict[str, list[bool]] = defaultdict(list)
    for e in eps:
        if e["termination"] != "endpoint_error":
            by[e["task_id"]].append(bool(e["success"]))
    return by


def _rate_block(eps: list[dict[str, Any]], k: int, seed: int) -> dict[str, Any]:
    tr = _trials(eps)
    trials = list(tr.values())
    ci = M.bootstrap_ci(trials, seed=seed)
    return {"n_tasks": len(trials), "success_rate": _r(M.success_rate(trials)),
            "ci95": [_r(ci[0]), _r(ci[1])] if ci else None,
            "pass_k": _r(M.mean_pass_k(trials, k))}


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, nd)


def summarise(eps: list[dict[str, Any]], ref: dict[str, int | None], k: int, seed: int
              ) -> dict[str, Any]:
    """The agent's entry of report.json (see docs/bench.md for every field)."""
    own = [e for e in eps if e["termination"] != "endpoint_error"]
    top = _rate_block(eps, k, seed)
    n = max(1, len(own))
    stages = {}
    for st in STAGES:
        passed = sum(1 for e in own if (json.loads(e["stages"]) if isinstance(e["stages"], str)
                                        else e["stages"]).get(st) == "pass")
        stages[st] = _r(passed / n)
    by = {}
    for key in ("difficulty", "family", "kind", "source"):
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for e in eps:
            groups[e[key]].append(e)
        by[f"by_{key}"] = {g: _rate_block(v, k, seed) for g, v in sorted(groups.items())}
    wall = sum(e["wall_s"] for e in eps)
    return {
        **top, "k": k, "n_episodes": len(eps),
        "spl": _r(sum(M.spl(bool(e["success"]), e["n_calls"], ref.get(e["task_id"]))
                      for e in own) / n),
        **by,
        "stage_pass_rate": stages,
        "collateral": {"mean_ues": _r(sum(e["collateral"] for e in own) / n),
                       "episodes_with_any": _r(sum(1 for e in own if e["collateral"]) / n)},
        "calls": {"mean_tool_calls": _r(sum(e["n_calls"] for e in own) / n, 2),
                  "mean_configure_calls": _r(sum(e["n_configure"] for e in own) / n, 2),
                  "mean_failed_steps": _r(sum(e["n_failed"] for e in own) / n, 3)},
        "termination": dict(sorted(Counter(e["termination"] for e in eps).items())),
        "tokens": {"prompt": sum(int(e["prompt_tokens"]) for e in eps),
                   "completion": sum(int(e["completion_tokens"]) for e in eps),
                   "mean_completion_per_episode": _r(
                       sum(int(e["completion_tokens"]) for e in eps) / max(1, len(eps)), 1)},
        "wall_s": round(wall, 2),
        "episodes_per_s": _r(len(eps) / wall, 2) if wall > 0 else None,
    }


# --- reference solutions (task building) ---------------------------------------------------
def reference_solutions(cands: list[dict[str, Any]], scns: dict[str, Scenario], log: Any
                        ) -> dict[str, dict[str, Any]]:
    """For each candidate task: does noop pass it, and how many tool calls the offline teacher
    (mistake-free) and greedy-what-if need when they succeed (None: failed)."""
    from forge.synth.loop import load_model

    model = CachedModel(load_model("experiment"), maxsize=50_000)
    verifier = TrajectoryVerifier(model)
    from forge.teacher.offline import OfflineConfig, OfflineTeacher

    teacher = TeacherAgent(model, scns.get)
    teacher.teacher = OfflineTeacher(model, scns.get, OfflineConfig(
        mistake_rate=0.0, format_error_rate=0.0, proposal_mistake_rate=0.0))
    agents: dict[str, Agent] = {"noop": make_scripted("noop"), "teacher": teacher,
                                "greedy-what-if": make_scripted("greedy-what-if")}
    cfg = BenchConfig(k=1)
    out: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    for i, c in enumerate(cands):
        t = BenchTask(task_id=c["task_id"], instruction=c["instruction"], kind=c["kind"],
                      difficulty="L1", family=c["family"], pattern=c["pattern"],
                      source=c["source"], scenario_id=c["scenario_id"], goal=c["goal"])
        scn = scns[c["scenario_id"]]
        r: dict[str, Any] = {"calls": {}}
        for name, a in agents.items():
            row = run_episode(a, t, scn, 0, cfg, model, verifier)
            if name == "noop":
                r["noop"] = bool(row["success"])
                if r["noop"]:
                    break
            else:
                r["calls"][name] = row["n_calls"] if row["success"] else None
        out[c["task_id"]] = r
        if (i + 1) % 100 == 0:
            log(f"reference solutions: {i + 1}/{len(cands)} ({time.perf_counter() - t0:.0f} s)")
    return out


def check_overlap(ts: TaskSet, train_data: str) -> None:
    """Stop when a training set shares networks or near-duplicate instructions with the task
    set (see forge.bench.decontam)."""
    from forge.bench.decontam import overlap_with_export

    hits = overlap_with_export(ts, Path(train_data))
    if hits["scenarios"] or hits["instructions"]:
        raise BenchError(
            f"the training data {train_data} overlaps the bench task set {ts.version}: "
            f"{hits['scenarios']} shared network(s), {hits['instructions']} near-duplicate "
            f"instruction(s) (e.g. {hits['examples'][:1]}); decontaminate it with forge.curate")


__all__ = ["DEFAULT_AGENTS", "AgentError", "Bench", "BenchConfig", "run_episode", "summarise"]

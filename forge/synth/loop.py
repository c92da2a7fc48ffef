"""The Self-Instruct loop: rounds of propose -> validate -> dedup -> solve -> verify -> store.

Steps (distilabel-style: each says what it reads and writes):

| step      | reads                                  | writes                          |
|-----------|----------------------------------------|---------------------------------|
| prepare   | corpora/seed_tasks, scenario pool      | scenarios, tasks (round 0)      |
| propose   | tasks (seeds + verified generated)     | tasks, task_rejects             |
| solve     | tasks without a trajectory             | trajectories (+ llm_calls)      |

Resume: a run's id is a hash of the parameters that shape its output (seed, teacher, model,
tasks per round...). Round r is proposed only if the store has no task or reject of (run, r);
solving takes the tasks without any trajectory. Every row id is deterministic and inserts skip
existing ids, so a killed run started again continues where it stopped, without duplicates.
Seeds (round 0) are solved first, so the pool of verified examples starts from them.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import os
import random
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import duckdb

from forge import db as fdb
from forge.bench.decontam import drop_bench_overlap
from forge.gym.env import CachedModel, Predictor
from forge.scenario import Scenario
from forge.synth import store
from forge.synth.dedup import RougeIndex
from forge.synth.scenarios import DEFAULT_SAMPLED, full_pool, scenario_pool
from forge.synth.seeds import load_seeds
from forge.synth.solve import SolveConfig, needs_retry, solve_async, solve_sync, to_row
from forge.synth.validate import validate_proposals
from forge.teacher.base import BudgetExhausted, GenParams, TeacherError
from forge.teacher.faults import CALL_CONTEXT, EndpointFault
from forge.teacher.prompts import proposal_prompt
from verifiers import TrajectoryVerifier


@dataclass
class GenerateConfig:
    """Parameters of `python -m forge generate` and the `forge/generate` deployment."""

    rounds: int = field(default=2, metadata={"help": "Self-Instruct rounds to run."})
    tasks_per_round: int = field(default=64, metadata={
        "help": "Tasks to request from the teacher per round (before validation and dedup)."})
    teacher: str = field(default="offline", metadata={
        "help": "offline (embedded planner) or openai (any OpenAI-compatible endpoint)."})
    concurrency: int = field(default=8, metadata={
        "help": "openai: concurrent requests; offline: ignored (see workers)."})
    workers: int = field(default=0, metadata={
        "help": "Worker processes (0 = one per core, 1 = in-process): offline: solve and "
                "verify; openai: verify (requests stay on one event loop)."})
    db: str | None = field(default=None, metadata={
        "help": "DuckDB store (default $FORGE_DB or ./forge.duckdb)."})
    seed: int = field(default=0, metadata={"help": "Run seed: sampling of examples, prompts."})
    model: str = field(default="auto", metadata={
        "help": "Experiment Model: auto (trained model if shipped, else closed-form physics), "
                "experiment, or closed-form."})
    base_url: str | None = field(default=None, metadata={
        "help": "openai: endpoint base URL (or $FORGE_OPENAI_BASE_URL / $OPENAI_BASE_URL)."})
    llm_model: str | None = field(default=None, metadata={
        "help": "openai: model name (or $FORGE_OPENAI_MODEL)."})
    max_tokens_total: int | None = field(default=None, metadata={
        "help": "openai: stop cleanly once this many tokens (prompt + completion) were used."})
    native_tools: bool = field(default=False, metadata={
        "help": "openai: also pass the catalogue as native tools (endpoint must support it)."})
    request_timeout: float = field(default=120.0, metadata={
        "help": "openai: seconds to wait for one response. A timed-out request is retried "
                "once, after as long again and at halved concurrency (the server may still be "
                "generating it); raise this for slow servers (CPU, big models)."})
    max_retries: int = field(default=6, metadata={
        "help": "openai: retries of a call after 429 / 5xx / connection faults / bad bodies "
                "before it is recorded as an endpoint fault (llm_faults)."})
    max_tokens: int = field(default=1024, metadata={
        "help": "max_tokens of each solving turn (a longer turn is a `truncated` reject)."})
    proposal_max_tokens: int = field(default=4096, metadata={
        "help": "max_tokens of each proposal call (tasks_per_prompt tasks of JSON)."})
    progress_s: float = field(default=30.0, metadata={
        "help": "openai: print a progress line this often while requests are in flight "
                "(0 = never)."})
    examples_per_prompt: int = field(default=8, metadata={
        "help": "In-context examples per proposal prompt (Self-Instruct: 8)."})
    machine_examples: int = field(default=2, metadata={
        "help": "Of those, machine-generated verified tasks when available (Self-Instruct: 2)."})
    tasks_per_prompt: int = field(default=8, metadata={
        "help": "New tasks asked for in one proposal prompt."})
    action_share: float = field(default=0.5, metadata={
        "help": "Share of action tasks asked for in each proposal prompt (the rest qa); "
                "without it the mix drifts towards the kind the teacher finds easiest. "
                "Curation balances the final dataset again."})
    scenarios_per_prompt: int = field(default=6, metadata={
        "help": "Scenarios offered to the teacher in one proposal prompt."})
    rouge_threshold: float = field(default=0.7, metadata={
        "help": "Drop a proposal whose ROUGE-L F1 against any pool instruction is >= this."})
    max_steps: int = field(default=24, metadata={"help": "Tool calls allowed per episode."})
    max_attempts: int = field(default=2, metadata={
        "help": "Attempts per task when one is rejected before verification."})
    mistake_rate: float = field(default=0.03, metadata={
        "help": "offline: per tool call, probability of a wrong call first (then recovered)."})
    l1_even_share: float = field(default=0.0, metadata={
        "help": "offline: share of L1 question proposals whose pattern is drawn evenly from "
                "all L1 question patterns; the rest favour the patterns that teach rarely "
                "used tools. 1.0 gives an even L1 mix, like the bench's."})
    batch_size: int = field(default=64, metadata={
        "help": "Tasks solved per stored batch (one transaction each)."})
    n_sampled_scenarios: int = field(default=DEFAULT_SAMPLED, metadata={
        "help": "Sampled scenarios added to the shipped corpus as the scenario pool."})
    target_verified: int | None = field(default=None, metadata={
        "help": "Stop after the round in which the store reaches this many verified "
                "trajectories (rounds is then an upper bound)."})
    solve_seeds: bool = field(default=True, metadata={
        "help": "Solve the seed tasks first (their verified trajectories join the pool)."})

    def run_params(self) -> dict[str, Any]:
        """What is recorded for the run: never secrets (there are none in this config - the
        API key is read from the environment by the client only)."""
        return asdict(self)

    def run_id(self) -> str:
        # Only what shapes the output: rounds can grow, concurrency/workers/db/batch may change.
        keep = {k: v for k, v in asdict(self).items()
                if k not in ("rounds", "concurrency", "workers", "db", "batch_size",
                             "max_tokens_total", "target_verified", "request_timeout",
                             "max_retries", "progress_s")}
        # Token caps and the L1 mix shape the output, but at their defaults they stay out of
        # the hash, so runs started before these flags existed keep their id (and resume).
        defaults = {f.name: f.default for f in fields(self)}
        for k in ("max_tokens", "proposal_max_tokens", "l1_even_share"):
            if keep[k] == defaults[k]:
                del keep[k]
        return "gen-" + store.hid(keep, n=16)


@dataclass
class GenerateReport:
    gen_run_id: str
    status: str
    stats: dict[str, Any]

    def summary(self) -> str:
        s = self.stats
        out = (f"{self.gen_run_id}: {self.status}; tasks +{s.get('tasks_added', 0)}, "
               f"trajectories +{s.get('trajectories_added', 0)} "
               f"({s.get('verified_added', 0)} verified) in {s.get('elapsed_s', 0):.1f} s")
        faults = (s.get("llm") or {}).get("faults")
        if faults:
            out += (f"; endpoint faults {sum(faults.values())} "
                    f"({', '.join(f'{k} {v}' for k, v in sorted(faults.items()))}), "
                    f"{s['llm'].get('given_up', 0)} calls given up")
        if self.status == "empty":
            out += ("\nnothing was produced: no task accepted and no trajectory verified for "
                    "this run (reasons: tables task_rejects, trajectories.reject_reason and "
                    "llm_faults; `--json` prints them)")
        return out


# --- model and teacher -------------------------------------------------------------------------
def load_model(kind: str = "auto") -> Predictor:
    from forge.gym.closed_form import ClosedFormModel

    if kind == "closed-form":
        return ClosedFormModel()
    from forge.experiment_model import ExperimentModel

    try:
        return ExperimentModel.load()
    except fdb.ForgeError:
        if kind == "experiment":
            raise
        print("note: no trained Experiment Model found; using the closed-form physics model "
              "(recorded as model_hash closed-form-physics-v1)", file=sys.stderr)
        return ClosedFormModel()


# Per-process state of the offline solver workers (forked or in-process).
_W: dict[str, Any] = {}


def worker_args(cfg: GenerateConfig) -> tuple[str, int, dict[str, Any], dict[str, Any]]:
    """What a solver worker is made from: model kind, scenario pool size, offline teacher and
    episode settings."""
    return (cfg.model, cfg.n_sampled_scenarios,
            {"mistake_rate": cfg.mistake_rate, "max_steps": cfg.max_steps,
             "l1_even_share": cfg.l1_even_share},
            {"max_steps": cfg.max_steps, "max_attempts": cfg.max_attempts,
             "max_tokens": cfg.max_tokens})


def ensure_in_process(cfg: GenerateConfig) -> None:
    """The in-process worker state for this configuration, re-made when another run in this
    process (another model, other teacher settings) left its own."""
    args = worker_args(cfg)
    if _W.get("init") != args:
        _worker_init(*args)


def _worker_init(model_kind: str, n_sampled: int, offline_kw: dict[str, Any],
                 solve_kw: dict[str, Any]) -> None:
    from forge.teacher.offline import OfflineConfig, OfflineTeacher
    from forge.threads import one_thread_per_worker

    if mp.parent_process() is not None:
        one_thread_per_worker()
    model = CachedModel(load_model(model_kind), maxsize=20000)
    pool = full_pool(n_sampled)
    _W.update(init=(model_kind, n_sampled, offline_kw, solve_kw), model=model, pool=pool,
              verifier=TrajectoryVerifier(model),
              teacher=OfflineTeacher(model, pool.get, OfflineConfig(**offline_kw)),
              cfg=SolveConfig(**solve_kw))


def _solve_offline(batch: list[tuple[dict[str, Any], str, int, str | None]]
                   ) -> list[dict[str, Any]]:
    """Solve tasks with the embedded teacher (runs in a worker process)."""
    out = []
    t: Any = _W["teacher"]
    for task, scn_json, rnd, gen_run_id in batch:
        scn = _W["pool"].get(task["scenario_id"]) or Scenario.model_validate_json(scn_json)
        for attempt in range(_W["cfg"].max_attempts):
            ep = solve_sync(task, scn, t.complete, _W["model"], _W["cfg"], attempt)
            row = to_row(task, scn, ep, attempt, t.name, _W["model"], _W["verifier"], rnd,
                         gen_run_id)
            out.append(row)
            if not needs_retry(row):
                break
    return out


def _verify_row(args: tuple[Any, ...]) -> dict[str, Any]:
    """Verify one episode and build its row (runs in a worker process)."""
    task, scn_json, ep, attempt, teacher, rnd, gen_run_id = args
    scn = _W["pool"].get(task["scenario_id"]) or Scenario.model_validate_json(scn_json)
    return to_row(task, scn, ep, attempt, teacher, _W["model"], _W["verifier"], rnd,
                  gen_run_id)


def _complete_many(reqs: list[tuple[list[dict[str, Any]], GenParams]]) -> list[Any]:
    """Offline-teacher chat calls in a worker process (proposal prompts)."""
    return [_W["teacher"].complete(*r) for r in reqs]


def run_in_lanes(lanes: list[ProcessPoolExecutor], fn: Callable[[list[Any]], Any],
                 items: list[Any], prefer: list[int], chunk: int
                 ) -> Iterator[tuple[list[int], int, Any]]:
    """fn(chunk of items) on single-process executors ("lanes"): each item in its preferred
    lane while that lane has work, an idle lane taking chunks from the tail of the busiest
    other one. Two chunks stay in flight per lane, so a worker never waits for the caller.
    Yields (item indices, lane, result) as chunks finish."""
    n = len(lanes)
    queues: list[deque[int]] = [deque() for _ in range(n)]
    for i, p in enumerate(prefer):
        queues[p % n].append(i)
    in_flight: dict[Future[Any], tuple[int, list[int]]] = {}

    def submit(lane: int) -> None:
        own = queues[lane]
        if own:
            idxs = [own.popleft() for _ in range(min(chunk, len(own)))]
        else:
            other = max(queues, key=len)
            if not other:
                return
            idxs = [other.pop() for _ in range(min(chunk, len(other)))][::-1]
        in_flight[lanes[lane].submit(fn, [items[i] for i in idxs])] = (lane, idxs)

    for lane in range(n):
        submit(lane)
        submit(lane)
    while in_flight:
        done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
        for fut in done:
            lane, idxs = in_flight.pop(fut)
            res = fut.result()
            submit(lane)
            yield idxs, lane, res


# --- the loop ----------------------------------------------------------------------------------
class Generator:
    def __init__(self, cfg: GenerateConfig, con: duckdb.DuckDBPyConnection | None = None,
                 log: Any = None) -> None:
        self.cfg = cfg
        self.con = con or fdb.connect(cfg.db)
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.gen_run_id = cfg.run_id()
        self.pool_full = scenario_pool(cfg.n_sampled_scenarios)
        self.pool = full_pool(cfg.n_sampled_scenarios)
        self.stats: Counter[str] = Counter()
        self._index = RougeIndex(cfg.rouge_threshold)
        self._known: set[str] = set()
        self.reasons: Counter[str] = Counter()
        self._executor: ProcessPoolExecutor | None = None
        self._lanes: list[ProcessPoolExecutor] | None = None
        # Offline teacher: the lane (worker process) whose proposal made each task of this run;
        # the task is solved there, where the proposer already predicted its candidate states.
        self._lane_of: dict[str, int] = {}
        self.prompt_lanes: list[int] = []
        self._teacher: Any = None
        self._model: CachedModel | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        _, _, self.offline_kw, self.solve_kw = worker_args(cfg)

    # -- resources -------------------------------------------------------------------------------
    @property
    def model(self) -> CachedModel:
        if self._model is None and self.cfg.teacher == "offline":
            # The in-process worker's: one prediction cache for proposals and episodes.
            self.in_process()
            self._model = _W["model"]
        if self._model is None:
            self._model = CachedModel(load_model(self.cfg.model), maxsize=20000)
        return self._model

    @property
    def teacher(self) -> Any:
        if self._teacher is None:
            if self.cfg.teacher == "offline":
                from forge.teacher.offline import OfflineConfig, OfflineTeacher

                self._teacher = OfflineTeacher(self.model, self.pool.get,
                                               OfflineConfig(**self.offline_kw))
            elif self.cfg.teacher == "openai":
                from forge.teacher.openai_client import OpenAITeacher

                self._teacher = OpenAITeacher.from_env(
                    self.con, base_url=self.cfg.base_url, model=self.cfg.llm_model,
                    concurrency=self.cfg.concurrency,
                    max_tokens_total=self.cfg.max_tokens_total,
                    native_tools=self.cfg.native_tools, timeout_s=self.cfg.request_timeout,
                    max_retries=self.cfg.max_retries, log=self.log)
                self._teacher.gen_run_id = self.gen_run_id
            else:
                raise TeacherError(f"unknown teacher {self.cfg.teacher!r} (offline | openai)")
        return self._teacher

    def _workers(self) -> int:
        return self.cfg.workers or (os.cpu_count() or 1)

    def lanes(self) -> list[ProcessPoolExecutor] | None:
        """Offline teacher: one single-process executor per worker (None: work in-process).

        Not one shared pool, so that work can be routed: a proposal scores the planner's
        candidate changes of its task's network with the model, and the solver then asks for
        many of the same states. Solved in the process that proposed it, a task finds them in
        that process's prediction cache (about a sixth of a run's CPU time on 2 cores)."""
        if self.cfg.teacher != "offline" or self._workers() <= 1:
            return None
        if self._lanes is None:
            ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
            self._lanes = [ProcessPoolExecutor(
                1, mp_context=ctx, initializer=_worker_init,
                initargs=(self.cfg.model, self.cfg.n_sampled_scenarios, self.offline_kw,
                          self.solve_kw)) for _ in range(self._workers())]
        return self._lanes

    def _verify_executor(self) -> ProcessPoolExecutor | None:
        """Worker processes that verify OpenAI-path episodes (None: verify in-process)."""
        return self._pool()

    def _pool(self) -> ProcessPoolExecutor | None:
        if self._workers() <= 1:
            return None
        if self._executor is None:
            # fork: workers inherit the imported modules (fast start); they never touch DuckDB.
            ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
            self._executor = ProcessPoolExecutor(
                self._workers(), mp_context=ctx, initializer=_worker_init,
                initargs=(self.cfg.model, self.cfg.n_sampled_scenarios, self.offline_kw,
                          self.solve_kw))
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None
        for ex in self._lanes or ():
            ex.shutdown(cancel_futures=True)
        self._lanes = None
        if self._teacher is not None and hasattr(self._teacher, "flush"):
            self._teacher.flush()
        if self._loop is not None:
            if self._teacher is not None and hasattr(self._teacher, "client"):
                self._loop.run_until_complete(self._teacher.client.close())
            self._loop.close()
            self._loop = None

    # -- steps -----------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Scenarios and seed tasks into the store (idempotent)."""
        seeds = load_seeds()
        with fdb.transaction(self.con):
            store.insert_scenarios(self.con, [(t.scenario(), "seed_task") for t in seeds])
            store.insert_scenarios(self.con, self.pool_full.values())
            added = store.insert_tasks(self.con, [{
                "task_id": store.task_id_of(t.instruction, t.scenario_id, t.goal_json()),
                "instruction": t.instruction, "kind": t.kind, "difficulty": t.difficulty,
                "scenario_id": t.scenario_id, "family": t.family, "goal": t.goal_json(),
                "source": "seed", "pattern": t.pattern, "parent_tasks": [], "round": 0,
                "teacher": None, "gen_run_id": None} for t in seeds])
        self.stats["seed_tasks_added"] += added

    def propose(self, rnd: int) -> int:
        """Ask the teacher for new tasks; validate, dedup and store them with the rejects."""
        if store.round_proposed(self.con, self.gen_run_id, rnd):
            return 0
        cfg = self.cfg
        rng = random.Random(store.hid(self.gen_run_id, "propose", rnd))
        seeds, gen = store.example_pool(self.con)
        # One index for the whole run, built once and then fed only what is new (rebuilding it
        # every round cost seconds per round at tens of thousands of instructions).
        index, known = self._index, self._known
        for tid, instr in store.all_instructions(self.con):
            if tid not in known:
                index.add(instr)
                known.add(tid)
        scn_ids = sorted(self.pool)
        n_prompts = max(1, math.ceil(cfg.tasks_per_round / cfg.tasks_per_prompt))
        prompts = []
        for k in range(n_prompts):
            n_machine = min(cfg.machine_examples, len(gen))
            ex = rng.sample(gen, n_machine) + rng.sample(
                seeds, min(len(seeds), cfg.examples_per_prompt - n_machine))
            rng.shuffle(ex)
            offered = rng.sample(scn_ids, min(cfg.scenarios_per_prompt, len(scn_ids)))
            prompts.append((k, ex, proposal_prompt(
                [{"instruction": e["instruction"], "kind": e["kind"],
                  "difficulty": e["difficulty"], "family": e["family"], "goal": e["goal"],
                  "pattern": e["pattern"] or None, "scenario_id": e["scenario_id"]} for e in ex],
                [self._describe(s) for s in offered], cfg.tasks_per_prompt,
                self._n_action(rng))))
        completions = self._run_async(self._chat_many(
            [(p, GenParams(temperature=1.0, max_tokens=cfg.proposal_max_tokens,
                           seed=int(store.hid(self.gen_run_id, rnd, k, n=8), 16)))
             for k, _, p in prompts], [f"round {rnd} prompt {k}" for k, _, _ in prompts]))
        tasks: list[dict[str, Any]] = []
        rejects: list[dict[str, Any]] = []
        for (k, ex, _), c in zip(prompts, completions, strict=True):
            if isinstance(c, EndpointFault):
                # The endpoint kept failing this prompt: a reject with its reason (the
                # exchanges themselves are llm_faults rows). A round whose every prompt failed
                # so is proposed again by the next run (store.round_proposed).
                reason = f"endpoint_{c.kind}"
                self.reasons[f"propose/{reason}"] += 1
                rejects.append({"reject_id": "rj-" + store.hid(self.gen_run_id, rnd, k, reason,
                                                               str(c)),
                                "gen_run_id": self.gen_run_id, "round": rnd,
                                "teacher": self.teacher.name, "reason": reason,
                                "message": str(c)[:1000], "raw_text": ""})
                continue
            v = validate_proposals(c.text, c.finish_reason, pool=self.pool, index=index,
                                   known_ids=known, rnd=rnd, teacher=self.teacher.name,
                                   gen_run_id=self.gen_run_id,
                                   parents=[e["task_id"] for e in ex], prompt_key=str(k))
            tasks += v.tasks
            rejects += v.rejects
            if self.cfg.teacher == "offline":
                for t in v.tasks:
                    self._lane_of[t["task_id"]] = self.prompt_lanes[k]
            for r, n in v.reasons.items():
                self.reasons[f"propose/{r}"] += n
        # Decontamination: the bench's networks and instructions stay out of the pool.
        tasks, held_out = drop_bench_overlap(tasks, self.gen_run_id, rnd, self.teacher.name)
        rejects += held_out
        self.reasons["propose/bench_overlap"] += len(held_out)
        with fdb.transaction(self.con):
            added = store.insert_tasks(self.con, tasks)
            store.insert_rejects(self.con, rejects)
        self.stats["tasks_added"] += added
        self.stats["proposals_rejected"] += len(rejects)
        return added

    def _n_action(self, rng: random.Random) -> int:
        """Action tasks to ask for in one prompt: action_share of tasks_per_prompt, the
        fraction rounded up or down at random so that the share holds on average."""
        x = self.cfg.action_share * self.cfg.tasks_per_prompt
        return int(x) + (rng.random() < x - int(x))

    def _describe(self, sid: str) -> dict[str, Any]:
        s = self.pool[sid]
        return {"scenario_id": sid, "family": s.family, "n_cells": len(s.cells),
                "n_ues": len(s.ues), "layout": s.layout}

    def solve(self, where: str, params: list[Any], rnd: int) -> int:
        """Solve tasks that have no trajectory yet, batch by batch (one transaction each)."""
        todo = store.unsolved_tasks(self.con, where, params)
        if self.cfg.teacher != "offline":
            # One pool of `concurrency` episodes over the whole round: no barrier per batch,
            # so the endpoint sees C requests in flight until the round's tail.
            self._run_async(self._solve_stream(todo, rnd))
            return len(todo)
        lanes = self.lanes()
        if lanes is None:
            # In-process state is per configuration: another run in this process (another
            # model, other teacher settings) must not lend this one its model or teacher.
            self.in_process()
            for i in range(0, len(todo), self.cfg.batch_size):
                self.write(_solve_offline([self._item(t, rnd)
                                           for t in todo[i:i + self.cfg.batch_size]]))
            return len(todo)
        # Every task of the round in flight at once, in the lane that proposed it (seeds and
        # tasks of an earlier process: round robin); rows are written every batch_size tasks,
        # while the workers go on.
        items = [self._item(t, rnd) for t in todo]
        prefer = [self._lane_of.pop(t["task_id"], i) for i, t in enumerate(todo)]
        chunk = max(1, min(8, self.cfg.batch_size // (2 * len(lanes))))
        rows: list[dict[str, Any]] = []
        n_tasks = 0
        for idxs, _, out in run_in_lanes(lanes, _solve_offline, items, prefer, chunk):
            rows += out
            n_tasks += len(idxs)
            if n_tasks >= self.cfg.batch_size:
                self.write(rows)
                rows, n_tasks = [], 0
        if rows:
            self.write(rows)
        return len(todo)

    def in_process(self) -> None:
        ensure_in_process(self.cfg)

    def _scenario_json(self, sid: str) -> str:
        row = self.con.execute("SELECT scenario FROM scenarios WHERE scenario_id = ?",
                               [sid]).fetchone()
        if row is None:
            raise fdb.ForgeError(f"task refers to unknown scenario {sid}")
        return str(row[0])

    def _item(self, t: dict[str, Any], rnd: int) -> tuple[dict[str, Any], str, int, str | None]:
        scn_json = (self.pool[t["scenario_id"]].model_dump_json() if t["scenario_id"] in self.pool
                    else self._scenario_json(t["scenario_id"]))
        return t, scn_json, t["round"] or rnd, self.gen_run_id if t["round"] else None

    async def _solve_stream(self, todo: list[dict[str, Any]], rnd: int) -> None:
        """`concurrency` workers pull tasks from a queue; finished rows are written every
        `batch_size` tasks (one transaction each) and on the way out, so a budget stop or a
        crash keeps what finished."""
        verifier = TrajectoryVerifier(self.model)
        cfg = SolveConfig(**self.solve_kw)
        queue: asyncio.Queue[tuple[dict[str, Any], str, int, str | None]] = asyncio.Queue()
        for t in todo:
            queue.put_nowait(self._item(t, rnd))
        done: list[dict[str, Any]] = []
        pending = 0
        loop = asyncio.get_running_loop()
        ex = self._verify_executor()

        self.solve_started_at = time.monotonic()
        self.queue_drained_at: float | None = None

        async def worker() -> None:
            nonlocal pending
            while True:
                if queue.empty():
                    # From here on fewer than `concurrency` episodes are in flight (the tail).
                    self.queue_drained_at = self.queue_drained_at or time.monotonic()
                    return
                task, scn_json, r, grid = queue.get_nowait()
                scn = Scenario.model_validate_json(scn_json)
                rows = []
                CALL_CONTEXT.set(("solve", task["task_id"]))
                for attempt in range(cfg.max_attempts):
                    try:
                        ep = await solve_async(task, scn, self.teacher.chat, self.model, cfg,
                                               attempt)
                    except EndpointFault as e:
                        # The endpoint kept failing a turn of this episode: the exchanges are
                        # llm_faults rows; the attempt stores no row, so a task with no row
                        # at all stays unsolved and the next run solves it.
                        self.stats["episodes_lost_to_endpoint"] += 1
                        self.reasons[f"solve/endpoint/{e.kind}"] += 1
                        break
                    if ex is not None:
                        # Verification replays the episode (CPU): off the event loop, so the
                        # requests in flight keep being served.
                        row = await loop.run_in_executor(
                            ex, _verify_row, (task, scn_json, ep, attempt, self.teacher.name,
                                              r, grid))
                    else:
                        row = to_row(task, scn, ep, attempt, self.teacher.name, self.model,
                                     verifier, r, grid)
                    rows.append(row)
                    if not needs_retry(row):
                        break
                done.extend(rows)
                pending += 1
                if pending >= self.cfg.batch_size:
                    self.write(done[:])
                    done.clear()
                    pending = 0

        workers = [asyncio.create_task(worker()) for _ in range(max(1, self.cfg.concurrency))]
        try:
            results = await asyncio.gather(*workers, return_exceptions=True)
        finally:
            if done:
                self.write(done[:])
                done.clear()
        for res in results:
            if isinstance(res, BaseException):
                raise res

    async def _chat_many(self, reqs: list[tuple[list[dict[str, Any]], GenParams]],
                         refs: list[str]) -> list[Any]:
        """Completions of `reqs`, in order; an EndpointFault in place of a call the endpoint
        kept failing (any other error propagates)."""
        if self.cfg.teacher == "offline":
            lanes = self.lanes()
            if lanes is None:
                self.in_process()
                self.prompt_lanes = [0] * len(reqs)
                return _complete_many(reqs)
            # Proposals are written in the workers too; each prompt's lane is kept, so that
            # its tasks are solved there (see `lanes`).
            out: list[Any] = [None] * len(reqs)
            self.prompt_lanes = [0] * len(reqs)
            for idxs, lane, res in run_in_lanes(lanes, _complete_many, reqs,
                                                list(range(len(reqs))), 1):
                for i, c in zip(idxs, res, strict=True):
                    out[i], self.prompt_lanes[i] = c, lane
            return out

        async def one(m: list[dict[str, Any]], p: GenParams, ref: str) -> Any:
            CALL_CONTEXT.set(("propose", ref))  # this coroutine's own context (a task)
            try:
                return await self.teacher.chat(m, p)
            except EndpointFault as e:
                return e

        return list(await asyncio.gather(*(one(m, p, ref)
                                           for (m, p), ref in zip(reqs, refs, strict=True))))

    def _run_async(self, coro: Any) -> Any:
        """Run a coroutine on the generator's one event loop: the HTTP client's connection
        pool is bound to the loop it was created in, so every round must reuse it."""
        if self.cfg.teacher == "openai" and self.cfg.progress_s > 0:
            coro = self._with_progress(coro)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
            return self._loop.run_until_complete(coro)
        # Called from inside a running loop (a notebook, an async flow): a private thread.
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            return ex.submit(asyncio.run, coro).result()

    async def _with_progress(self, coro: Any) -> Any:
        """Run `coro` with the teacher's progress line printed every progress_s seconds while
        requests are in flight (a slow endpoint otherwise looks like a hung run)."""
        hb = asyncio.create_task(self.teacher.heartbeat(self.cfg.progress_s))
        try:
            return await coro
        finally:
            hb.cancel()

    def write(self, rows: list[dict[str, Any]]) -> int:
        if self._teacher is not None and hasattr(self._teacher, "flush"):
            self._teacher.flush()  # the calls behind these rows are cached before they land
        with fdb.transaction(self.con):
            added = store.insert_trajectories(self.con, rows)
        self.stats["trajectories_added"] += added
        v = sum(1 for r in rows if r["status"] == "verified")
        self.stats["verified_added"] += v
        self.stats["error_recovery_verified"] += sum(
            1 for r in rows if r["status"] == "verified" and r["error_recovery"])
        for r in rows:
            if r["status"] == "rejected":
                self.reasons[f"solve/{r['reject_stage']}/{r['reject_reason']}"] += 1
        return added

    def reached_target(self) -> bool:
        """Whether the store holds `target_verified` verified trajectories (checked between
        rounds: a round is never cut, so a resumed run ends in the same state)."""
        t = self.cfg.target_verified
        if t and store.n_verified(self.con) >= t:
            self.log(f"the store holds {t}+ verified trajectories: stopping")
            return True
        return False

    def produced_anything(self) -> bool:
        """Whether the store holds anything this run's configuration made: a task it accepted
        or a trajectory its teacher got verified (seeds included). Counted in the store, not
        in this process, so a rerun of a finished run is not `empty`; a run whose every
        proposal and episode was rejected (or lost to the endpoint) is."""
        row = self.con.execute(
            "SELECT (SELECT count(*) FROM tasks WHERE gen_run_id = ?), (SELECT count(*) FROM "
            "trajectories x JOIN tasks t USING (task_id) WHERE x.status = 'verified' AND "
            "x.teacher = ? AND (t.gen_run_id = ? OR t.source = 'seed'))",
            [self.gen_run_id, self._teacher_name(), self.gen_run_id]).fetchone()
        accepted, verified = (int(row[0]), int(row[1])) if row else (0, 0)
        if self.cfg.rounds > 0 and accepted == 0:
            self.log(f"warning: no proposed task was accepted in {self.cfg.rounds} round(s); "
                     f"reasons: {self._top_reasons('propose/')}")
        if verified == 0:
            self.log(f"warning: no trajectory was verified; reasons: "
                     f"{self._top_reasons('solve/')}")
        return accepted + verified > 0

    def end_status(self) -> str:
        """`completed`, or `empty` when the run produced nothing (CLI and flow alike)."""
        return "completed" if self.produced_anything() else "empty"

    def _teacher_name(self) -> str:
        if self._teacher is not None:
            return str(self._teacher.name)
        if self.cfg.teacher == "offline":  # solved in worker processes: no teacher here
            from forge.teacher.offline import NAME

            return NAME
        return str(self.teacher.name)

    def _top_reasons(self, prefix: str) -> str:
        top = [(k.removeprefix(prefix), n) for k, n in self.reasons.most_common()
               if k.startswith(prefix)][:6]
        return ", ".join(f"{k} {n}" for k, n in top) or "none recorded by this process"

    # -- run ---------------------------------------------------------------------------------------
    def run(self) -> GenerateReport:
        t0 = time.perf_counter()
        store.start_run(self.con, self.gen_run_id, self.cfg.run_params())
        status = "failed"
        try:
            if self.cfg.teacher == "openai":
                self._run_async(self.teacher.preflight())
            self.prepare()
            if self.cfg.solve_seeds:
                self.stats["seed_tasks_solved"] += self.solve("t.source = 'seed'", [], 0)
            for rnd in range(1, self.cfg.rounds + 1):
                self.propose(rnd)
                self.stats[f"round_{rnd}_solved"] += self.solve(
                    "t.gen_run_id = ? AND t.round = ?", [self.gen_run_id, rnd], rnd)
                self.log(f"round {rnd}/{self.cfg.rounds}: {dict(self.stats)}")
                if self.reached_target():
                    break
            status = self.end_status()
        except BudgetExhausted as e:
            self.log(f"stopping cleanly: {e}")
            status = "budget_exhausted"
        finally:
            self.close()
            stats = {**dict(self.stats), "reject_reasons": dict(self.reasons),
                     "elapsed_s": round(time.perf_counter() - t0, 3)}
            if self._teacher is not None and hasattr(self._teacher, "usage"):
                stats["llm"] = self._teacher.usage()
            store.finish_run(self.con, self.gen_run_id, status, stats)
        return GenerateReport(self.gen_run_id, status, stats)


def run_generate(cfg: GenerateConfig, con: duckdb.DuckDBPyConnection | None = None
                 ) -> GenerateReport:
    g = Generator(cfg, con)
    return g.run()

"""The bench's task sets (`corpora/bench/<version>/`): held-out tasks on held-out networks.

Layout of a version directory:
    tasks.jsonl       one `BenchTask` per line (each with the canary string)
    scenarios.jsonl   {"scenario_id", "seed", "scenario", "canary"} per network
    ns3_*.parquet     the networks simulated in real ns-3 (initial state), for the ns-3 re-check
    manifest.json     version, build parameters, counts, content hash, model hash, canary
    README.md         what the set is and how it was built (with the canary)

Networks come from a seed range that synthesis and the ns-3 corpus never use
(`BENCH_SEED_BASE`). Tasks are of two sources: `grammar` (the offline teacher's task writer,
`forge.teacher.proposer.TaskWriter`) and `handwritten` (templates in
`corpora/bench/handwritten.jsonl`, phrased unlike the grammar; the goal and its threshold are
still computed by the writer from the network, so every task is checkable).

A candidate is not a task when its goal already holds before any action (action tasks: the goal
must be certainly unmet under the model's uncertainty band) or when `noop` passes it. A task's
difficulty is set by the shortest successful reference solution (offline teacher or greedy
what-if; `forge.gym.trajectory.difficulty_of`), which is also the path length SPL divides by.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from forge.db import ForgeError
from forge.scenario import Scenario

REPO = Path(__file__).resolve().parents[2]
BENCH_DIR = REPO / "corpora" / "bench"
DEFAULT_VERSION = "v2"
HANDWRITTEN = BENCH_DIR / "handwritten.jsonl"
# Far from every other seed range: the ns-3 grids use seed * 1e6 + k (+5e8 for the handover
# grid), synthesis samples from 7e6.
BENCH_SEED_BASE = 900_000_000
# A canary string in every bench file (BIG-bench practice): a training corpus that contains it
# has been contaminated with the bench. One string for every version (it names v1, where it was
# first written), so that one search finds any of them.
CANARY = "FORGE-BENCH-CANARY 3f1c9a52-6b0e-4d7e-9c1a-bench-v1 do not train on this"


def parse_goal(goal: dict[str, Any]) -> Any:
    from pydantic import TypeAdapter

    from forge.gym.goals import TaskGoal

    return TypeAdapter(TaskGoal).validate_python(goal)


class BenchError(ForgeError):
    """A task set that cannot be used (missing, malformed, overlapping training data)."""


class BenchTask(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task_id: str
    instruction: str
    kind: Literal["action", "qa"]
    difficulty: Literal["L1", "L2", "L3"]
    family: str
    pattern: str
    source: Literal["grammar", "handwritten"]
    scenario_id: str
    goal: dict[str, Any]
    ref_calls: int | None = Field(
        default=None, description="Tool calls of the shortest successful reference solution "
        "(SPL's shortest known path); None when no reference agent solved it.")
    ref_agent: str | None = None
    canary: str = CANARY

    def as_task(self) -> dict[str, Any]:
        """The dict the episode runner takes (the synthesis `tasks` row shape)."""
        return {"task_id": self.task_id, "instruction": self.instruction, "kind": self.kind,
                "goal": self.goal, "pattern": self.pattern, "source": f"bench:{self.source}"}


@dataclass
class TaskSet:
    version: str
    path: Path
    tasks: list[BenchTask]
    scenarios: dict[str, Scenario]
    seeds: dict[str, int]
    content_hash: str
    manifest: dict[str, Any]

    def scenario(self, sid: str) -> Scenario:
        return self.scenarios[sid]


def _hash_file(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()[:16]


def resolve_dir(tasks: str | Path | None) -> Path:
    if tasks is None:
        return BENCH_DIR / DEFAULT_VERSION
    p = Path(tasks)
    if p.is_dir():
        return p
    if (BENCH_DIR / str(tasks)).is_dir():
        return BENCH_DIR / str(tasks)
    raise BenchError(f"bench task set {tasks} not found (a directory like corpora/bench/v2, or "
                     f"a version name under {BENCH_DIR})")


def load_task_set(tasks: str | Path | None = None) -> TaskSet:
    d = resolve_dir(tasks)
    tf, sf = d / "tasks.jsonl", d / "scenarios.jsonl"
    for f in (tf, sf):
        if not f.is_file():
            raise BenchError(f"{d} is not a bench task set: {f.name} is missing "
                             "(build one with `python -m forge bench build --out DIR`)")
    out: list[BenchTask] = []
    for n, line in enumerate(tf.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(BenchTask.model_validate_json(line))
        except ValueError as e:
            raise BenchError(f"{tf}:{n}: not a bench task: {str(e)[:300]}") from e
    scns: dict[str, Scenario] = {}
    seeds: dict[str, int] = {}
    for line in sf.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            s = Scenario.model_validate(row["scenario"])
            scns[row["scenario_id"]] = s
            seeds[row["scenario_id"]] = int(row["seed"])
    missing = sorted({t.scenario_id for t in out} - set(scns))
    if missing:
        raise BenchError(f"{tf}: tasks refer to networks missing from {sf.name}: {missing[:3]}")
    mf = d / "manifest.json"
    manifest = json.loads(mf.read_text()) if mf.is_file() else {}
    return TaskSet(manifest.get("version", d.name), d, out, scns, seeds, _hash_file(tf),
                   manifest)


def stratified_sample(tasks: list[BenchTask], n: int, seed: int = 0) -> list[BenchTask]:
    """n tasks spread over (kind, difficulty, source) strata in proportion (at least one per
    stratum while n allows), deterministic for a seed."""
    if n >= len(tasks):
        return list(tasks)
    groups: dict[tuple[str, str, str], list[BenchTask]] = defaultdict(list)
    for t in tasks:
        groups[(t.kind, t.difficulty, t.source)].append(t)
    rng = random.Random(seed)
    for g in groups.values():
        rng.shuffle(g)
    quota = {k: max(1, round(n * len(v) / len(tasks))) for k, v in groups.items()}
    while sum(quota.values()) > n:
        k = max(quota, key=lambda k: (quota[k], k))
        quota[k] -= 1
    picked = [t for k, g in sorted(groups.items()) for t in g[:quota[k]]]
    order = {t.task_id: i for i, t in enumerate(tasks)}
    return sorted(picked, key=lambda t: order[t.task_id])


# --- building a task set ---------------------------------------------------------------------
@dataclass
class BuildConfig:
    out: Path = BENCH_DIR / DEFAULT_VERSION
    n_scenarios: int = 80
    n_grammar: int = 256
    seed: int = 0
    simulate: bool = True
    workers: int = 2
    handwritten: Path = HANDWRITTEN
    per_network: int = 14          # grammar candidates per network, half per kind
    max_per_network: int = 5       # grammar tasks kept per network


def bench_scenarios(n: int, seed: int = 0) -> list[tuple[int, Scenario]]:
    """(seed, scenario) of the bench networks: every 4th from the handover corner, like the
    synthesis pool, so every family appears."""
    from forge.ns3.grid import sample_scenario

    base = BENCH_SEED_BASE + seed * 100_000
    return [(base + k, sample_scenario(base + k, handover=k % 4 == 3)) for k in range(n)]


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def build_task_set(cfg: BuildConfig, log: Any = print) -> dict[str, Any]:
    """Build a task set (see the module docstring); returns the manifest."""
    from forge.bench.runner import reference_solutions
    from forge.gym.env import CachedModel
    from forge.gym.goals import evaluate
    from forge.synth.loop import load_model
    from forge.synth.store import hid
    from forge.teacher.proposer import ACTION_PATTERNS, PATTERNS, TaskWriter

    model = CachedModel(load_model("experiment"), maxsize=50_000)
    all_scn = bench_scenarios(cfg.n_scenarios, cfg.seed)
    scn_by_id = {s.scenario_id: s for _, s in all_scn}
    seed_of = {s.scenario_id: k for k, s in all_scn}
    model.warm([s for _, s in all_scn])
    writer = TaskWriter(model, scn_by_id.get, compose_rate=0.3, mistake_rate=0.0)
    rng = random.Random(f"bench-build:{cfg.seed}")

    def well_posed(goal: dict[str, Any], kind: str, scn: Scenario) -> bool:
        """Action goals must be certainly unmet now (else the task is solved before it starts
        or its verdict could flip within the model's uncertainty)."""
        if kind != "action":
            return True
        g = evaluate(parse_goal(goal), model.view(scn)[1])
        return g.certain and not g.holds

    cands: list[dict[str, Any]] = []
    # Grammar candidates: every pattern tried on every in-domain network, in a seeded order.
    for _, scn in all_scn:
        if not model.view(scn)[1].in_domain:
            continue
        pats = list(PATTERNS)
        rng.shuffle(pats)
        # Action patterns are few next to question patterns: each kind gets its own quota per
        # network, or the set would be mostly questions.
        n_net: Counter[str] = Counter()
        for pat in pats:
            kind = "action" if pat in ACTION_PATTERNS else "qa"
            if n_net[kind] >= cfg.per_network // 2:
                continue
            p = writer.instantiate(pat, scn, random.Random(rng.random()))
            if p is None or not well_posed(p.goal, p.kind, scn):
                continue
            n_net[kind] += 1
            cands.append({"instruction": p.instruction, "kind": p.kind, "family": p.family,
                          "pattern": p.pattern, "source": "grammar",
                          "scenario_id": scn.scenario_id, "goal": p.goal})
    log(f"grammar candidates: {len(cands)} on {len(all_scn)} networks")
    # Hand-written: each template is tried on the networks in a seeded order; up to 3 that fit
    # become candidates and the first that survives the checks below is kept.
    hand: list[dict[str, Any]] = []
    templates = [json.loads(x) for x in cfg.handwritten.read_text().splitlines()
                 if x.strip() and not x.startswith("//")]
    order = [s for _, s in all_scn if model.view(s)[1].in_domain]
    for t in templates:
        r = random.Random(f"hw:{cfg.seed}:{t['id']}")
        nets = order[:]
        r.shuffle(nets)
        for scn in nets:
            p = writer.instantiate(t["pattern"], scn, random.Random(r.random()), text=t["text"])
            if p is None or not well_posed(p.goal, p.kind, scn):
                continue
            hand.append({"instruction": p.instruction, "kind": p.kind, "family": p.family,
                         "pattern": p.pattern, "source": "handwritten", "template": t["id"],
                         "scenario_id": scn.scenario_id, "goal": p.goal})
            if sum(1 for h in hand if h["template"] == t["id"]) >= 3:
                break
        if not any(h["template"] == t["id"] for h in hand):
            log(f"handwritten template {t['id']} fits no bench network: skipped")
    for c in cands + hand:
        c["task_id"] = "bt-" + hid(c["instruction"], c["scenario_id"], c["goal"], n=16)
    # Reference solutions: noop must fail; the shortest success of teacher/greedy sets the
    # difficulty and SPL's path length.
    refs = reference_solutions(cands + hand, scn_by_id, log=log)
    kept: list[dict[str, Any]] = []
    dropped: Counter[str] = Counter()
    for c in cands + hand:
        ref = refs[c["task_id"]]
        if ref["noop"]:
            dropped["noop_passes"] += 1
            continue
        best = min(((n, a) for a, n in ref["calls"].items() if n is not None), default=None)
        # Every action task and every grammar question has a known solution; hand-written
        # questions stay without one (their phrasing is the point: the teacher's question
        # reader was written for the grammar's wording).
        if best is None and (c["source"] == "grammar" or c["kind"] == "action"):
            dropped["no_reference_solution"] += 1
            continue
        c["ref_calls"], c["ref_agent"] = (best if best else (None, None))
        c["difficulty"] = _difficulty(best[0]) if best else (
            "L1" if c["kind"] == "qa" else "L2")
        kept.append(c)
    grammar = _select([c for c in kept if c["source"] == "grammar"], cfg.n_grammar,
                      random.Random(f"select:{cfg.seed}"), cfg.max_per_network)
    first: dict[str, dict[str, Any]] = {}
    for c in kept:
        if c["source"] == "handwritten":
            first.setdefault(c["template"], c)
    chosen = grammar + list(first.values())
    tasks = [BenchTask(**{k: v for k, v in c.items() if k != "template"}) for c in chosen]
    return _write(cfg, tasks, {sid: scn_by_id[sid] for sid in {t.scenario_id for t in tasks}},
                  seed_of, model.model_hash, dropped, log)


def _difficulty(n: int) -> Literal["L1", "L2", "L3"]:
    from forge.gym.trajectory import difficulty_of

    return difficulty_of(n)


def _select(cands: list[dict[str, Any]], n: int, rng: random.Random, cap: int
            ) -> list[dict[str, Any]]:
    """n tasks, round-robin over (kind, difficulty, pattern) so that kinds, difficulties and
    patterns are as even as the candidates allow, at most `cap` tasks per network."""
    buckets: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for c in cands:
        buckets[(c["kind"], c["difficulty"], c["pattern"])].append(c)
    for b in buckets.values():
        rng.shuffle(b)
    keys = sorted(buckets)
    rng.shuffle(keys)
    # Kinds alternate; within a kind the difficulties alternate.
    by_kd: dict[tuple[str, str], list[tuple[str, str, str]]] = defaultdict(list)
    for k in keys:
        by_kd[k[:2]].append(k)
    out: list[dict[str, Any]] = []
    per_net: Counter[str] = Counter()
    cursor: dict[tuple[str, str], int] = defaultdict(int)
    progress = True
    while len(out) < n and progress:
        progress = False
        for kd in sorted(by_kd):
            ks = by_kd[kd]
            for _ in range(len(ks)):
                key = ks[cursor[kd] % len(ks)]
                cursor[kd] += 1
                b = buckets[key]
                while b and per_net[b[-1]["scenario_id"]] >= cap:
                    b.pop()
                if b:
                    c = b.pop()
                    out.append(c)
                    per_net[c["scenario_id"]] += 1
                    progress = True
                    break
            if len(out) >= n:
                break
    return out


def _write(cfg: BuildConfig, tasks: list[BenchTask], scns: dict[str, Scenario],
           seed_of: dict[str, int], model_hash: str, dropped: Counter[str], log: Any
           ) -> dict[str, Any]:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = sorted(tasks, key=lambda t: t.task_id)
    (out / "tasks.jsonl").write_text("".join(t.model_dump_json() + "\n" for t in tasks))
    (out / "scenarios.jsonl").write_text("".join(
        json.dumps({"scenario_id": sid, "seed": seed_of[sid],
                    "scenario": json.loads(scns[sid].model_dump_json()), "canary": CANARY},
                   sort_keys=True) + "\n" for sid in sorted(scns)))
    if cfg.simulate:
        simulate_networks(list(scns.values()), out, cfg.workers, log)
    counts = {"tasks": len(tasks), "networks": len(scns),
              "by_kind": dict(Counter(t.kind for t in tasks)),
              "by_difficulty": dict(Counter(t.difficulty for t in tasks)),
              "by_source": dict(Counter(t.source for t in tasks)),
              "by_kind_difficulty": dict(Counter(f"{t.kind}/{t.difficulty}" for t in tasks)),
              "by_pattern": dict(sorted(Counter(t.pattern for t in tasks).items())),
              "by_family": dict(sorted(Counter(t.family for t in tasks).items())),
              "dropped": dict(dropped)}
    manifest = {"version": out.name, "canary": CANARY, "model_hash": model_hash,
                "build": {"command": f"python -m forge bench build --out {cfg.out} "
                                     f"--n-scenarios {cfg.n_scenarios} --n-grammar "
                                     f"{cfg.n_grammar} --seed {cfg.seed}",
                          "seed_base": BENCH_SEED_BASE, "code_commit": _git_commit()},
                "tasks_sha256_16": _hash_file(out / "tasks.jsonl"), "counts": counts}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    (out / "README.md").write_text(_card(manifest))
    log(json.dumps(counts))
    return manifest


def simulate_networks(scns: list[Scenario], out: Path, workers: int, log: Any) -> None:
    """Run the bench networks in real ns-3 and ship their KPIs (ns3_*.parquet)."""
    from forge import db as fdb
    from forge.ns3.sweep import run_sweep

    # The runs are kept in build/ (keyed by content hash): a rebuild simulates only new networks.
    store = REPO / "build" / "bench_ns3.duckdb"
    con = fdb.connect(store)
    try:
        rep = run_sweep(scns, con, workers=workers, split="bench", timeout_s=900,
                        retry_failed=True, show_progress=True)
        log(f"ns-3: {rep.ok} ok, {rep.failed} failed, {rep.timeout} timeout "
            f"({rep.skipped} already simulated)")
        # Only this set's networks go into the shipped files.
        keep = [s.scenario_id for s in scns]
        export_runs(con, out, keep)
    finally:
        con.close()


def export_runs(con: Any, out: Path, scenario_ids: list[str]) -> None:
    """The ns-3 runs of these networks as ns3_runs / ns3_ue_kpis / ns3_cell_kpis Parquet."""
    ids = ", ".join(f"'{x}'" for x in sorted(set(scenario_ids)))
    runs = f"SELECT run_id FROM ns3_runs WHERE scenario_id IN ({ids})"
    for t, order in (("ns3_runs", "run_id"), ("ns3_ue_kpis", "run_id, ue"),
                     ("ns3_cell_kpis", "run_id, cell")):
        tmp = out / f".{t}.parquet.tmp"
        con.execute(f"COPY (SELECT * FROM {t} WHERE run_id IN ({runs}) ORDER BY {order}) TO "
                    f"'{tmp}' (FORMAT parquet, COMPRESSION zstd)")
        tmp.replace(out / f"{t}.parquet")


def _card(m: dict[str, Any]) -> str:
    c = m["counts"]
    return (f"# forge bench task set {m['version']}\n\n{m['canary']}\n\n"
            f"Held-out closed-loop tasks for network agents: {c['tasks']} tasks on "
            f"{c['networks']} networks never used by synthesis or the ns-3 corpus "
            f"(scenario seeds from {BENCH_SEED_BASE}). Kinds {c['by_kind']}, difficulty "
            f"{c['by_difficulty']}, sources {c['by_source']}.\n\n"
            f"Built with `{m['build']['command']}` (Experiment Model {m['model_hash']}). Do not "
            "train on these files; `forge.curate` and synthesis drop anything that is a "
            "near-duplicate of a task here. See docs/bench.md.\n")

"""`run(cfg)`: pool -> stages -> balance -> splits -> tables -> export, idempotently.

Identity: a set is keyed by hash(pool fingerprint, options). A rerun with the same pool and
options whose tables and export already carry that hash does nothing; otherwise each dedup stage
looks up its output in `curation_stage_cache` under hash(previous stage key, stage options)
and only recomputes on a miss, and embeddings are looked up per text in `curation_embeddings`.

Atomicity: the new set is written under a staging name and exported to a temporary directory;
then one transaction replaces the previous set's rows and the directory is swapped by rename.
An interruption at any earlier point leaves the previous set (tables and export) intact.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from forge import db as forge_db
from forge.curate.balance import BalanceResult, balance
from forge.curate.config import SPLITS, CurateConfig, CurateError, CurateOptionError, stable_hash
from forge.curate.embed import make_encoder
from forge.curate.export import dataset_card, write_export
from forge.curate.pool import Pool, fingerprint, load_pool
from forge.curate.splits import assign_splits, split_groups
from forge.curate.stages import (
    StageResult,
    bench_stage,
    exact_stage,
    near_instruction_stage,
    near_trajectory_stage,
    semantic_stage,
    verified_stage,
)
from forge.progress import Milestones

PIPELINE_VERSION = 2  # bump when a stage's semantics change: invalidates caches and set hashes


class PoolMissingError(CurateError):
    """The store has no synthesis pool (issue 4's tables) or it is empty."""


@dataclass
class CurateSummary:
    name: str
    set_hash: str
    up_to_date: bool
    n_members: int
    splits: dict[str, int]
    stages: list[dict[str, Any]]
    balance: list[dict[str, Any]]
    messages: list[str]
    export_dir: Path | None
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


class _Display:
    """Progress per stage (rich) or nothing (quiet)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        from rich.console import Console

        self.console = Console(stderr=True, quiet=quiet)

    def stage(self, name: str, n_in: int) -> None:
        self.console.print(f"[bold]{name}[/] on {n_in:,} rows ...")

    def done(self, row: dict[str, Any]) -> None:
        self.console.print(f"  {row['stage']}: {row['in']:,} -> {row['out']:,} "
                           f"(-{row['dropped']:,}) in {row['seconds']:.1f} s"
                           + (" [cached]" if row.get("cached") else ""))

    def bar(self, total: int, label: str) -> tuple[Callable[[int], None], Callable[[], None]]:
        if self.quiet or total == 0:
            return (lambda n: None), (lambda: None)
        if not self.console.is_terminal:
            # A live bar renders nothing into a log file, where the MiniLM embedding of a 60k
            # pool ran for 17 silent minutes: print a line every tenth instead.
            marks, state = Milestones(total), {"done": 0}

            def advance(n: int) -> None:
                state["done"] += n
                if marks.due(state["done"]):
                    self.console.print(f"  {label}: {state['done']:,} of {total:,} "
                                       f"({marks.elapsed():.0f} s)")
            return advance, (lambda: None)
        from rich.progress import Progress

        p = Progress(console=self.console, transient=True)
        p.start()
        t = p.add_task(label, total=total)
        return (lambda n: p.advance(t, n)), p.stop


def _check_pool(con: duckdb.DuckDBPyConnection, cfg: CurateConfig) -> tuple[int, int]:
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables")
              .fetchall()}
    if not {"trajectories", "tasks"} <= tables:
        raise PoolMissingError("the store has no synthesis pool (tables trajectories/tasks): "
                               "generate one first (`python -m forge generate`) or pass --db")
    row = con.execute("SELECT count(*), count(*) FILTER (WHERE status = 'verified' AND "
                      "trajectory IS NOT NULL) FROM trajectories").fetchone()
    assert row is not None
    n, nv = int(row[0]), int(row[1])
    if nv == 0:
        raise PoolMissingError(f"the pool has {n} trajectories and none verified: generate "
                               f"and verify trajectories first")
    if nv < cfg.target and not cfg.allow_short:
        raise CurateOptionError(f"--target {cfg.target} is larger than the pool's {nv} verified "
                                f"trajectories: lower --target (at most {nv}, fewer after "
                                f"dedup) or pass --allow-short")
    return n, nv


def precheck(cfg: CurateConfig) -> None:
    """Validate options against the pool read-only, before anything (migrations included) is
    written to the store."""
    path = forge_db.db_path(cfg.db)
    if str(path) == ":memory:":
        return
    if not path.exists():
        raise PoolMissingError(f"no store at {path}: generate a pool first or pass --db")
    con = duckdb.connect(str(path), read_only=True)
    try:
        _check_pool(con, cfg)
    finally:
        con.close()


def _bench_hash() -> str | None:
    """The shipped bench task sets' content hash: a new bench invalidates curated sets."""
    from forge.bench.decontam import default_guard

    g = default_guard()
    return g.content_hash if g is not None else None


# -- stage cache -----------------------------------------------------------------------------------
def _cache_load(con: duckdb.DuckDBPyConnection, key: str, pool: Pool, rows: np.ndarray,
                index: dict[str, int]) -> StageResult | None:
    got = con.execute("SELECT traj_id, reason, kept_traj_id, score, cluster FROM "
                      "curation_stage_cache WHERE stage_key = ?", [key]).fetchall()
    if len(got) != len(rows):
        return None
    pos = {int(r): k for k, r in enumerate(rows)}
    res = StageResult(rows=rows, reason=[""] * len(rows), kept=np.full(len(rows), -1, np.int64),
                      score=np.full(len(rows), np.nan), cluster=np.full(len(rows), -1, np.int64))
    for tid, reason, kept, score, cluster in got:
        i = index.get(tid)
        if i is None or i not in pos:
            return None
        k = pos[i]
        res.reason[k] = reason
        res.kept[k] = index[kept] if kept is not None else -1
        res.score[k] = np.nan if score is None else score
        res.cluster[k] = -1 if cluster is None else cluster
    res.info = {"cached": True}
    return res


def _cache_save(con: duckdb.DuckDBPyConnection, key: str, stage: str, pool: Pool,
                res: StageResult) -> None:
    tbl = pa.table({
        "stage_key": [key] * len(res.rows), "stage": [stage] * len(res.rows),
        "traj_id": [pool.traj_id[i] for i in res.rows], "reason": res.reason,
        "kept_traj_id": [pool.traj_id[k] if k >= 0 else None for k in res.kept],
        "score": pa.array([None if np.isnan(s) else float(s) for s in res.score], pa.float64()),
        "cluster": pa.array(res.cluster.tolist(), pa.int64())})
    with forge_db.transaction(con):
        con.execute("DELETE FROM curation_stage_cache WHERE stage_key = ?", [key])
        con.register("_stage_new", tbl)
        con.execute("INSERT INTO curation_stage_cache SELECT * FROM _stage_new")
        con.unregister("_stage_new")


# -- the run ---------------------------------------------------------------------------------------
def run(cfg: CurateConfig, con: duckdb.DuckDBPyConnection | None = None,
        argv: list[str] | None = None) -> CurateSummary:
    t_start = time.time()
    show = _Display(cfg.quiet)
    own = con is None
    if own:
        precheck(cfg)
        con = forge_db.connect(cfg.db)
    assert con is not None
    try:
        return _run(cfg, con, argv, show, t_start)
    finally:
        if own:
            con.close()


def _run(cfg: CurateConfig, con: duckdb.DuckDBPyConnection, argv: list[str] | None,
         show: _Display, t_start: float) -> CurateSummary:
    _check_pool(con, cfg)
    name = cfg.set_name
    out_dir = Path(cfg.out or Path("build") / "curated" / name)
    n_pool, pool_hash = fingerprint(con)
    options = cfg.options()
    set_hash = stable_hash(PIPELINE_VERSION, pool_hash, options)
    command = "python -m forge.curate " + shlex.join(argv if argv is not None else sys.argv[1:])

    prev = con.execute("SELECT set_hash, export_dir, stats FROM curated_sets WHERE name = ?",
                       [name]).fetchone()
    if prev and prev[0] == set_hash and not cfg.force:
        exp = Path(prev[1]) if prev[1] else None
        marker = exp / "curation.json" if exp else None
        if marker and marker.exists() and json.loads(marker.read_text()).get(
                "set_hash") == set_hash:
            done = json.loads(prev[2])
            show.console.print(f"{name} is up to date (set {set_hash[:12]}): nothing to do")
            return CurateSummary(name, set_hash, True, int(done["n_members"]), done["splits"],
                                 done["stages"], done["balance"], done["balance_messages"],
                                 exp, time.time() - t_start, done)

    t0 = time.time()
    show.stage("load", n_pool)
    pool = load_pool(con)
    index = {t: i for i, t in enumerate(pool.traj_id)}
    stage_rows: list[dict[str, Any]] = [{"stage": "load", "in": n_pool, "dropped": 0,
                                         "out": len(pool), "seconds": time.time() - t0}]
    show.done(stage_rows[-1])
    drop_stage: dict[int, tuple[str, StageResult, int]] = {}
    alive = np.arange(len(pool), dtype=np.int64)
    results: dict[str, StageResult] = {}
    key = stable_hash(PIPELINE_VERSION, pool_hash)

    def semantic(p: Pool, rows: np.ndarray, c: CurateConfig,
                 cn: duckdb.DuckDBPyConnection) -> StageResult:
        advance, stop = show.bar(len(rows), "embedding")
        try:
            return semantic_stage(p, rows, c, cn, advance)
        finally:
            stop()

    model_id = make_encoder(cfg.embed_backend, cfg.model, cfg.max_seq_length, con).model_id
    plan: list[tuple[str, Callable[..., StageResult], dict[str, Any], bool]] = [
        ("verified", lambda p, r, c, cn: verified_stage(p, r), {}, False),
        ("bench", lambda p, r, c, cn: bench_stage(p, r), {"tasks": _bench_hash()}, False),
        ("exact", lambda p, r, c, cn: exact_stage(p, r), {}, False),
        ("near_instruction", near_instruction_stage,
         {"t": cfg.near_instruction_threshold, "k": cfg.num_perm, "scope": cfg.dedup_scope}, True),
        ("near_trajectory", near_trajectory_stage,
         {"t": cfg.near_trajectory_threshold, "k": cfg.num_perm}, True),
        ("semantic", semantic,
         {"t": cfg.semantic_threshold, "scope": cfg.dedup_scope, "model": model_id,
          "static": cfg.embed_backend == "static", "cluster": cfg.semantic_cluster_size,
          "seed": cfg.seed}, True),
    ]
    for stage, fn, opts, cached in plan:
        key = stable_hash(key, stage, opts)
        t0 = time.time()
        show.stage(stage, len(alive))
        res = _cache_load(con, key, pool, alive, index) if cached else None
        hit = res is not None
        if res is None:
            res = fn(pool, alive, cfg, con)
            if cached:
                _cache_save(con, key, stage, pool, res)
        results[stage] = res
        keep = np.asarray([not r for r in res.reason], dtype=bool)
        for k in np.flatnonzero(~keep):
            drop_stage[int(res.rows[k])] = (stage, res, int(k))
        row = {"stage": stage, "in": len(alive), "dropped": int((~keep).sum()),
               "out": int(keep.sum()), "seconds": time.time() - t0, "cached": hit,
               **{f"info_{a}": b for a, b in res.info.items() if a != "cached"}}
        stage_rows.append(row)
        show.done(row)
        alive = alive[keep]

    # -- balance -----------------------------------------------------------------------------------
    t0 = time.time()
    show.stage("balance", len(alive))
    bal: BalanceResult = balance(pool, alive, cfg)
    stage_rows.append({"stage": "balance", "in": len(alive),
                       "dropped": len(alive) - len(bal.selected), "out": len(bal.selected),
                       "seconds": time.time() - t0, "cached": False})
    show.done(stage_rows[-1])
    for m in bal.messages:
        show.console.print(f"  [yellow]{m}[/]")

    # -- splits ------------------------------------------------------------------------------------
    t0 = time.time()
    full_traj_cluster = np.full(len(pool), -1, np.int64)
    r = results["near_trajectory"]
    full_traj_cluster[r.rows] = r.cluster
    clusters = [full_traj_cluster[alive]]
    if cfg.dedup_scope == "global":
        full_inst = np.full(len(pool), -1, np.int64)
        r = results["near_instruction"]
        full_inst[r.rows] = r.cluster
        clusters.append(full_inst[alive])
    groups = split_groups(pool.seed[alive], clusters)
    is_member = np.isin(alive, bal.selected)
    split_idx = assign_splits(groups, is_member, cfg.split_shares, cfg.seed)
    split_of = {int(i): (SPLITS[int(s)], int(g)) for i, s, g in zip(alive, split_idx, groups,
                                                                       strict=True)}
    stage_rows.append({"stage": "splits", "in": len(bal.selected), "dropped": 0,
                       "out": len(bal.selected), "seconds": time.time() - t0, "cached": False,
                       "info_groups": len(np.unique(groups))})
    show.done(stage_rows[-1])

    # -- write under a staging name, export, then swap -------------------------------------------
    t0 = time.time()
    staging = f"{name}~staging"
    _clear(con, staging)
    members = _member_table(pool, bal.selected, split_of, cfg.seed, staging)
    drops = _drop_table(pool, drop_stage, bal, staging)
    rl = _rl_table(pool, alive, split_of, staging)
    bal_rows = [{"dimension": b.dimension, "bucket": b.bucket, "requested": b.requested,
                 "cap": b.cap, "available": b.available, "achieved": b.achieved,
                 "short": b.short, "filled_from": b.filled_from} for b in bal.rows]
    tmp_dir: Path | None = None
    try:
        with forge_db.transaction(con):
            for tbl_name, tbl in (("curated_members", members), ("curation_drops", drops),
                                  ("curated_rl_prompts", rl)):
                con.register("_new_rows", tbl)
                con.execute(f"INSERT INTO {tbl_name} SELECT * FROM _new_rows")
                con.unregister("_new_rows")
            if bal_rows:
                con.register("_new_rows", pa.Table.from_pylist(
                    [{"set_name": staging, **b} for b in bal_rows]))
                con.execute("INSERT INTO curation_balance SELECT set_name, dimension, "
                            "bucket, requested, cap, available, achieved, short, filled_from "
                            "FROM _new_rows")
                con.unregister("_new_rows")
        split_counts = {s: int(c) for s, c in con.execute(
            "SELECT split, count(*) FROM curated_members WHERE set_name = ? GROUP BY split",
            [staging]).fetchall()}
        sel = bal.selected
        teachers = sorted({pool.teacher[i] for i in sel})
        model_hashes = sorted({pool.model_hash[i] for i in sel})
        info: dict[str, Any] = {
            "name": name, "set_hash": set_hash, "pool_hash": pool_hash, "pool_rows": n_pool,
            "options": options, "command": command, "n_members": len(sel), "splits": split_counts,
            "n_rl_prompts": rl.num_rows, "stages": stage_rows, "balance": bal_rows,
            "balance_messages": bal.messages, "teachers": teachers, "model_hashes": model_hashes,
            "embedding_model": model_id, "export_dir": str(out_dir.resolve()),
            "pipeline_version": PIPELINE_VERSION}
        show.stage("export", len(sel))
        card = dataset_card(cfg, info)
        tmp_dir = write_export(con, cfg, out_dir, card, info, staging=staging)
        with forge_db.transaction(con):
            _clear(con, name)
            for t in ("curated_members", "curation_drops", "curated_rl_prompts",
                      "curation_balance"):
                con.execute(f"UPDATE {t} SET set_name = ? WHERE set_name = ?", [name, staging])
            con.execute("INSERT INTO curated_sets (name, set_hash, pool_hash, options, command, "
                        "target, n_members, n_rl_prompts, stats, teachers, model_hashes, "
                        "export_dir) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [name, set_hash, pool_hash, json.dumps(options, sort_keys=True),
                         command, cfg.target, len(sel), rl.num_rows, json.dumps(info, default=str),
                         teachers, model_hashes, str(out_dir.resolve())])
            # The directory swap is the last step inside the transaction: if it fails the
            # tables roll back; only a crash between the rename and COMMIT leaves a new export
            # with old tables, which the next run detects (hash mismatch) and rebuilds.
            _swap_dir(tmp_dir, out_dir)
    except BaseException:
        # Interrupted or failed: the previous set is untouched; drop the half-built one.
        _clear(con, staging)
        if tmp_dir is not None and tmp_dir.exists():
            import shutil

            shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    stage_rows.append({"stage": "write+export", "in": len(sel), "dropped": 0, "out": len(sel),
                       "seconds": time.time() - t0, "cached": False})
    show.done(stage_rows[-1])
    if cfg.push_to_hub:
        from forge.curate.export import push_to_hub

        push_to_hub(out_dir, cfg.push_to_hub)
    return CurateSummary(name, set_hash, False, len(sel), split_counts, stage_rows, bal_rows,
                         bal.messages, out_dir, time.time() - t_start, info)


def _clear(con: duckdb.DuckDBPyConnection, name: str) -> None:
    for t in ("curated_members", "curation_drops", "curated_rl_prompts", "curation_balance",
              "curated_sets"):
        col = "name" if t == "curated_sets" else "set_name"
        con.execute(f"DELETE FROM {t} WHERE {col} = ?", [name])


def _swap_dir(tmp: Path, out_dir: Path) -> None:
    import os
    import shutil

    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    if old.exists():
        shutil.rmtree(old)


def _member_table(pool: Pool, sel: np.ndarray, split_of: dict[int, tuple[str, int]], seed: int,
                  set_name: str) -> pa.Table:
    import hashlib

    def okey(i: int) -> str:
        return hashlib.blake2b(f"{seed}:pos:{pool.traj_id[i]}".encode(),
                               digest_size=8).hexdigest()

    by_split: dict[str, list[int]] = {s: [] for s in SPLITS}
    for i in sel:
        by_split[split_of[int(i)][0]].append(int(i))
    rows = []
    for s in SPLITS:
        for pos, i in enumerate(sorted(by_split[s], key=okey)):
            rows.append({
                "set_name": set_name, "traj_id": pool.traj_id[i], "task_id": pool.task_id[i],
                "split": s, "position": pos, "kind": pool.kind[i],
                "difficulty": pool.difficulty[i], "family": pool.family[i],
                "primary_tool": pool.primary_tool[i],
                "error_recovery": bool(pool.error_recovery[i]),
                "n_actions": int(pool.n_actions[i]), "tools": pool.tools[i],
                "seed": int(pool.seed[i]), "split_group": split_of[i][1],
                "teacher": pool.teacher[i], "model_hash": pool.model_hash[i]})
    schema = pa.schema([("set_name", pa.string()), ("traj_id", pa.string()),
                        ("task_id", pa.string()), ("split", pa.string()),
                        ("position", pa.int32()), ("kind", pa.string()),
                        ("difficulty", pa.string()), ("family", pa.string()),
                        ("primary_tool", pa.string()), ("error_recovery", pa.bool_()),
                        ("n_actions", pa.int32()), ("tools", pa.list_(pa.string())),
                        ("seed", pa.int64()), ("split_group", pa.int64()),
                        ("teacher", pa.string()), ("model_hash", pa.string())])
    return pa.Table.from_pylist(rows, schema=schema)


def _drop_table(pool: Pool, drop_stage: dict[int, tuple[str, StageResult, int]],
                bal: BalanceResult, set_name: str) -> pa.Table:
    tid: list[str] = []
    stage: list[str] = []
    reason: list[str] = []
    kept: list[str | None] = []
    score: list[float | None] = []
    for i in sorted(drop_stage):
        st, res, k = drop_stage[i]
        tid.append(pool.traj_id[i])
        stage.append(st)
        reason.append(res.reason[k])
        kept.append(pool.traj_id[res.kept[k]] if res.kept[k] >= 0 else None)
        s = res.score[k]
        score.append(None if np.isnan(s) else float(s))
    for i, why in sorted(bal.dropped_reason.items()):
        tid.append(pool.traj_id[i])
        stage.append("balance")
        reason.append(why)
        kept.append(None)
        score.append(None)
    return pa.table({"set_name": [set_name] * len(tid), "traj_id": tid, "stage": stage,
                     "reason": reason, "kept_traj_id": pa.array(kept, pa.string()),
                     "score": pa.array(score, pa.float64())})


def _rl_table(pool: Pool, alive: np.ndarray, split_of: dict[int, tuple[str, int]],
              set_name: str) -> pa.Table:
    seen: dict[str, int] = {}
    for i in alive:
        seen.setdefault(pool.task_id[i], int(i))
    rows = [{"set_name": set_name, "task_id": t, "split": split_of[i][0], "kind": pool.kind[i],
             "difficulty": pool.difficulty[i], "family": pool.family[i],
             "scenario_id": pool.scenario_id[i], "seed": int(pool.seed[i]),
             "instruction": pool.instruction[i]} for t, i in sorted(seen.items())]
    schema = pa.schema([("set_name", pa.string()), ("task_id", pa.string()),
                        ("split", pa.string()), ("kind", pa.string()),
                        ("difficulty", pa.string()), ("family", pa.string()),
                        ("scenario_id", pa.string()), ("seed", pa.int64()),
                        ("instruction", pa.string())])
    return pa.Table.from_pylist(rows, schema=schema)

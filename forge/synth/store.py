"""DuckDB reads and writes of the synthesis tables (forge/migrations/0002_synthesis.sql).

One process writes the store (DuckDB admits a single writer per file): workers compute rows and
return them; the loop inserts each batch here in one transaction. Every insert is keyed by a
deterministic id and skips rows that exist, so a resumed run never duplicates anything.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

import duckdb
import pyarrow as pa

from forge import db as fdb
from forge.scenario import Scenario


def hid(*parts: Any, n: int = 20) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":"),
                                     default=str).encode()).hexdigest()[:n]


def normalise(instruction: str) -> str:
    return " ".join(instruction.lower().split())


def task_id_of(instruction: str, scenario_id: str, goal: dict[str, Any]) -> str:
    return "t-" + hid(normalise(instruction), scenario_id, goal)


TASK_COLS = ("task_id", "instruction", "kind", "difficulty", "scenario_id", "family", "goal",
             "source", "pattern", "parent_tasks", "round", "teacher", "gen_run_id")
REJECT_COLS = ("reject_id", "gen_run_id", "round", "teacher", "reason", "message", "raw_text")
TRAJ_COLS = ("traj_id", "task_id", "attempt", "status", "kind", "difficulty", "n_actions",
             "n_failed_steps", "tools", "error_recovery", "uncertain", "reject_stage",
             "reject_reason", "reject_message", "verdicts", "trajectory", "raw_text", "teacher",
             "round", "model_hash", "gen_run_id")
SCENARIO_COLS = ("scenario_id", "seed", "family", "scenario", "source")
JSON_COLS = {"goal", "parent_tasks", "verdicts", "trajectory"}
INT_COLS = {"round", "attempt", "n_actions", "n_failed_steps", "seed"}
BOOL_COLS = {"error_recovery", "uncertain"}


def _insert(con: duckdb.DuckDBPyConnection, table: str, cols: tuple[str, ...], key: str,
            rows: Iterable[dict[str, Any]]) -> int:
    """Insert rows, skipping existing keys; returns how many were new. Goes through an Arrow
    table: DuckDB's executemany binds row by row and costs ~4 ms per trajectory row."""
    data: dict[str, list[Any]] = {c: [] for c in cols}
    for r in rows:
        for c in cols:
            v = r.get(c)
            data[c].append(json.dumps(v) if c in JSON_COLS and v is not None else v)
    if not data[cols[0]]:
        return 0
    fields = []
    for c in cols:
        if c == "tools":
            fields.append(pa.field(c, pa.list_(pa.string())))
        elif c in INT_COLS:
            fields.append(pa.field(c, pa.int64()))
        elif c in BOOL_COLS:
            fields.append(pa.field(c, pa.bool_()))
        else:
            fields.append(pa.field(c, pa.string()))
    batch = pa.table(data, schema=pa.schema(fields))
    before = con.execute(f"SELECT count(*) FROM {table}").fetchone()
    con.register("_forge_rows", batch)
    try:
        con.execute(f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(cols)} "
                    f"FROM _forge_rows ON CONFLICT ({key}) DO NOTHING")
    finally:
        con.unregister("_forge_rows")
    after = con.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(after[0]) - int(before[0]) if after and before else 0


def insert_scenarios(con: duckdb.DuckDBPyConnection,
                     scenarios: Iterable[tuple[Scenario, str]]) -> int:
    have = {r[0] for r in con.execute("SELECT scenario_id FROM scenarios").fetchall()}
    rows = [{"scenario_id": s.scenario_id, "seed": s.seed, "family": s.family,
             "scenario": s.model_dump_json(), "source": src}
            for s, src in scenarios if s.scenario_id not in have]
    return _insert(con, "scenarios", SCENARIO_COLS, "scenario_id", rows)


def insert_tasks(con: duckdb.DuckDBPyConnection, rows: Iterable[dict[str, Any]]) -> int:
    return _insert(con, "tasks", TASK_COLS, "task_id", rows)


def insert_rejects(con: duckdb.DuckDBPyConnection, rows: Iterable[dict[str, Any]]) -> int:
    return _insert(con, "task_rejects", REJECT_COLS, "reject_id", rows)


def insert_trajectories(con: duckdb.DuckDBPyConnection, rows: Iterable[dict[str, Any]]) -> int:
    return _insert(con, "trajectories", TRAJ_COLS, "traj_id", rows)


def all_instructions(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in con.execute(
        "SELECT task_id, instruction FROM tasks ORDER BY round, task_id").fetchall()]


def _task_dict(r: tuple[Any, ...]) -> dict[str, Any]:
    return {"task_id": r[0], "instruction": r[1], "kind": r[2], "difficulty": r[3],
            "scenario_id": r[4], "family": r[5], "goal": json.loads(r[6]), "source": r[7],
            "round": r[8], "pattern": r[9]}


_TASK_SELECT = ("SELECT t.task_id, t.instruction, t.kind, t.difficulty, t.scenario_id, "
                "t.family, t.goal, t.source, t.round, coalesce(t.pattern, '') FROM tasks t")


def example_pool(con: duckdb.DuckDBPyConnection) -> tuple[list[dict[str, Any]],
                                                            list[dict[str, Any]]]:
    """(seed tasks, machine-generated tasks with a verified trajectory), in a stable order."""
    seeds = [_task_dict(r) for r in con.execute(
        _TASK_SELECT + " WHERE t.source = 'seed' ORDER BY t.task_id").fetchall()]
    gen = [_task_dict(r) for r in con.execute(
        _TASK_SELECT + " WHERE t.source = 'generated' AND EXISTS (SELECT 1 FROM trajectories x "
        "WHERE x.task_id = t.task_id AND x.status = 'verified') ORDER BY t.task_id").fetchall()]
    return seeds, gen


def unsolved_tasks(con: duckdb.DuckDBPyConnection, where: str, params: list[Any]
                   ) -> list[dict[str, Any]]:
    return [_task_dict(r) for r in con.execute(
        _TASK_SELECT + f" WHERE {where} AND NOT EXISTS (SELECT 1 FROM trajectories x WHERE "
        "x.task_id = t.task_id) ORDER BY t.task_id", params).fetchall()]


def round_proposed(con: duckdb.DuckDBPyConnection, gen_run_id: str, rnd: int) -> bool:
    """Whether round `rnd` got an answer from the teacher: a task or a reject of its text.
    Prompts the endpoint kept failing (`endpoint_*` rejects) do not count, so a round whose
    every prompt failed is proposed again by the next run."""
    row = con.execute(
        "SELECT (SELECT count(*) FROM tasks WHERE gen_run_id = ? AND round = ?) + "
        "(SELECT count(*) FROM task_rejects WHERE gen_run_id = ? AND round = ? AND "
        "NOT starts_with(reason, 'endpoint_'))",
        [gen_run_id, rnd, gen_run_id, rnd]).fetchone()
    return bool(row and row[0])


def start_run(con: duckdb.DuckDBPyConnection, gen_run_id: str, params: dict[str, Any]) -> bool:
    """Record the run (or mark a resumed one running again) and a new row of
    generation_attempts; True if the run is new. `generation_runs` shows the latest attempt;
    the attempts before it keep their own status, parameters and statistics. An attempt still
    'running' here was killed before it could finish: it becomes 'interrupted'."""
    row = con.execute("SELECT status FROM generation_runs WHERE gen_run_id = ?",
                      [gen_run_id]).fetchone()
    with fdb.transaction(con):
        if row is None:
            con.execute("INSERT INTO generation_runs (gen_run_id, params, status) "
                        "VALUES (?, ?, 'running')", [gen_run_id, json.dumps(params)])
        else:
            con.execute("UPDATE generation_runs SET status = 'running', params = ?, "
                        "finished_at = NULL WHERE gen_run_id = ?",
                        [json.dumps(params), gen_run_id])
        con.execute("UPDATE generation_attempts SET status = 'interrupted' "
                    "WHERE gen_run_id = ? AND status = 'running'", [gen_run_id])
        con.execute("INSERT INTO generation_attempts (gen_run_id, attempt, params, status) "
                    "SELECT ?, coalesce(max(attempt) + 1, 0), ?, 'running' "
                    "FROM generation_attempts WHERE gen_run_id = ?",
                    [gen_run_id, json.dumps(params), gen_run_id])
    return row is None


def finish_run(con: duckdb.DuckDBPyConnection, gen_run_id: str, status: str,
               stats: dict[str, Any]) -> None:
    """Close the run's latest attempt (and the run's summary row) with `status` and `stats`."""
    with fdb.transaction(con):
        con.execute("UPDATE generation_runs SET status = ?, stats = ?, "
                    "finished_at = current_timestamp WHERE gen_run_id = ?",
                    [status, json.dumps(stats), gen_run_id])
        con.execute("UPDATE generation_attempts SET status = ?, stats = ?, "
                    "finished_at = current_timestamp WHERE gen_run_id = ? AND attempt = "
                    "(SELECT max(attempt) FROM generation_attempts WHERE gen_run_id = ?)",
                    [status, json.dumps(stats), gen_run_id, gen_run_id])


def run_attempts(con: duckdb.DuckDBPyConnection, gen_run_id: str) -> list[dict[str, Any]]:
    """Every attempt of a run, oldest first: attempt, status, stats, started/finished."""
    return [{"attempt": r[0], "status": r[1], "stats": json.loads(r[2]) if r[2] else None,
             "started_at": r[3], "finished_at": r[4]} for r in con.execute(
        "SELECT attempt, status, stats, started_at, finished_at FROM generation_attempts "
        "WHERE gen_run_id = ? ORDER BY attempt", [gen_run_id]).fetchall()]


def n_verified(con: duckdb.DuckDBPyConnection) -> int:
    row = con.execute("SELECT count(*) FROM trajectories WHERE status = 'verified'").fetchone()
    return int(row[0]) if row else 0

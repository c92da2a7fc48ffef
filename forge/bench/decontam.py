"""Keeping the bench out of training data.

Two rules, the same everywhere (synthesis, curation, the leakage test, `--train-data`):
- no bench network: a scenario id of the task set may not occur in training data (bench
  networks come from their own seed range, so this holds by construction and is checked);
- no near-duplicate instruction, by curation's near-duplicate rule: word 3-gram Jaccard
  (curation's normalisation and shingles, `forge.curate.minhash`) at or above 0.7 against any
  bench instruction. Computed exactly (an inverted index over the bench's shingles), not
  estimated, so nothing slips through a MinHash band.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from forge.bench.tasks import BENCH_DIR, TaskSet, load_task_set, resolve_dir

NEAR_DUP_THRESHOLD = 0.7


def _shingles(texts: Sequence[str]) -> list[set[int]]:
    from forge.curate.minhash import shingle_hashes

    if not texts:
        return []
    h, off = shingle_hashes(list(texts), 3)
    return [set(h[off[i]:off[i + 1]].tolist()) for i in range(len(texts))]


class BenchGuard:
    """Which texts are near-duplicates of a bench instruction."""

    def __init__(self, ts: TaskSet | Sequence[TaskSet], threshold: float = NEAR_DUP_THRESHOLD
                 ) -> None:
        sets = [ts] if isinstance(ts, TaskSet) else list(ts)
        self.task_sets = sets
        # What a curated set's cache key records: one set's own hash, else a hash of them all.
        self.content_hash = (sets[0].content_hash if len(sets) == 1 else hashlib.sha256(
            "|".join(s.content_hash for s in sets).encode()).hexdigest()[:16])
        self.threshold = threshold
        tasks = [t for s in sets for t in s.tasks]
        self.ids = [t.task_id for t in tasks]
        self.sets = _shingles([t.instruction for t in tasks])
        self.index: dict[int, list[int]] = defaultdict(list)
        for j, s in enumerate(self.sets):
            for h in s:
                self.index[h].append(j)
        self.scenario_ids = {sid for s in sets for sid in s.scenarios}

    def near(self, texts: Sequence[str]) -> list[tuple[int, str, float]]:
        """(index in texts, bench task id, Jaccard) for every text at or above the threshold
        with some bench instruction (its closest one)."""
        out = []
        for i, s in enumerate(_shingles(texts)):
            counts: dict[int, int] = defaultdict(int)
            for h in s:
                for j in self.index.get(h, ()):
                    counts[j] += 1
            best = (0.0, -1)
            for j, c in counts.items():
                jac = c / (len(s) + len(self.sets[j]) - c)
                best = max(best, (jac, j))
            if best[0] >= self.threshold:
                out.append((i, self.ids[best[1]], round(best[0], 4)))
        return out


@lru_cache(maxsize=4)
def default_guard(tasks: str | None = None) -> BenchGuard | None:
    """The guard of one task set (`tasks`), or by default of every shipped version together
    (a model trained today may be benched on an older set too); None when none is shipped."""
    if tasks is not None:
        try:
            return BenchGuard(load_task_set(resolve_dir(tasks)))
        except Exception:
            return None
    shipped = []
    for d in sorted(BENCH_DIR.iterdir()) if BENCH_DIR.is_dir() else []:
        if (d / "tasks.jsonl").is_file():  # a broken shipped set fails loudly (BenchError)
            shipped.append(load_task_set(d))
    return BenchGuard(shipped) if shipped else None


def overlap_with_export(ts: TaskSet, path: Path) -> dict[str, Any]:
    """Shared networks and near-duplicate instructions between a task set and a curated export
    (its directory, its parquet/ directory, or one parquet file)."""
    import duckdb

    p = Path(path)
    files = ([p] if p.is_file() else sorted(p.rglob("*.parquet")))
    if not files:
        from forge.bench.tasks import BenchError

        raise BenchError(f"--train-data {path}: no parquet files found")
    con = duckdb.connect()
    try:
        cols = {r[0] for r in con.execute(
            f"DESCRIBE SELECT * FROM read_parquet({[str(f) for f in files]}, "
            "union_by_name=true)").fetchall()}
        src = f"read_parquet({[str(f) for f in files]}, union_by_name=true)"
        sids: set[str] = set()
        if "scenario_id" in cols:
            sids = {r[0] for r in con.execute(f"SELECT DISTINCT scenario_id FROM {src}")
                    .fetchall()}
        texts: list[str] = []
        for c in ("instruction", "prompt"):
            if c in cols:
                texts += [str(r[0]) for r in con.execute(f"SELECT {c} FROM {src}").fetchall()]
                break
        else:
            if "messages" in cols:
                for (msgs,) in con.execute(f"SELECT messages FROM {src}").fetchall():
                    user = next((m["content"] for m in msgs or [] if m["role"] == "user"), "")
                    texts.append(str(user).split("\n\n")[0])
    finally:
        con.close()
    guard = BenchGuard(ts)
    hits = guard.near(texts)
    shared = sids & guard.scenario_ids
    return {"scenarios": len(shared), "instructions": len(hits),
            "examples": [texts[i][:120] for i, _, _ in hits[:3]],
            "checked_texts": len(texts), "checked_scenarios": len(sids)}


def near_mask(texts: Sequence[str], guard: BenchGuard | None) -> np.ndarray:
    """Boolean mask: which texts are near-duplicates of a bench instruction."""
    m = np.zeros(len(texts), dtype=bool)
    if guard is not None:
        for i, _, _ in guard.near(texts):
            m[i] = True
    return m


def drop_bench_overlap(tasks: list[dict[str, Any]], gen_run_id: str, rnd: int, teacher: str
                       ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Synthesis side of decontamination: proposed tasks on a bench network or near-duplicate
    to a bench instruction become `task_rejects` rows (reason `bench_overlap`), never tasks."""
    import json

    from forge.synth.store import hid

    guard = default_guard()
    if guard is None or not tasks:
        return tasks, []
    near = {i: (tid, jac) for i, tid, jac in guard.near([t["instruction"] for t in tasks])}
    keep, rejects = [], []
    for i, t in enumerate(tasks):
        if i in near or t["scenario_id"] in guard.scenario_ids:
            why = (f"near-duplicate (Jaccard {near[i][1]}) of bench task {near[i][0]}"
                   if i in near else "a bench network")
            rejects.append({"reject_id": "rj-" + hid(gen_run_id, rnd, "bench", t["task_id"]),
                            "gen_run_id": gen_run_id, "round": rnd, "teacher": teacher,
                            "reason": "bench_overlap", "message": why,
                            "raw_text": json.dumps(t, default=str)[:20000]})
        else:
            keep.append(t)
    return keep, rejects

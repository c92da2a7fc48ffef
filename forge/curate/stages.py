"""The filtering stages. Each reads some pool columns, looks only at the rows still alive, and
returns a `StageResult`: for every row it examined, keep ('' reason) or a drop reason, the
member it lost to and the similarity, plus cluster labels used later for leak-free splits.

    stage               reads                                   drops with reason
    verified            status, reject_stage, trajectory        rejected_<stage>, unparseable
    exact               content_hash, rank                      exact_duplicate
    near_instruction    instruction, scope, rank                near_duplicate_instruction
    near_trajectory     traj_text, rank                         near_duplicate_trajectory
    semantic            instruction + tools (embedded), rank    semantic_duplicate

A cluster always keeps its best member by `Pool.rank` (verified, not uncertain, fewest steps).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb
import numpy as np

from forge.curate.config import CurateConfig
from forge.curate.embed import DIM, cached_embeddings, make_encoder
from forge.curate.minhash import lsh_pairs, shingle_hashes, signatures
from forge.curate.pool import Pool

Progress = Callable[[int], None]


@dataclass
class StageResult:
    rows: np.ndarray                      # pool indices examined (alive on entry)
    reason: list[str]                     # '' = kept
    kept: np.ndarray                      # pool index of the member it lost to, -1 if kept
    score: np.ndarray                     # similarity that triggered the drop (nan if kept)
    cluster: np.ndarray                   # cluster label per examined row (-1 if none)
    info: dict[str, object] = field(default_factory=dict)

    @property
    def n_dropped(self) -> int:
        return sum(1 for r in self.reason if r)


def _result(rows: np.ndarray) -> StageResult:
    n = len(rows)
    return StageResult(rows=rows, reason=[""] * n, kept=np.full(n, -1, np.int64),
                       score=np.full(n, np.nan), cluster=np.full(n, -1, np.int64))


def _keep_best(res: StageResult, labels: np.ndarray, rank: np.ndarray, reason: str) -> None:
    """Within each label group keep the lowest rank; mark the others dropped."""
    order = np.lexsort((rank, labels))
    sl = labels[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sl[1:] != sl[:-1]
    head = order[np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))]
    for pos in np.flatnonzero(~first):
        k = order[pos]
        res.reason[k] = reason
        res.kept[k] = res.rows[head[pos]]
    res.cluster[:] = labels


def verified_stage(pool: Pool, rows: np.ndarray) -> StageResult:
    """Only verified, parseable trajectories are training data."""
    res = _result(rows)
    for k, i in enumerate(rows):
        if pool.unparseable[i]:
            res.reason[k] = "unparseable"
        elif pool.status[i] != "verified":
            res.reason[k] = f"rejected_{pool.reject_stage[i] or 'unknown'}"
    return res


def bench_stage(pool: Pool, rows: np.ndarray) -> StageResult:
    """Decontamination: nothing about a bench network, no near-duplicate of a bench
    instruction (curation's near-dup rule, forge.bench.decontam), so the bench stays held out."""
    from forge.bench.decontam import default_guard

    res = _result(rows)
    guard = default_guard()
    if guard is None or len(rows) == 0:
        return res
    texts = [pool.instruction[i] for i in rows]
    near = {k: (tid, jac) for k, tid, jac in guard.near(texts)}
    for k, i in enumerate(rows):
        if pool.scenario_id[i] in guard.scenario_ids:
            res.reason[k] = "bench_network"
            res.score[k] = 1.0
        elif k in near:
            res.reason[k] = "bench_near_duplicate"
            res.score[k] = near[k][1]
    return res


def exact_stage(pool: Pool, rows: np.ndarray) -> StageResult:
    """Exact duplicates of normalised (instruction + messages), by md5."""
    res = _result(rows)
    _, labels = np.unique(np.asarray([pool.content_hash[i] for i in rows]), return_inverse=True)
    _keep_best(res, labels.astype(np.int64), pool.rank[rows], "exact_duplicate")
    res.score[np.asarray([bool(r) for r in res.reason], dtype=bool)] = 1.0
    return res


def _scope_keys(pool: Pool, rows: np.ndarray, scope: str) -> np.ndarray:
    if scope == "global":
        return np.zeros(len(rows), dtype=np.int64)
    _, inv = np.unique(np.asarray([pool.scenario_id[i] for i in rows]), return_inverse=True)
    return inv.astype(np.int64)


def _near_stage(pool: Pool, rows: np.ndarray, texts: list[str], threshold: float, num_perm: int,
                scope: str, reason: str, con: duckdb.DuckDBPyConnection | None) -> StageResult:
    """MinHash-LSH near-duplicates among the distinct texts of `rows`, then a greedy pass in
    rank order: a row is dropped when it is a near-duplicate (a verified pair, or the same text)
    of a better-ranked row of the same scope that was kept. So no two kept rows of a scope are
    near-duplicates, and every dropped row names a kept one; unlike clustering by connected
    components, a chain A~B~C does not drop C for A."""
    res = _result(rows)
    if len(rows) == 0:
        return res
    # Units: distinct texts (global scope) or distinct (scenario, text) pairs (scenario scope),
    # by hashing (a numpy unicode array of long trajectories would take GBs). With scenario
    # scope the scenario is mixed into the LSH band keys: buckets never mix scenarios, stay
    # small, and every candidate pair inside a scenario is checked.
    scope_key = _scope_keys(pool, rows, scope).tolist()
    first_of: dict[tuple[int, str], int] = {}
    unit = [first_of.setdefault((scope_key[k] if scope != "global" else 0, t), len(first_of))
            for k, t in enumerate(texts)]
    uniq = [t for _, t in first_of]
    unit_scope = np.fromiter((g for g, _ in first_of), dtype=np.int64, count=len(first_of))
    h, off = shingle_hashes(uniq, 3, con)
    sig = signatures(h, off, num_perm)
    edges = lsh_pairs(sig, threshold, shingles=(h, off),
                      groups=unit_scope if scope != "global" else None)
    adj: dict[int, list[tuple[int, float]]] = {}
    for a, b, sc in zip(edges.i.tolist(), edges.j.tolist(), edges.score.tolist(), strict=True):
        adj.setdefault(a, []).append((b, sc))
        adj.setdefault(b, []).append((a, sc))
    kept_at: dict[tuple[int, int], int] = {}      # (scope, unit) -> kept local row
    for k in np.argsort(pool.rank[rows], kind="stable").tolist():
        key = (scope_key[k], unit[k])
        hit = kept_at.get(key)
        score = 1.0
        if hit is None:
            for t2, sc in adj.get(unit[k], ()):
                r = kept_at.get((scope_key[k], t2))
                if r is not None and (hit is None or sc > score or (sc == score and r < hit)):
                    hit, score = r, sc
        if hit is None:
            kept_at[key] = k
            res.cluster[k] = rows[k]
        else:
            res.reason[k] = reason
            res.kept[k] = rows[hit]
            res.score[k] = score
            res.cluster[k] = rows[hit]             # star clusters: the kept row's index
    res.info = {"units": len(uniq), "edges": len(edges.i)}
    return res


def near_instruction_stage(pool: Pool, rows: np.ndarray, cfg: CurateConfig,
                           con: duckdb.DuckDBPyConnection | None = None) -> StageResult:
    return _near_stage(pool, rows, [pool.instruction[i] for i in rows],
                       cfg.near_instruction_threshold, cfg.num_perm, cfg.dedup_scope,
                       "near_duplicate_instruction", con)


def near_trajectory_stage(pool: Pool, rows: np.ndarray, cfg: CurateConfig,
                          con: duckdb.DuckDBPyConnection | None = None) -> StageResult:
    return _near_stage(pool, rows, [pool.traj_text[i] for i in rows],
                       cfg.near_trajectory_threshold, cfg.num_perm, "global",
                       "near_duplicate_trajectory", con)


def kmeans(x: np.ndarray, k: int, seed: int, iters: int = 10) -> np.ndarray:
    """Spherical k-means (cosine), deterministic given the seed: cluster label per row."""
    n = len(x)
    if k <= 1 or n <= k:
        return np.zeros(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    cent = x[rng.choice(n, size=k, replace=False)].copy()
    labels = np.zeros(n, dtype=np.int64)
    for _ in range(iters):
        labels = np.concatenate([np.argmax(x[s:s + 50_000] @ cent.T, axis=1)
                                 for s in range(0, n, 50_000)])
        for c in range(k):
            m = labels == c
            if m.any():
                v = x[m].sum(axis=0)
                cent[c] = v / max(float(np.linalg.norm(v)), 1e-12)
    return labels


def _groups(labels: np.ndarray) -> list[np.ndarray]:
    order = np.argsort(labels, kind="stable")
    cuts = np.flatnonzero(np.diff(labels[order])) + 1
    return [g for g in np.split(order, cuts) if len(g) > 1]


def semantic_stage(pool: Pool, rows: np.ndarray, cfg: CurateConfig,
                   con: duckdb.DuckDBPyConnection, progress: Progress | None = None
                   ) -> StageResult:
    """SemDeDup: group the rows, then within each group drop every member whose cosine
    similarity to a better-ranked member reaches the threshold.

    Groups: with --dedup-scope scenario a group is one scenario (small and exact, no clustering
    needed); with global scope they are spherical k-means clusters of ~semantic_cluster_size
    rows, as in SemDeDup. Only rows in a group of two or more can be duplicates, so only those
    are embedded (and each distinct text once, cached in curation_embeddings).
    """
    res = _result(rows)
    if len(rows) < 2:
        return res
    encoder = make_encoder(cfg.embed_backend, cfg.model, cfg.max_seq_length, con)
    texts = [pool.embed_text(i) for i in rows]
    rank = pool.rank[rows]
    if cfg.dedup_scope == "scenario":
        labels = _scope_keys(pool, rows, "scenario")
        counts = np.bincount(labels)
        need = np.flatnonzero(counts[labels] > 1)
        emb = np.zeros((len(rows), DIM), dtype=np.float32)
        got, n_new = cached_embeddings(con, encoder, [texts[j] for j in need], progress)
        if len(need):
            emb[need] = got
        k = int((counts > 1).sum())
    else:
        emb, n_new = cached_embeddings(con, encoder, texts, progress)
        need = np.arange(len(rows))
        k = max(1, round(len(rows) / cfg.semantic_cluster_size))
        labels = kmeans(emb, k, cfg.seed)
    thr = cfg.semantic_threshold
    n_groups = 0
    for g in _groups(labels):
        n_groups += 1
        g = g[np.argsort(rank[g], kind="stable")]          # best first
        sim = emb[g] @ emb[g].T
        # As in SemDeDup: a member is a duplicate if any better-ranked member (dropped or not)
        # is at least `thr` similar; the best member of each group is always kept.
        sim = np.where(np.triu(np.ones_like(sim, dtype=bool), 1), sim, -1.0)
        best = sim.max(axis=0)
        arg = sim.argmax(axis=0)
        for col in np.flatnonzero(best >= thr):
            j = g[col]
            res.reason[j] = "semantic_duplicate"
            res.kept[j] = rows[g[arg[col]]]
            res.score[j] = float(best[col])
    res.cluster[:] = labels
    res.info = {"groups": n_groups, "embedded_rows": len(need), "newly_encoded": n_new,
                "backend": cfg.embed_backend}
    return res

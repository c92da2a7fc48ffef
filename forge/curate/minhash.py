"""Near-duplicate detection: MinHash signatures + LSH banding, vectorised with DuckDB and numpy.

Why not datasketch: its MinHash is one Python object per document and `update` per shingle, which
is the bottleneck at 200k trajectories on 2 cores. Here the shingling and shingle hashing run in
DuckDB (one SQL query, multi-threaded), and the k permutations are numpy passes over one flat
array of shingle hashes (`np.minimum.reduceat` per document). The banding is the same maths as
datasketch's MinHashLSH (bands/rows chosen by minimising weighted false positive/negative areas),
and every LSH candidate pair is verified on the signatures (estimated Jaccard >= threshold)
before it becomes an edge, so the banding only costs recall, never precision.
`benchmarks/bench_neardup.py` compares this to datasketch and to Self-Instruct's ROUGE-L filter.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

_MERSENNE = np.uint64((1 << 61) - 1)


def normalise_sql(col: str) -> str:
    """SQL expression: lower case, punctuation to spaces (keeps digits and decimal points)."""
    return (f"trim(regexp_replace(regexp_replace(lower({col}), '[^a-z0-9.]+', ' ', 'g'), "
            f"'\\.(\\s|$)', ' ', 'g'))")


def shingle_hashes(texts: Sequence[str], ngram: int = 3,
                   con: duckdb.DuckDBPyConnection | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Word n-gram shingle hashes of every text, flat: (hashes uint64, offsets int64 of len+1).

    A text shorter than `ngram` words is one shingle (its words). An empty text gets one shingle
    of the empty string, so every document has at least one value.
    """
    own = con is None
    c = duckdb.connect() if con is None else con
    try:
        import pyarrow as pa

        tbl = pa.table({"i": pa.array(range(len(texts)), pa.int64()),
                        "text": pa.array(list(texts), pa.string())})
        c.register("_mh_docs", tbl)
        norm = normalise_sql("text")
        rows = c.execute(f"""
            WITH w AS (SELECT i, string_split({norm}, ' ') AS w FROM _mh_docs)
            SELECT i, hash(array_to_string(w[j:j + {ngram - 1}], ' ')) AS h
            FROM w, LATERAL (SELECT unnest(range(1, greatest(len(w) - {ngram} + 1, 1) + 1)) AS j)
            ORDER BY i
        """).fetchnumpy()
        c.unregister("_mh_docs")
    finally:
        if own:
            c.close()
    doc = rows["i"].astype(np.int64)
    h = rows["h"].astype(np.uint64)
    counts = np.bincount(doc, minlength=len(texts))
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return h, offsets


def signatures(hashes: np.ndarray, offsets: np.ndarray, num_perm: int, seed: int = 1
               ) -> np.ndarray:
    """(n_docs, num_perm) uint32 MinHash signatures. Permutation k: x -> (a_k x + b_k) >> 32 on
    uint64 (multiply-shift hashing, wraps mod 2^64), which is universal and vectorises."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    n = len(offsets) - 1
    sig = np.empty((n, num_perm), dtype=np.uint32)
    starts = offsets[:-1]
    x = hashes
    with np.errstate(over="ignore"):
        for k in range(num_perm):
            hv = ((a[k] * x + b[k]) >> np.uint64(32)).astype(np.uint32)
            sig[:, k] = np.minimum.reduceat(hv, starts)
    return sig


@functools.lru_cache(maxsize=64)
def optimal_bands(threshold: float, num_perm: int, min_recall: float = 0.97) -> tuple[int, int]:
    """(bands, rows) for LSH: the most rows per band (fewest candidates to verify) such that a
    pair exactly at the threshold still becomes a candidate with probability >= min_recall,
    P = 1 - (1 - t^rows)^bands. Candidates are verified afterwards, so a false positive only
    costs one signature comparison; a false negative is a missed duplicate."""
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if 1 - (1 - threshold ** rows) ** bands >= min_recall:
            best = (bands, rows)
    return best


@dataclass
class NearDupResult:
    """Edges (i, j, estimated Jaccard) between verified near-duplicate documents."""

    i: np.ndarray
    j: np.ndarray
    score: np.ndarray

    def components(self, n: int, mask: np.ndarray | None = None) -> np.ndarray:
        """Connected-component label of every document, using only edges where mask is true."""
        i, j = (self.i, self.j) if mask is None else (self.i[mask], self.j[mask])
        g = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
        return connected_components(g, directed=False)[1].astype(np.int64)


def lsh_pairs(sig: np.ndarray, threshold: float, bands: int | None = None,
              rows: int | None = None, window: int = 8,
              shingles: tuple[np.ndarray, np.ndarray] | None = None,
              groups: np.ndarray | None = None) -> NearDupResult:
    """Verified near-duplicate edges among the rows of `sig`.

    For each band, documents with equal band values form a bucket. In the bucket's sorted order
    each member is paired with the next `window` members and with the bucket's first member: all
    pairs for buckets of up to window + 1 members, and linear cost (not quadratic) for a bucket of
    10k identical texts. Then a pair is kept if its Jaccard similarity reaches the threshold: the
    exact Jaccard of the shingle sets when `shingles` (hashes, offsets) are given (no estimation
    noise at the threshold), else the signature estimate. With `groups`, only documents of the
    same group can share a bucket (the group id is mixed into every band key), so buckets stay
    small and every within-group candidate pair is checked.
    """
    n, k = sig.shape
    if bands is None or rows is None:
        bands, rows = optimal_bands(threshold, k)
    mix = np.random.default_rng(7).integers(1, 2**63, size=rows, dtype=np.uint64) | np.uint64(1)
    pi: list[np.ndarray] = []
    pj: list[np.ndarray] = []
    with np.errstate(over="ignore"):
        for band in range(bands):
            block = sig[:, band * rows:(band + 1) * rows].astype(np.uint64)
            key = (block * mix).sum(axis=1) ^ np.uint64(band)
            if groups is not None:
                key = key ^ (groups.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
            order = np.argsort(key, kind="stable")
            sk = key[order]
            new = np.ones(n, dtype=bool)
            new[1:] = sk[1:] != sk[:-1]
            first = order[np.maximum.accumulate(np.where(new, np.arange(n), 0))]
            dup = ~new
            pi.append(first[dup])
            pj.append(order[dup])
            for d in range(1, window + 1):
                same = sk[d:] == sk[:-d]
                pi.append(order[:-d][same])
                pj.append(order[d:][same])
    if not pi:
        e = np.empty(0, dtype=np.int64)
        return NearDupResult(e, e, np.empty(0))
    ci = np.concatenate(pi)
    cj = np.concatenate(pj)
    if len(ci):
        lo, hi = np.minimum(ci, cj), np.maximum(ci, cj)
        keep = lo != hi
        pair = np.unique(np.stack([lo[keep], hi[keep]], 1), axis=0)
        ci, cj = pair[:, 0], pair[:, 1]
    score = np.empty(len(ci))
    step = 200_000
    for s in range(0, len(ci), step):
        score[s:s + step] = (sig[ci[s:s + step]] == sig[cj[s:s + step]]).mean(axis=1)
    if shingles is not None:
        # Exact Jaccard for the pairs whose estimate is within 0.15 (> 2 standard deviations
        # at 64 permutations) of the threshold; the others are far below it.
        h, off = shingles
        sets: dict[int, frozenset[int]] = {}

        def get(d: int) -> frozenset[int]:
            x = sets.get(d)
            if x is None:
                x = sets[d] = frozenset(h[off[d]:off[d + 1]].tolist())
            return x

        for k in np.flatnonzero(score >= threshold - 0.15).tolist():
            sa, sb = get(int(ci[k])), get(int(cj[k]))
            score[k] = len(sa & sb) / max(len(sa | sb), 1)
    ok = score >= threshold
    return NearDupResult(ci[ok].astype(np.int64), cj[ok].astype(np.int64), score[ok])


def near_duplicates(texts: Sequence[str], threshold: float, num_perm: int = 64, ngram: int = 3,
                    con: duckdb.DuckDBPyConnection | None = None) -> NearDupResult:
    """Shingle, sign and band `texts`: the verified near-duplicate edges."""
    if len(texts) == 0:
        e = np.empty(0, dtype=np.int64)
        return NearDupResult(e, e, np.empty(0))
    h, off = shingle_hashes(texts, ngram, con)
    return lsh_pairs(signatures(h, off, num_perm), threshold, shingles=(h, off))


def exact_jaccard(a: set[int], b: set[int]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def shingle_sets(texts: Sequence[str], ngram: int = 3) -> list[set[int]]:
    """Shingle sets (same shingling as the signatures), for exact-Jaccard labels in tests and
    benchmarks."""
    h, off = shingle_hashes(texts, ngram)
    return [set(h[off[i]:off[i + 1]].tolist()) for i in range(len(texts))]

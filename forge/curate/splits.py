"""Leak-free splits: whole scenario groups go to one split.

A group is a connected component of the graph linking each surviving sample to its scenario seed
and to its near-duplicate cluster (the kept row it stands for; with --dedup-scope global also the
instruction one). Samples of one group share a split, so no test scenario is in train; the
near-dup stages leave no two survivors that are near-duplicates, so no near-duplicate of a test
sample is in train either.

Groups holding curated members are assigned largest first, each to the split whose member count
is furthest below its requested share (deterministic; ties by a seeded hash). Groups without
members (they only feed the RL prompt set) are drawn by a seeded hash with the same shares.
"""

from __future__ import annotations

import hashlib

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from forge.curate.config import SPLITS


def _key_nodes(keys: np.ndarray) -> tuple[np.ndarray, int]:
    valid = keys >= 0
    _, inv = np.unique(np.where(valid, keys, 0), return_inverse=True)
    return np.where(valid, inv.reshape(-1), -1), int(inv.max()) + 1 if len(inv) else 0


def split_groups(seed: np.ndarray, clusters: list[np.ndarray]) -> np.ndarray:
    """Component label per row of the (row - seed - cluster) graph. Cluster value -1 = none."""
    n = len(seed)
    src: list[np.ndarray] = []
    dst: list[np.ndarray] = []
    offset = n
    for keys in [seed, *clusters]:
        node, size = _key_nodes(np.asarray(keys, dtype=np.int64))
        ok = node >= 0
        src.append(np.flatnonzero(ok))
        dst.append(node[ok] + offset)
        offset += size
    i = np.concatenate(src) if src else np.empty(0, np.int64)
    j = np.concatenate(dst) if dst else np.empty(0, np.int64)
    g = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(offset, offset))
    labels = connected_components(g, directed=False)[1]
    return labels[:n].astype(np.int64)


def _h(seed: int, x: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{x}".encode(), digest_size=8).digest(), "big")


def assign_splits(groups: np.ndarray, is_member: np.ndarray, shares: tuple[float, ...],
                  seed: int) -> np.ndarray:
    """Split index (0 train, 1 validation, 2 test) per row, constant within a group."""
    uniq, inv = np.unique(groups, return_inverse=True)
    inv = inv.reshape(-1)
    members = np.bincount(inv, weights=is_member.astype(float), minlength=len(uniq))
    split_of = np.full(len(uniq), -1, dtype=np.int64)
    total = float(members.sum())
    have = np.zeros(len(SPLITS))
    order = sorted(np.flatnonzero(members > 0).tolist(),
                   key=lambda g: (-float(members[g]), _h(seed, int(g))))
    want = np.asarray(shares) * total
    for g in order:
        s = int(np.argmax(want - have))
        split_of[g] = s
        have[s] += members[g]
    cum = np.cumsum(shares)
    for rest in np.flatnonzero(split_of < 0).tolist():
        u = (_h(seed, int(uniq[rest])) % 1_000_000) / 1_000_000
        split_of[rest] = min(int(np.searchsorted(cum, u, side="right")), len(SPLITS) - 1)
    return split_of[inv]

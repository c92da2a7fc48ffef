"""Near-duplicate filter: ROUGE-L F1 >= threshold against the pool (Self-Instruct's rule).

ROUGE-L F1 of token sequences x (m tokens) and y (n tokens) is 2*LCS/(m+n) (precision LCS/m,
recall LCS/n, beta = 1), with the `rouge_score` package's default tokenisation (lowercase, runs
of [a-z0-9], no stemming) that Self-Instruct uses. Comparing each candidate with the whole pool
is quadratic, so candidates are found exactly, not approximately:

- F1 >= t needs LCS >= t*(m+n)/2, and LCS <= |bag(x) & bag(y)| (common tokens with
  multiplicity), so the overlap must reach o_min = ceil(t*(m+n)/2) and, as n >= LCS,
  o >= t*m/(2-t).
- Pigeonhole: if y shares at least o tokens of x's m (as (token, occurrence) pairs), it
  contains one of ANY m-o+1 of them. We probe the posting lists of x's m-o+1 rarest pairs only.
- A candidate holding h of the probed pairs has overlap <= h + (pairs not probed): too few
  hits rule it out without looking at it. Survivors are checked on bag overlap, then with
  the exact LCS.

So the filter makes exactly the decisions of the brute-force ROUGE-L comparison (a test checks it
against `rouge_score` itself on generated instructions), at a cost that grows with the posting
lists of rare tokens instead of the pool size.
"""

from __future__ import annotations

import math
import re
from collections import Counter

TOKEN_RE = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    return TOKEN_RE.findall(text.lower())


def lcs_dp(a: list[str], b: list[str]) -> int:
    """Textbook O(mn) dynamic programme (the reference the fast version is tested against)."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def lcs(a: list[str], b: list[str]) -> int:
    """LCS length, bit-parallel (Crochemore et al. 2001; Hyyrö 2004): one big-int update per
    token of `b`, ~30x faster than the DP in CPython for instruction-sized inputs."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, x in enumerate(a):
        masks[x] = masks.get(x, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for y in b:
        u = v & masks.get(y, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - bin(v).count("1")


def rouge_l(a: list[str], b: list[str]) -> float:
    if not a or not b:
        return 0.0
    return 2.0 * lcs(a, b) / (len(a) + len(b))


def _pairs(tokens: list[str]) -> list[tuple[str, int]]:
    seen: Counter[str] = Counter()
    out = []
    for t in tokens:
        out.append((t, seen[t]))
        seen[t] += 1
    return out


class RougeIndex:
    """Instructions seen so far; `near_duplicate(text)` finds one with ROUGE-L >= threshold."""

    def __init__(self, threshold: float = 0.7) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError("threshold must be in (0, 1]")
        self.threshold = threshold
        self.docs: list[list[str]] = []
        self.bags: list[Counter[str]] = []
        self.postings: dict[tuple[str, int], list[int]] = {}
        self.comparisons = 0  # exact LCS computations, for the benchmark

    def __len__(self) -> int:
        return len(self.docs)

    def add(self, text: str) -> int:
        toks = tokenize(text)
        i = len(self.docs)
        self.docs.append(toks)
        self.bags.append(Counter(toks))
        for p in _pairs(toks):
            self.postings.setdefault(p, []).append(i)
        return i

    def near_duplicate(self, text: str) -> tuple[int, float] | None:
        """(index, score) of the first pool instruction with ROUGE-L >= threshold, or None."""
        x = tokenize(text)
        m = len(x)
        if m == 0:
            return None
        t = self.threshold
        o_min = max(1, math.ceil(t * m / (2.0 - t) - 1e-9))
        pairs = _pairs(x)
        pairs.sort(key=lambda p: len(self.postings.get(p, ())))
        probe = pairs[: max(1, m - o_min + 1)]
        hits: Counter[int] = Counter()
        for p in probe:
            hits.update(self.postings.get(p, ()))
        unprobed = m - len(probe)
        bag = Counter(x)
        for j in sorted(hits):
            y = self.docs[j]
            n = len(y)
            need = t * (m + n) / 2.0
            if min(m, n) < need - 1e-9:
                continue
            # Overlap <= probe pairs y contains + every pair outside the probe.
            if hits[j] + unprobed < need - 1e-9:
                continue
            overlap = sum((bag & self.bags[j]).values())
            if overlap < need - 1e-9:
                continue
            self.comparisons += 1
            score = 2.0 * lcs(x, y) / (m + n)
            if score >= t:
                return j, score
        return None

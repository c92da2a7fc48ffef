"""Balance: pick `target` samples from the dedup survivors under quotas and caps.

Quotas (minimums that also act as maximums until the fill step): kind (qa/action, from the
ratio), difficulty (L1/L2/L3 shares). Error-recovery samples have a minimum share and are taken
first. Caps (maximums only): share per primary tool, share per scenario family.

The two quotas are first turned into a joint plan: a target per (kind, difficulty) cell whose
rows add up to the kind quotas and whose columns add up to the difficulty quotas, no cell above
what the pool holds, as close to the pool's own proportions as that allows (iterative
proportional fitting with the availability as a ceiling). Without it a single pass fills the
difficulty quotas with whatever kind comes first, and a kind that is rare at some level (few
questions at L3) comes out short although the pool could meet both quotas.

Selection is a deterministic greedy pass over the candidates in a seeded pseudo-random order
(error-recovery samples first, up to their quota): a candidate is taken if its kind bucket, its
difficulty bucket, its (kind, difficulty) cell, its tool and its family are all under their
limits; a second pass without the cell limits takes what caps kept the plan from placing. Then
every short quota is
reported (requested, available, achieved, short) and, with fill='nearest', its shortfall moves to
the nearest bucket of the same dimension, whose limit grows by that much, and the pass continues:

    difficulty: L1 <-> L2 <-> L3; L2's shortfall goes to whichever neighbour has more spare
                candidates (ties: L1); kind: qa <-> action.

Caps are never relaxed. If the set is still smaller than the target, the command stops unless
--allow-short (QuotaShortError says which quota or cap binds and by how much).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from forge.curate.config import DIFFICULTIES, KINDS, CurateConfig, QuotaShortError
from forge.curate.pool import Pool


@dataclass
class BalanceRow:
    dimension: str
    bucket: str
    requested: int | None
    cap: int | None
    available: int
    achieved: int = 0
    filled_from: str | None = None

    @property
    def short(self) -> int:
        return max((self.requested or 0) - self.achieved, 0) if self.requested is not None else 0


@dataclass
class BalanceResult:
    selected: np.ndarray                          # pool indices, in selection order
    rows: list[BalanceRow]
    dropped_reason: dict[int, str] = field(default_factory=dict)   # pool index -> reason
    messages: list[str] = field(default_factory=list)


def _apportion(total: int, shares: tuple[float, ...]) -> list[int]:
    """Largest-remainder rounding of total * shares (sums exactly to total)."""
    raw = [total * s for s in shares]
    out = [math.floor(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: (out[i] - raw[i], i))[: total - sum(out)]:
        out[i] += 1
    return out


def _order_key(traj_id: str, seed: int) -> str:
    return hashlib.blake2b(f"{seed}:{traj_id}".encode(), digest_size=8).hexdigest()


def joint_plan(avail: dict[tuple[str, str], int], kind_q: dict[str, int],
               diff_q: dict[str, int], iters: int = 500) -> dict[tuple[str, str], int]:
    """Per-(kind, difficulty) targets: row sums = kind quotas, column sums = difficulty quotas,
    each cell <= its availability, proportional to the availability where the ceilings allow.
    Capped iterative proportional fitting, then integers: every cell rounded down, and the
    units still missing in a row and a column go to the cells with the largest remainders (so
    the plan's sums are the quotas wherever the fitted table meets them). Where no such table
    exists the cells get as close as the ceilings let them."""
    x = {c: float(n) for c, n in avail.items()}
    for _ in range(iters):
        delta = 0.0
        for axis, quota in ((0, kind_q), (1, diff_q)):
            for b, q in quota.items():
                cells = [c for c in x if c[axis] == b]
                tot = sum(x[c] for c in cells)
                if tot <= 0:
                    continue
                for c in cells:
                    new = min(x[c] * q / tot, float(avail[c]))
                    delta = max(delta, abs(new - x[c]))
                    x[c] = new
        if delta < 1e-6:
            break
    out = {c: min(math.floor(v + 1e-9), avail[c]) for c, v in x.items()}

    def missing(axis: int, b: str, quota: dict[str, int]) -> int:
        return quota[b] - sum(v for c, v in out.items() if c[axis] == b)

    for c in sorted(x, key=lambda c: (out[c] - x[c], c)):     # largest remainder first
        if out[c] < min(avail[c], math.ceil(x[c] - 1e-9)) and missing(0, c[0], kind_q) > 0 \
                and missing(1, c[1], diff_q) > 0:
            out[c] += 1
    return out


NEIGHBOURS = {"difficulty": {"L1": ["L2"], "L2": ["L1", "L3"], "L3": ["L2"]},
              "kind": {"qa": ["action"], "action": ["qa"]}}


def balance(pool: Pool, cand: np.ndarray, cfg: CurateConfig) -> BalanceResult:
    target = cfg.target
    qa_w, act_w = cfg.qa_weights
    kind_q = dict(zip(KINDS, _apportion(target, (qa_w / (qa_w + act_w),
                                                 act_w / (qa_w + act_w))), strict=True))
    diff_q = dict(zip(DIFFICULTIES, _apportion(target, cfg.difficulty_shares), strict=True))
    er_q = math.ceil(target * cfg.error_recovery_share)
    tool_cap = max(1, math.floor(target * cfg.max_tool_share))
    fam_cap = max(1, math.floor(target * cfg.max_family_share))

    kind = [pool.kind[i] for i in cand]
    diff = [pool.difficulty[i] for i in cand]
    tool = [pool.primary_tool[i] for i in cand]
    fam = [pool.family[i] for i in cand]
    er = pool.error_recovery[cand]

    def avail(values: list[str], b: str) -> int:
        return sum(1 for v in values if v == b)

    rows: dict[tuple[str, str], BalanceRow] = {}
    for b, q in kind_q.items():
        rows["kind", b] = BalanceRow("kind", b, q, None, avail(kind, b))
    for b, q in diff_q.items():
        rows["difficulty", b] = BalanceRow("difficulty", b, q, None, avail(diff, b))
    rows["error_recovery", "true"] = BalanceRow("error_recovery", "true", er_q, None,
                                                int(er.sum()))
    for t in sorted(set(tool)):
        rows["tool", t] = BalanceRow("tool", t, None, tool_cap, avail(tool, t))
    for f in sorted(set(fam)):
        rows["family", f] = BalanceRow("family", f, None, fam_cap, avail(fam, f))

    limit_kind = dict(kind_q)
    limit_diff = dict(diff_q)
    cells = list(zip(kind, diff, strict=True))
    plan = joint_plan({(k, d): sum(1 for c in cells if c == (k, d))
                       for k in KINDS for d in DIFFICULTIES}, kind_q, diff_q)
    in_cell: dict[tuple[str, str], int] = dict.fromkeys(plan, 0)
    cnt: dict[tuple[str, str], int] = dict.fromkeys(rows, 0)
    # Seeded pseudo-random order. Phase 1 serves the error-recovery quota from error-recovery
    # candidates only; phase 2 takes everyone (error-recovery samples included) on equal terms.
    order = sorted(range(len(cand)), key=lambda k: _order_key(pool.traj_id[cand[k]], cfg.seed))
    er_order = [k for k in order if er[k]]
    taken = np.zeros(len(cand), dtype=bool)
    selected: list[int] = []

    def greedy(seq: list[int], er_only: bool = False, planned: bool = False) -> int:
        added = 0
        for k in seq:
            if len(selected) >= target or (er_only and cnt["error_recovery", "true"] >= er_q):
                break
            if taken[k] or (planned and in_cell[cells[k]] >= plan[cells[k]]):
                continue
            if (cnt["kind", kind[k]] >= limit_kind[kind[k]]
                    or cnt["difficulty", diff[k]] >= limit_diff[diff[k]]
                    or cnt["tool", tool[k]] >= tool_cap or cnt["family", fam[k]] >= fam_cap):
                continue
            taken[k] = True
            selected.append(k)
            in_cell[cells[k]] += 1
            added += 1
            for key in (("kind", kind[k]), ("difficulty", diff[k]), ("tool", tool[k]),
                        ("family", fam[k])):
                cnt[key] += 1
            if er[k]:
                cnt["error_recovery", "true"] += 1
        return added

    greedy(er_order, er_only=True, planned=True)
    greedy(order, planned=True)
    greedy(order)
    messages: list[str] = []

    def shortfalls() -> list[BalanceRow]:
        for key, r in rows.items():
            r.achieved = cnt[key]
        return [r for r in rows.values() if r.requested is not None and r.short > 0
                and r.dimension in ("kind", "difficulty")]

    # One dimension at a time (kind first: the ratio is the primary knob), so that a shortfall
    # is only moved after the moves it depends on have been served.
    for _ in range(3):
        if len(selected) >= target:
            break
        moved_any = False
        for dim in ("kind", "difficulty"):
            short = [r for r in shortfalls() if r.dimension == dim]
            if not short or len(selected) >= target:
                continue
            desc = "; ".join(f"{r.dimension} {r.bucket}: requested {r.requested}, "
                             f"{r.available} available after dedup, {r.achieved} admissible "
                             f"under the other quotas and caps (short by {r.short})"
                             for r in short)
            if cfg.fill == "stop":
                raise QuotaShortError(f"the pool cannot meet these quotas: {desc}. Lower them "
                                      f"(--qa-ratio, --difficulty), grow the pool, or use "
                                      f"--fill nearest")
            lim = limit_kind if dim == "kind" else limit_diff
            for r in short:
                spare = {nb: rows[dim, nb].available - cnt[dim, nb]
                         for nb in NEIGHBOURS[dim][r.bucket]}
                nb = max(sorted(spare), key=lambda b: spare[b])
                gap = lim[r.bucket] - cnt[dim, r.bucket]
                if gap <= 0:
                    continue
                lim[r.bucket] -= gap
                lim[nb] += gap
                r.filled_from = nb
                messages.append(f"{dim} {r.bucket}: requested {r.requested}, {r.available} "
                                f"available after dedup, {r.achieved} admissible (short by "
                                f"{r.short}): filled {gap} from {nb}")
                moved_any = True
            greedy(order)
        if not moved_any:
            break
    shortfalls()
    if er_q and cnt["error_recovery", "true"] < er_q:
        r = rows["error_recovery", "true"]
        if cfg.fill == "stop":
            raise QuotaShortError(f"the pool cannot meet the error-recovery quota: requested "
                                  f"{er_q}, {r.available} available after dedup, got "
                                  f"{r.achieved} (short by {r.short}). Lower "
                                  f"--error-recovery-share or use --fill nearest")
        r.filled_from = "no_recovery"
        messages.append(f"error_recovery: requested {er_q}, {r.available} available, got "
                        f"{r.achieved} (short by {r.short})")
    if len(selected) < target:
        binding = [f"{r.dimension} {r.bucket} (cap {r.cap} reached)" for r in rows.values()
                   if r.cap is not None and r.achieved >= r.cap]
        lack = (f"the pool has {len(cand)} candidates after dedup, the quotas and caps let "
                f"{len(selected)} through (short by {target - len(selected)})"
                + (f"; caps binding: {', '.join(binding)}" if binding else ""))
        if not cfg.allow_short:
            raise QuotaShortError(f"cannot reach --target {target}: {lack}. Lower --target, "
                                  f"raise the caps (--max-tool-share, --max-family-share), "
                                  f"or pass --allow-short to accept a smaller set")
        messages.append(f"short set accepted (--allow-short): {lack}")
    sel = cand[np.asarray(selected, dtype=np.int64)] if selected else np.empty(0, np.int64)
    dropped: dict[int, str] = {}
    for k in np.flatnonzero(~taken):
        i = int(cand[k])
        if len(selected) >= target:
            dropped[i] = "over_target"
        elif cnt["tool", tool[k]] >= tool_cap:
            dropped[i] = "cap_tool"
        elif cnt["family", fam[k]] >= fam_cap:
            dropped[i] = "cap_family"
        elif cnt["kind", kind[k]] >= limit_kind[kind[k]]:
            dropped[i] = f"quota_kind_{kind[k]}"
        else:
            dropped[i] = f"quota_difficulty_{diff[k]}"
    return BalanceResult(selected=sel, rows=list(rows.values()), dropped_reason=dropped,
                         messages=messages)

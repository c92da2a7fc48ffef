"""Stage 4, claims: numbers the final answer states must agree with what was observed.

A number is grounded when it equals (to the precision it is written with, or within 1 %) a
number of the instruction or of an observation of the trajectory. Earlier observations count too,
because "went from X to Y" is a legitimate claim; the price is that a stale value quoted as the
final state is not caught here (the outcome stage judges the final state itself). Percentages may
also match a ratio (85 % ~ 0.85). Identifiers (`cell 2`, `UE 14`,
`QCI 9`, `L2`, `#3`, `change 1`) are not claims. Numbers computed from observations (sums,
differences) are not recognised: answers should quote what they observed.
"""

from __future__ import annotations

import bisect
import re
from typing import Any

from forge.gym.goals import NUMBER_RE
from verifiers.base import Context, Stage, VerifierResult, fail, ok

REL_TOL = 0.01
_ID_RE = re.compile(r"(?:\b(?:cells?|ues?|qcis?|slices?|changes?|steps?|L)\s*:?\s*|#)$",
                    re.IGNORECASE)


def _numbers_in(obj: Any, out: list[float]) -> None:
    if isinstance(obj, bool):
        return
    if isinstance(obj, int | float):
        out.append(float(obj))
    elif isinstance(obj, dict):
        for v in obj.values():
            _numbers_in(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _numbers_in(v, out)
    elif isinstance(obj, str):
        out.extend(float(m.group()) for m in NUMBER_RE.finditer(obj))


def claimed_numbers(text: str) -> list[tuple[str, float, bool]]:
    """(literal, value, is_percent) for each number in `text` that is not an identifier."""
    out = []
    for m in NUMBER_RE.finditer(text):
        lit = m.group()
        if _ID_RE.search(text[max(0, m.start() - 12):m.start()]):
            continue
        # A leading sign glued to a word ("QCI-9", "x-1") is a hyphen, not a minus.
        if lit[0] in "+-" and m.start() > 0 and text[m.start() - 1].isalnum():
            lit = lit[1:]
        tail = text[m.end():m.end() + 2].lstrip()
        out.append((lit, float(lit), tail.startswith("%")))
    return out


def _matches(lit: str, value: float, grounded: list[float]) -> bool:
    decimals = len(lit.split(".")[1]) if "." in lit and "e" not in lit.lower() else 0
    tol = max(0.5 * 10 ** -decimals, REL_TOL * abs(value)) + 1e-9
    j = bisect.bisect_left(grounded, value - tol)
    return j < len(grounded) and grounded[j] <= value + tol


def check_claims(ctx: Context) -> VerifierResult:
    st: Stage = "claims"
    assert ctx.traj is not None
    nums: list[float] = []
    for _, obs in ctx.observations:
        _numbers_in(obs, nums)
    msgs = ctx.traj.messages
    _numbers_in(msgs[1].content, nums)
    grounded = sorted(nums)
    ungrounded = []
    claims = claimed_numbers(ctx.final)
    for lit, value, pct in claims:
        if _matches(lit, value, grounded):
            continue
        if pct and _matches(lit, value / 100.0, grounded):
            continue
        ungrounded.append(lit)
    if ungrounded:
        return fail(st, "ungrounded_number",
                    f"the final answer states {len(ungrounded)} number(s) found in no last "
                    f"observation: {', '.join(ungrounded[:8])}", ungrounded=ungrounded[:50],
                    n_claims=len(claims))
    return ok(st, n_claims=len(claims))

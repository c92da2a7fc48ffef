"""Claims stage on real trajectories: bound rule versus the old any-observed-number rule.

    python benchmarks/bench_claims.py --db build/em.duckdb [--limit 0] [--model-dir D]

For every verified trajectory of the store (made by a teacher, verified under the old rule):
1. the pass rate of the whole verifier with the bound claims rule (the shipped verifier), and of
   the claims stage under both rules;
2. mutated final answers, each of which states something false, and how many each rule rejects:
   - `scaled`: one bound figure multiplied by 1.37 (written with the same precision);
   - `swapped`: the before and after figures of a "from X to Y" / "X before, Y after" swapped
     (trajectories that changed the network);
   - `misattributed`: one bound figure replaced by a number observed in the same trajectory for
     another entity or metric (the fabrication the old rule cannot see).
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import Counter
from typing import Any

from verifiers.base import Context
from verifiers.claims import Claim, candidates, check_claims, collect_facts, parse_claims
from verifiers.format import check_format

_PAIR_RES = (re.compile(r"\bfrom\s+(-?\d+(?:\.\d+)?)(\s+[a-zA-Z%]+)?\s+to\s+(-?\d+(?:\.\d+)?)"),
             re.compile(r"(-?\d+(?:\.\d+)?)( before,\s+)(-?\d+(?:\.\d+)?)(?= after)"))


def _fmt_like(lit: str, value: float) -> str:
    d = len(lit.split(".")[1]) if "." in lit else 0
    return f"{value:.{d}f}"


def _replace_claim(final: str, c: Claim, new: str) -> str | None:
    """Replace the figure of claim `c` (at its offset) by `new`."""
    if final[c.pos:c.pos + len(c.literal)] != c.literal:
        return None
    return final[:c.pos] + new + final[c.pos + len(c.literal):]


def mutations(final: str, ctx: Context, rng: random.Random) -> dict[str, str]:
    """Mutated final answers keyed by kind (a kind is missing where it does not apply)."""
    facts = collect_facts(ctx)
    claims = [c for c in parse_claims(final, facts.quoted) if not c.in_answer_tag
              and (c.entity is not None or c.families is not None)]
    out: dict[str, str] = {}
    if claims:
        c = rng.choice(claims)
        scaled = _fmt_like(c.literal, c.value * 1.37 if c.value else 1.0)
        new = _replace_claim(final, c, scaled)
        if new is not None and float(scaled) != c.value:
            out["scaled"] = new
        # Another observed number, bound to another entity or metric, and clearly different from
        # every value the claim's entity and metric had at any time (a UE's delay is measured by
        # several tools, each with its own noise: quoting any of them is not a fabrication).
        own = [*candidates(c, facts, None), c.value]
        others = sorted({v for (ent, fam), vals in facts.by_key.items()
                         if not ((c.entity is None or ent == c.entity)
                                 and (c.families is None or fam in c.families))
                         for v, _ in vals
                         if v >= 0 and all(abs(v - o) > 0.05 * max(abs(o), 1e-3) for o in own)})
        if others:
            v = rng.choice(others)
            lit = f"{v:g}"
            new = _replace_claim(final, c, lit)
            if new is not None:
                out["misattributed"] = new
    # Without a configuration change both figures are measurements of the same state (they
    # differ by measurement noise): swapping them states nothing false.
    for rx in _PAIR_RES if facts.changed else ():
        m = rx.search(final)
        if m is None:
            continue
        a, b = m.group(1), m.group(3)
        if abs(float(a) - float(b)) <= 0.02 * max(abs(float(a)), abs(float(b)), 1e-3):
            continue
        sw = final[:m.start(1)] + b + final[m.end(1):m.start(3)] + a + final[m.end(3):]
        out["swapped"] = sw
        break
    return out


def _ctx(traj: dict[str, Any]) -> Context | None:
    ctx = Context(raw=traj)
    return ctx if check_format(ctx, None).passed else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--db", default="build/em.duckdb")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write every failure as JSON lines here")
    args = ap.parse_args()
    import duckdb

    from forge.experiment_model import ExperimentModel
    from verifiers import TrajectoryVerifier

    con = duckdb.connect(args.db, read_only=True)
    rows = con.execute("SELECT traj_id, kind, trajectory FROM trajectories "
                       "WHERE status = 'verified' ORDER BY traj_id").fetchall()
    if args.limit:
        rows = rows[:args.limit]
    trajs = [(tid, kind, json.loads(t)) for tid, kind, t in rows]
    v = TrajectoryVerifier(ExperimentModel.load(args.model_dir))
    verdicts = v.verify_many([t for _, _, t in trajs])
    rng = random.Random(args.seed)
    full_pass = Counter[str]()
    claims_old = Counter[str]()
    claims_new = Counter[str]()
    n_kind = Counter[str]()
    mut_n = Counter[str]()
    mut_old = Counter[str]()
    mut_new = Counter[str]()
    mut_reasons: dict[str, Counter[str]] = {}
    failures = []
    for (tid, kind, t), rs in zip(trajs, verdicts, strict=True):
        n_kind[kind] += 1
        full_pass[kind] += TrajectoryVerifier.passed(rs)
        ctx = _ctx(t)
        if ctx is None:
            continue
        old = check_claims(ctx, bind=False)
        new = check_claims(ctx)
        claims_old[kind] += old.passed
        claims_new[kind] += new.passed
        if not new.passed:
            failures.append({"id": tid, "final": ctx.final, "result": new.to_dict()})
        if not new.passed:
            continue  # mutations are judged on answers the bound rule accepts as written
        for mk, text in mutations(ctx.final, ctx, rng).items():
            ctx.final = text
            mut_n[mk] += 1
            mut_old[mk] += not check_claims(ctx, bind=False).passed
            r = check_claims(ctx)
            mut_new[mk] += not r.passed
            mut_reasons.setdefault(mk, Counter())[r.reason] += 1
    total = sum(n_kind.values())
    print(f"verified trajectories: {total} ({dict(n_kind)})")
    print(f"{'':<28}{'all':>8}" + "".join(f"{k:>8}" for k in sorted(n_kind)))

    def row(name: str, c: Counter[str]) -> None:
        print(f"{name:<28}{sum(c.values()) / max(total, 1):>8.3f}"
              + "".join(f"{c[k] / max(n_kind[k], 1):>8.3f}" for k in sorted(n_kind)))

    row("claims pass, old rule", claims_old)
    row("claims pass, bound rule", claims_new)
    row("all stages pass (bound)", full_pass)
    print(f"\n{'mutation':<16}{'n':>6}{'old rule rejects':>18}{'bound rule rejects':>20}  reasons")
    for mk in ("scaled", "swapped", "misattributed"):
        n = mut_n[mk]
        print(f"{mk:<16}{n:>6}{mut_old[mk] / max(n, 1):>18.3f}{mut_new[mk] / max(n, 1):>20.3f}  "
              f"{dict(mut_reasons.get(mk, {}))}")
    if args.out:
        with open(args.out, "w") as f:
            for x in failures:
                f.write(json.dumps(x) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

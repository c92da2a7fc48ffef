"""Build a synthetic-but-real pool for the curation benchmarks.

    python benchmarks/make_pool.py --rows 200000 --db build/bench/pool200k.duckdb

Every trajectory is a real closed-loop trajectory of the scripted operator (forge.gym.scripted)
over a freshly sampled scenario, with observations from the gym (closed-form physics model, so
no trained Experiment Model is needed). On top of the unique base trajectories the builder adds
controlled duplicates, so that every curation stage has something to find:

    share  variant               what it is                                      caught by
    ~45 %  base                  one task on its own scenario (12 % of them      -
                                 with an inserted failed call + recovery)
     10 %  exact copy            same messages, another trajectory id            exact
     12 %  light edit            instruction with one word changed, same         near_instruction
                                 scenario, same solution
     10 %  paraphrase re-solve   instruction reworded, solved again with another semantic (mostly)
                                 noise seed (different observed numbers)
      8 %  noisy re-solve        same instruction, same scenario, another seed   near_instruction
     15 %  rejected attempt      status 'rejected' (outcome stage)               verified

It is a timing and dedup-quality fixture, NOT training data: the shares above are chosen, not
observed, and the instructions come from the scripted operator's six templates.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from multiprocessing import get_context
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARES = {"exact": 0.10, "light": 0.12, "paraphrase": 0.10, "resolve": 0.08, "rejected": 0.15}
ER_SHARE = 0.12


def _chunk(args: tuple[int, int, int]) -> list[dict[str, Any]]:
    """Base trajectories k in [start, stop) plus their planned variants (pool rows)."""
    start, stop, seed = args
    from forge.curate.fixtures import (
        copy_as,
        light_edit,
        paraphrase,
        pool_rows,
        with_error_recovery,
    )
    from forge.gym.closed_form import ClosedFormModel
    from forge.gym.env import CachedModel
    from forge.gym.scripted import ACTION_KINDS, QA_KINDS, plan_task, solve
    from forge.ns3.grid import sample_scenario

    cm = CachedModel(ClosedFormModel())
    kinds = ACTION_KINDS + QA_KINDS
    out: list[dict[str, Any]] = []
    base_share = 1.0 - sum(SHARES.values())
    for k in range(start, stop):
        rng = random.Random(seed * 1_000_003 + k)
        scn = sample_scenario(7_000_000 + seed * 10_000_000 + k)
        pred, _ = cm.view(scn)
        if not pred.in_domain:
            continue
        plan = plan_task(scn, cm, kinds[k % len(kinds)], rng)
        if plan is None:
            continue
        tid = f"pool-{seed}-{k}"
        tr = solve(plan, scn, cm, env_seed=k, task_id=tid)
        if rng.random() < ER_SHARE:
            tr = with_error_recovery(tr, cm)
        out.append(pool_rows(tr))
        # Expected number of each variant per base = share / base_share.
        for variant, share in SHARES.items():
            expect = share / base_share
            n = int(expect) + (rng.random() < expect - int(expect))
            for v in range(n):
                vid = f"{tid}~{variant}{v}"
                if variant == "exact":
                    out.append(pool_rows(copy_as(tr, f"{tr.id}#copy{v}"), attempt=1 + v))
                elif variant == "light":
                    out.append(pool_rows(light_edit(tr, f"{vid}/scripted-v1", rng)))
                elif variant == "paraphrase":
                    p = paraphrase(tr, f"{vid}/scripted-v1")
                    if p is not None:
                        plan2 = type(plan)(**{**plan.__dict__, "instruction":
                                              p.task.instruction})
                        seed2 = k + 10_000_000 * (v + 1)
                        out.append(pool_rows(solve(plan2, scn, cm, env_seed=seed2,
                                                   task_id=vid)))
                elif variant == "resolve":
                    r = solve(plan, scn, cm, env_seed=k + 20_000_000 * (v + 1), task_id=tid)
                    out.append(pool_rows(r.model_copy(update={"id": f"{tid}/resolve{v}"}),
                                         attempt=2 + v))
                else:
                    out.append(pool_rows(copy_as(tr, f"{tr.id}#rej{v}"), status="rejected",
                                         reject_stage="outcome", attempt=5 + v))
    return out


def build(db: str, rows: int, seed: int = 0, workers: int = 2, chunk: int = 500) -> dict[str, Any]:
    from forge import db as forge_db
    from forge.curate.fixtures import insert_pool

    t0 = time.time()
    Path(db).parent.mkdir(parents=True, exist_ok=True)
    if Path(db).exists():
        Path(db).unlink()
    con = forge_db.connect(db)
    # Chunks of base indices until enough rows (some scenarios are out of domain or get no plan).
    jobs = ((s, s + chunk, seed) for s in range(0, 100 * rows, chunk))
    total = 0
    ctx = get_context("spawn")
    with ctx.Pool(workers) as pool:
        for part in pool.imap(_chunk, jobs):
            part = part[: max(rows - total, 0)]
            if part:
                with forge_db.transaction(con):
                    total += insert_pool(con, part)
            print(f"\r{total:,}/{rows:,} rows, {time.time() - t0:.0f} s", end="", flush=True)
            if total >= rows:
                pool.terminate()
                break
    print()
    stats = dict(con.execute("SELECT status, count(*) FROM trajectories GROUP BY ALL").fetchall())
    con.close()
    return {"rows": total, "by_status": stats, "seconds": round(time.time() - t0, 1),
            "db": db, "shares": SHARES, "error_recovery_share_of_base": ER_SHARE}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--db", default="build/bench/pool200k.duckdb")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)
    print(json.dumps(build(a.db, a.rows, a.seed, a.workers), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

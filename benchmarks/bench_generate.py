"""Offline teacher end to end: propose, solve, verify, store - verified trajectories per second.

    python benchmarks/bench_generate.py --rounds 4 --tasks-per-round 512 --workers 2

Runs `forge generate` (the library call) on a fresh store with the default task mix and prints
one JSON line: elapsed seconds, verified trajectories, verified/s, the mix of what was verified
(kind, difficulty, error recovery) and the reject reasons. The figure includes process start of
the workers, seeding, proposal, dedup and DuckDB writes (everything but interpreter start).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import duckdb

from forge.synth.loop import GenerateConfig, run_generate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--tasks-per-round", type=int, default=512)
    ap.add_argument("--workers", type=int, default=0, help="0 = one per core")
    ap.add_argument("--model", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target-verified", type=int, default=None,
                    help="stop after the round that brings the store to this many verified "
                         "trajectories (library path)")
    ap.add_argument("--via", choices=("library", "prefect"), default="library",
                    help="prefect: run the `forge` flow (in a Prefect test harness; the "
                         "harness's start-up is not timed) to measure Prefect's overhead")
    ap.add_argument("--db", default=None,
                    help="store to create (default: a fresh temporary one); keep it to read "
                         "its statistics with benchmarks/bench_data_stats.py")
    args = ap.parse_args()
    db = args.db or str(Path(tempfile.mkdtemp(prefix="forge-bench-")) / "bench.duckdb")
    if Path(db).exists():
        raise SystemExit(f"{db} exists: the benchmark needs a fresh store")
    cfg = GenerateConfig(rounds=args.rounds, tasks_per_round=args.tasks_per_round,
                         workers=args.workers, model=args.model, db=db, seed=args.seed,
                         target_verified=args.target_verified)
    if args.via == "prefect":
        from prefect.testing.utilities import prefect_test_harness

        from flows.forge_flow import forge

        with prefect_test_harness(server_startup_timeout=120):
            t0 = time.perf_counter()
            out = forge(rounds=args.rounds, tasks_per_round=args.tasks_per_round,
                        workers=args.workers, model=args.model, db=db, seed=args.seed)
            elapsed = time.perf_counter() - t0
        status, reasons = out["status"], None
    else:
        t0 = time.perf_counter()
        rep = run_generate(cfg)
        elapsed = time.perf_counter() - t0
        status, reasons = rep.status, rep.stats.get("reject_reasons")
    # CPU seconds of this process and its (joined) workers: on a shared machine the wall clock
    # measures the neighbours too; verified per CPU-second x cores is the rate on idle cores.
    cpu = sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF,
                                                          resource.RUSAGE_CHILDREN)
              for f in ("ru_utime", "ru_stime"))
    con = duckdb.connect(db, read_only=True)
    mix = con.execute(
        "SELECT kind, difficulty, count(*) FROM trajectories WHERE status = 'verified' "
        "GROUP BY ALL ORDER BY ALL").fetchall()
    total = con.execute("SELECT count(*), count(*) FILTER (WHERE status = 'verified'), "
                        "count(*) FILTER (WHERE status = 'verified' AND error_recovery) "
                        "FROM trajectories").fetchone()
    model_hash = con.execute("SELECT any_value(model_hash) FROM trajectories").fetchone()
    rounds_run = (con.execute("SELECT max(round) FROM tasks").fetchone() or [0])[0]
    con.close()
    assert total is not None
    print(json.dumps({
        "elapsed_s": round(elapsed, 2), "trajectories": total[0], "verified": total[1],
        "verified_per_s": round(total[1] / elapsed, 1),
        "cpu_s": round(cpu, 1), "verified_per_cpu_s": round(total[1] / cpu, 2),
        "attempts_per_s": round(total[0] / elapsed, 1),
        "verified_error_recovery": total[2],
        "verified_mix": {f"{k}/{d}": n for k, d, n in mix},
        "model_hash": model_hash[0] if model_hash else None,
        "workers": args.workers, "rounds": args.rounds, "tasks_per_round": args.tasks_per_round,
        "rounds_run": rounds_run,
        "via": args.via, "status": status, "reject_reasons": reasons}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

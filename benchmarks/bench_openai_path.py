"""OpenAI path overhead: throughput against a local endpoint with fixed latency L and
concurrency C, as a fraction of the ideal C/L requests per second.

    python benchmarks/bench_openai_path.py --latency 0.5 --concurrency 32 --tasks 256

Starts `python -m forge serve-teacher --latency L` (the offline teacher behind HTTP, so every
request costs L plus the server's own work), runs `forge generate --teacher openai` on a fresh
store and prints one JSON line. `solve_req_per_s` counts the solve phase only (episodes in
flight from a queue; the proposal prompts of a round are a barrier of their own and are reported
separately); `steady_req_per_s` counts the generated round while its task queue is not empty
(C episodes in flight: what a long run sustains); `run_req_per_s` is the whole run including
the proposal barrier and the tails of the two solve phases (seeds, round 1).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from forge.synth.loop import GenerateConfig, Generator
from forge.teacher.serve import local_server

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.5)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--tasks", type=int, default=256, help="tasks of the one generated round")
    ap.add_argument("--model", default="auto")
    args = ap.parse_args()
    with local_server("--latency", str(args.latency), "--model", args.model) as url:
        db = str(Path(tempfile.mkdtemp(prefix="forge-bench-oai-")) / "b.duckdb")
        cfg = GenerateConfig(rounds=1, tasks_per_round=args.tasks, teacher="openai",
                             base_url=url, concurrency=args.concurrency, db=db,
                             model=args.model)
        g = Generator(cfg, log=lambda m: None)
        g.prepare()
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        g.solve("t.source = 'seed'", [], 0)
        t_seed = time.perf_counter() - t0
        calls_seed = g.teacher.stats["calls"]
        t1 = time.perf_counter()
        g.propose(1)
        t_prop = time.perf_counter() - t1
        calls_prop = g.teacher.stats["calls"] - calls_seed
        t2 = time.perf_counter()
        g.solve("t.gen_run_id = ? AND t.round = ?", [g.gen_run_id, 1], 1)
        t_solve = time.perf_counter() - t2
        # Steady state of the round: from its start until the task queue drained (after
        # that, fewer than C episodes remain: the round's tail).
        start, drained = g.solve_started_at, g.queue_drained_at or time.monotonic()
        steady_calls = sum(1 for x in g.teacher.call_times if start <= x <= drained)
        steady_rate = steady_calls / max(drained - start, 1e-9)
        calls_solve = g.teacher.stats["calls"] - calls_seed - calls_prop
        total = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        usage = g.teacher.usage()
        g.close()
    ideal = args.concurrency / args.latency
    solve_rate = (calls_seed + calls_solve) / (t_seed + t_solve)
    print(json.dumps({
        "latency_s": args.latency, "concurrency": args.concurrency,
        "ideal_req_per_s": round(ideal, 1),
        "steady_req_per_s": round(steady_rate, 1),
        "steady_pct_of_ideal": round(100 * steady_rate / ideal, 1),
        "steady_window_s": round(drained - start, 1),
        "solve_req_per_s": round(solve_rate, 1),
        "solve_pct_of_ideal": round(100 * solve_rate / ideal, 1),
        "run_req_per_s": round(usage["calls"] / total, 1),
        "run_pct_of_ideal": round(100 * usage["calls"] / total / ideal, 1),
        "calls": usage["calls"], "proposal_calls": calls_prop,
        "proposal_phase_s": round(t_prop, 2), "elapsed_s": round(total, 2),
        "mean_call_latency_s": round(usage["latency_s"] / max(usage["calls"], 1), 3),
        "retries": usage["retries"],
        # Requests in flight on average, against C: what the pipeline keeps busy whatever the
        # endpoint's own overhead (its latency beyond L is the endpoint's, not ours).
        "mean_in_flight": round(usage["latency_s"] / total, 1),
        "client_cpu_s": round(cpu, 1), "client_cpu_ms_per_call": round(
            1000 * cpu / max(usage["calls"], 1), 2),
        "verified": g.stats["verified_added"], "trajectories": g.stats["trajectories_added"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

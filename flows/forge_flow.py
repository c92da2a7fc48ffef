"""The Prefect flow `forge` and its deployments `generate`, `seed`, `calibrate` (and `curate`
when forge.curate is installed).

    prefect server start                                   # terminal 1 (UI on :4200)
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python -m flows.forge_flow serve                       # terminal 2: serves the deployments
    prefect deployment run forge/generate --param rounds=2 --watch

The flow is thin: every step is a library call (forge.synth.loop.Generator). Tasks are coarse -
one per proposal round and one per solved round (or one per batch of `batch_size` tasks with
`fan_out=true`) - so Prefect's per-task overhead is a small fraction of a run. Only tasks that
talk to an LLM endpoint retry. Only the flow's process writes DuckDB; with `fan_out=true` the
batch tasks compute rows (they may run on Dask/Ray workers) and the flow writes them.

The OpenAI API key is never a parameter (Prefect stores parameters): it is read from
$FORGE_OPENAI_API_KEY / $OPENAI_API_KEY in the process running the flow, or from the Prefect
Secret block named by `api_key_secret_block`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from forge.synth.loop import GenerateConfig, Generator, _solve_offline, ensure_in_process

REPO = Path(__file__).resolve().parents[1]
NETWORK_RETRIES = 3


def _cfg(params: dict[str, Any]) -> GenerateConfig:
    names = {f.name for f in dataclasses.fields(GenerateConfig)}
    return GenerateConfig(**{k: v for k, v in params.items() if k in names})


# The flow's Generator (DuckDB connection, event loop, worker pool), shared by its tasks. Tasks
# that use it run in the flow's process; `solve_batch_task` does not touch it.
_GEN: dict[str, Generator] = {}


def _gen(cfg: GenerateConfig) -> Generator:
    g = _GEN.get(cfg.run_id())
    if g is None:
        g = _GEN[cfg.run_id()] = Generator(cfg, log=lambda m: get_run_logger().info(m))
    return g


@task(name="prepare", retries=0)
def prepare_task(params: dict[str, Any]) -> int:
    g = _gen(_cfg(params))
    g.prepare()
    return int(g.stats["seed_tasks_added"])


@task(name="propose")
def propose_task(params: dict[str, Any], rnd: int) -> int:
    return _gen(_cfg(params)).propose(rnd)


@task(name="solve-round")
def solve_round_task(params: dict[str, Any], rnd: int) -> int:
    g = _gen(_cfg(params))
    where = ("t.source = 'seed'", []) if rnd == 0 else \
        ("t.gen_run_id = ? AND t.round = ?", [g.gen_run_id, rnd])
    return g.solve(where[0], where[1], rnd)


@task(name="solve-batch", retries=0)
def solve_batch_task(params: dict[str, Any], items: list[Any]) -> list[dict[str, Any]]:
    """Pure compute (offline teacher): runs anywhere a task runner puts it."""
    ensure_in_process(_cfg(params))
    return _solve_offline(items)


def _fan_out(params: dict[str, Any], rnd: int) -> int:
    g = _gen(_cfg(params))
    from forge.synth import store

    where = ("t.source = 'seed'", []) if rnd == 0 else \
        ("t.gen_run_id = ? AND t.round = ?", [g.gen_run_id, rnd])
    todo = store.unsolved_tasks(g.con, where[0], where[1])
    bs = g.cfg.batch_size
    futures = solve_batch_task.map(
        [params] * len(range(0, len(todo), bs)),
        [[g._item(t, rnd) for t in todo[i:i + bs]] for i in range(0, len(todo), bs)])
    for fut in futures:
        g.write(fut.result())
    return len(todo)


def _generate(params: dict[str, Any], fan_out: bool) -> dict[str, Any]:
    from forge.synth import store

    cfg = _cfg(params)
    g = _gen(cfg)
    net = cfg.teacher == "openai"
    # Retries only where a network call can fail transiently.
    propose = propose_task.with_options(retries=NETWORK_RETRIES if net else 0,
                                        retry_delay_seconds=[5, 30, 120])
    solve = solve_round_task.with_options(retries=NETWORK_RETRIES if net else 0,
                                          retry_delay_seconds=[5, 30, 120])
    store.start_run(g.con, g.gen_run_id, cfg.run_params())
    status = "failed"
    try:
        if net:
            g._run_async(g.teacher.preflight())
        prepare_task(params)
        rounds = [0] if cfg.solve_seeds else []
        for rnd in rounds + list(range(1, cfg.rounds + 1)):
            if rnd:
                propose(params, rnd)
            n = _fan_out(params, rnd) if fan_out and not net else solve(params, rnd)
            get_run_logger().info(f"round {rnd}: solved {n} tasks; {dict(g.stats)}")
            if rnd and g.reached_target():
                break
        status = g.end_status()   # a run that produced nothing says so (and the flow fails)
    finally:
        g.close()
        stats = {**dict(g.stats), "reject_reasons": dict(g.reasons)}
        store.finish_run(g.con, g.gen_run_id, status, stats)
        g.con.close()
        _GEN.pop(cfg.run_id(), None)
    if status == "empty":
        raise RuntimeError(f"generation run {g.gen_run_id} produced nothing: no task was "
                           "accepted and no trajectory verified (see task_rejects, llm_faults)")
    return {"gen_run_id": g.gen_run_id, "status": status, **dict(g.stats)}


@flow(name="forge", log_prints=True)
def forge(stage: str = "generate", rounds: int = 2, tasks_per_round: int = 64,
          teacher: str = "offline", concurrency: int = 8, db: str | None = None, seed: int = 0,
          model: str = "auto", workers: int = 0, base_url: str | None = None,
          llm_model: str | None = None, max_tokens_total: int | None = None,
          fan_out: bool = False, api_key_secret_block: str | None = None,
          grid: str = "small", n: int | None = None, target: str = "50k",
          allow_short: bool = False, target_verified: int | None = None,
          action_share: float = 0.5, request_timeout: float = 120.0, max_tokens: int = 1024,
          proposal_max_tokens: int = 4096, agents: list[str] | None = None, k: int = 4,
          sample: int | None = None, name: str = "default", ns3_check: int = 0,
          extra_args: list[str] | None = None) -> dict[str, Any]:
    """One flow for every stage. generate: grow the trajectory pool (forge.synth);
    seed: ns-3 runs (grid, n); calibrate: train the Experiment Model; curate: forge.curate
    (target, allow_short). generate also takes target_verified (stop once the store holds that
    many verified trajectories), action_share (action/qa mix asked of the teacher), and for
    slow endpoints request_timeout (seconds per request), max_tokens (per solving turn) and
    proposal_max_tokens (per proposal call). bench: `forge bench` (agents, k, sample, name,
    ns3_check, extra_args: more `forge bench` flags); train-sft / train-rl: `forge train
    sft|rl` (extra_args: its command-line flags, e.g. ["--quick"])."""
    if stage == "generate":
        if api_key_secret_block:
            from forge.teacher.openai_client import SECRET_BLOCK_ENV

            os.environ[SECRET_BLOCK_ENV] = api_key_secret_block
        params = {"rounds": rounds, "tasks_per_round": tasks_per_round, "teacher": teacher,
                  "concurrency": concurrency, "db": db, "seed": seed, "model": model,
                  "workers": workers, "base_url": base_url, "llm_model": llm_model,
                  "max_tokens_total": max_tokens_total, "target_verified": target_verified,
                  "action_share": action_share, "request_timeout": request_timeout,
                  "max_tokens": max_tokens, "proposal_max_tokens": proposal_max_tokens}
        return _generate(params, fan_out)
    from forge.__main__ import main as cli

    argv: list[str]
    if stage == "seed":
        argv = ["seed", "--grid", grid, "--seed", str(seed), "--quiet"] + \
            (["--n", str(n)] if n else [])
    elif stage == "calibrate":
        argv = ["calibrate", "--seed", str(seed), "--quiet"]
    elif stage == "bench":
        argv = ["bench", "--k", str(k), "--seed", str(seed), "--name", name,
                "--ns3-check", str(ns3_check)] + [a for x in agents or [] for a in ("--agent", x)]
        argv += (["--sample", str(sample)] if sample else []) + list(extra_args or [])
    elif stage in ("train-sft", "train-rl"):
        argv = ["train", stage.removeprefix("train-"), *(extra_args or [])]
    elif stage == "curate":
        if importlib.util.find_spec("forge.curate") is None:
            raise RuntimeError("forge.curate is not installed in this checkout")
        from forge.curate.__main__ import main as curate_main

        cargs = ["--target", target, "--seed", str(seed), "--quiet"] + \
            (["--allow-short"] if allow_short else []) + (["--db", db] if db else [])
        rc = curate_main(cargs)
        if rc != 0:
            raise RuntimeError(f"`python -m forge.curate {' '.join(cargs)}` exited with {rc}")
        return {"stage": stage, "exit_code": rc}
    else:
        raise ValueError(f"unknown stage {stage!r} ({' | '.join(stages())})")
    if db and not stage.startswith("train"):
        argv += ["--db", db]
    rc = cli(argv)
    if rc != 0:
        raise RuntimeError(f"`python -m forge {' '.join(argv)}` exited with {rc}")
    return {"stage": stage, "exit_code": rc}


def stages() -> list[str]:
    out = ["generate", "seed", "calibrate", "bench", "train-sft", "train-rl"]
    if importlib.util.find_spec("forge.curate") is not None:
        out.append("curate")
    return out


def deployments() -> list[Any]:
    return [forge.to_deployment(name=s, parameters={"stage": s},
                                description=f"forge stage `{s}`") for s in stages()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.forge_flow",
                                 description="Serve or deploy the forge flow's deployments.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("serve", help="serve every deployment from this process (no work pool)")
    d = sub.add_parser("deploy", help="register the deployments on a process work pool")
    d.add_argument("--pool", default="forge-pool", help="work pool name (default: forge-pool)")
    args = ap.parse_args(argv)
    if args.cmd == "serve":
        from prefect import serve

        serve(*deployments())
        return 0
    src: Any = forge.from_source(source=str(REPO), entrypoint="flows/forge_flow.py:forge")
    for s in stages():
        src.deploy(name=s, work_pool_name=args.pool, parameters={"stage": s})
    print(f"deployed {', '.join('forge/' + s for s in stages())} on work pool {args.pool}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

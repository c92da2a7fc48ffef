"""`python -m forge`: the command line of every stage.

Each subcommand is a thin wrapper: it parses flags, opens the store and calls the library.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from forge import db as fdb


def _add_db(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default=None,
                   help=f"DuckDB store (default: ${fdb.DB_ENV} or ./{fdb.DEFAULT_DB})")


def cmd_seed(args: argparse.Namespace) -> int:
    from forge.ns3.corpus import export_corpus, import_corpus
    from forge.ns3.grid import load_grid, noise_floor_grid
    from forge.ns3.sweep import run_sweep

    con = fdb.connect(args.db)
    if not args.no_import:
        added = import_corpus(con)
        if added:
            print(f"imported {added} shipped runs from corpora/ns3/")
    if args.noise_floor:
        scns = noise_floor_grid(args.noise_floor, args.noise_runs)
        split = "noise_floor"
    else:
        scns = load_grid(args.grid, args.n, args.seed)
        split = None
    rep = run_sweep(scns, con, workers=args.workers, timeout_s=args.timeout, split=split,
                    retry_failed=args.retry_failed, show_progress=not args.quiet)
    print(json.dumps({"requested": rep.requested, "skipped_already_stored": rep.skipped,
                      "ok": rep.ok, "failed": rep.failed, "timeout": rep.timeout}))
    for e in rep.errors[:10]:
        print("  error:", e, file=sys.stderr)
    if args.export:
        print("exported:", export_corpus(con, Path(args.export)))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from forge.experiment_model.calibrate import CalibrateConfig, calibrate

    cfg = CalibrateConfig(out_dir=Path(args.out), epochs=args.epochs, ensemble=args.ensemble,
                          seed=args.seed, paired_weight=args.paired_weight,
                          handover_loss=args.handover_loss, handover_head=args.handover_head,
                          arch=args.arch)
    con = fdb.connect(args.db)
    if not args.no_import:
        from forge.ns3.corpus import import_corpus

        import_corpus(con)
    report = calibrate(con, cfg, show_progress=not args.quiet)
    print(json.dumps(report["summary"], indent=2))
    return 0


def cmd_schemas(args: argparse.Namespace) -> int:
    from forge.contracts import write_schemas

    for path in write_schemas():
        print("wrote", path)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m forge",
        description="forge: closed-loop tool-use trajectories for mobile-network agents.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("seed", help="run ns-3 scenarios into the ns3_runs table",
                       description="Sample scenarios and simulate them in real ns-3 (LTE/EPC). "
                       "Runs already stored are skipped; failures are recorded and skipped.")
    _add_db(p)
    p.add_argument("--grid", default="small",
                   help="tiny | small | default | a JSONL file of scenarios (default: small)")
    p.add_argument("--n", type=int, default=None, help="number of scenarios (grid's own default)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed of the grid")
    p.add_argument("--workers", type=int, default=2, help="parallel ns-3 processes")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per run before timeout")
    p.add_argument("--retry-failed", action="store_true", help="re-run stored failed runs")
    p.add_argument("--noise-floor", type=int, default=0, metavar="N",
                   help="instead of a grid: N scenarios under several RngRun values")
    p.add_argument("--noise-runs", type=int, default=4, help="RngRun values per noise scenario")
    p.add_argument("--export", default=None, metavar="DIR",
                   help="export the whole store's runs to Parquet in DIR (e.g. corpora/ns3)")
    p.add_argument("--no-import", action="store_true",
                   help="do not import the shipped corpus into the store first")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_seed)

    p = sub.add_parser("calibrate", help="train and evaluate the Experiment Model",
                       description="Train the Experiment Model on the calibration split, "
                       "evaluate on the held-out split, write model + report + plot.")
    _add_db(p)
    p.add_argument("--out", default="corpora/experiment_model", help="output directory")
    p.add_argument("--epochs", type=int, default=None,
                   help="training epochs (default: 60 for sets, 35 for mlp)")
    p.add_argument("--ensemble", type=int, default=None, help="ensemble members")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--paired-weight", type=float, default=0.0,
                   help="weight of the paired (effect-of-change) loss on the store's calibration "
                        "pairs (python -m forge.ns3.pairs); 0 = off")
    p.add_argument("--handover-loss", choices=("poisson", "log1p"), default="poisson",
                   help="the handover count's loss: poisson (the prediction is the expected "
                        "count) or log1p (Huber on log1p of the count, as models before it)")
    p.add_argument("--handover-head", choices=("glm", "net"), default="glm",
                   help="what predicts handover counts: glm (a Poisson regression on walked "
                        "distance, border distance and handover settings) or net (the "
                        "ensemble's own output)")
    p.add_argument("--arch", choices=("mlp", "sets"), default="sets",
                   help="the network: sets (a learned embedding of every UE of its serving cell, "
                        "pooled over the cell, joins each UE's features; docs/"
                        "experiment_model.md; the shipped model) or mlp (one "
                        "row per UE: the model shipped before, and the only one with the paired "
                        "loss)")
    p.add_argument("--no-import", action="store_true",
                   help="do not import the shipped corpus into the store first")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_calibrate)

    from forge.synth.cli import add_config_args, cmd_generate, cmd_serve_teacher

    p = sub.add_parser("generate", help="grow the pool of verified trajectories (Self-Instruct)",
                       description="Propose tasks from the seed pool with a teacher, solve them "
                       "in closed loop in the gym, verify and store them. A killed run started "
                       "again with the same flags continues where it stopped. The OpenAI API key "
                       "is read from $FORGE_OPENAI_API_KEY / $OPENAI_API_KEY, never a flag.")
    add_config_args(p)
    p.add_argument("--json", action="store_true", help="print the run's statistics as JSON")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("serve-teacher", help="serve the offline teacher as an OpenAI-compatible "
                       "/v1/chat/completions endpoint",
                       description="Serve the offline teacher over HTTP on localhost.")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--model", default="auto",
                   help="Experiment Model: auto | experiment | closed-form (default: auto)")
    p.add_argument("--latency", type=float, default=0.0,
                   help="seconds added to every request (benchmarks; default: 0)")
    p.add_argument("--error-rate", type=float, default=0.0,
                   help="fraction of requests answered 429/503 (retry tests; default: 0)")
    p.add_argument("--mistake-rate", type=float, default=0.03,
                   help="planner's rate of wrong tool calls it then recovers from")
    p.set_defaults(func=cmd_serve_teacher)

    p = sub.add_parser("schemas", help="regenerate schemas/*.json from the pydantic models",
                       description="Write the JSON Schemas of forge's contracts to schemas/.")
    p.set_defaults(func=cmd_schemas)

    from forge.bench.cli import add_parser as add_bench

    add_bench(sub)

    from forge.train.cli import add_parser as add_train

    add_train(sub)

    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except fdb.ForgeError as e:
        # Bad input from the user: one clear line, no traceback.
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

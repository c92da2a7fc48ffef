"""Flags of `python -m forge generate` from `GenerateConfig` (one place for names and help)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from forge.synth.loop import GenerateConfig, GenerateReport, run_generate


def add_config_args(p: argparse.ArgumentParser, cls: Any = GenerateConfig) -> None:
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        help_ = f.metadata.get("help", "")
        default = f.default
        if f.type in ("bool", bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                           help=help_)
            continue
        typ = {"int": int, "float": float, "str": str, "int | None": int,
               "str | None": str}.get(str(f.type), str)
        p.add_argument(flag, type=typ, default=default,
                       help=f"{help_} (default: {default})")


def config_from_args(args: argparse.Namespace, cls: Any = GenerateConfig) -> Any:
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def cmd_generate(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    report: GenerateReport = run_generate(cfg)
    print(report.summary())
    if args.json:
        print(json.dumps(report.stats, indent=2))
    return 0 if report.status in ("completed", "budget_exhausted") else 1


def cmd_serve_teacher(args: argparse.Namespace) -> int:
    from forge.teacher.serve import serve

    print(f"offline teacher on http://{args.host}:{args.port}/v1 (Ctrl-C to stop)",
          file=sys.stderr)
    serve(args.host, args.port, args.model, args.latency, args.error_rate, args.mistake_rate)
    return 0

"""`python -m forge train ...`: the command line of the training stages (thin: flags -> config
-> library). `add_parser(subparsers)` registers `train` on forge's main parser;
`python -m forge.train.cli sft ...` runs the same without it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from forge.db import ForgeError
from forge.train.sft import SFTRunConfig

_TYPES: dict[str, Any] = {"int": int, "float": float, "str": str}


def add_config_args(p: argparse.ArgumentParser, cls: Any) -> None:
    """One flag per dataclass field, with the field's help and default."""
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        help_ = f.metadata.get("help", "")
        if str(f.type) in ("bool", "<class 'bool'>"):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,
                           help=help_)
        else:
            # The parser's ArgumentDefaultsHelpFormatter appends the default.
            p.add_argument(flag, type=_TYPES.get(str(f.type), str), default=f.default,
                           help=help_)


def cmd_sft(args: argparse.Namespace) -> int:
    from forge.train.sft import run_sft

    cfg = SFTRunConfig(**{f.name: getattr(args, f.name)
                          for f in dataclasses.fields(SFTRunConfig)})
    m = run_sft(cfg)
    if getattr(args, "json", False):
        print(json.dumps({k: v for k, v in m.items() if k != "history"}, default=str))
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `train` (with `sft`) on an argparse subparsers object."""
    p = subparsers.add_parser("train", help="train a model on a curated export (SFT, then RL)",
                              description="Train agents on forge data with TRL.")
    sub = p.add_subparsers(dest="train_command", required=True, metavar="STAGE")
    s = sub.add_parser(
        "sft", help="supervised fine-tuning, loss on the agent's own tokens",
        description="TRL SFTTrainer on an export of `python -m forge.curate` (text rendering). "
                    "Loss only on assistant tokens; system, user and tool (<ans>) messages are "
                    "context. Writes OUT/checkpoint (load with "
                    "forge.train.model.load_checkpoint), OUT/metrics.json, OUT/loss.png.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_args(s, SFTRunConfig)
    s.add_argument("--json", action="store_true", help="print the metrics as one JSON line")
    s.set_defaults(func=cmd_sft)
    from forge.train.rl import RLRunConfig

    r = sub.add_parser(
        "rl", help="entropy-aware GSPO in the gym from an SFT checkpoint",
        description="TRL GRPOTrainer (GSPO, clip-higher) on closed-loop rollouts in the gym "
                    "(forge.train.rl). Writes OUT/checkpoint, OUT/metrics.json, OUT/rl.png.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_args(r, RLRunConfig)
    r.set_defaults(func=cmd_rl)
    return p


def cmd_rl(args: argparse.Namespace) -> int:
    from forge.train.rl import RLRunConfig, run_rl

    run_rl(RLRunConfig(**{f.name: getattr(args, f.name)
                          for f in dataclasses.fields(RLRunConfig)}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forge.train.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    # The same parser tree as `python -m forge train`, minus the `train` word.
    tp = add_parser(sub)
    args = parser.parse_args(["train", *(argv if argv is not None else sys.argv[1:])])
    del tp
    try:
        return int(args.func(args))
    except ForgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

"""`python -m forge.curate --target 50k`: build, store and export a curated set.

Every option is a `CurateConfig` field (forge/curate/config.py holds the help texts); the
argument parser is generated from the dataclass so the two cannot drift apart.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from typing import Any

from forge.curate.config import CurateConfig, CurateError, parse_count
from forge.curate.pipeline import CurateSummary, run


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m forge.curate",
        description="Curate the verified pool of forge.duckdb into a training set "
                    "(docs/curation.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in fields(CurateConfig):
        flag = "--" + f.name.replace("_", "-")
        help_ = f.metadata["help"]
        if f.type in ("bool", bool):
            ap.add_argument(flag, action="store_true", help=help_)
        elif f.name == "target":
            ap.add_argument(flag, default=str(f.default), help=help_)
        else:
            typ: Any = {"int": int, "float": float}.get(str(f.type), str)
            ap.add_argument(flag, type=typ, default=f.default, help=help_)
    return ap


def print_summary(s: CurateSummary) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    if not con.is_terminal:
        con = Console(width=120)   # piped or logged: don't truncate the columns to 80
    t = Table(title=f"{s.name}: {s.n_members:,} samples"
                    + (" (up to date, nothing recomputed)" if s.up_to_date else ""))
    for c in ("stage", "in", "dropped", "out", "seconds"):
        t.add_column(c, justify="left" if c == "stage" else "right")
    for r in s.stages:
        t.add_row(r["stage"] + (" (cached)" if r.get("cached") else ""), f"{r['in']:,}",
                  f"{r['dropped']:,}", f"{r['out']:,}", f"{r['seconds']:.1f}")
    con.print(t)
    b = Table(title="balance: requested vs achieved")
    for c in ("dimension", "bucket", "requested", "cap", "available", "achieved", "short",
              "filled from"):
        b.add_column(c)
    for r in s.balance:
        if r["dimension"] in ("kind", "difficulty", "error_recovery") or r["achieved"]:
            b.add_row(r["dimension"], r["bucket"], str(r["requested"] or ""),
                      str(r["cap"] or ""), str(r["available"]), str(r["achieved"]),
                      str(r["short"]), r["filled_from"] or "")
    con.print(b)
    con.print("splits: " + ", ".join(f"{k} {v:,}" for k, v in sorted(s.splits.items()))
              + f"; export: {s.export_dir}; {s.seconds:.1f} s")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        kw = vars(args)
        kw["target"] = parse_count(kw["target"])
        cfg = CurateConfig(**kw)
        summary = run(cfg, argv=argv)
    except CurateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_summary(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

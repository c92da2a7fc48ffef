"""Curation (issue 5): turn the verified pool in forge.duckdb into a named, reproducible,
balanced, leak-free training set, browsable in SQL and exported for TRL.

    python -m forge.curate --target 50k

Stages (forge.curate.stages): verified -> exact -> near_instruction -> near_trajectory ->
semantic -> balance (forge.curate.balance) -> splits (forge.curate.splits) -> export
(forge.curate.export). Orchestration, caching and the atomic swap: forge.curate.pipeline.
Tables: forge/migrations/0003_curation.sql. Docs: docs/curation.md.
"""

from forge.curate.config import (
    CurateConfig,
    CurateError,
    CurateOptionError,
    QuotaShortError,
    parse_count,
)
from forge.curate.pipeline import CurateSummary, run

__all__ = ["CurateConfig", "CurateError", "CurateOptionError", "CurateSummary",
           "QuotaShortError", "parse_count", "run"]

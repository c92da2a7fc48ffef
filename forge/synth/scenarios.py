"""The scenario pool that tasks are tied to: the shipped NS-3 corpus plus sampled scenarios.

Both halves are reproducible without the store - the corpus from its Parquet files, the sampled
scenarios from their seeds - so `serve-teacher` in another process resolves the same scenario ids
as the generating process (DuckDB admits one writer per file; nobody else reads the store).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import duckdb

from forge.ns3.corpus import CORPUS_DIR
from forge.ns3.grid import sample_scenario
from forge.scenario import Scenario

SAMPLED_BASE = 7_000_000   # seeds of sampled scenarios: far from the ns-3 grids' seeds
DEFAULT_SAMPLED = 256
HANDOVER_EVERY = 4         # every 4th sampled scenario comes from the handover corner


@lru_cache(maxsize=8192)
def sampled(seed: int, handover: bool = False) -> Scenario:
    """The sampled scenario of `seed`, made once per process (scenarios are immutable; each seed
    task asked for its own three times per run start, ~1.5 s of a 3 x 512 benchmark)."""
    return sample_scenario(seed, handover=handover)


def corpus_scenarios(corpus_dir: Path = CORPUS_DIR) -> list[tuple[Scenario, str]]:
    """(scenario, 'ns3_corpus') for every successfully simulated scenario of the corpus."""
    f = corpus_dir / "ns3_runs.parquet"
    if not f.exists():
        return []
    con = duckdb.connect()
    try:
        rows = con.execute(
            f"SELECT DISTINCT scenario FROM read_parquet('{f}') WHERE status = 'ok' "
            "AND split IN ('calibration', 'heldout') ORDER BY 1").fetchall()
    finally:
        con.close()
    return [(Scenario.model_validate(json.loads(r[0])), "ns3_corpus") for r in rows]


@lru_cache(maxsize=4)
def scenario_pool(n_sampled: int = DEFAULT_SAMPLED, with_corpus: bool = True
                  ) -> dict[str, tuple[Scenario, str]]:
    """scenario_id -> (scenario, source). Deterministic for given arguments."""
    out: dict[str, tuple[Scenario, str]] = {}
    if with_corpus:
        for s, src in corpus_scenarios():
            out.setdefault(s.scenario_id, (s, src))
    for k in range(n_sampled):
        s = sampled(SAMPLED_BASE + k, handover=k % HANDOVER_EVERY == HANDOVER_EVERY - 1)
        out.setdefault(s.scenario_id, (s, "sampled"))
    return out


def full_pool(n_sampled: int = DEFAULT_SAMPLED) -> dict[str, Scenario]:
    """scenario_id -> scenario: the pool plus the seed tasks' scenarios (what every process -
    the loop, its workers, serve-teacher - resolves scenario ids against)."""
    from forge.synth.seeds import load_seeds

    out = {k: v[0] for k, v in scenario_pool(n_sampled).items()}
    for t in load_seeds():
        out.setdefault(t.scenario_id, t.scenario())
    return out

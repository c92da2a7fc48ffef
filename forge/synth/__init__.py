"""6G-Forge synthesis: grow a pool of verified closed-loop trajectories from seed tasks.

    from forge.synth import GenerateConfig, run_generate
    report = run_generate(GenerateConfig(rounds=2, tasks_per_round=64, db="forge.duckdb"))

Modules: `seeds` (hand-written seed tasks and their schema), `scenarios` (the scenario pool tasks
are tied to), `dedup` (ROUGE-L near-duplicate filter), `validate` (proposal parsing and checks),
`solve` (closed-loop episodes, verification), `store` (DuckDB reads and writes), `loop` (rounds,
resume, the run record).
"""

from typing import Any

__all__ = ["GenerateConfig", "GenerateReport", "run_generate"]


def __getattr__(name: str) -> Any:
    # Lazy: `python -m forge.synth.seeds` and the teacher import submodules without the loop.
    if name in __all__:
        from forge.synth import loop

        return getattr(loop, name)
    raise AttributeError(name)

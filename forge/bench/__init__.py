"""forge bench: closed-loop evaluation of network agents on held-out tasks (docs/bench.md).

    from forge.bench import BenchConfig, Bench
    rep = Bench(BenchConfig(agents=["noop", "teacher"], k=2)).run()
    rep["agents"]["teacher"]["success_rate"]
"""

from forge.bench.runner import DEFAULT_AGENTS, Bench, BenchConfig, run_episode, summarise
from forge.bench.tasks import BenchError, BenchTask, load_task_set

__all__ = ["DEFAULT_AGENTS", "Bench", "BenchConfig", "BenchError", "BenchTask", "load_task_set",
           "run_episode", "summarise"]

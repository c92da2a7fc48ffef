"""One BLAS/torch thread per worker process.

Why: the Experiment Model's forward pass is small numpy matrix products (a batch of ~20 UEs
through 256-wide layers). OpenBLAS starts one thread per core in every process; with one
worker process per core, N workers run N x N threads that spin-wait on each other. Measured on
the 2-core machine (docs/BENCHMARKS.md): offline generation with 2 forked workers ran 5.6x
slower with the default thread pools than with one thread each, and slower than a single
process. A single process (workers=1) is left alone: there the second core helps a little.
"""

from __future__ import annotations

import sys


def one_thread_per_worker() -> None:
    """Call first thing in a worker process (a pool initializer)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)
    if "torch" in sys.modules:  # never import torch just to tune it
        import torch

        torch.set_num_threads(1)

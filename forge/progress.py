"""Progress for long work when nobody watches a terminal.

A live rich bar renders nothing into a log file: a 60k-row embedding stage ran for 17 silent
minutes, and a 2-hour ns-3 sweep printed nothing until its end. `Milestones` says when a plain
progress line is due (every tenth of the work by default), so logs show how far a run got.
"""

from __future__ import annotations

import time


class Milestones:
    """`due(done)` is True once per `total // parts` units of work, and at the end."""

    def __init__(self, total: int, parts: int = 10) -> None:
        self.total = total
        self.step = max(total // parts, 1)
        self.next = self.step
        self.t0 = time.time()

    def due(self, done: int) -> bool:
        if done >= self.next or done >= self.total:
            self.next = (done // self.step + 1) * self.step
            return True
        return False

    def elapsed(self) -> float:
        return time.time() - self.t0

"""Run many scenarios in parallel ns-3 worker processes and store them in `ns3_runs`.

Each worker is a separate process that imports ns-3 once and then simulates scenario after
scenario. The parent hands out one scenario at a time and waits with a timeout, so a run that
hangs or crashes ns-3 (a segfault kills only that worker) is recorded as `timeout`/`failed` with
its error, the worker is replaced, and the sweep goes on. Results are written by the parent only,
one transaction per run, so a sweep killed at any point resumes by skipping the run ids that are
already stored.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import duckdb
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from forge import db as fdb
from forge.ns3.grid import split_of
from forge.progress import Milestones
from forge.scenario import Scenario

UE_COLUMNS = (
    "ue", "imsi", "serving_cell", "dl_offered_mbps", "ul_offered_mbps", "dl_throughput_mbps",
    "ul_throughput_mbps", "delay_ms", "ul_delay_ms", "jitter_ms", "loss_ratio", "ul_loss_ratio",
    "rsrp_dbm", "sinr_db", "handovers",
)


def run_id(scn: Scenario, ns3_version: str) -> str:
    import hashlib

    return hashlib.sha256(f"{scn.canonical_json()}|{ns3_version}".encode()).hexdigest()[:16]


# --- worker process -----------------------------------------------------------------------------
def _worker_main(conn: Connection, workroot: str) -> None:
    import signal

    from forge.ns3.simulate import _load_ns, simulate

    # Ctrl-C reaches the whole process group: the parent stops the sweep and its workers; a
    # worker that took the interrupt itself printed a traceback per worker into the user's
    # terminal (and then another when its result found the parent gone).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _load_ns()
        conn.send(("ready", None))
        k = 0
        while True:
            msg = conn.recv()
            if msg is None:
                return
            k += 1
            try:
                scn = Scenario.model_validate_json(msg)
                res = simulate(scn, Path(workroot) / f"run{k}")
                reply: tuple[str, Any] = ("ok", res)
            except Exception as e:  # the scenario failed; the worker itself is fine
                reply = ("failed", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}")
            conn.send(reply)
    except (BrokenPipeError, EOFError, ConnectionResetError):
        return  # the parent is gone (stopped or killed): nothing to report to


@dataclass
class _Worker:
    ctx: Any
    workroot: str
    proc: Any = None
    conn: Connection | None = None

    def start(self, import_timeout: float) -> None:
        parent, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_worker_main, args=(child, self.workroot), daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent
        if not parent.poll(import_timeout):
            self.kill()
            raise RuntimeError("ns-3 worker did not start (import of ns3 timed out)")
        try:
            parent.recv()
        except EOFError as e:
            raise RuntimeError("ns-3 worker died while importing ns3") from e

    def kill(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.proc = None

    def run(self, scn: Scenario, timeout: float, import_timeout: float) -> tuple[str, Any]:
        if self.proc is None or not self.proc.is_alive():
            self.start(import_timeout)
        assert self.conn is not None
        self.conn.send(scn.model_dump_json())
        if not self.conn.poll(timeout):
            self.kill()
            return "timeout", f"no result after {timeout:.0f} s"
        try:
            return self.conn.recv()  # type: ignore[no-any-return,unused-ignore]
        except (EOFError, ConnectionResetError):
            code = self.proc.exitcode if self.proc is not None else None
            self.kill()
            return "failed", f"ns-3 worker crashed (exit code {code})"

    def stop(self) -> None:
        if self.conn is not None and self.proc is not None and self.proc.is_alive():
            try:
                self.conn.send(None)
                self.proc.join(5)
            except (BrokenPipeError, OSError):
                pass
        self.kill()


# --- storage ------------------------------------------------------------------------------------
def cell_aggregates(scn: Scenario, ues: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-cell KPIs from per-UE KPIs (measured or predicted): one definition for both."""
    out = []
    for c, cell in enumerate(scn.cells):
        mine = [u for u in ues if u.get("serving_cell") == c]
        delays = [u["delay_ms"] for u in mine if u.get("delay_ms") is not None]
        sinrs = [u["sinr_db"] for u in mine if u.get("sinr_db") is not None]
        out.append({
            "cell": c,
            "active": cell.active,
            "n_ues": len(mine),
            "dl_offered_mbps": sum(u["dl_offered_mbps"] for u in mine),
            "dl_throughput_mbps": sum(u["dl_throughput_mbps"] for u in mine),
            "ul_throughput_mbps": sum(u["ul_throughput_mbps"] for u in mine),
            "mean_delay_ms": sum(delays) / len(delays) if delays else None,
            "mean_sinr_db": sum(sinrs) / len(sinrs) if sinrs else None,
        })
    return out


def store_run(con: duckdb.DuckDBPyConnection, scn: Scenario, status: str, result: Any,
              ns3_version: str, split: str) -> str:
    """Write one run (run row + UE rows + cell rows) in one transaction; return its run id."""
    rid = run_id(scn, ns3_version)
    ok = status == "ok"
    with fdb.transaction(con):
        con.execute("DELETE FROM ns3_ue_kpis WHERE run_id = ?", [rid])
        con.execute("DELETE FROM ns3_cell_kpis WHERE run_id = ?", [rid])
        con.execute("DELETE FROM ns3_runs WHERE run_id = ?", [rid])
        con.execute(
            "INSERT INTO ns3_runs (run_id, scenario_id, seed, family, split, status, error, "
            "scenario, n_cells, n_ues, rng_run, sim_time_s, wall_time_s, ns3_version) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [rid, scn.scenario_id, scn.seed, scn.family, split, status,
             None if ok else str(result)[:4000], scn.model_dump_json(), len(scn.cells),
             len(scn.ues), scn.rng_run, scn.sim_time_s,
             result.get("wall_time_s") if ok else None, ns3_version],
        )
        if ok:
            ues = result["ues"]
            con.executemany(
                f"INSERT INTO ns3_ue_kpis (run_id, {', '.join(UE_COLUMNS)}) "
                f"VALUES (?, {', '.join('?' for _ in UE_COLUMNS)})",
                [[rid, *(u[c] for c in UE_COLUMNS)] for u in ues],
            )
            cells = cell_aggregates(scn, ues)
            cols = list(cells[0])
            con.executemany(
                f"INSERT INTO ns3_cell_kpis (run_id, {', '.join(cols)}) "
                f"VALUES (?, {', '.join('?' for _ in cols)})",
                [[rid, *(c[k] for k in cols)] for c in cells],
            )
    return rid


# --- the sweep ----------------------------------------------------------------------------------
@dataclass
class SweepReport:
    requested: int = 0
    skipped: int = 0
    ok: int = 0
    failed: int = 0
    timeout: int = 0
    errors: list[str] = field(default_factory=list)


def run_sweep(
    scenarios: Iterable[Scenario],
    con: duckdb.DuckDBPyConnection,
    *,
    workers: int = 2,
    timeout_s: float = 300.0,
    split: str | Callable[[Scenario], str] | None = None,
    retry_failed: bool = False,
    show_progress: bool = True,
) -> SweepReport:
    """Simulate every scenario not yet stored; record failures and go on."""
    from forge.ns3.simulate import ns3_version

    version = ns3_version()
    scns = list(scenarios)
    rep = SweepReport(requested=len(scns))
    wanted = "status = 'ok'" if retry_failed else "TRUE"
    done = {r[0] for r in con.execute(f"SELECT run_id FROM ns3_runs WHERE {wanted}").fetchall()}
    todo: queue.Queue[Scenario] = queue.Queue()
    seen: set[str] = set()
    for s in scns:
        rid = run_id(s, version)
        if rid in done or rid in seen:
            rep.skipped += 1
            continue
        seen.add(rid)
        todo.put(s)
    n_todo = todo.qsize()
    if n_todo == 0:
        return rep

    def split_for(s: Scenario) -> str:
        if split is None:
            return split_of(s.seed)
        return split(s) if callable(split) else split

    lock = threading.Lock()
    ctx = mp.get_context("spawn")
    stop = threading.Event()
    with tempfile.TemporaryDirectory(prefix="forge-ns3-") as tmp, Progress(
        TextColumn("[bold]ns-3 sweep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"), disable=not show_progress,
    ) as progress:
        task = progress.add_task("sweep", total=n_todo, status="")
        # Into a log file the live bar renders nothing: print a line every twentieth instead.
        log_lines = show_progress and not progress.console.is_terminal
        marks = Milestones(n_todo, parts=20)

        def slot(k: int) -> None:
            w = _Worker(ctx, f"{tmp}/w{k}")
            try:
                while not stop.is_set():
                    try:
                        s = todo.get_nowait()
                    except queue.Empty:
                        return
                    try:
                        status, res = w.run(s, timeout_s, import_timeout=180.0)
                    except RuntimeError as e:
                        status, res = "failed", str(e)
                    with lock:
                        store_run(con, s, status, res, version, split_for(s))
                        setattr(rep, status, getattr(rep, status) + 1)
                        if status != "ok":
                            rep.errors.append(f"{s.scenario_id}: {str(res)[:200]}")
                        counts = f"ok={rep.ok} failed={rep.failed} timeout={rep.timeout}"
                        progress.update(task, advance=1, status=counts)
                        n_done = rep.ok + rep.failed + rep.timeout
                        if log_lines and marks.due(n_done):
                            progress.console.print(f"ns-3 sweep: {n_done} of {n_todo} runs "
                                                   f"({counts}), {marks.elapsed():.0f} s")
            finally:
                w.stop()

        threads = [threading.Thread(target=slot, args=(k,), daemon=True)
                   for k in range(max(1, min(workers, n_todo)))]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.5)
        except KeyboardInterrupt:
            stop.set()
            raise
    return rep

"""Real ns-3: determinism of the shipped corpus and a sweep end to end (slow: marked ns3)."""

from __future__ import annotations

import math

import duckdb
import pytest

from forge.ns3.corpus import CORPUS_DIR
from forge.ns3.grid import sample_grid
from forge.ns3.sweep import UE_COLUMNS, run_sweep
from forge.scenario import CellConfig, Scenario, UeConfig

pytestmark = pytest.mark.ns3


def _two_shipped_runs():
    q = duckdb.sql(
        f"SELECT run_id, scenario FROM read_parquet('{CORPUS_DIR / 'ns3_runs.parquet'}') "
        "WHERE status = 'ok' AND split = 'calibration' AND n_ues BETWEEN 4 AND 12 "
        "ORDER BY run_id LIMIT 2").fetchall()
    assert len(q) == 2, "the shipped corpus should hold small calibration runs"
    return q


def test_shipped_runs_resimulate_identically(tmp_path):
    from forge.ns3.simulate import simulate

    for run_id, scenario in _two_shipped_runs():
        scn = Scenario.model_validate_json(scenario)
        got = simulate(scn, tmp_path / run_id)["ues"]
        shipped = duckdb.sql(
            f"SELECT * FROM read_parquet('{CORPUS_DIR / 'ns3_ue_kpis.parquet'}') "
            f"WHERE run_id = '{run_id}' ORDER BY ue").fetchall()
        cols = duckdb.sql(
            f"SELECT * FROM read_parquet('{CORPUS_DIR / 'ns3_ue_kpis.parquet'}') LIMIT 0").columns
        assert len(got) == len(shipped) == len(scn.ues)
        for g, row in zip(got, shipped, strict=True):
            s = dict(zip(cols, row, strict=True))
            for c in UE_COLUMNS:
                a, b = g[c], s[c]
                if isinstance(a, float) and isinstance(b, float) and math.isnan(b):
                    assert math.isnan(a)
                elif isinstance(a, float) and isinstance(b, float):
                    # ns-3's trace is identical; numpy's SIMD mean over it may round the last bit
                    # differently from one process to the next (seen: 15.107032375223511 vs
                    # ...515), so floats agree to 1e-12 relative, not bit for bit.
                    assert a == pytest.approx(b, rel=1e-12, abs=1e-12), \
                        f"run {run_id} UE {g['ue']} {c}: {a} != shipped {b}"
                else:
                    assert a == b, f"run {run_id} UE {g['ue']} {c}: {a} != shipped {b}"


def test_sweep_end_to_end_resumes_and_records_failures(con, capsys):
    scns = sample_grid(2, seed=12345)
    scns = [s.model_copy(update={"ues": s.ues[:6], "cells": s.cells[:2]}) for s in scns]
    rep = run_sweep(scns, con, workers=1)
    assert (rep.ok, rep.failed, rep.timeout) == (2, 0, 0)
    # not a terminal: plain progress lines, so a log shows how far a long sweep got
    out = capsys.readouterr()
    assert "ns-3 sweep: 2 of 2 runs (ok=2 failed=0 timeout=0)" in out.out + out.err
    n_ue = con.execute("SELECT count(*) FROM ns3_ue_kpis").fetchone()[0]
    assert n_ue == sum(len(s.ues) for s in scns)
    # KPIs are physical: nobody receives (much) more than it was sent; delays are positive.
    bad = con.execute(
        "SELECT count(*) FROM ns3_ue_kpis WHERE dl_throughput_mbps > 1.1 * dl_offered_mbps "
        "OR delay_ms <= 0 OR rsrp_dbm IS NULL").fetchone()[0]
    assert bad == 0
    # resume: nothing is simulated twice
    again = run_sweep(scns, con, workers=1, show_progress=False)
    assert (again.skipped, again.ok) == (2, 0)
    # a run that exceeds its time budget is recorded as such, and the sweep goes on
    slow = Scenario(cells=[CellConfig()], sim_time_s=20.0,
                    ues=[UeConfig(x_m=100, y_m=0, dl_rate_mbps=20) for _ in range(10)])
    rep = run_sweep([slow], con, workers=1, timeout_s=1.0, show_progress=False)
    assert rep.timeout == 1
    row = con.execute("SELECT status, error FROM ns3_runs WHERE scenario_id = ?",
                      [slow.scenario_id]).fetchone()
    assert row[0] == "timeout" and "no result after" in row[1]

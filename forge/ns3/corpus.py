"""The shipped NS-3 seed corpus: Parquet files under corpora/ns3/ and their DuckDB tables.

The corpus is produced by `python -m forge seed` into the DuckDB store, then exported here so that
it ships with the repository and any engine can read it. A fresh store imports the shipped
corpus on first use, so a sweep over the same grid skips every run it already has.

The paired runs of `forge.ns3.pairs` travel with it: their runs are ordinary rows of the three
run tables, and `ns3_pairs.parquet` links each base run to its changed run.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from forge import db as fdb

CORPUS_DIR = Path(__file__).resolve().parents[2] / "corpora" / "ns3"
TABLES = ("ns3_runs", "ns3_ue_kpis", "ns3_cell_kpis")
# The side table of paired runs; exported with the runs and imported after them.
PAIRS_TABLE = "ns3_pairs"


def export_corpus(con: duckdb.DuckDBPyConnection, out_dir: Path = CORPUS_DIR) -> dict[str, int]:
    """Write every stored run (ok and failed) to Parquet, ordered so the files are stable."""
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    order = {"ns3_runs": "run_id", "ns3_ue_kpis": "run_id, ue", "ns3_cell_kpis": "run_id, cell",
             PAIRS_TABLE: "pair_id"}
    for t in (*TABLES, PAIRS_TABLE):
        tmp = out_dir / f".{t}.parquet.tmp"
        con.execute(
            f"COPY (SELECT * FROM {t} ORDER BY {order[t]}) TO '{tmp}' "
            "(FORMAT parquet, COMPRESSION zstd)"
        )
        tmp.replace(out_dir / f"{t}.parquet")  # atomic: readers never see half a file
        row = con.execute(f"SELECT count(*) FROM {t}").fetchone()
        counts[t] = int(row[0]) if row else 0
    return counts


def import_corpus(con: duckdb.DuckDBPyConnection, src_dir: Path = CORPUS_DIR) -> int:
    """Insert shipped runs the store does not have yet; return how many runs were added."""
    if not (src_dir / "ns3_runs.parquet").exists():
        return 0
    with fdb.transaction(con):
        before = con.execute("SELECT count(*) FROM ns3_runs").fetchone()
        # Children first: their filter looks at ns3_runs before the new runs are in it.
        for t in reversed(TABLES):
            con.execute(
                f"INSERT INTO {t} SELECT * FROM read_parquet('{src_dir / (t + '.parquet')}') "
                "WHERE run_id NOT IN (SELECT run_id FROM ns3_runs)"
            )
        after = con.execute("SELECT count(*) FROM ns3_runs").fetchone()
        pairs = src_dir / f"{PAIRS_TABLE}.parquet"
        if pairs.exists():  # corpora exported before pairs shipped have no such file
            con.execute(
                f"INSERT INTO {PAIRS_TABLE} SELECT * FROM read_parquet('{pairs}') "
                f"WHERE pair_id NOT IN (SELECT pair_id FROM {PAIRS_TABLE})"
            )
    return int(after[0]) - int(before[0]) if after and before else 0

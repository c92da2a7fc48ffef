import duckdb
import pytest

from forge import db
from forge.ns3.corpus import export_corpus, import_corpus
from forge.ns3.grid import sample_grid
from forge.ns3.sweep import store_run


def _fake_result(scn):
    """A result in simulate()'s shape, for storage tests only (no ns-3 involved)."""
    ues = [{"ue": i, "imsi": i + 1, "serving_cell": 0, "dl_offered_mbps": u.dl_rate_mbps,
            "ul_offered_mbps": u.ul_rate_mbps, "dl_throughput_mbps": u.dl_rate_mbps,
            "ul_throughput_mbps": u.ul_rate_mbps, "delay_ms": 10.0, "ul_delay_ms": None,
            "jitter_ms": 1.0, "loss_ratio": 0.0, "ul_loss_ratio": None, "rsrp_dbm": -80.0,
            "sinr_db": 10.0, "handovers": 0} for i, u in enumerate(scn.ues)]
    return {"ues": ues, "wall_time_s": 1.0, "ns3_version": "test"}


def test_migrations_create_the_documented_tables(con):
    rows = con.execute("SELECT table_name FROM information_schema.tables").fetchall()
    tables = {r[0] for r in rows}
    assert {"schema_version", "ns3_runs", "ns3_ue_kpis", "ns3_cell_kpis"} <= tables
    assert db.schema_version(con) == len(db.MIGRATIONS)
    assert db.migrate(con) == len(db.MIGRATIONS)  # idempotent


def test_newer_store_is_refused(tmp_path):
    p = tmp_path / "f.duckdb"
    c = db.connect(p)
    c.execute("INSERT INTO schema_version (version) VALUES (999)")
    c.close()
    with pytest.raises(db.ForgeError, match="newer than this forge"):
        db.connect(p)


def test_db_path_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv(db.DB_ENV, raising=False)
    assert str(db.db_path()) == "forge.duckdb"
    monkeypatch.setenv(db.DB_ENV, str(tmp_path / "x.duckdb"))
    assert db.db_path() == tmp_path / "x.duckdb"
    assert str(db.db_path("y.duckdb")) == "y.duckdb"


def test_store_run_is_atomic(con):
    scn = sample_grid(1)[0]
    res = _fake_result(scn)
    res["ues"][-1]["ue"] = "not-an-int"  # makes the last UE insert fail
    with pytest.raises(duckdb.Error):
        store_run(con, scn, "ok", res, "test", "calibration")
    for t in ("ns3_runs", "ns3_ue_kpis", "ns3_cell_kpis"):
        assert con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] == 0


def test_failed_runs_keep_their_error(con):
    scn = sample_grid(1)[0]
    store_run(con, scn, "timeout", "no result after 5 s", "test", "calibration")
    row = con.execute("SELECT status, error FROM ns3_runs").fetchone()
    assert row == ("timeout", "no result after 5 s")


def test_corpus_export_import_roundtrip(con, tmp_path):
    scns = sample_grid(3)
    for s in scns:
        store_run(con, s, "ok", _fake_result(s), "test", "calibration")
    ids = [r[0] for r in con.execute("SELECT run_id FROM ns3_runs ORDER BY run_id").fetchall()]
    # A pair links two of the runs; it travels with them.
    con.execute("INSERT INTO ns3_pairs (pair_id, base_run_id, changed_run_id, seed, split, grid, "
                "tool, args, description) VALUES ('p1', ?, ?, 0, 'calibration', 'pairs', "
                "'set_tx_power', '{\"cell\": 0}', 'cell 0 power 40 -> 43 dBm')", ids[:2])
    counts = export_corpus(con, tmp_path)
    assert counts["ns3_runs"] == 3
    assert counts["ns3_ue_kpis"] == sum(len(s.ues) for s in scns)
    assert counts["ns3_pairs"] == 1
    fresh = db.connect(":memory:")
    assert import_corpus(fresh, tmp_path) == 3
    assert import_corpus(fresh, tmp_path) == 0  # nothing twice
    for t in ("ns3_runs", "ns3_ue_kpis", "ns3_cell_kpis", "ns3_pairs"):
        a = con.execute(f"SELECT count(*) FROM {t}").fetchone()
        assert fresh.execute(f"SELECT count(*) FROM {t}").fetchone() == a
    assert fresh.execute("SELECT base_run_id, changed_run_id, tool FROM ns3_pairs").fetchone() \
        == (ids[0], ids[1], "set_tx_power")
    # A corpus exported before pairs shipped (no ns3_pairs.parquet) still imports.
    (tmp_path / "ns3_pairs.parquet").unlink()
    older = db.connect(":memory:")
    assert import_corpus(older, tmp_path) == 3
    assert older.execute("SELECT count(*) FROM ns3_pairs").fetchone() == (0,)

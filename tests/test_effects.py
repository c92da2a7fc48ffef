"""Paired runs (forge.ns3.pairs) and the effect-fidelity evaluation
(forge.experiment_model.effects), without ns-3: "measured" KPIs are planted."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from forge.experiment_model.effects import effect_metrics, effect_report, load_pairs
from forge.gym.closed_form import ClosedFormModel
from forge.gym.handlers import CONFIGURE
from forge.ns3.grid import split_of
from forge.ns3.pairs import (
    CHANGE_TOOLS,
    HOTSPOT_SPLIT,
    PairError,
    hotspot_grid,
    hotspot_scenario,
    pair_split,
    paired_grid,
    store_pairs,
)
from forge.ns3.sweep import run_id, store_run

VERSION = "ns3-test"


def test_pairs_are_made_by_the_gyms_configure_handlers():
    pairs = paired_grid(22, changes=3, seed=1)
    assert {p.tool for p in pairs} == set(CHANGE_TOOLS)  # every configure tool is exercised
    for p in pairs:
        assert p.changed.scenario_id != p.base.scenario_id
        # Exactly what the gym would produce for this call.
        assert CONFIGURE[p.tool](p.base, p.args).scenario.scenario_id == p.changed.scenario_id
        assert p.changed.seed == p.base.seed  # same split as the base
        assert len(p.base.ues) <= 24
    per_base: dict[int, set[str]] = {}
    for p in pairs:
        per_base.setdefault(p.base.seed, set()).add(p.tool)
    assert all(len(t) == 3 for t in per_base.values())  # three different tools per base
    again = paired_grid(22, changes=3, seed=1)
    assert [(p.base.scenario_id, p.changed.scenario_id) for p in pairs] == \
        [(p.base.scenario_id, p.changed.scenario_id) for p in again]


def test_hotspot_sampler_is_its_own_distribution():
    a = hotspot_scenario(700_000_001)
    assert a.scenario_id == hotspot_scenario(700_000_001).scenario_id
    assert a.family == "hotspot_test" and 2 <= len(a.cells) <= 6 and len(a.ues) <= 24
    pairs = hotspot_grid(6, changes=1)
    assert len({p.base.seed for p in pairs}) == len(pairs) >= 5
    with pytest.raises(PairError):
        paired_grid(0)
    with pytest.raises(PairError):
        hotspot_grid(3, changes=0)


def test_effect_metrics_count_signs_and_ranks():
    tb = np.array([1.0, 1.0, 1.0, 1.0, 1.0])
    ta = np.array([2.0, 0.5, 1.01, 1.3, 0.9])
    pb = np.ones(5)
    pa = np.array([1.5, 0.9, 1.0, 0.9, 1.0])   # UE 3 wrong sign, UE 4 predicted unchanged
    m = effect_metrics(tb, ta, pb, pa, 1e-3)
    # moved > 5 %: UEs 0, 1, 3, 4 -> right for 0 and 1 only (a zero prediction is no sign)
    assert m["n_moved_gt5"] == 4 and m["sign_agreement_gt5"] == pytest.approx(0.5)
    # moved > 20 %: UEs 0, 1, 3
    assert m["n_moved_gt20"] == 3 and m["sign_agreement_gt20"] == pytest.approx(2 / 3)
    perfect = effect_metrics(tb, ta, pb, ta, 1e-3)
    assert perfect["sign_agreement_gt5"] == 1.0 and perfect["spearman_delta"] == pytest.approx(1.0)
    # ranks over the moved UEs only (0, 1, 3, 4): predicted +0.5, -0.1, -0.1, 0 against true
    assert m["spearman_delta_moved_gt5"] == pytest.approx(
        float(spearmanr(pa[[0, 1, 3, 4]] - 1, ta[[0, 1, 3, 4]] - 1).statistic))
    assert perfect["spearman_delta_moved_gt5"] == pytest.approx(1.0)


def _plant(con, scn, predictor):
    """Store `scn` as an ok run whose "measured" KPIs are `predictor`'s prediction."""
    ues = [dict(u, imsi=i + 1, jitter_ms=0.0, handovers=0)
           for i, u in enumerate(predictor.predict([scn])[0].ues)]
    store_run(con, scn, "ok", {"ues": ues, "wall_time_s": 0.1}, VERSION, split_of(scn.seed))


def _store_planted(con, monkeypatch, pairs, truth):
    """Store `pairs` and plant each of their runs as `truth`'s prediction; returns `pairs`."""
    import forge.ns3.simulate as sim

    monkeypatch.setattr(sim, "ns3_version", lambda: VERSION)
    store_pairs(con, pairs, VERSION)
    for p in pairs:
        for s in (p.base, p.changed):
            if not con.execute("SELECT 1 FROM ns3_runs WHERE run_id = ?",
                               [run_id(s, VERSION)]).fetchone():
                _plant(con, s, truth)
    return pairs


def test_effects_of_a_predictor_against_itself_are_perfect(con, monkeypatch):
    truth = ClosedFormModel()
    pairs = _store_planted(con, monkeypatch, paired_grid(10, changes=2, seed=3), truth)
    loaded = load_pairs(con, "all")
    assert len(loaded) == len(pairs)
    held = load_pairs(con, "heldout")
    assert all(split_of(p.base.scenario.seed) == "heldout" for p in held)
    rep = effect_report(loaded, {"model": truth, "physics_prior": truth})
    thr = rep["model"]["dl_throughput_mbps"]["overall"]
    assert thr["n_moved_gt5"] > 0 and thr["sign_agreement_gt5"] == 1.0
    assert rep["model"]["delay_ms"]["overall"]["spearman_delta"] == pytest.approx(1.0)
    assert set(rep["model"]["dl_throughput_mbps"]["by_tool"]) <= set(CHANGE_TOOLS)
    assert sum(rep["n_pairs_by_tool"].values()) == len(loaded)
    assert HOTSPOT_SPLIT not in {p.split for p in loaded}


def test_effect_figures_go_into_the_report_of_their_model(con, monkeypatch, tmp_path):
    import json

    from forge.db import ForgeError
    from forge.experiment_model.effects import effects_section, merge_into_report

    truth = ClosedFormModel()
    _store_planted(con, monkeypatch, paired_grid(6, changes=2, seed=5)
                   + hotspot_grid(3, changes=1, seed=5), truth)
    sec = effects_section(con, truth, "all")
    assert sec["grid_pairs"]["n_pairs"] == 12 and sec["hotspot_pairs"]["n_pairs"] == 3
    assert sec["hotspot_absolute"]["model"]["dl_throughput_mbps"]["median_ape"] == 0.0
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"model_hash": truth.model_hash, "summary": {"x": 1}}))
    merge_into_report(report, sec)
    rep = json.loads(report.read_text())
    assert rep["effects"]["grid_pairs"]["model"]["delay_ms"]["by_tool"]
    head = rep["summary"]["effects"]
    assert head["grid_pairs"]["dl_sign_agreement_gt20"] in (1.0, None) and rep["summary"]["x"] == 1
    assert head["hotspot_dl_spearman"] == pytest.approx(1.0)
    report.write_text(json.dumps({"model_hash": "another-model"}))
    with pytest.raises(ForgeError, match="--model-dir"):
        merge_into_report(report, sec)


def test_no_pairs_table_says_how_to_make_pairs(con):
    from forge.db import ForgeError

    with pytest.raises(ForgeError, match=r"forge\.ns3\.pairs"):
        load_pairs(con, "all")


def test_calibrate_reports_effects_when_the_store_has_pairs(con, monkeypatch, tmp_path):
    import json

    from forge.experiment_model.calibrate import CalibrateConfig, calibrate

    truth = ClosedFormModel()
    pairs = _store_planted(con, monkeypatch, paired_grid(16, changes=1, seed=7)
                           + hotspot_grid(2, changes=1, seed=7), truth)
    assert {pair_split(p) for p in pairs} >= {"calibration", "heldout"}
    cfg = CalibrateConfig(out_dir=tmp_path, epochs=1, ensemble=1, hidden=16, layers=2)
    calibrate(con, cfg, show_progress=False)
    rep = json.loads((tmp_path / "report.json").read_text())
    eff = rep["effects"]
    assert eff["split"] == "heldout" and eff["model_hash"] == rep["model_hash"]
    assert eff["grid_pairs"]["n_pairs"] == sum(pair_split(p) == "heldout" for p in pairs
                                               if p.grid == "pairs")
    assert eff["hotspot_pairs"]["n_pairs"] == 2
    assert set(rep["summary"]["effects"]) >= {"grid_pairs", "hotspot_pairs",
                                              "hotspot_dl_spearman"}
    # The calibration plot gains the effect panel (a third, wider figure).
    import matplotlib.image

    assert matplotlib.image.imread(tmp_path / "calibration.png").shape[1] > 1700
    # Its points: the planted truth judged against itself moves every UE exactly as "ns-3" did.
    from forge.experiment_model.effects import effect_points

    pts = effect_points(load_pairs(con, "heldout", grid="pairs"), truth)
    assert len(pts["true"]) > 0 and np.allclose(pts["pred"], pts["true"])
    assert pts["moved"].any()


class _Scaled:
    """A planted "ns-3" whose runs under RngRun > 1 report `factor` times the throughput of
    the given UE (every other KPI as `truth`)."""

    def __init__(self, truth, ue: int, factor: float) -> None:
        self.truth, self.ue, self.factor = truth, ue, factor

    def predict(self, scns):
        out = self.truth.predict(scns)
        for s, p in zip(scns, out, strict=True):
            if s.rng_run > 1 and self.ue < len(p.ues):
                p.ues[self.ue]["dl_throughput_mbps"] *= self.factor
        return out


def test_replicates_measure_ns3_noise_on_the_pairs_themselves(con, monkeypatch):
    from forge.experiment_model.effects import effects_section, effects_summary
    from forge.ns3.pairs import replicate_grid, replicates, stored_pairs

    truth = ClosedFormModel()
    pairs = _store_planted(con, monkeypatch, paired_grid(8, changes=2, seed=7)
                           + hotspot_grid(3, changes=1, seed=7), truth)
    assert len(stored_pairs(con, "all")) == len(pairs)
    with pytest.raises(PairError):
        replicates(pairs, 0)
    reps = replicates(stored_pairs(con, "all"), 1)
    assert all(r.base.rng_run == 2 and r.changed.rng_run == 2 for r in reps)
    assert {pair_split(r) for r in reps if r.grid == replicate_grid("hotspot", 1)} == \
        {HOTSPOT_SPLIT}  # a hotspot replicate is never trained on either
    # Replicates that reproduce their pairs exactly: no noise, ns-3 always agrees with itself.
    _store_planted(con, monkeypatch, reps, truth)
    sec = effects_section(con, truth, "all")
    assert sec["grid_pairs"]["n_pairs"] == 16  # the replicates are not counted as pairs
    r = sec["grid_replicates"]
    assert r["n_pairs"] == 16 and r["noise_moved_gt20"] == 0.0
    assert r["n_moved_gt20"] > 0 and r["ns3_self_sign_agreement_gt20"] == 1.0
    assert r["n_reproducible_gt20"] == r["n_moved_gt20"] == r["n_mean_moved_gt20"]
    assert r["model"]["sign_agreement_reproducible_gt20"] == 1.0
    assert r["ns3_self_spearman_delta"] == pytest.approx(1.0)  # one run ranks the other's
    assert r["delta_spearman_ceiling"] == pytest.approx(1.0)
    assert r["model"]["spearman_delta"] == pytest.approx(1.0)  # the truth predicts itself
    assert effects_summary(sec)["hotspot_replicates"]["n_pairs"] == 3
    # Calibration and its held-out figures count every scenario once: replicate runs are out.
    from forge.experiment_model.calibrate import load_runs

    n_runs = con.execute("SELECT count(*) FROM ns3_runs WHERE split IN ('calibration', "
                         "'heldout', 'hotspot_test')").fetchone()[0]
    loaded = load_runs(con, ("calibration", "heldout", "hotspot_test"))
    assert all(r.scenario.rng_run == 1 for r in loaded)
    assert 0 < len(loaded) < n_runs


def test_replicate_noise_is_counted_against_the_base_runs(con, monkeypatch):
    from forge.experiment_model.effects import load_pairs, replicate_report
    from forge.ns3.pairs import replicate_grid, replicates

    truth = ClosedFormModel()
    pairs = _store_planted(con, monkeypatch, paired_grid(6, changes=2, seed=9), truth)
    # Every replicate run gives UE 0 three times the throughput: its base replicate differs
    # from its base by +200 % (noise), and the change's move on UE 0 keeps its sign.
    _store_planted(con, monkeypatch, replicates(pairs, 1), _Scaled(truth, 0, 3.0))
    got = load_pairs(con, "all", grid="pairs")
    reps = load_pairs(con, "all", grid=replicate_grid("pairs", 1))
    r = replicate_report(got, reps, {"model": truth})
    n_ues = sum(len(p.base.ues) for p in got)
    assert r is not None and r["n_ues"] == n_ues
    assert r["noise_moved_gt20"] == pytest.approx(len(got) / n_ues)  # UE 0 of every base
    # UE 0's deltas are three times larger in the replicates: ranks across UEs change, so
    # ns-3 no longer ranks its own effects perfectly, and the ceiling falls with it.
    assert r["ns3_self_spearman_delta"] < 1.0
    assert r["delta_spearman_ceiling"] == pytest.approx(math.sqrt(r["ns3_self_spearman_delta"]))
    assert replicate_report(got, [], {"model": truth}) is None

import json
import shutil
from itertools import pairwise

import numpy as np
import pytest

from forge.experiment_model import (
    KPIS,
    ExperimentModel,
    ModelCorruptError,
    ModelNotFoundError,
)
from forge.experiment_model.model import DEFAULT_MODEL_DIR
from forge.ns3.grid import sample_grid
from forge.scenario import CellConfig, Scenario, UeConfig


def test_prediction_shape_and_physical_bounds(em):
    scns = sample_grid(20, seed=4)
    preds = em.predict(scns)
    assert len(preds) == len(scns)
    for s, p in zip(scns, preds, strict=True):
        assert len(p.ues) == len(s.ues) == len(p.uncertainty)
        assert len(p.cells) == len(s.cells)
        for u, q in zip(s.ues, p.ues, strict=True):
            assert set(KPIS) <= set(q)
            assert 0 <= q["dl_throughput_mbps"] <= u.dl_rate_mbps + 1e-9
            assert 0 <= q["loss_ratio"] <= 1
            assert q["delay_ms"] > 0
            assert s.cells[q["serving_cell"]].active


def _outputs(preds):
    from forge.experiment_model import KPIS

    return np.array([[np.nan if u[k] is None else u[k] for k in KPIS] + list(c.values())
                     for p in preds for u, c in zip(p.ues, p.uncertainty, strict=True)],
                    dtype=float)


def test_prediction_does_not_depend_on_batch_or_threads(em):
    """A replayed state must get the prediction the solver saw, whether it was predicted alone
    or in a batch, in a one-thread worker or a multi-threaded process (float32 BLAS kernels
    differed by up to 0.4 % here, which flipped verdicts near a threshold)."""
    from threadpoolctl import threadpool_limits

    scns = sample_grid(40, seed=8)
    batch = _outputs(em.predict(scns))
    with threadpool_limits(limits=1):
        one_by_one = _outputs([em.predict_one(s) for s in scns])
    assert np.allclose(batch, one_by_one, rtol=1e-9, atol=1e-12, equal_nan=True)


def test_more_load_never_helps_a_congested_cell(em):
    """Monotonicity on a simple case: everyone's offered load in one cell raised step by step
    from well below its capacity (~18 Mb/s for 8 UEs on 25 RBs) to far above it. The share
    delivered never rises; delay rises when the cell saturates and then stays flat (a full RLC
    buffer drained at the cell's rate: more offered load cannot make it longer), so there it
    may only wander within the ensemble's own spread."""
    rates = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
    scns = [Scenario(cells=[CellConfig(bandwidth_rbs=25, tx_power_dbm=40)],
                     ues=[UeConfig(x_m=80 + 20 * i, y_m=0, dl_rate_mbps=r) for i in range(8)])
            for r in rates]
    preds = em.predict(scns)
    ratio = [np.mean([u["dl_throughput_mbps"] / r for u in p.ues])
             for r, p in zip(rates, preds, strict=True)]
    delay = [np.mean([u["delay_ms"] for u in p.ues]) for p in preds]
    spread = [np.mean([u["delay_rel"] for u in p.uncertainty]) for p in preds]
    assert all(b <= a + 0.01 for a, b in pairwise(ratio)), ratio  # 0.01: fully served
    assert ratio[-1] < 0.5 * ratio[0]
    assert all(d1 >= d0 * (1 - s1) for (d0, d1), s1 in zip(pairwise(delay), spread[1:],
                                                             strict=True)), delay
    assert delay[-1] > 1.5 * delay[0]


def test_domain_check_flags_far_away_configurations(em):
    inside = sample_grid(3, seed=2)[0]
    assert em.predict_one(inside).in_domain
    far = Scenario(cells=[CellConfig()], isd_m=500,
                   ues=[UeConfig(x_m=19_000, y_m=0, dl_rate_mbps=1.0)])
    p = em.predict_one(far)
    assert not p.in_domain
    assert any("out of calibration range" in m for m in p.domain_issues)


def test_uncertainty_is_reported(em):
    p = em.predict_one(sample_grid(1, seed=5)[0])
    assert all(u["dl_throughput_rel"] >= 0 and u["delay_rel"] >= 0 and u["loss_abs"] >= 0
               for u in p.uncertainty)
    assert p.max_uncertainty() > 0  # members disagree at least a little


def test_missing_model_says_how_to_rebuild(tmp_path):
    with pytest.raises(ModelNotFoundError, match="python -m forge calibrate"):
        ExperimentModel.load(tmp_path)


def test_corrupt_model_says_how_to_rebuild(tmp_path):
    for f in ("model.pt", "model.json"):
        shutil.copy(DEFAULT_MODEL_DIR / f, tmp_path / f)
    data = bytearray((tmp_path / "model.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "model.pt").write_bytes(bytes(data))
    with pytest.raises(ModelCorruptError, match="python -m forge calibrate"):
        ExperimentModel.load(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ModelCorruptError, match="unreadable"):
        ExperimentModel.load(tmp_path)


def test_shipped_report_has_the_promised_shape_and_meets_the_targets(em):
    rep = json.loads((DEFAULT_MODEL_DIR / "report.json").read_text())
    assert rep["model_hash"] == em.model_hash
    for part in ("heldout", "calibration", "baseline_offered_load"):
        for kpi in ("dl_throughput_mbps", "delay_ms"):
            m = rep[part][kpi]
            assert {"median_ape", "r2", "spearman", "n", "congested"} <= set(m)
            assert {"median_ape", "n"} <= set(m["congested"])
    assert rep["noise_floor"]["n_scenarios"] >= 10
    h = rep["heldout"]
    assert h["dl_throughput_mbps"]["spearman"] >= 0.95
    assert h["dl_throughput_mbps"]["median_ape"] <= 0.10
    assert h["dl_throughput_mbps"]["congested"]["median_ape"] <= 0.20
    assert h["delay_ms"]["median_ape"] <= 0.15
    assert (DEFAULT_MODEL_DIR / "calibration.png").stat().st_size > 10_000


@pytest.fixture(scope="module")
def mlp_em():
    """A small MLP-architecture model (the shipped one is `sets`): the MLP's own paths."""
    from forge.experiment_model.calibrate import CalibrateConfig, train

    runs, _ = _planted_runs(12)
    return train(runs, CalibrateConfig(epochs=1, ensemble=2, hidden=32, layers=2,
                                       batch_size=64, arch="mlp"), show_progress=False)


def _rows_and_cells(scns):
    from forge.experiment_model.features import scenario_features
    from forge.experiment_model.model import cell_groups

    feats = [scenario_features(s) for s in scns]
    return (np.concatenate([f[0] for f in feats]),
            cell_groups(scns, [f[1].serving for f in feats]))


def _sets_fresh(em, x, groups):
    """The sets model's forward on rows in any order, computed afresh (no cache): the forward
    wants each cell's rows consecutive and the cells numbered 0..k-1."""
    order = np.argsort(groups, kind="stable")
    _, dense = np.unique(groups[order], return_inverse=True)
    out = np.empty((len(em.members), len(x), len(em.y_mean)))
    out[:, order] = em._forward_sets(x[order], dense)
    return out


def test_numpy_forward_equals_torch_forward(em, mlp_em):
    assert em.arch == "sets" and mlp_em.arch == "mlp"
    x, groups = _rows_and_cells(sample_grid(3, seed=9))
    assert np.allclose(em.raw(x, groups), em.raw_torch(x, groups), rtol=1e-4, atol=1e-4)
    assert np.allclose(mlp_em.raw(x), mlp_em.raw_torch(x), rtol=1e-4, atol=1e-4)


def _planted_runs(n_bases: int = 24):
    """Runs whose "measured" throughput is the closed-form prediction scaled by a factor the
    prior does not know (0.5 under rr and pss), in pairs made by the gym's handlers."""
    from forge.experiment_model.calibrate import RunData
    from forge.gym.closed_form import ClosedFormModel
    from forge.ns3.pairs import paired_grid

    cf = ClosedFormModel()
    runs, index, pairs = [], {}, []

    def add(scn):
        if scn.scenario_id not in index:
            p = cf.predict_one(scn)
            ues = []
            for q in p.ues:
                slow = 0.5 if scn.cells[q["serving_cell"]].scheduler in ("rr", "pss") else 1.0
                ues.append(dict(q, dl_throughput_mbps=q["dl_throughput_mbps"] * slow,
                                ul_delay_ms=q["ul_delay_ms"], handovers=0))
            index[scn.scenario_id] = len(runs)
            runs.append(RunData(scn, ues, "calibration", scn.scenario_id))
        return index[scn.scenario_id]

    for p in paired_grid(n_bases, changes=2, seed=5, max_ues=12):
        pairs.append((add(p.base), add(p.changed)))
    return runs, pairs


def test_paired_loss_learns_the_change_better():
    from forge.experiment_model import features as F
    from forge.experiment_model.calibrate import CalibrateConfig, _pair_rows, train

    runs, pairs = _planted_runs()
    x = np.concatenate([F.scenario_features(r.scenario)[0] for r in runs])
    y = np.concatenate([F.targets(r.scenario, r.ues, F.scenario_features(r.scenario)[1])[0]
                        for r in runs])
    groups = np.concatenate([np.full(len(r.ues), k) for k, r in enumerate(runs)])
    rb, rc = _pair_rows(groups, pairs)
    j = F.TARGETS.index("dl_ratio")
    errs = {}
    for wgt in (0.0, 3.0):
        cfg = CalibrateConfig(epochs=4, ensemble=1, hidden=32, layers=2, paired_weight=wgt,
                              arch="mlp")
        model = train(runs, cfg, show_progress=False, pairs=pairs)
        assert model.meta["training"]["n_pairs"] == (len(pairs) if wgt else 0)
        out = model.raw(x)[0]
        errs[wgt] = float(np.mean(np.abs((out[rc, j] - out[rb, j]) - (y[rc, j] - y[rb, j]))))
    assert errs[3.0] < errs[0.0], errs


def test_poisson_handover_head_predicts_the_expected_count():
    """Planted runs where every walking UE hands over as a Poisson process of mean 0.5 and no
    static UE does: the Poisson head's prediction is the expected count, where the log1p head
    (Huber on log1p of the count) shrinks it toward 0; an old model (no link in its meta)
    still reads its output as log1p."""
    from forge.experiment_model.calibrate import CalibrateConfig, train
    from forge.experiment_model.model import ExperimentModel

    runs, _ = _planted_runs(30)
    rng = np.random.default_rng(0)
    walking = []
    for r in runs:
        for u, k in zip(r.scenario.ues, r.ues, strict=True):
            k["handovers"] = int(rng.poisson(0.5)) if u.mobility == "random_walk" else 0
            walking.append(u.mobility == "random_walk")
    walk = np.array(walking)
    assert 50 < walk.sum() < len(walk) - 50
    mean = {}
    for loss in ("poisson", "log1p"):
        cfg = CalibrateConfig(epochs=60, ensemble=1, hidden=32, layers=2, batch_size=128,
                              handover_loss=loss, handover_head="net", arch="mlp")
        model = train(runs, cfg, show_progress=False)
        assert model.meta["handover_link"] == ("log" if loss == "poisson" else "log1p")
        pred = np.array([q["handovers"] for p in model.predict([r.scenario for r in runs])
                         for q in p.ues])
        assert (pred >= 0).all()
        mean[loss] = (float(pred[walk].mean()), float(pred[~walk].mean()))
    assert 0.35 < mean["poisson"][0] < 0.7 and mean["poisson"][1] < 0.15, mean
    assert mean["log1p"][0] < mean["poisson"][0], mean
    legacy = ExperimentModel(model.members, {k: v for k, v in model.meta.items()
                                             if k != "handover_link"})
    assert legacy.handover_link == "log1p"


def _handover_rows(n: int, seed: int):
    """Feature rows of `n` handover-grid networks (walkers near borders) and each row's run."""
    from forge.experiment_model.features import scenario_features

    scns = sample_grid(n, seed=seed, handover=True)
    x = [scenario_features(s)[0] for s in scns]
    groups = np.concatenate([np.full(len(r), k) for k, r in enumerate(x)])
    return scns, np.concatenate(x), groups


def test_handover_glm_recovers_a_planted_rate():
    """Counts drawn from a known log-linear rate over the GLM's terms (more path, more
    handovers; further from the border, fewer), none for UEs that cannot hand over: the fit
    finds the rate (cross-validated penalty) and predicts exactly 0 where no handover can
    happen."""
    from forge.experiment_model import handover as H

    _, x, groups = _handover_rows(120, seed=3)
    act = H.active(x)
    assert 300 < act.sum() < len(x)  # walkers with handovers on, and others
    z = H.design(x)
    zs = (z - z[act].mean(0)) / z[act].std(0)
    true_mu = np.where(act, np.exp(-1.5 + 0.9 * zs[:, 0] - 0.7 * zs[:, 1]), 0.0)
    counts = np.random.default_rng(0).poisson(true_mu).astype(float)
    params = H.fit(x, counts, groups)
    assert params["terms"] == list(H.TERMS) and params["alpha"] in (1e-4, 1e-3, 1e-2, 1e-1)
    coef = dict(zip(H.TERMS, params["coef"], strict=True))
    assert coef["log_path_m"] > 0.4 and coef["gap_db"] < -0.3, coef
    mu = H.predict(params, x)
    assert (mu[~act] == 0).all() and (mu[act] > 0).all()
    # The fitted rate tracks the planted one, and scores better than a constant rate would.
    assert np.corrcoef(np.log(mu[act]), np.log(true_mu[act]))[0, 1] > 0.9
    const = np.full(act.sum(), counts[act].mean())
    assert H.deviance(counts[act], mu[act]) < H.deviance(counts[act], const)
    with pytest.raises(ValueError, match="nothing to fit"):
        H.fit(x, np.zeros(len(x)), groups)
    with pytest.raises(ValueError, match="terms"):
        H.predict(dict(params, terms=["speed"]), x)


def test_calibrated_model_predicts_handovers_with_its_glm():
    """`train` fits the GLM when the runs hold handovers (the default head), keeps it in the
    model's meta (and so in its hash), and the model's predicted counts are the GLM's; the
    "net" head, and runs without any handover, leave the ensemble's output in charge."""
    from forge.experiment_model import handover as H
    from forge.experiment_model.calibrate import CalibrateConfig, RunData, train
    from forge.gym.closed_form import ClosedFormModel

    scns, x, _ = _handover_rows(40, seed=5)
    act = H.active(x)
    rng = np.random.default_rng(1)
    cf = ClosedFormModel()
    counts = np.where(act, rng.poisson(0.4, len(act)), 0)
    runs, k = [], 0
    for s in scns:
        ues = []
        for q in cf.predict_one(s).ues:
            ues.append(dict(q, handovers=int(counts[k])))
            k += 1
        runs.append(RunData(s, ues, "calibration", s.scenario_id))
    cfg = CalibrateConfig(epochs=1, ensemble=1, hidden=16, layers=2)
    model = train(runs, cfg, show_progress=False)
    glm = model.meta["handover_glm"]
    assert glm["n_rows"] == act.sum() and glm["n_handovers"] > 0
    got = np.array([q["handovers"] for p in model.predict(scns) for q in p.ues])
    assert np.allclose(got, H.predict(glm, x)) and (got[~act] == 0).all()
    # The intercept is not penalised, so at the likelihood's optimum the fitted counts of the
    # training rows sum to the observed ones (the fit's level is the data's, not a prior's).
    assert got[act].mean() == pytest.approx(counts[act].mean(), rel=1e-3)
    net = train(runs, CalibrateConfig(epochs=1, ensemble=1, hidden=16, layers=2,
                                      handover_head="net"), show_progress=False)
    assert "handover_glm" not in net.meta and net.handover_glm is None
    for r in runs:
        for u in r.ues:
            u["handovers"] = 0
    assert "handover_glm" not in train(runs, cfg, show_progress=False).meta


def test_rows_seen_before_come_from_the_row_cache(em, mlp_em):
    """A changed network shares feature rows with its base: `raw` reuses their outputs (per
    row for the MLP, per serving cell for the sets model), and a batch mixing cached and new
    rows gives what computing it afresh gives."""
    from forge.gym.handlers import CONFIGURE

    # A network whose UEs sit in several cells, so that a change leaves some cells alone.
    base = next(s for s in sample_grid(20, seed=21) if len(np.unique(_rows_and_cells([s])[1]))
                >= 3)
    changed = CONFIGURE["set_ue_qci"](base, {"ue": 0, "qci": 5}).scenario
    (xb, gb), (xc, gc) = _rows_and_cells([base]), _rows_and_cells([changed])
    shared = sum(a.tobytes() == b.tobytes() for a, b in zip(xb, xc, strict=True))
    assert 0 < shared < len(xb)  # one UE's rows changed, most did not
    mlp_em.clear_row_cache()
    mlp_em.raw(xb)
    assert len(mlp_em._rows) == len({r.tobytes() for r in xb})
    mixed = mlp_em.raw(xc)  # partly from the cache
    assert len(mlp_em._rows) == len({r.tobytes() for r in np.concatenate([xb, xc])})
    assert np.allclose(mixed, mlp_em._raw(xc), rtol=0, atol=1e-12)
    # The sets model caches cells: the base's cells, then only the changed network's new ones.
    em.clear_row_cache()
    em.raw(xb, gb)
    n_cells = len(np.unique(gb))
    assert len(em._rows) == n_cells
    mixed = em.raw(xc, gc)
    assert n_cells < len(em._rows) < 2 * n_cells
    assert np.allclose(mixed, _sets_fresh(em, xc, gc), rtol=0, atol=1e-12)


def test_blocked_forward_equals_one_pass(em, mlp_em):
    """Large batches run the ensemble in blocks of rows (for the CPU caches), a lone leftover
    row joining the last block: the outputs are those of one pass over the whole batch (MLP),
    and those of each scenario computed alone (sets, whose blocks may split a cell)."""
    from forge.experiment_model.model import FORWARD_BLOCK

    scns = sample_grid(120, seed=5)
    x, groups = _rows_and_cells(scns)
    xm = x[:2 * FORWARD_BLOCK + 1]
    assert len(xm) == 2 * FORWARD_BLOCK + 1  # two full blocks and one leftover row
    whole = mlp_em._forward(xm)
    assert np.allclose(mlp_em._raw(xm), whole, rtol=0, atol=1e-12)
    assert np.allclose(mlp_em._raw(xm[:FORWARD_BLOCK + 7]), whole[:, :FORWARD_BLOCK + 7],
                       rtol=0, atol=1e-12)
    assert len(x) > 2 * FORWARD_BLOCK
    batch = _sets_fresh(em, x, groups)
    k = 0
    for s in scns:
        n = len(s.ues)
        assert np.allclose(batch[:, k:k + n], _sets_fresh(em, *_rows_and_cells([s])), rtol=0,
                           atol=1e-11)
        k += n


def test_sets_model_trains_saves_and_keeps_cells_apart(tmp_path):
    """The `sets` architecture: trained, saved and loaded like the MLP; its numpy forward equals
    its torch modules; a UE's output depends on the rows of its own cell only, so a scenario's
    prediction does not depend on what else is in the batch or in the cache."""
    from forge.experiment_model import features as F
    from forge.experiment_model.calibrate import CalibrateConfig, train
    from forge.experiment_model.model import ExperimentModel, cell_groups

    runs, _ = _planted_runs(12)
    cfg = CalibrateConfig(epochs=3, ensemble=2, hidden=32, layers=2, batch_size=64, arch="sets")
    model = train(runs, cfg, show_progress=False)
    assert model.arch == "sets" and model.meta["arch"] == "sets"
    model.save(tmp_path)
    assert json.loads((tmp_path / "model.json").read_text())["arch"] == "sets"
    em2 = ExperimentModel.load(tmp_path)
    assert em2.arch == "sets"

    scns = [r.scenario for r in runs[:6]]
    feats = [F.scenario_features(s) for s in scns]
    x = np.concatenate([f[0] for f in feats])
    groups = cell_groups(scns, [f[1].serving for f in feats])
    assert np.allclose(em2.raw(x, groups), em2.raw_torch(x, groups), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="cell"):
        em2.raw(x)

    # Locality: changing one row changes its own cell's outputs and no other cell's.
    em2.clear_row_cache()
    base = em2.raw(x, groups)
    x2 = x.copy()
    x2[0, 0] += 1.0
    moved = em2.raw(x2, groups)
    same_cell = groups == groups[0]
    assert not np.allclose(moved[:, same_cell], base[:, same_cell])
    assert np.array_equal(moved[:, ~same_cell], base[:, ~same_cell])

    # A scenario alone, in a batch, and from the cache: the same outputs.
    alone = _outputs(em2.predict(scns[:1]))
    em2.clear_row_cache()
    batched = _outputs(em2.predict(scns)[:1])
    assert np.allclose(alone, batched, rtol=1e-9, atol=1e-12, equal_nan=True)
    assert np.array_equal(_outputs(em2.predict(scns[:1])), batched, equal_nan=True)


def test_sets_model_learns_the_planted_rule():
    """On planted runs (throughput halved under rr and pss, which the closed-form prior does
    not know: its log error there is log 2 = 0.69) a few epochs of the sets model learn the
    halving."""
    from forge.experiment_model.calibrate import CalibrateConfig, train

    runs, _ = _planted_runs(24)
    meas = np.array([k["dl_throughput_mbps"] for r in runs for k in r.ues])
    halved = np.array([r.scenario.cells[k["serving_cell"]].scheduler in ("rr", "pss")
                       for r in runs for k in r.ues])
    assert 50 < halved.sum() < len(halved) - 50
    cfg = CalibrateConfig(epochs=30, ensemble=1, hidden=64, layers=2, batch_size=128,
                          arch="sets")
    model = train(runs, cfg, show_progress=False)
    pred = np.array([q["dl_throughput_mbps"] for p in model.predict([r.scenario for r in runs])
                     for q in p.ues])
    err = np.abs(np.log(pred + 1e-3) - np.log(meas + 1e-3))
    assert np.median(err[halved]) < 0.2 and np.median(err[~halved]) < 0.2, err


def test_sets_arch_refuses_the_paired_loss():
    from forge.db import ForgeError
    from forge.experiment_model.calibrate import CalibrateConfig, train

    runs, pairs = _planted_runs(4)
    with pytest.raises(ForgeError, match="paired"):
        train(runs, CalibrateConfig(epochs=1, ensemble=1, arch="sets", paired_weight=1.0),
              show_progress=False, pairs=pairs)
    with pytest.raises(ForgeError, match="arch"):
        train(runs, CalibrateConfig(epochs=1, ensemble=1, arch="gnn"), show_progress=False)

"""A closed-form stand-in for the Experiment Model: physics only, no learning, no calibration.

It implements the same `predict([scenario]) -> [ScenarioPrediction]` interface from
`forge.experiment_model.physics` (pathloss, SINR, Shannon-gap capacity, max-min airtime shares)
plus a crude queueing rule for delay. Its numbers are NOT ns-3's: it exists so that the gym, the
verifiers and their tests run without the trained model files and in microseconds, and it says so
in `model_hash` ("closed-form-physics-v1"), which every trajectory records. Uncertainty is
reported as zero and every scenario as in domain, because there is no calibration to be outside
of; the outcome verifier therefore never flags its predictions as uncertain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from forge.experiment_model import ScenarioPrediction, physics
from forge.ns3.sweep import cell_aggregates
from forge.scenario import Scenario

RADIO_DELAY_MS = 4.0       # scheduling + HARQ + S1 in an unloaded cell (order of magnitude)
QUEUE_DELAY_MS = 2.0       # scale of the M/M/1-like queueing term
OVERLOAD_DELAY_MS = 250.0  # added in proportion to the traffic a saturated cell cannot carry


class ClosedFormModel:
    model_hash = "closed-form-physics-v1"

    def predict(self, scenarios: Sequence[Scenario]) -> list[ScenarioPrediction]:
        return [self._one(s) for s in scenarios]

    def predict_one(self, scenario: Scenario) -> ScenarioPrediction:
        return self._one(scenario)

    def _one(self, scn: Scenario) -> ScenarioPrediction:
        ph = physics.compute(scn)
        ues: list[dict[str, Any]] = []
        for i, u in enumerate(scn.ues):
            s = int(ph.serving[i])
            rho = min(float(ph.cell_load[s]), 0.97)
            share = float(ph.dl_share[i])
            server = scn.edge_delay_ms if u.server == "edge" else scn.cloud_delay_ms
            delay = (RADIO_DELAY_MS + server + QUEUE_DELAY_MS / (1.0 - rho)
                     + OVERLOAD_DELAY_MS * (1.0 - share))
            has_ul = u.ul_rate_mbps > 0
            ul_share = float(ph.ul_share[i])
            ues.append({
                "ue": i,
                "serving_cell": s,
                "dl_offered_mbps": u.dl_rate_mbps,
                "ul_offered_mbps": u.ul_rate_mbps,
                "dl_throughput_mbps": u.dl_rate_mbps * share,
                "ul_throughput_mbps": u.ul_rate_mbps * ul_share if has_ul else 0.0,
                "delay_ms": delay,
                "ul_delay_ms": RADIO_DELAY_MS + server if has_ul else None,
                "loss_ratio": 1.0 - share,
                "ul_loss_ratio": 1.0 - ul_share if has_ul else None,
                "rsrp_dbm": float(ph.rsrp_dbm[i]),
                "sinr_db": float(ph.sinr_db[i]),
                "handovers": 0.0,
            })
        unc = [{"dl_throughput_rel": 0.0, "delay_rel": 0.0} for _ in scn.ues]
        return ScenarioPrediction(ues=ues, cells=cell_aggregates(scn, ues), uncertainty=unc,
                                  in_domain=True, domain_issues=[])

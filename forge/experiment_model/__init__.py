"""Experiment Model: the learned surrogate of ns-3 that is the gym's physics.

    from forge.experiment_model import ExperimentModel
    em = ExperimentModel.load()               # corpora/experiment_model/ by default
    pred = em.predict_one(scenario)           # ScenarioPrediction
    pred.ues[0]["dl_throughput_mbps"], pred.in_domain, pred.uncertainty[0]
"""

from forge.experiment_model.model import (
    KPIS,
    ExperimentModel,
    ModelCorruptError,
    ModelNotFoundError,
    ScenarioPrediction,
)

__all__ = ["KPIS", "ExperimentModel", "ModelCorruptError", "ModelNotFoundError",
           "ScenarioPrediction"]

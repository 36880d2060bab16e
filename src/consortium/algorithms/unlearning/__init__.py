"""Right to be forgotten: explanation-guided selective unlearning and its baselines."""

from consortium.algorithms.unlearning.baselines import (
    BaselineConfig,
    FineTune,
    GradientAscent,
    Retrain,
    TfidfPrune,
)
from consortium.algorithms.unlearning.client import add_unlearning_handlers
from consortium.algorithms.unlearning.config import SelectiveUnlearningConfig
from consortium.algorithms.unlearning.explain import (
    ablation_scores,
    channel_layers,
    class_activations,
    parameter_mask,
    select_channels,
    tfidf_scores,
)
from consortium.algorithms.unlearning.request import UnlearningRequest
from consortium.algorithms.unlearning.selective import SelectiveUnlearning

__all__ = [
    "BaselineConfig",
    "FineTune",
    "GradientAscent",
    "Retrain",
    "SelectiveUnlearning",
    "SelectiveUnlearningConfig",
    "TfidfPrune",
    "UnlearningRequest",
    "ablation_scores",
    "add_unlearning_handlers",
    "channel_layers",
    "class_activations",
    "parameter_mask",
    "select_channels",
    "tfidf_scores",
]

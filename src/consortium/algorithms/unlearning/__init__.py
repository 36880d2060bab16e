"""Right to be forgotten: explanation-guided selective unlearning and its baselines; registers
the post-hoc action ``unlearn``."""

from consortium.algorithms.registry import ActionSpec, register_action
from consortium.algorithms.unlearning import action as _action
from consortium.algorithms.unlearning.baselines import (
    FineTune,
    GradientAscent,
    Retrain,
    TfidfPrune,
)
from consortium.algorithms.unlearning.client import add_unlearning_handlers
from consortium.algorithms.unlearning.config import (
    UNLEARNING_METHODS,
    BaselineConfig,
    SelectiveOptions,
    SelectiveUnlearningConfig,
    UnlearnConfig,
)
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
    "UNLEARNING_METHODS",
    "BaselineConfig",
    "FineTune",
    "GradientAscent",
    "Retrain",
    "SelectiveOptions",
    "SelectiveUnlearning",
    "SelectiveUnlearningConfig",
    "TfidfPrune",
    "UnlearnConfig",
    "UnlearningRequest",
    "ablation_scores",
    "add_unlearning_handlers",
    "channel_layers",
    "class_activations",
    "parameter_mask",
    "select_channels",
    "tfidf_scores",
]

register_action(
    ActionSpec(
        name="unlearn",
        config=UnlearnConfig,
        run=_action.run,
        dest=_action.destination,
        client_app=_action.client_app,
        description="remove a class, a member or samples from a saved model",
        check=_action.check,
        add_arguments=_action.add_arguments,
        overrides=_action.overrides,
        report="unlearn",
        hint="say what to forget: --class, --client or --samples",
        precheck=_action.precheck,
    )
)

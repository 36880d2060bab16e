"""CGSV: cosine-gradient Shapley values and masked-aggregate rewards (a fair-reward baseline)."""

from consortium.algorithms.aequa.client import describe_handler
from consortium.algorithms.cgsv.base import OwnModelWorkflow
from consortium.algorithms.cgsv.client import add_own_model_handlers, rescale
from consortium.algorithms.cgsv.config import CGSVConfig
from consortium.algorithms.cgsv.rules import (
    masked_reward,
    reward_fractions,
    top_fraction_mask,
    update_reputations,
)
from consortium.algorithms.cgsv.workflow import CGSV
from consortium.algorithms.reference.standalone import add_standalone_handler
from consortium.algorithms.supervised import ModelFn, supervised_client_app
from consortium.core.client import ClientApp


def own_model_client_app(model_fn: ModelFn, device: str = "auto") -> ClientApp:
    """Members of CGSV and IAFL: supervised handlers, ``train_alone``, ``describe`` and the
    own-model handlers ``own_train`` / ``own_reward``."""
    app = add_standalone_handler(supervised_client_app(model_fn, device), model_fn, device)
    return add_own_model_handlers(describe_handler(app), model_fn, device)


cgsv_client_app = own_model_client_app

__all__ = [
    "CGSV",
    "CGSVConfig",
    "OwnModelWorkflow",
    "add_own_model_handlers",
    "cgsv_client_app",
    "masked_reward",
    "own_model_client_app",
    "rescale",
    "reward_fractions",
    "top_fraction_mask",
    "update_reputations",
]

"""Models and the conversion of their weights to message payloads."""

from consortium.models.cnn import MLP, SmallCNN
from consortium.models.registry import available_models, build_model, register_model
from consortium.models.weights import count_parameters, get_arrays, set_arrays, trainable_names

__all__ = [
    "MLP",
    "SmallCNN",
    "available_models",
    "build_model",
    "count_parameters",
    "get_arrays",
    "register_model",
    "set_arrays",
    "trainable_names",
]

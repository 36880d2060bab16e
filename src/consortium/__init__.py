"""consortium: collaborative (federated) learning among independent data holders.

The names most scripts need, imported on first use (so ``import consortium`` stays light)::

    import consortium

    exp = consortium.experiment_from_dict({"name": "mine", "methods": ["fedavg"]})
    result = consortium.run_experiment(exp, "runs/mine")
    model = consortium.load_model("runs/mine")          # a torch model, eval mode

Everything else lives in the subpackages (``consortium.experiment``, ``consortium.data``,
``consortium.models``, ``consortium.algorithms``, ``consortium.core``, ...).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = [
    "Experiment",
    "__version__",
    "experiment_from_dict",
    "load_experiment",
    "load_model",
    "run_experiment",
]


def __getattr__(name: str) -> Any:
    """The application-layer names of :data:`__all__`, imported when first asked for."""
    if name in __all__ and name != "__version__":
        import consortium.experiment as experiment

        value = getattr(experiment, name)
        globals()[name] = value  # imported once
        return value
    raise AttributeError(f"module 'consortium' has no attribute {name!r}")

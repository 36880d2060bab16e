"""Results back from a run folder, as Python objects: the trained torch model.

A run folder is the whole record of a run (see :mod:`consortium.experiment.runner`), so a
model can be rebuilt from it on any machine that has consortium (and the run's plugins): the
resolved ``config.toml`` says which network, ``data.json`` its input shape and classes, and
``<method>/model.npz`` its weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from consortium.config import ConfigError
from consortium.core.run import MODEL

DATA_INFO = "data.json"


def write_data_info(run_dir: Path, data: Any) -> None:
    """What a model needs to know of the data to be rebuilt: input shape and classes (data
    without them, such as multi-task data of linear models, writes no file)."""
    shape, classes = getattr(data, "input_shape", None), getattr(data, "num_classes", None)
    if shape is None or classes is None:
        return
    info = {
        "name": str(getattr(data, "name", "")),
        "input_shape": [int(v) for v in shape],
        "num_classes": int(classes),
        "num_clients": int(data.num_clients),
    }
    (run_dir / DATA_INFO).write_text(json.dumps(info, indent=2))


def _experiment_folder(run_dir: Path) -> Path:
    """The folder with ``config.toml``: the run itself, or (for an action's folder such as
    ``RUN/unlearn-class3``) the run it belongs to."""
    for folder in (run_dir, run_dir.parent):
        if (folder / "config.toml").is_file():
            return folder
    raise FileNotFoundError(f"{run_dir}: not a run folder (no config.toml)")


def _method_with_model(run_dir: Path, methods: list[str]) -> str:
    names = [m for m in methods if (run_dir / m / MODEL).is_file()]
    names += sorted(
        p.name for p in run_dir.iterdir() if (p / MODEL).is_file() and p.name not in names
    )
    if not names:
        raise FileNotFoundError(f"{run_dir}: no method folder holds a {MODEL}")
    return names[0]


def load_model(run_dir: str | Path, method: str | None = None, *, device: str = "cpu") -> Any:
    """The trained torch model of ``method`` in ``run_dir`` (default: the first method with
    a model), in evaluation mode.

    ``run_dir`` is a run folder, or an action's folder inside one (``RUN/unlearn-class3``: the
    unlearned models). The network is the experiment's ``[model]``; a method whose final
    arrays are not that network's weights (DMTRL's task matrix, FedRA's adapters) is a
    one-line error.
    """
    import torch

    from consortium.data.registry import build_data
    from consortium.experiment.config import load_experiment
    from consortium.models import build_model

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    home = _experiment_folder(run_dir)
    exp = load_experiment(home / "config.toml")
    method = method or _method_with_model(run_dir, list(exp.methods))
    path = run_dir / method / MODEL
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model (methods with one: see {run_dir})")
    info_path = home / DATA_INFO
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        shape, classes = tuple(info["input_shape"]), int(info["num_classes"])
    else:  # a run folder from before data.json: rebuild the data to learn its shape
        data = build_data(exp.data, exp.seed)
        if not hasattr(data, "input_shape"):
            raise ConfigError(f"{path}: {exp.data.dataset!r} runs train no torch network")
        shape, classes = tuple(data.input_shape), int(data.num_classes)
    model = build_model(exp.model.name, shape, classes, **exp.model.options)
    with np.load(path, allow_pickle=False) as saved:
        arrays = {k: saved[k] for k in saved.files}
    state = model.state_dict()
    unknown = sorted(set(arrays) - set(state))
    missing = sorted(n for n, _ in model.named_parameters() if n not in arrays)
    if unknown or missing:
        raise ConfigError(
            f"{path}: not the weights of model {exp.model.name!r} "
            f"({len(unknown)} unknown arrays, e.g. {unknown[:2]}; "
            f"{len(missing)} parameters missing, e.g. {missing[:2]})"
        )
    for name, value in arrays.items():
        if tuple(value.shape) != tuple(state[name].shape):
            raise ConfigError(
                f"{path}: {name} has shape {tuple(value.shape)}, "
                f"the model's is {tuple(state[name].shape)}"
            )
    tensors = {k: torch.as_tensor(v) for k, v in arrays.items()}
    model.load_state_dict(tensors, strict=False)
    return model.to(device).eval()

"""The benchmark job of ``benchmarks/peers.py`` written as a pfl-research user writes it.

Following pfl's PyTorch benchmarks: a ``FederatedDataset`` of the members (every member once
per round with the ``minimize_reuse`` sampler), a ``PyTorchModel`` whose module defines
``loss`` and ``metrics``, local SGD with momentum, a central SGD step of 1 (FedAvg), weighting
by data points, ``SimulatedBackend``, ``FederatedAveraging`` and a central evaluation
callback. No consortium code: members, samples and initial weights come from the files
``peers.py`` wrote. One process, or several under ``torchrun`` (pfl splits each cohort
among them).

    python benchmarks/peers_pfl.py SPEC.json
    python -m torch.distributed.run --standalone --nproc_per_node 2 benchmarks/peers_pfl.py \
        SPEC.json
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from peers_job import Net, load_samples

from pfl.model.pytorch import PyTorchModel  # isort: skip  (pfl: import the model first)
from pfl.aggregate.simulate import SimulatedBackend
from pfl.aggregate.weighting import WeightByDatapoints
from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
from pfl.callback.central_evaluation import CentralEvaluationCallback
from pfl.data.dataset import Dataset
from pfl.data.federated_dataset import FederatedDataset
from pfl.data.sampling import get_user_sampler
from pfl.hyperparam import NNEvalHyperParams, NNTrainHyperParams
from pfl.internal.ops.pytorch_ops import to_tensor
from pfl.metrics import Weighted

SPEC = json.loads(Path(sys.argv[1]).read_text())


class PflNet(Net):
    """The benchmark's model with the ``loss`` and ``metrics`` pfl asks of a PyTorch module."""

    def loss(self, x, y, eval=False):
        self.eval() if eval else self.train()
        return F.cross_entropy(self(x), y)

    @torch.no_grad()
    def metrics(self, x, y, eval=True):
        self.eval()
        logits = self(x)
        n = len(y)
        return {
            "loss": Weighted(float(F.cross_entropy(logits, y, reduction="sum")), n),
            "accuracy": Weighted(float((logits.argmax(1) == y).sum()), n),
        }


def load() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    d = load_samples(SPEC)
    ids, cut = d["ids"], d["cut"]
    members = [ids[cut[i] : cut[i + 1]] for i in range(len(cut) - 1)]
    return d["x"], d["y"], d["test_x"], d["test_y"], members


def main() -> None:
    torch.manual_seed(SPEC.get("seed", 0))
    np.random.seed(SPEC.get("seed", 0))
    x, y, test_x, test_y, members = load()

    slices = {
        uid: [to_tensor(x[ids]), to_tensor(y[ids], dtype="int64")]
        for uid, ids in enumerate(members)
    }
    sampler = get_user_sampler("minimize_reuse", list(slices))
    train_data = FederatedDataset.from_slices(slices, sampler)
    central_data = Dataset(raw_data=[to_tensor(test_x), to_tensor(test_y, dtype="int64")])

    c, h, _ = SPEC["input_shape"]
    module = PflNet(c, h, SPEC["num_classes"])
    module.load_state_dict({k: torch.from_numpy(v) for k, v in np.load(SPEC["init"]).items()})
    params = [p for p in module.parameters() if p.requires_grad]
    model = PyTorchModel(
        model=module,
        local_optimizer_create=functools.partial(torch.optim.SGD, momentum=SPEC["momentum"]),
        central_optimizer=torch.optim.SGD(params, 1.0),
    )
    backend = SimulatedBackend(
        training_data=train_data, val_data=None, postprocessors=[WeightByDatapoints()]
    )
    cohort = max(1, round(SPEC["fraction"] * len(members)))
    algorithm_params = NNAlgorithmParams(
        central_num_iterations=SPEC["rounds"],
        evaluation_frequency=1,
        train_cohort_size=cohort,
        val_cohort_size=0,
    )
    train_params = NNTrainHyperParams(
        local_learning_rate=SPEC["lr"],
        local_num_epochs=SPEC["epochs"],
        local_batch_size=SPEC["batch_size"],
    )
    eval_params = NNEvalHyperParams(local_batch_size=1024)
    evaluation = CentralEvaluationCallback(central_data, model_eval_params=eval_params)

    start = time.perf_counter()
    model = FederatedAveraging().run(
        algorithm_params=algorithm_params,
        backend=backend,
        model=model,
        model_train_params=train_params,
        model_eval_params=eval_params,
        callbacks=[evaluation],
    )
    loop = time.perf_counter() - start
    if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return
    metrics = model.evaluate(central_data, eval_params=eval_params)
    accuracy = next(v for k, v in metrics if "accuracy" in str(k))
    out = {"loop_s": loop, "test_accuracy": float(accuracy.overall_value)}
    Path(SPEC["result"]).write_text(json.dumps(out))


if __name__ == "__main__":
    main()

"""Multi-task relationship learning: DMTRL and the references it is judged against.

* :class:`DMTRL`: distributed MTRL (Liu, Pan & Ho, KDD 2017), primal-dual W-steps with the
  members' dual variables kept at home, closed-form Ω-steps at the server;
* :class:`CentralisedMTRL`: the same objective solved on the pooled data (Zhang & Yeung 2010);
* :class:`SingleTask`: every member alone; :class:`GlobalModel`: one model for every task.

All four use the member handlers of :func:`mtl_client_app`. Importing the package registers
the methods ``dmtrl``, ``mtrl_centralised``, ``single_task`` and ``global_model``.
"""

from consortium.algorithms.mtl.baselines import GlobalModel, SingleTask
from consortium.algorithms.mtl.centralised import CentralisedMTRL
from consortium.algorithms.mtl.client import mtl_client_app
from consortium.algorithms.mtl.config import DMTRLConfig, MTRLConfig, SingleModelConfig
from consortium.algorithms.mtl.dmtrl import DMTRL
from consortium.algorithms.mtl.objective import coupling, omega_step
from consortium.algorithms.mtl.selection import LambdaChoice, select_lambda
from consortium.algorithms.mtl.solvers import (
    MTRLSolution,
    fit_global,
    fit_mtrl,
    fit_single_task,
    mtrl_objective,
)

__all__ = [
    "DMTRL",
    "CentralisedMTRL",
    "DMTRLConfig",
    "GlobalModel",
    "LambdaChoice",
    "MTRLConfig",
    "MTRLSolution",
    "SingleModelConfig",
    "SingleTask",
    "coupling",
    "fit_global",
    "fit_mtrl",
    "fit_single_task",
    "mtl_client_app",
    "mtrl_objective",
    "omega_step",
    "select_lambda",
]

from consortium.algorithms.mtl import method as _method  # noqa: F401  (registers)

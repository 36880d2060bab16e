"""SCAFFOLD's options: the averaging base plus its own server step size."""

from __future__ import annotations

from pydantic import Field

from consortium.algorithms.base.config import AveragingConfig


class SCAFFOLDConfig(AveragingConfig):
    """SCAFFOLD (Karimireddy et al., ICML 2020), option II control variates.

    ``weighted`` (default False here, as the paper averages the sampled members' updates
    equally) and ``evaluate_clients`` come from the averaging base.
    """

    weighted: bool = Field(
        False, description="weight model updates by sample counts (the paper: equal weights)"
    )
    server_lr: float = Field(
        1.0, gt=0, le=100, description="global step size η_g applied to the mean model update"
    )

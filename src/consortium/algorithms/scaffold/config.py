"""SCAFFOLD's options: the averaging base, its server step size and the local step count K."""

from __future__ import annotations

from pydantic import Field

from consortium.algorithms.base.config import AveragingConfig


class SCAFFOLDConfig(AveragingConfig):
    """SCAFFOLD (Karimireddy et al., ICML 2020), option II control variates.

    ``local_steps`` is Algorithm 1's K: every sampled member takes exactly K corrected steps
    (mini-batches of ``local.batch_size``, reshuffled passes over its data, the last one cut
    short), so a member's new ``c_i = c_i - c + (x - y_i)/(K·η_l)`` is always the mean of K
    steps. ``None`` lets the experiment builder set K to the average member's share of the FedAvg
    budget, ``round(epochs · mean member train size / batch_size)``; a workflow built by hand
    with ``None`` runs ``local.epochs`` passes per member, K then varying with its data (the
    behaviour that diverged under strong label skew: a member with many samples took K·η_l
    near 3 corrected steps; see docs/adding-a-method.md).

    ``weighted`` (default False here, as the paper averages the sampled members' updates
    equally) and ``evaluate_clients`` come from the averaging base.
    """

    weighted: bool = Field(
        False, description="weight model updates by sample counts (the paper: equal weights)"
    )
    server_lr: float = Field(
        1.0, gt=0, le=100, description="global step size η_g applied to the mean model update"
    )
    local_steps: int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description=(
            "K, the local steps of every member per round (Algorithm 1); unset: "
            "round(epochs × mean member train size / batch_size), the same for all members"
        ),
    )

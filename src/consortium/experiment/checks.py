"""Everything an experiment can be checked for before its run folder is created.

A mistake found an hour into a run, or one that leaves a half-made run folder in the way of
the corrected attempt, costs more than one found at once. So before anything is written:

* the device exists on this machine (``"cuda"`` on a CPU-only build, ``"gpu"``, ``"cuda:3"``
  on a one-GPU machine are one-line errors);
* the data is there and splits as asked (a missing dataset says how to get it; a split that
  cannot be made says why);
* the federation fits the members: ``min_replies`` and a ``clients_per_round`` count at most
  the number of members;
* every method gets what it needs (its ``MethodSpec.check``: a slimmable model for Aequa, one
  task per member for the multi-task methods, a ``[model]`` that builds for the others);
* a post-hoc action's table (``[unlearn]``) asks for something the run can serve (its
  ``ActionSpec.precheck``: a class the data has, a member that exists, a method it trains).

What cannot be refused but will likely go wrong (more ``min_replies`` than a round's members
are expected to send back under ``failure_rate``) comes back as notes to print.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from consortium.algorithms.registry import MethodContext, get_action, get_method
from consortium.config import ConfigError
from consortium.data.registry import build_data
from consortium.experiment.config import Experiment, FederationSection
from consortium.experiment.execution import method_context
from consortium.training import check_device


@dataclass
class Prepared:
    """A checked experiment: its data, the context its methods are built from, and notes."""

    data: Any
    context: MethodContext
    notes: list[str] = field(default_factory=list)


def prepare_experiment(exp: Experiment, say: Callable[[str], None] | None = None) -> Prepared:
    """Check ``exp`` as far as it can be without training (see the module docstring) and
    build its data; raises :class:`~consortium.config.ConfigError` with one line."""
    check_device(exp.device)
    data = checked_data(exp)
    check_members(exp.federation, data.num_clients)
    ctx = method_context(exp, data, say=say)
    for name in exp.methods:
        check_method(name, ctx, exp.method_options[name])
    for name, config in exp.action_options.items():  # an [unlearn] table runs after training
        check_action(name, ctx, config, exp.methods)
    return Prepared(data, ctx, dropout_notes(exp.federation, data.num_clients))


def checked_data(exp: Experiment) -> Any:
    """The experiment's federated data; a split that cannot be made is a ``ConfigError``."""
    try:
        return build_data(exp.data, exp.seed)
    except ConfigError:
        raise
    except FileNotFoundError:  # a missing dataset or file: its message says how to get it
        raise
    except ValueError as err:
        raise ConfigError(f"data: {err}") from None


def check_members(fed: FederationSection, num_clients: int) -> None:
    """``min_replies`` and a ``clients_per_round`` count against the number of members."""
    if fed.min_replies > num_clients:
        raise ConfigError(
            f"federation.min_replies: {fed.min_replies} is more than the {num_clients} members"
        )
    c = fed.clients_per_round
    if isinstance(c, int) and c > num_clients:
        raise ConfigError(
            f"federation.clients_per_round: {c} is more than the {num_clients} members"
        )


def check_method(name: str, ctx: MethodContext, options: Any) -> None:
    """The method's own check (:class:`~consortium.algorithms.registry.MethodSpec`)."""
    spec = get_method(name)
    if spec.check is None:
        return
    try:
        spec.check(ctx, options)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:  # a plugin's check that raised a plain error
        raise ConfigError(f"{name}: {err}") from None


def check_action(name: str, ctx: MethodContext, config: Any, methods: list[str]) -> None:
    """A post-hoc action's ``precheck`` (:class:`~consortium.algorithms.registry.ActionSpec`)."""
    spec = get_action(name)
    if spec.precheck is not None:
        spec.precheck(ctx, config, list(methods))


def round_size(fed: FederationSection, num_clients: int) -> int:
    """Members asked per round (the count sampling draws)."""
    c = fed.clients_per_round
    return min(c, num_clients) if isinstance(c, int) else max(1, round(c * num_clients))


def dropout_notes(fed: FederationSection, num_clients: int) -> list[str]:
    """Warnings about settings that will likely skip rounds (they are not errors)."""
    if fed.failure_rate <= 0:
        return []
    asked = round_size(fed, num_clients)
    expected = asked * (1 - fed.failure_rate)
    if fed.min_replies <= expected:
        return []
    return [
        f"with failure_rate = {fed.failure_rate:g} a round of {asked} members sends back "
        f"{expected:.1f} replies on average, fewer than min_replies = {fed.min_replies}: "
        "expect skipped rounds"
    ]

"""The core every method is written on: messages, the grid, workflows, client apps, aggregation."""

from consortium.core.aggregation import (
    Update,
    coverage,
    gather_masked,
    partial_mean,
    scatter_masked,
    weighted_mean,
)
from consortium.core.client import ClientApp, ClientContext, Handler, UnknownMessageKind
from consortium.core.grid import Grid, MeanReply, RoundRecord, TooFewReplies
from consortium.core.message import Arrays, Message
from consortium.core.run import RunResult, load_checkpoint, read_jsonl, run_workflow
from consortium.core.sampling import derive_seed, rng_for, sample_clients
from consortium.core.validation import ArraySpec, InvalidReply, ReplySpec
from consortium.core.workflow import Workflow

__all__ = [
    "ArraySpec",
    "Arrays",
    "ClientApp",
    "ClientContext",
    "Grid",
    "Handler",
    "InvalidReply",
    "MeanReply",
    "Message",
    "ReplySpec",
    "RoundRecord",
    "RunResult",
    "TooFewReplies",
    "UnknownMessageKind",
    "Update",
    "Workflow",
    "coverage",
    "derive_seed",
    "gather_masked",
    "load_checkpoint",
    "partial_mean",
    "read_jsonl",
    "rng_for",
    "run_workflow",
    "sample_clients",
    "scatter_masked",
    "weighted_mean",
]

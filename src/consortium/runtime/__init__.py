"""Runtimes move messages between a workflow and its members; they know no algorithm."""

from consortium.runtime.local import LocalRuntime

__all__ = ["LocalRuntime"]

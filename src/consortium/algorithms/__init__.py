"""Algorithms: each method in its own folder, written on the core, unaware of runtimes."""

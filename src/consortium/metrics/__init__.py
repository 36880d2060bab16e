"""Metrics shared across methods: unlearning verification (and more as methods land)."""

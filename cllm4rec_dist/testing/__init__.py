"""Helpers for tests and benchmarks (multi-rank CPU runs, tiny fixtures)."""

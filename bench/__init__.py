"""Benchmarks, run from the repository root as modules: ``python -m bench.<name>``; one timing and
report harness (harness.py) and the peers they share (peers.py)."""

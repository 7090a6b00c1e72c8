"""The quality runs of docs/results.md: ``python -m experiments.run <dataset>`` (see run.py)."""

"""Optimisation policy shared by every optimizer of a stage: the learning-rate schedule."""

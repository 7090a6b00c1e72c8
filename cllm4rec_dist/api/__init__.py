"""The public face of a trained model: ``Recommender`` (recommender.py), loaded from an export."""

from cllm4rec_dist.api.recommender import Recommender, UnknownIdError

__all__ = ["Recommender", "UnknownIdError"]

"""cllm4rec_dist: distributed, large-scale training of CLLM4Rec.

``from cllm4rec_dist import Recommender`` is the public API of a trained model (``api/``); it is
imported on first use, so the commands that do not serve skip torch and transformers here.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["Recommender"]


def __getattr__(name: str) -> Any:
    if name == "Recommender":
        from cllm4rec_dist.api.recommender import Recommender

        return Recommender
    raise AttributeError(f"module 'cllm4rec_dist' has no attribute {name!r}")

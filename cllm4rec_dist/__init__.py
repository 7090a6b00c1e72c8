"""cllm4rec_dist: distributed, large-scale training of CLLM4Rec."""

__version__ = "0.1.0"

"""Metrics of generated dialogue."""

from .diversity import average_length, distinct_n, distinct_n_per_utterance, max_ratio
from .entropy import entropy_n

__all__ = ["average_length", "distinct_n", "distinct_n_per_utterance", "entropy_n", "max_ratio"]

"""Metrics of generated dialogue."""

from .diversity import distinct_n, max_ratio
from .entropy import entropy_n

__all__ = ["distinct_n", "entropy_n", "max_ratio"]

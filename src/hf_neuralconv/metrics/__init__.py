"""Metrics of generated dialogue."""

from .diversity import distinct_n, max_ratio

__all__ = ["distinct_n", "max_ratio"]

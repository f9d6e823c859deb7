"""Ent-n, the entropy of the n-gram distribution of a set of replies (Zhang et al. 2018; He & Glass 2020, Eq. 5)."""

import math
from collections import Counter
from collections.abc import Sequence

from .diversity import _tokens


def entropy_n(replies: Sequence[str | Sequence[str]], n: int) -> float:
    """Ent-n = sum_g -r(g) log r(g) over the n-grams g of all replies, r(g) the share of g among all n-grams
    (He & Glass 2020, Eq. 5), in nats. N-grams do not cross reply boundaries; 0.0 when there is no n-gram."""
    if n < 1:
        raise ValueError(f"`n` must be >= 1, got {n}.")
    counts = Counter()
    for reply in replies:
        tokens = _tokens(reply)
        counts.update(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    total = sum(counts.values())
    return -sum(count / total * math.log(count / total) for count in counts.values()) if total else 0.0

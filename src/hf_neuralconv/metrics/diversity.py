"""Diversity of generated replies: distinct-n (Li et al. 2016) and max-ratio (He & Glass 2020).

Plain functions over lists of replies; a reply is a string (split on white space) or an already tokenized list.
"""

from collections import Counter
from collections.abc import Sequence


def _tokens(reply: str | Sequence[str]) -> list[str]:
    return reply.split() if isinstance(reply, str) else list(reply)


def distinct_n(replies: Sequence[str | Sequence[str]], n: int) -> float:
    """distinct-n: the number of distinct n-grams over all replies divided by the total number of generated tokens.

    Li et al. (2016, "A Diversity-Promoting Objective Function for Neural Conversation Models") divide
    by the number of generated words, not of n-grams, and so does this function: a set of replies that repeats
    itself, or is short, scores low. N-grams do not cross reply boundaries. Returns 0.0 when nothing was generated.
    """
    if n < 1:
        raise ValueError(f"`n` must be >= 1, got {n}.")
    ngrams, total_tokens = set(), 0
    for reply in replies:
        tokens = _tokens(reply)
        total_tokens += len(tokens)
        ngrams.update(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return len(ngrams) / total_tokens if total_tokens else 0.0


def max_ratio(replies: Sequence[str | Sequence[str]]) -> float:
    """max-ratio: the share of the replies that are the most frequent reply (He & Glass 2020, "Negative Training
    for Neural Dialogue Response Generation": a measure of the frequent, generic response problem).

    Replies are compared token by token (white space does not matter).
    """
    if not replies:
        raise ValueError("max-ratio needs at least one reply.")
    counts = Counter(tuple(_tokens(reply)) for reply in replies)
    return max(counts.values()) / len(replies)

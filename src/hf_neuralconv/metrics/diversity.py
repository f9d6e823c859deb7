"""Diversity of generated replies: distinct-n (Li et al. 2016), its per-reply variant, max-ratio (He & Glass 2020)
and the average reply length.

Plain functions over lists of replies; a reply is a string (split on white space) or an already tokenized list.
"""

from collections import Counter
from collections.abc import Sequence


def _tokens(reply: str | Sequence[str]) -> list[str]:
    return reply.split() if isinstance(reply, str) else list(reply)


def _ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def distinct_n(replies: Sequence[str | Sequence[str]], n: int) -> float:
    """distinct-n, corpus level: the number of distinct n-grams over all replies divided by the total number of
    generated tokens.

    Li et al. (2016, "A Diversity-Promoting Objective Function for Neural Conversation Models") divide
    by the number of generated words, not of n-grams, and so does this function: a set of replies that repeats
    itself, or is short, scores low. Luan et al. (2017, Section 6.2) use the same corpus-level definition. Some
    toolkits instead average a per-reply ratio, which does not see repetition across replies: that is
    `distinct_n_per_utterance`. N-grams do not cross reply boundaries. Returns 0.0 when nothing was generated.
    """
    if n < 1:
        raise ValueError(f"`n` must be >= 1, got {n}.")
    ngrams, total_tokens = set(), 0
    for reply in replies:
        tokens = _tokens(reply)
        total_tokens += len(tokens)
        ngrams.update(_ngrams(tokens, n))
    return len(ngrams) / total_tokens if total_tokens else 0.0


def distinct_n_per_utterance(replies: Sequence[str | Sequence[str]], n: int) -> float:
    """distinct-n, utterance level: the mean over replies of (distinct n-grams in the reply / tokens in the reply).

    Not the distinct-n of Li et al. (2016) and Luan et al. (2017, Section 6.2), which is corpus level
    (`distinct_n`: distinct n-grams over all replies / all generated tokens); papers and toolkits that report
    "distinct-n" use either, so name the one you report. This one only measures repetition inside each reply:
    ten copies of the same reply score as well as one. Replies without tokens are skipped (they have no ratio);
    returns 0.0 when no reply has a token.
    """
    if n < 1:
        raise ValueError(f"`n` must be >= 1, got {n}.")
    ratios = [len(_ngrams(tokens, n)) / len(tokens) for tokens in map(_tokens, replies) if tokens]
    return sum(ratios) / len(ratios) if ratios else 0.0


def average_length(replies: Sequence[str | Sequence[str]]) -> float:
    """The mean number of tokens per reply, empty replies counting as 0: reported beside distinct-n, whose
    denominator (generated tokens) it explains."""
    if not replies:
        raise ValueError("The average length needs at least one reply.")
    return sum(len(_tokens(reply)) for reply in replies) / len(replies)


def max_ratio(replies: Sequence[str | Sequence[str]]) -> float:
    """max-ratio: the share of the replies that are the most frequent reply (He & Glass 2020, "Negative Training
    for Neural Dialogue Response Generation": a measure of the frequent, generic response problem).

    Replies are compared token by token (white space does not matter).
    """
    if not replies:
        raise ValueError("max-ratio needs at least one reply.")
    counts = Counter(tuple(_tokens(reply)) for reply in replies)
    return max(counts.values()) / len(replies)

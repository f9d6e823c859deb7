"""distinct-n and max-ratio against values computed by hand."""

import pytest

from hf_neuralconv.metrics.diversity import distinct_n, max_ratio

REPLIES = ["i do n't know", "i do n't know", "me too"]  # 4 + 4 + 2 = 10 generated tokens


def test_distinct_divides_distinct_ngrams_by_generated_tokens():
    # unigrams: i, do, n't, know, me, too -> 6 distinct; bigrams: (i do) (do n't) (n't know) (me too) -> 4.
    assert distinct_n(REPLIES, 1) == pytest.approx(6 / 10)
    assert distinct_n(REPLIES, 2) == pytest.approx(4 / 10)
    # trigrams: (i do n't) (do n't know) -> 2; "me too" is too short for one.
    assert distinct_n(REPLIES, 3) == pytest.approx(2 / 10)


def test_distinct_accepts_token_lists_and_does_not_cross_replies():
    assert distinct_n([["a", "b"], ["b", "a"]], 2) == pytest.approx(2 / 4)  # (a b), (b a); no (b b) across replies
    assert distinct_n([["a"], ["a"], ["a"]], 1) == pytest.approx(1 / 3)


def test_distinct_edge_cases():
    assert distinct_n([], 1) == 0.0
    assert distinct_n(["", "   "], 2) == 0.0
    with pytest.raises(ValueError, match="n"):
        distinct_n(REPLIES, 0)


def test_max_ratio_is_the_share_of_the_most_frequent_reply():
    assert max_ratio(REPLIES) == pytest.approx(2 / 3)
    assert max_ratio(["a", "b", "c", "d"]) == pytest.approx(1 / 4)
    assert max_ratio(["ok  sure", "ok sure", " ok sure ", "no"]) == pytest.approx(3 / 4)  # white space ignored
    with pytest.raises(ValueError, match="at least one"):
        max_ratio([])

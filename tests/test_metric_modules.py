"""The dialogue-diversity, corpus-BLEU and hit-rate `evaluate` modules, loaded offline from their files, against
values computed by hand and against sacrebleu called directly."""

import logging
import math

import evaluate
import pytest
import sacrebleu

from hf_neuralconv.metrics import corpus_bleu, dialogue_diversity, hit_rate
from hf_neuralconv.metrics.diversity import average_length, distinct_n_per_utterance

# 3 + 3 + 3 = 9 generated tokens; unigrams i, am, fine, ok; bigrams (i am) x3, (am fine) x2, (am ok) x1;
# trigrams (i am fine) x2, (i am ok) x1.
REPLIES = ["i am fine", "i am ok", "i am fine"]


@pytest.fixture(scope="module")
def load_offline():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield lambda module: evaluate.load(module.__file__)


@pytest.fixture(scope="module")
def diversity(load_offline):
    return load_offline(dialogue_diversity)


@pytest.fixture(scope="module")
def bleu(load_offline):
    return load_offline(corpus_bleu)


def test_diversity_module_matches_hand_computed_values(diversity):
    result = diversity.compute(predictions=REPLIES)
    assert result == pytest.approx({
        "distinct_1": 4 / 9,  # 4 distinct unigrams / 9 tokens
        "distinct_2": 3 / 9,  # 3 distinct bigrams / 9 tokens (tokens, not the 6 bigrams)
        # per reply: 3 distinct unigrams / 3 tokens = 1 and 2 distinct bigrams / 3 tokens each; the repeated reply
        # is invisible at this level, so both differ from the corpus figures.
        "distinct_1_per_utterance": 1.0,
        "distinct_2_per_utterance": 2 / 3,
        "max_ratio": 2 / 3,  # "i am fine" is 2 of the 3 replies
        # Ent-2: bigram shares 3/6, 2/6, 1/6; Ent-3: trigram shares 2/3, 1/3 (natural log, He & Glass Eq. 5).
        "ent_2": -(1 / 2 * math.log(1 / 2) + 1 / 3 * math.log(1 / 3) + 1 / 6 * math.log(1 / 6)),
        "ent_3": -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)),
        "average_length": 3.0,
        "num_replies": 3,
    })


def test_diversity_module_orders_are_arguments(diversity):
    result = diversity.compute(predictions=REPLIES, ngram_orders=(3,), entropy_orders=(1,))
    assert set(result) == {"distinct_3", "distinct_3_per_utterance", "max_ratio", "ent_1", "average_length",
                           "num_replies"}
    assert result["distinct_3"] == pytest.approx(2 / 9)  # (i am fine), (i am ok) / 9 tokens
    # unigram shares: i 3/9, am 3/9, fine 2/9, ok 1/9
    assert result["ent_1"] == pytest.approx(-sum(p * math.log(p) for p in (3 / 9, 3 / 9, 2 / 9, 1 / 9)))


def test_per_utterance_distinct_skips_empty_replies():
    replies = ["a b", "", "a a"]
    # (2/2 + 1/2) / 2 non-empty replies; counting the empty reply as 0 would give 0.5.
    assert distinct_n_per_utterance(replies, 1) == pytest.approx(0.75)
    assert distinct_n_per_utterance(["", "  "], 1) == 0.0
    assert average_length(replies) == pytest.approx(4 / 3)  # the empty reply counts, with 0 tokens
    with pytest.raises(ValueError, match="n"):
        distinct_n_per_utterance(replies, 0)
    with pytest.raises(ValueError, match="at least one"):
        average_length([])


def test_diversity_module_refuses_no_predictions(diversity):
    with pytest.raises(ValueError, match="at least one prediction"):
        diversity.compute(predictions=[])


def test_bleu_module_equals_sacrebleu(bleu):
    predictions = ["I am fine, thanks.", "no idea", "the cat sat on the mat"]
    references = ["i am fine.", "No idea at all", "the cat is on the mat"]
    for kwargs in ({}, {"lowercase": True}, {"tokenize": "none"}):
        result = bleu.compute(predictions=predictions, references=references, **kwargs)
        expected = sacrebleu.corpus_bleu(predictions, [references], **kwargs)
        assert result["bleu"] == pytest.approx(expected.score)
        assert result["precisions"] == pytest.approx(expected.precisions)
        assert result["brevity_penalty"] == pytest.approx(expected.bp)
        assert (result["sys_len"], result["ref_len"]) == (expected.sys_len, expected.ref_len)
    assert result["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:none|smooth:exp|")


def test_bleu_module_perfect_match_is_100(bleu):
    result = bleu.compute(predictions=["hello , how are you ?"], references=["hello , how are you ?"])
    assert result["bleu"] == pytest.approx(100.0)
    assert result["precisions"] == pytest.approx([100.0] * 4)
    assert "tok:13a" in result["signature"]


def test_reply_bleu_scores_the_split_words_without_sacrebleus_tokenized_text_warning(caplog):
    from hf_neuralconv.core.evaluation import reply_metrics
    from hf_neuralconv.data.tokenization import train_word_tokenizer

    tokenizer = train_word_tokenizer(["i'm fine, thanks. how are you?"], vocab_size=40)
    replies = [f"i'm fine {index}." for index in range(120)]  # 120 lines ending in " ." once split
    references = [f"I'm fine, thanks {index}." for index in range(120)]
    with caplog.at_level(logging.WARNING, logger="sacrebleu"):
        score = reply_metrics(tokenizer, replies, references)["bleu"]
    assert not [record for record in caplog.records if record.name == "sacrebleu"]
    expected = sacrebleu.corpus_bleu([f"i ' m fine {index} ." for index in range(120)],
                                     [[f"i ' m fine , thanks {index} ." for index in range(120)]], tokenize="none")
    assert score == pytest.approx(expected.score)


def test_bleu_module_refuses_empty_or_mismatched_input(bleu):
    with pytest.raises(ValueError, match=r"Mismatch in the number of predictions \(2\) and references \(1\)"):
        bleu.compute(predictions=["a b", "c d"], references=["a b"])  # evaluate's own check, before `_compute`
    # Last: an error inside `_compute` leaves evaluate's cache-file lock held, and the next call waits ~1 s for it.
    with pytest.raises(ValueError, match="at least one prediction"):
        bleu.compute(predictions=[], references=[])


def test_hit_rate_module_matches_hand_computed_rates(load_offline):
    metric = load_offline(hit_rate)
    # T_out = -4, T_in = -5. Pair 1: min -3 and avg -2 above T_out, greedy, trigger LM -6 (below T_in);
    # pair 2: min -4.5 below, avg -3 above, LM -4; pair 3: both below, LM -1; pair 4: min -3.9, avg -1, LM -4.9.
    scores = dict(min_log_prob=[-3.0, -4.5, -8.0, -3.9], avg_log_prob=[-2.0, -3.0, -5.0, -1.0],
                  greedy=[True, False, False, False])
    result = metric.compute(**scores, input_log_likelihood=[-6.0, -4.0, -1.0, -4.9], output_threshold=-4.0,
                            input_threshold=-5.0)
    assert result == pytest.approx({
        "o-greedy-hit": 1 / 4,
        "o-sample-min-hit": 2 / 4,  # pairs 1 and 4
        "o-sample-avg-hit": 3 / 4,  # pairs 1, 2 and 4
        "io-sample-min-hit": 1 / 4,  # pair 4 (pair 1's trigger is below T_in)
        "io-sample-avg-hit": 2 / 4,  # pairs 2 and 4
        "num_pairs": 4,
    })
    # Without the input LM's scores only the o- rates exist.
    assert set(metric.compute(**scores, output_threshold=-4.0)) == {
        "o-greedy-hit", "o-sample-min-hit", "o-sample-avg-hit", "num_pairs"}
    with pytest.raises(ValueError, match="output_threshold"):
        metric.compute(**scores)

"""Kneser-Ney baseline (KenLM lmplz + kenlm): values checked by hand, not just that it runs."""

import math
import random
import warnings

import pytest

from hf_neuralconv.seq2seq.ngram import find_lmplz, kenlm_perplexity, train_kenlm

kenlm = pytest.importorskip("kenlm")

MEMORY = "100M"  # lmplz sorting memory: plenty for these corpora (the default is 20% of RAM)


@pytest.fixture(scope="module")
def lmplz():
    try:
        return find_lmplz()
    except FileNotFoundError as error:
        pytest.skip(f"KenLM's lmplz is not built ({error})")


def _arpa_words(arpa_path):
    """The unigram entries of an ARPA file: every word the model can predict, plus `<s>`."""
    words, in_unigrams = [], False
    with open(arpa_path, encoding="utf-8") as arpa:
        for line in arpa:
            line = line.strip()
            if line.startswith("\\"):
                in_unigrams = line == "\\1-grams:"
            elif in_unigrams and line:
                words.append(line.split("\t")[1])
    return words


def _prob(model, context, word):
    """P(word | <s> context) from the model."""
    state, out = kenlm.State(), kenlm.State()
    model.BeginSentenceWrite(state)
    for w in context:
        model.BaseScore(state, w, out)
        state, out = out, state
    return 10 ** model.BaseScore(state, word, out)


def _zipf_corpus(seed, num_sentences):
    """Random sentences over a Zipfian vocabulary (so that closed-form KN discounts are defined at every order)."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(1000)]
    weights = [1 / (i + 1) for i in range(1000)]
    return [rng.choices(words, weights, k=rng.randint(1, 8)) for _ in range(num_sentences)]


@pytest.fixture(scope="module")
def trigram(lmplz, tmp_path_factory):
    """Order-3 model on a Zipfian corpus; the vocabulary leaves out the rarest words, which become `<unk>`."""
    train = _zipf_corpus(0, 2000)
    vocabulary = {f"w{i}" for i in range(500)} | {"<unk>", "<s>", "</s>", "<pad>"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # closed-form discounts at every order: no fallback warning
        arpa = train_kenlm(train, 3, tmp_path_factory.mktemp("kn3"), vocabulary, memory=MEMORY)
    return arpa, vocabulary


# Tiny corpus for hand computation; with vocabulary {a, b} it is mapped to
#   <s> a b </s> | <s> b <unk> </s> | <s> <unk> </s>
# Its counts of counts leave the closed-form discounts undefined (no bigram or unigram seen 3 times), so lmplz uses
# the fallback discounts D1 = 0.5, D2 = 1, D3+ = 1.5 at both orders.
TINY = [["a", "b"], ["b", "zz"], ["zz"]]
TINY_VOCABULARY = {"a", "b", "<unk>"}


@pytest.fixture(scope="module")
def tiny_bigram(lmplz, tmp_path_factory):
    with pytest.warns(UserWarning, match="fallback discounts"):
        arpa = train_kenlm(TINY, 2, tmp_path_factory.mktemp("tiny"), TINY_VOCABULARY, memory=MEMORY)
    return arpa, kenlm.Model(str(arpa))


def test_perplexity_matches_full_scores(trigram):
    arpa, vocabulary = trigram
    test = _zipf_corpus(1, 50) + [["w0", "never-seen", "w1"], []]
    result = kenlm_perplexity(arpa, test, vocabulary)

    model = kenlm.Model(str(arpa))
    log10_sum, num_tokens, num_unk = 0.0, 0, 0
    for words in test:
        mapped = [w if w in vocabulary else "<unk>" for w in words]
        scores = list(model.full_scores(" ".join(mapped), bos=True, eos=True))
        assert len(scores) == len(words) + 1  # one score per word plus </s>; <s> is not scored
        log10_sum += sum(log10 for log10, _, _ in scores)
        num_tokens += len(scores)
        num_unk += sum(oov for _, _, oov in scores)
    expected = math.exp(-log10_sum * math.log(10) / num_tokens)

    assert result["num_tokens"] == num_tokens == sum(len(words) + 1 for words in test)
    assert result["num_unk"] == num_unk > 1
    assert result["order"] == 3
    assert result["log_prob_sum_ln"] == pytest.approx(log10_sum * math.log(10), rel=1e-6)  # kenlm sums float32 scores
    assert result["perplexity"] == pytest.approx(expected, rel=1e-6)
    assert 10 < result["perplexity"] < 1000  # sane for a 1000-word Zipfian vocabulary


def test_trigram_distributions_sum_to_one(trigram):
    arpa, _ = trigram
    model = kenlm.Model(str(arpa))
    predictable = [w for w in _arpa_words(arpa) if w != "<s>"]  # includes </s> and <unk>
    for context in ([], ["w0"], ["w0", "w1"], ["<unk>", "w2"], ["w499", "w300"]):
        total = sum(_prob(model, context, w) for w in predictable)
        assert total == pytest.approx(1.0, abs=1e-4), context


def test_unk_is_learned_like_an_ordinary_word(trigram):
    """<unk> stands for the 500 rarest words, so its probability is large, not lmplz's zero-count leftover."""
    arpa, _ = trigram
    model = kenlm.Model(str(arpa))
    p_unk = 10 ** model.score("<unk>", bos=False, eos=False)
    p_rare = 10 ** model.score("w400", bos=False, eos=False)
    assert p_unk > 10 * p_rare
    assert p_unk > 0.01


def test_modified_kneser_ney_by_hand(tiny_bigram):
    arpa, model = tiny_bigram
    # Unigrams use continuation counts N1+(. w): a:1 ({<s>}), b:2, <unk>:2, </s>:2, in total 7. The interpolation
    # weight 0.5 = (D1 * 1 + D2 * 3) / 7 spreads over 5 words (a, b, <unk>, </s> and lmplz's own zero-count
    # unknown word; <s> is excluded): p(<unk>) = (2 - D2) / 7 + 0.5 / 5 = 17/70.
    assert 10 ** model.score("<unk>", bos=False, eos=False) == pytest.approx(17 / 70, abs=1e-6)
    assert 10 ** model.score("a", bos=False, eos=False) == pytest.approx(0.5 / 7 + 0.1, abs=1e-6)
    # Context b: c(b </s>) = c(b <unk>) = 1, gamma(b) = 2 * D1 / 2 = 0.5, so
    # p(<unk> | b) = (1 - D1) / 2 + 0.5 * 17/70 = 13/35, and p(a | b) = 0.5 * p(a) = 0.5 * 6/35.
    assert _prob(model, ["b"], "<unk>") == pytest.approx(13 / 35, abs=1e-6)
    assert _prob(model, ["b"], "</s>") == pytest.approx(13 / 35, abs=1e-6)
    assert _prob(model, ["b"], "a") == pytest.approx(3 / 35, abs=1e-6)
    # The distributions after every context sum to one over the model's words (<s> excluded).
    predictable = [w for w in _arpa_words(arpa) if w != "<s>"]
    assert len(predictable) == 5
    for context in ([], ["a"], ["b"], ["<unk>"], ["qq"]):
        assert sum(_prob(model, context, w) for w in predictable) == pytest.approx(1.0, abs=1e-4)


def test_oov_words_score_as_unk(tiny_bigram):
    arpa, model = tiny_bigram
    # An unseen word after b gets p(<unk> | b) from the bigram <b, <unk>>, not a unigram backoff.
    scores = list(model.full_scores("b never-seen", bos=True, eos=True))
    with_unk = list(model.full_scores("b <unk>", bos=True, eos=True))
    assert scores == with_unk
    assert scores[1][1:] == (2, True)  # bigram match, flagged as OOV
    # p(b | <s>) = 1/6 + 0.5 * 17/70, p(<unk> | b) = 13/35, p(</s> | <unk>) = 1/2 + 0.5 * 17/70.
    expected_ln = math.log((1 / 6 + 17 / 140) * (13 / 35) * (1 / 2 + 17 / 140))
    # "a" is in the model but not in this vocabulary, so kenlm_perplexity scores it as <unk> too.
    for words in (["b", "never-seen"], ["b", "a"]):
        result = kenlm_perplexity(arpa, [words], {"b"})
        assert result["num_tokens"] == 3 and result["num_unk"] == 1
        assert result["log_prob_sum_ln"] == pytest.approx(expected_ln, abs=1e-5)
        assert result["perplexity"] == pytest.approx(math.exp(-expected_ln / 3), rel=1e-5)


def test_refuses_to_overwrite(tmp_path):
    existing = tmp_path / "2gram.arpa"
    existing.write_text("keep me")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        train_kenlm(TINY, 2, tmp_path, TINY_VOCABULARY)
    assert existing.read_text() == "keep me"


def test_overwrite_when_asked(lmplz, tmp_path):
    existing = tmp_path / "2gram.arpa"
    existing.write_text("replace me")
    with pytest.warns(UserWarning, match="fallback discounts"):
        assert train_kenlm(TINY, 2, tmp_path, TINY_VOCABULARY, overwrite=True, memory=MEMORY) == existing
    assert "\\data\\\nngram 1=6\nngram 2=7\n" in existing.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2gram.arpa"]  # scratch files are removed


def test_rejects_sentence_markers_in_sentences(lmplz, tmp_path):
    with pytest.raises(ValueError, match="sentence boundaries"):
        train_kenlm([["a", "</s>"]], 2, tmp_path, {"a", "</s>"})


def test_missing_lmplz_says_how_to_build(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_NEURALCONV_KENLM_BIN", str(tmp_path / "bin"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="scripts/build_kenlm.sh"):
        find_lmplz()

"""`evaluate` module: embedding-average similarity between replies and target replies (Liu et al. 2019, "Say What I
Want", Eq. 2), the score of the reverse-generator attack (Figure 2 success rates, Table 1 averages).

A local module: `evaluate.load` reads it from this file, offline (evaluate copies a local script into its modules
cache and imports it from there, so it imports the package absolutely):

    >>> import evaluate
    >>> from hf_neuralconv.metrics import similarity
    >>> metric = evaluate.load(similarity.__file__)
    >>> metric.compute(predictions=["i was there ."], references=["i was there"], word_vectors=vectors)
    {'embedding_similarity': 1.0, 'success_rate': 1.0}

`word_vectors` is a gensim `KeyedVectors` or a word2vec-format file; `stopwords` are words that do not count
(punctuation and symbols never do); `success_threshold` is the similarity at which a reply counts as the target.
"""

import evaluate

from hf_neuralconv.metrics.embedding_similarity import EmbeddingSimilarityReward
from hf_neuralconv.metrics.module_info import LIU_2019, PREDICTIONS_AND_REFERENCES, metric_info

_KWARGS_DESCRIPTION = """
Args:
    predictions: replies of the dialogue model (strings).
    references: the target replies (strings), one per prediction; each needs a counted word with a vector.
    word_vectors: gensim KeyedVectors, or the path of a word2vec-format file (binary if it ends in .bin).
    stopwords: words that do not count, besides punctuation and symbols.
    success_threshold: a prediction whose similarity is at least this counts as a success (default 0.5).
Returns:
    embedding_similarity: the mean cosine similarity of the embedding averages (Liu et al. 2019, Eq. 2).
    success_rate: the share of predictions with a similarity of at least `success_threshold`.
"""


class Similarity(evaluate.Metric):
    """Embedding-average cosine similarity of predictions and references, and the share above a threshold."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info(__doc__, (LIU_2019,), _KWARGS_DESCRIPTION, PREDICTIONS_AND_REFERENCES)

    def _compute(self, predictions, references, word_vectors=None, stopwords=(), success_threshold=0.5) -> dict:
        if word_vectors is None:
            raise ValueError("Pass `word_vectors=` (gensim KeyedVectors or a word2vec-format file).")
        if not predictions:
            raise ValueError("Nothing to score: give at least one prediction and its reference.")
        scorer = EmbeddingSimilarityReward(word_vectors, stopwords, threshold=-1.0)
        pairs = zip(predictions, references, strict=True)
        scores = [scorer.similarity(reference, prediction) for prediction, reference in pairs]
        return {
            "embedding_similarity": sum(scores) / len(scores),
            "success_rate": sum(score >= success_threshold for score in scores) / len(scores),
        }

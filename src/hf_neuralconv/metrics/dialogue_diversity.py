"""`evaluate` module: diversity of generated replies — distinct-n (Li et al. 2016), its per-reply variant,
max-ratio and Ent-n (He & Glass 2020, Eq. 5), and the average reply length.

A local module: `evaluate.load` reads it from this file, offline (evaluate copies a local script into its modules
cache and imports it from there, so it imports the package absolutely):

    >>> import evaluate
    >>> from hf_neuralconv.metrics import dialogue_diversity
    >>> metric = evaluate.load(dialogue_diversity.__file__)
    >>> metric.compute(predictions=["i am fine", "i am ok", "i am fine"])["distinct_2"]
    0.3333333333333333

Replies are split on white space: tokenize them the way the numbers you compare with were (e.g. "i ' m" vs "i'm").
"""

import datasets
import evaluate

from hf_neuralconv.metrics.diversity import average_length, distinct_n, distinct_n_per_utterance, max_ratio
from hf_neuralconv.metrics.entropy import entropy_n
from hf_neuralconv.metrics.module_info import HE_GLASS_2020, LI_2016, metric_info

_KWARGS_DESCRIPTION = """
Args:
    predictions: the generated replies (strings, split on white space).
    ngram_orders: the n of distinct-n (default (1, 2)).
    entropy_orders: the n of Ent-n (default (2, 3)).
Returns:
    distinct_{n}: distinct n-grams over all replies / all generated tokens (corpus level, Li et al. 2016).
    distinct_{n}_per_utterance: the mean over non-empty replies of distinct n-grams / tokens in that reply.
    max_ratio: the share of the replies that are the most frequent reply (He & Glass 2020).
    ent_{n}: entropy of the n-gram distribution of all replies, in nats (He & Glass 2020, Eq. 5).
    average_length: mean tokens per reply.
    num_replies: the number of replies.
"""


class DialogueDiversity(evaluate.Metric):
    """distinct-n (corpus and per-reply), max-ratio, Ent-n and average length of a set of generated replies."""

    def _info(self) -> evaluate.MetricInfo:
        features = datasets.Features({"predictions": datasets.Value("string")})
        return metric_info(__doc__, (LI_2016, HE_GLASS_2020), _KWARGS_DESCRIPTION, features)

    def _compute(self, predictions, ngram_orders=(1, 2), entropy_orders=(2, 3)) -> dict:
        if not predictions:
            raise ValueError("Nothing to score: give at least one prediction (a generated reply).")
        result = {}
        for n in ngram_orders:
            result[f"distinct_{n}"] = distinct_n(predictions, n)
            result[f"distinct_{n}_per_utterance"] = distinct_n_per_utterance(predictions, n)
        result["max_ratio"] = max_ratio(predictions)
        result.update({f"ent_{n}": entropy_n(predictions, n) for n in entropy_orders})
        result["average_length"] = average_length(predictions)
        result["num_replies"] = len(predictions)
        return result

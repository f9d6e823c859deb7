"""`evaluate` module: hit rates of (trigger, target) pairs by hit type (He & Glass 2020, Section 3.2; Table 3).

Each row is one pair's scores as `hf_neuralconv.negative_training.score_pairs` (or `hf-neuralconv attack --output`)
gives them: the minimum and average word log-probability of the target given the trigger, whether greedy decoding of the
trigger gives the target, and optionally the input LM's average word log-likelihood of the trigger. The rates
follow `HitCriterion` — o-greedy-hit; o-sample-min/avg-hit: the min/avg log-probability above T_out;
io-sample-min/avg-hit: also the trigger's LM log-likelihood above T_in (when given with T_in).

    >>> import evaluate
    >>> from hf_neuralconv.metrics import hit_rate
    >>> metric = evaluate.load(hit_rate.__file__)
    >>> metric.compute(min_log_prob=[-9.0, -3.0], avg_log_prob=[-4.0, -2.0], greedy=[False, True],
    ...                output_threshold=-4.35)["o-sample-min-hit"]
    0.5

A local module, loadable offline (evaluate copies the script into its modules cache: it imports the package
absolutely).
"""

import datasets
import evaluate
import torch

from hf_neuralconv.metrics.hit_criteria import HIT_TYPES, HitCriterion, PairScores
from hf_neuralconv.metrics.module_info import HE_GLASS_2020, metric_info

_KWARGS_DESCRIPTION = """
Args:
    min_log_prob: per pair, min_t log P(y_t | y_<t, x) over the target's words and </s>.
    avg_log_prob: per pair, the average of log P(y_t | y_<t, x).
    greedy: per pair, whether greedy decoding of the trigger outputs exactly the target.
    input_log_likelihood: per pair (optional), the input LM's average word log-likelihood of the trigger.
    output_threshold: T_out, the model's average word log-likelihood on test data.
    input_threshold: T_in (optional), the input LM's on test inputs; with input_log_likelihood, the io- rates.
Returns:
    o-greedy-hit, o-sample-min-hit, o-sample-avg-hit and, given the input LM scores and T_in,
    io-sample-min-hit and io-sample-avg-hit: the share of the pairs that hit; num_pairs.
"""

class HitRate(evaluate.Metric):
    """Share of (trigger, target) pairs that hit, for every hit type the given scores allow."""

    def _info(self) -> evaluate.MetricInfo:
        # The input LM's scores are optional: a keyword argument rather than a feature column.
        features = datasets.Features({"min_log_prob": datasets.Value("float64"),
                                      "avg_log_prob": datasets.Value("float64"), "greedy": datasets.Value("bool")})
        return metric_info(__doc__, (HE_GLASS_2020,), _KWARGS_DESCRIPTION, features)

    def _compute(self, min_log_prob, avg_log_prob, greedy, input_log_likelihood=None, output_threshold=None,
                 input_threshold=None) -> dict:
        if not min_log_prob:
            raise ValueError("No pairs to score: give at least one (trigger, target) pair's scores.")
        if output_threshold is None:
            raise ValueError("Hit rates need `output_threshold` (T_out: the model's average word log-likelihood "
                             "on test data, e.g. from hf_neuralconv.negative_training.output_threshold).")
        if input_log_likelihood is not None and len(input_log_likelihood) != len(min_log_prob):
            raise ValueError(f"Got {len(input_log_likelihood)} input log-likelihoods for {len(min_log_prob)} pairs.")
        scores = PairScores(
            min_log_prob=torch.tensor(min_log_prob), avg_log_prob=torch.tensor(avg_log_prob),
            greedy=torch.tensor(greedy, dtype=torch.bool),
            input_log_likelihood=None if input_log_likelihood is None else torch.tensor(input_log_likelihood),
        )
        with_input = input_log_likelihood is not None and input_threshold is not None
        result = {}
        for hit_type in HIT_TYPES:
            if hit_type.startswith("io-") and not with_input:
                continue
            criterion = HitCriterion(hit_type, output_threshold, input_threshold)
            result[hit_type] = criterion.hits(scores).double().mean().item()
        result["num_pairs"] = len(min_log_prob)
        return result

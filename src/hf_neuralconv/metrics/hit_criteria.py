"""The hit criteria of He & Glass (2020, Section 3.2): when a (trigger, target) pair counts as a hit, from the
scores `negative_training.score_pairs` measures. Shared by the `hit_rate` evaluate module and negative training.
"""

from dataclasses import dataclass

import torch

HIT_TYPES = ("o-greedy-hit", "o-sample-min-hit", "o-sample-avg-hit", "io-sample-min-hit", "io-sample-avg-hit")


@dataclass
class PairScores:
    """What the hit criteria look at, one entry per (trigger, target) pair."""

    min_log_prob: torch.Tensor  # min_t log P(y_t | y_<t, x) over the target's words and </s>
    avg_log_prob: torch.Tensor  # (1/m) sum_t log P(y_t | y_<t, x)
    greedy: torch.Tensor  # bool: every y_t is the argmax given y_<t, i.e. greedy decoding outputs the target
    input_log_likelihood: torch.Tensor | None = None  # the input LM's average word log-likelihood of the trigger


@dataclass(frozen=True)
class HitCriterion:
    """One of the paper's hit types with its thresholds (Section 3.2): `hits(scores)` is c(x, y) of Eq. 2.

    `output_threshold` (T_out) is needed by the sample hits, `input_threshold` (T_in) by the io hits.
    """

    hit_type: str
    output_threshold: float | None = None
    input_threshold: float | None = None

    def __post_init__(self):
        if self.hit_type not in HIT_TYPES:
            raise ValueError(f"Unknown hit type {self.hit_type!r}; choose one of {HIT_TYPES}.")
        if "sample" in self.hit_type and self.output_threshold is None:
            raise ValueError(f"{self.hit_type} needs `output_threshold` (T_out, e.g. from `output_threshold()`).")
        if self.uses_input_lm and self.input_threshold is None:
            raise ValueError(f"{self.hit_type} needs `input_threshold` (T_in, e.g. from `input_threshold()`).")

    @property
    def uses_input_lm(self) -> bool:
        """io hits also judge the trigger with the input LM."""
        return self.hit_type.startswith("io-")

    def hits(self, scores: PairScores) -> torch.Tensor:
        """Boolean hit per pair."""
        if self.hit_type == "o-greedy-hit":
            return scores.greedy.clone()
        output_score = scores.min_log_prob if "-min-" in self.hit_type else scores.avg_log_prob
        hit = output_score > self.output_threshold
        if self.uses_input_lm:
            if scores.input_log_likelihood is None:
                raise ValueError(f"{self.hit_type} needs the triggers scored with the input LM (`input_lm=`).")
            hit &= scores.input_log_likelihood > self.input_threshold
        return hit

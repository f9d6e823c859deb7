"""Metrics of generated dialogue, as functions and as local `evaluate` modules (loadable offline):

    >>> import evaluate
    >>> from hf_neuralconv import metric_path
    >>> evaluate.load(metric_path("dialogue_diversity")).compute(predictions=["i am fine", "i am fine"])

Modules: `dialogue_diversity` (distinct-n, max-ratio, Ent-n), `corpus_bleu` (sacrebleu), `hit_rate` (He & Glass
2020 hit types), `similarity` (Liu et al. 2019 embedding similarity).
"""

from pathlib import Path

from .diversity import average_length, distinct_n, distinct_n_per_utterance, max_ratio
from .entropy import entropy_n

EVALUATE_MODULES = ("corpus_bleu", "dialogue_diversity", "hit_rate", "similarity")


def metric_path(name: str) -> str:
    """The file of one of the package's `evaluate` modules (`EVALUATE_MODULES`), for `evaluate.load`."""
    if name not in EVALUATE_MODULES:
        raise ValueError(f"Unknown metric module {name!r}; choose one of {', '.join(EVALUATE_MODULES)}.")
    return str(Path(__file__).with_name(f"{name}.py"))


__all__ = ["EVALUATE_MODULES", "average_length", "distinct_n", "distinct_n_per_utterance", "entropy_n", "max_ratio",
           "metric_path"]

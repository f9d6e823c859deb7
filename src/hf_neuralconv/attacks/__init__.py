"""Attacks on dialogue models: hit criteria for malicious targets and gibbs-enum trigger search (He & Glass 2020,
Section 3.2 and Appendix A); black-box environments and the embedding-similarity reward of the reverse dialogue
generator (Liu et al. 2019)."""

from .environments import (
    CallableEnvironment,
    DialogueEnvironment,
    EnvironmentQueryError,
    GradioEnvironment,
    PipelineEnvironment,
    build_reference_corpus,
)
from .gibbs_enum import TriggerSearchResult, gibbs_enum
from .hits import (
    HIT_TYPES,
    HitCriterion,
    PairScores,
    TargetList,
    input_threshold,
    load_targets,
    output_threshold,
    read_trigger_pairs,
    score_pairs,
    trigger_prefix,
    write_trigger_pairs,
)
from .reward import EmbeddingSimilarityReward, content_words, load_word_vectors, train_word_vectors

__all__ = [
    "CallableEnvironment",
    "DialogueEnvironment",
    "EmbeddingSimilarityReward",
    "EnvironmentQueryError",
    "GradioEnvironment",
    "PipelineEnvironment",
    "build_reference_corpus",
    "content_words",
    "load_word_vectors",
    "train_word_vectors",
    "HIT_TYPES",
    "HitCriterion",
    "PairScores",
    "TargetList",
    "TriggerSearchResult",
    "gibbs_enum",
    "input_threshold",
    "load_targets",
    "output_threshold",
    "read_trigger_pairs",
    "score_pairs",
    "trigger_prefix",
    "write_trigger_pairs",
]

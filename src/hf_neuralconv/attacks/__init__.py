"""Attacks on dialogue models: hit criteria for malicious targets and gibbs-enum trigger search (He & Glass 2020,
Section 3.2 and Appendix A)."""

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

__all__ = [
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

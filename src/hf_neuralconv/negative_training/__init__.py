"""Negative training (He & Glass 2020): hit criteria for malicious targets, the gibbs-enum trigger search,
`NegativeTrainer` (malicious targets and frequent responses, Eq. 4 with frequent-word avoiding), and the
`hf-neuralconv attack` / `negative-train` commands."""

from ..metrics.hit_criteria import HIT_TYPES, HitCriterion, PairScores
from .attack import attack_model
from .gibbs_enum import TriggerSearchResult, gibbs_enum
from .hits import (
    TargetList,
    TriggerFrame,
    input_threshold,
    load_targets,
    output_threshold,
    read_trigger_pairs,
    score_pairs,
    trigger_frame,
    write_trigger_pairs,
)
from .train import train_negative
from .trainer import NegativeTrainer, NegativeTrainingConfig

__all__ = [
    "HIT_TYPES",
    "HitCriterion",
    "NegativeTrainer",
    "NegativeTrainingConfig",
    "PairScores",
    "TargetList",
    "TriggerSearchResult",
    "attack_model",
    "gibbs_enum",
    "input_threshold",
    "load_targets",
    "output_threshold",
    "read_trigger_pairs",
    "score_pairs",
    "train_negative",
    "TriggerFrame",
    "trigger_frame",
    "write_trigger_pairs",
]

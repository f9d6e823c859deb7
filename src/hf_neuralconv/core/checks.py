"""Argument checks of the decoders and scorers that combine two models (the MMI strategies): weights, a shared
vocabulary, evaluation mode."""

import math
import numbers

from torch import nn
from transformers import PretrainedConfig

SPECIAL_TOKEN_IDS = ("pad_token_id", "bos_token_id", "eos_token_id")


def check_weight(name: str, value, allow_negative: bool = False) -> float:
    """`value` as a float; a clear error for a non-number, NaN/inf, or (unless `allow_negative`) a negative one."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number, got {value!r}.")
    if not allow_negative and value < 0:
        raise ValueError(f"`{name}` must be >= 0 (it weighs a log-probability term), got {value!r}.")
    return float(value)


def check_same_vocabulary(config: PretrainedConfig, other: PretrainedConfig, what: str, other_what: str) -> None:
    """Two models can be combined token by token only if they share the vocabulary: same size, same special ids."""
    if config.vocab_size != other.vocab_size:
        raise ValueError(
            f"The {other_what} has a vocabulary of {other.vocab_size} tokens but the {what} has {config.vocab_size}: "
            "both must be trained with the same tokenizer."
        )
    for name in SPECIAL_TOKEN_IDS:
        if getattr(config, name, None) != getattr(other, name, None):
            raise ValueError(
                f"The {other_what} has {name}={getattr(other, name, None)} but the {what} has "
                f"{name}={getattr(config, name, None)}: both must be trained with the same tokenizer."
            )


def check_eval_mode(model: nn.Module, what: str) -> None:
    """Scores from a model in training mode would be randomised by dropout."""
    if model.training:
        raise ValueError(f"The {what} is in training mode (dropout is on): call `.eval()` on it first.")

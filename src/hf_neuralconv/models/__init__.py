from .lstm import (
    CACHE_NAME,
    LSTMForCausalLM,
    LSTMLMConfig,
    LSTMSeq2SeqConfig,
    LSTMSeq2SeqForConditionalGeneration,
    LSTMState,
)

__all__ = [
    "CACHE_NAME",
    "LSTMForCausalLM",
    "LSTMLMConfig",
    "LSTMSeq2SeqConfig",
    "LSTMSeq2SeqForConditionalGeneration",
    "LSTMState",
]

from .lstm import LSTMForCausalLM, LSTMLMConfig, LSTMSeq2SeqConfig, LSTMSeq2SeqForConditionalGeneration, LSTMState

__all__ = [
    "LSTMForCausalLM",
    "LSTMLMConfig",
    "LSTMSeq2SeqConfig",
    "LSTMSeq2SeqForConditionalGeneration",
    "LSTMState",
]

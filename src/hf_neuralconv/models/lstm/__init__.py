from .configuration_lstm import LSTMLMConfig, LSTMSeq2SeqConfig
from .modeling_lstm import LSTMForCausalLM, LSTMSeq2SeqForConditionalGeneration, LSTMState

__all__ = [
    "LSTMForCausalLM",
    "LSTMLMConfig",
    "LSTMSeq2SeqConfig",
    "LSTMSeq2SeqForConditionalGeneration",
    "LSTMState",
]

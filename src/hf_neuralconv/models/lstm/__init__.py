"""The LSTM encoder-decoder and language model: `configuration_lstm.py` + `modeling_lstm.py`."""

from .configuration_lstm import LSTMLMConfig, LSTMSeq2SeqConfig
from .modeling_lstm import CACHE_NAME, LSTMForCausalLM, LSTMSeq2SeqForConditionalGeneration, LSTMState

__all__ = [
    "CACHE_NAME",
    "LSTMForCausalLM",
    "LSTMLMConfig",
    "LSTMSeq2SeqConfig",
    "LSTMSeq2SeqForConditionalGeneration",
    "LSTMState",
]

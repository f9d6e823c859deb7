"""hf-neuralconv: the classic neural conversation models as Hugging Face software.

Importing the package registers the LSTM models with the transformers Auto classes and marks them for export
with their code (`trust_remote_code=True` loading without this package).
"""

from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

from .models import (
    LSTMForCausalLM,
    LSTMLMConfig,
    LSTMSeq2SeqConfig,
    LSTMSeq2SeqForConditionalGeneration,
    LSTMState,
)

__version__ = "0.1.0"

AutoConfig.register(LSTMSeq2SeqConfig.model_type, LSTMSeq2SeqConfig, exist_ok=True)
AutoConfig.register(LSTMLMConfig.model_type, LSTMLMConfig, exist_ok=True)
AutoModelForSeq2SeqLM.register(LSTMSeq2SeqConfig, LSTMSeq2SeqForConditionalGeneration, exist_ok=True)
AutoModelForCausalLM.register(LSTMLMConfig, LSTMForCausalLM, exist_ok=True)
# save_pretrained then copies configuration_lstm.py / modeling_lstm.py next to the weights and writes `auto_map`.
LSTMSeq2SeqConfig.register_for_auto_class()
LSTMLMConfig.register_for_auto_class()
LSTMSeq2SeqForConditionalGeneration.register_for_auto_class("AutoModelForSeq2SeqLM")
LSTMForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = [
    "LSTMForCausalLM",
    "LSTMLMConfig",
    "LSTMSeq2SeqConfig",
    "LSTMSeq2SeqForConditionalGeneration",
    "LSTMState",
]

"""hf-neuralconv: the classic neural conversation models as Hugging Face software.

Importing the package registers the LSTM models with the transformers Auto classes and marks them for export
with their code (`trust_remote_code=True` loading without this package), and registers the `"conversational"`
pipeline (`pipeline("conversational", model=...)`), which transformers no longer has.
"""

from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM
from transformers.pipelines import PIPELINE_REGISTRY

from .models import (
    LSTMForCausalLM,
    LSTMLMConfig,
    LSTMSeq2SeqConfig,
    LSTMSeq2SeqForConditionalGeneration,
    LSTMState,
)
from .generation import MMIAntiLMLogitsProcessor, mmi_bidi_generate, rerank, tune_mmi
from .pipelines import TASK, ConversationalPipeline

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
PIPELINE_REGISTRY.register_pipeline(
    TASK, pipeline_class=ConversationalPipeline, pt_model=AutoModelForSeq2SeqLM, type="text"
)

__all__ = [
    "ConversationalPipeline",
    "LSTMForCausalLM",
    "LSTMLMConfig",
    "LSTMSeq2SeqConfig",
    "LSTMSeq2SeqForConditionalGeneration",
    "LSTMState",
    "MMIAntiLMLogitsProcessor",
    "mmi_bidi_generate",
    "rerank",
    "tune_mmi",
]

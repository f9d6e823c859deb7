"""hf-neuralconv: the classic neural conversation models as Hugging Face software.

Importing the package registers the LSTM models with the transformers Auto classes and marks them for export with
their code (`trust_remote_code=True` loading without this package), and registers the `"conversational"` pipeline
(`pipeline("conversational", model=...)`), which transformers no longer has.

Every public name below imports from here (`from hf_neuralconv import NegativeTrainer`). The methods' modules load
on first use of one of their names, so `import hf_neuralconv` stays as light as the models and the pipeline.
"""

import importlib

from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM
from transformers.pipelines import PIPELINE_REGISTRY

from .models import LSTMForCausalLM, LSTMLMConfig, LSTMSeq2SeqConfig, LSTMSeq2SeqForConditionalGeneration, LSTMState
from .pipelines import TASK, ConversationalPipeline

__version__ = "0.4.0"

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
    TASK, pipeline_class=ConversationalPipeline, pt_model=(AutoModelForSeq2SeqLM, AutoModelForCausalLM), type="text"
)

# Public name -> the module that defines it, imported on first access (PEP 562).
_LAZY_NAMES = {
    # core: recipes, the base trainer, the chat format, the response scorer, saved models
    "ConversationTrainer": "core.trainer",
    "ConversationTrainingArguments": "core.arguments",
    "DataArguments": "core.arguments",
    "ModelArguments": "core.arguments",
    "parse_recipe": "core.arguments",
    "conversation_turns": "core.chat_format",
    "encode_history": "core.chat_format",
    "encode_histories": "core.chat_format",
    "sequence_log_probs": "core.scoring",
    "target_log_probs": "core.scoring",
    "load_model_dir": "core.loading",
    "perplexity": "core.evaluation",
    # data
    "load_chitchat": "data",
    "load_dialogue_file": "data",
    "source_text": "data",
    "train_word_tokenizer": "data",
    # the chatbot (Vinyals & Le 2015)
    "evaluate_model": "seq2seq",
    "Responder": "pipelines.responder",
    "diversity_report": "pipelines.report",
    # MMI decoding (Li et al. 2016; Luan et al. 2017, Eq. 4)
    "MMIAntiLMLogitsProcessor": "mmi",
    "mmi_bidi_generate": "mmi",
    "rerank": "mmi",
    "tune_mmi": "mmi",
    "save_mmi_settings": "mmi",
    # persona / multi-task (Luan et al. 2017)
    "MultiTaskConfig": "persona",
    "MultiTaskTrainer": "persona",
    "SpeakerVocabulary": "persona",
    "SpeakerModel": "persona",
    "add_speaker_embeddings": "persona",
    "add_speaker_adapter": "persona",
    "load_speaker_adapters": "persona",
    "train_speaker_adaptation": "persona",
    "persona_report": "persona",
    # negative training (He & Glass 2020)
    "HIT_TYPES": "negative_training",
    "HitCriterion": "negative_training",
    "PairScores": "negative_training",
    "gibbs_enum": "negative_training",
    "TriggerSearchResult": "negative_training",
    "load_targets": "negative_training",
    "score_pairs": "negative_training",
    "output_threshold": "negative_training",
    "input_threshold": "negative_training",
    "NegativeTrainer": "negative_training",
    "NegativeTrainingConfig": "negative_training",
    "train_negative": "negative_training",
    "attack_model": "negative_training",
    # the reverse generator (Liu et al. 2019)
    "DialogueEnvironment": "reverse_generator",
    "CallableEnvironment": "reverse_generator",
    "PipelineEnvironment": "reverse_generator",
    "GradioEnvironment": "reverse_generator",
    "OpenAIChatEnvironment": "reverse_generator",
    "EnvironmentQueryError": "reverse_generator",
    "EmbeddingSimilarityReward": "reverse_generator",
    "ReinforceConfig": "reverse_generator",
    "ReinforceTrainer": "reverse_generator",
    # serving
    "ChatBatcher": "serving",
    "ChatCompletionServer": "serving",
    # metric modules for `evaluate.load(path)`
    "metric_path": "metrics",
}


def __getattr__(name: str):
    if name not in _LAZY_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY_NAMES[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_NAMES))


__all__ = [
    "ConversationalPipeline",
    "LSTMForCausalLM",
    "LSTMLMConfig",
    "LSTMSeq2SeqConfig",
    "LSTMSeq2SeqForConditionalGeneration",
    "LSTMState",
    "TASK",
    *_LAZY_NAMES,
]

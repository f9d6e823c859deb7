"""Persona and multi-task speaker-role adaptation (Luan et al. 2017): speaker vectors (MTASK-M), LoRA adapters per
speaker (MTASK-S), the shared-decoder autoencoder task and Figure 3's schedule, and the experiment of Tables 1-2
and Figure 7 (`hf-neuralconv persona-train`, `persona-report`)."""

from .adapters import (
    add_speaker_adapter,
    load_speaker_adapters,
    save_speaker_adapters,
    set_speaker,
    speaker_lora_config,
)
from .config import SpeakerAdaptationArguments, SpeakerAdaptationTrainingArguments, parse_speaker_adaptation_recipe
from .evaluation import SpeakerModel
from .experiment import train_speaker_adaptation
from .report import persona_report
from .speakers import (
    SpeakerVocabulary,
    add_speaker_embeddings,
    add_speaker_ids,
    check_speaker_vectors,
    load_speaker_texts,
    speaker_adaptation_data,
)
from .trainer import MultiTaskConfig, MultiTaskTrainer

__all__ = [
    "MultiTaskConfig",
    "MultiTaskTrainer",
    "SpeakerAdaptationArguments",
    "SpeakerAdaptationTrainingArguments",
    "SpeakerModel",
    "SpeakerVocabulary",
    "add_speaker_adapter",
    "add_speaker_embeddings",
    "add_speaker_ids",
    "check_speaker_vectors",
    "load_speaker_adapters",
    "load_speaker_texts",
    "parse_speaker_adaptation_recipe",
    "persona_report",
    "save_speaker_adapters",
    "set_speaker",
    "speaker_adaptation_data",
    "speaker_lora_config",
    "train_speaker_adaptation",
]

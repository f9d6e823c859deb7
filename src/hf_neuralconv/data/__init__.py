"""Dialogue data: the chitchat corpus and users' dialogue files as `datasets` splits, the word tokenizer and the
training format of a turn, the shipped resources, JSON Lines helpers."""

from .dialogue import (
    DataFormatError,
    build_dataset_dict,
    chitchat_turns,
    dialogue_examples,
    load_chitchat,
    load_dialogue_file,
    split_conversations,
)
from .jsonl import read_jsonl, read_text_pairs, write_jsonl
from .resources import resolve_data_path, shipped_files
from .tokenization import (
    BOT,
    SPECIAL_TOKENS,
    USER,
    encode_lm_examples,
    encode_source,
    encode_target,
    metric_words,
    source_text,
    train_word_tokenizer,
)

__all__ = [
    "BOT",
    "SPECIAL_TOKENS",
    "USER",
    "DataFormatError",
    "build_dataset_dict",
    "chitchat_turns",
    "dialogue_examples",
    "encode_lm_examples",
    "encode_source",
    "encode_target",
    "load_chitchat",
    "load_dialogue_file",
    "metric_words",
    "read_jsonl",
    "read_text_pairs",
    "resolve_data_path",
    "shipped_files",
    "source_text",
    "split_conversations",
    "train_word_tokenizer",
    "write_jsonl",
]

"""What a recipe describes, built: the corpus split by conversation, its examples tokenized for a seq2seq model
or a language model, the generation defaults, and a fresh (or saved) model sized by `ModelArguments`.
"""

import logging
from dataclasses import asdict
from pathlib import Path

import datasets
from transformers import GenerationConfig, PreTrainedTokenizerFast

from ..data.dialogue import build_dataset_dict, chitchat_turns, load_dialogue_file
from ..data.tokenization import encode_examples, encode_lm_examples
from ..models.lstm.configuration_lstm import LSTMLMConfig, LSTMSeq2SeqConfig
from ..models.lstm.modeling_lstm import LSTMForCausalLM, LSTMSeq2SeqForConditionalGeneration
from .arguments import ARCHITECTURES, DataArguments, ModelArguments

logger = logging.getLogger(__name__)


def load_conversations(dataset: str) -> dict[str, list[tuple[str, str]]]:
    """The dialogues of `DataArguments.dataset`: the chitchat corpus, or a user's dialogue file."""
    if dataset == "chitchat":
        return chitchat_turns()
    if not Path(dataset).is_file():  # a misspelt corpus name would otherwise be "an unsupported file type ''"
        raise FileNotFoundError(f"dataset {dataset!r} is neither a built-in corpus (chitchat) nor an existing file; "
                                "fix the name or the path (a .jsonl, .json, .csv or .parquet file).")
    return load_dialogue_file(dataset)


def load_dialogues(data_args: DataArguments) -> datasets.DatasetDict:
    """Examples of the configured corpus, split by conversation (with `direction: reverse`, swapped)."""
    dialogues = build_dataset_dict(
        load_conversations(data_args.dataset), data_args.max_context_turns, data_args.split_fractions,
        data_args.split_seed,
    )
    if data_args.direction == "reverse":
        dialogues = dialogues.map(_reverse_example, desc="Reversing")
    return dialogues


def _reverse_example(example: dict) -> dict:
    """The reverse model's example: it reads the reply alone and predicts the message it answered (the form
    `mmi.score_nbest` scores log p(M|R) in)."""
    return {"context": [], "message": example["response"], "response": example["message"]}


def training_texts(train: datasets.Dataset):
    """Every turn of the training split once: all responses plus each conversation's opening message."""
    for example in train:
        if not example["context"] and example["message"]:
            yield example["message"]
        yield example["response"]


def tokenize_dataset(
    dataset: datasets.Dataset,
    tokenizer: PreTrainedTokenizerFast,
    data_args: DataArguments,
    truncate_target: bool,
    architecture: str = "seq2seq",
) -> datasets.Dataset:
    """Dialogue examples -> `input_ids`, `labels`: source and reply for seq2seq, `<s>` reply `</s>` for a causal LM."""
    if architecture == "causal-lm":
        return dataset.map(
            encode_lm_examples,
            batched=True,
            fn_kwargs={"tokenizer": tokenizer,
                       "max_length": data_args.max_target_length + 1 if truncate_target else None},
            remove_columns=dataset.column_names,
            desc="Tokenizing",
        )
    return dataset.map(
        encode_examples,
        batched=True,
        fn_kwargs={
            "tokenizer": tokenizer,
            "max_source_length": data_args.max_source_length,
            "max_target_length": data_args.max_target_length if truncate_target else None,
        },
        remove_columns=dataset.column_names,
        desc="Tokenizing",
    )


def first_examples(dataset: datasets.Dataset, limit: int | None) -> datasets.Dataset:
    """The first `limit` examples (all with None): the `max_train_examples` / `max_eval_examples` of quick runs."""
    return dataset if limit is None else dataset.select(range(min(limit, len(dataset))))


def default_generation_config(tokenizer: PreTrainedTokenizerFast, settings: dict | None = None) -> GenerationConfig:
    """Greedy decoding of up to 32 tokens, or the recipe's `settings` over it; tokens that never belong in a reply
    are suppressed."""
    return GenerationConfig(
        **{"max_new_tokens": 32, "do_sample": False, "num_beams": 1, **(settings or {})},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        decoder_start_token_id=tokenizer.bos_token_id,
        # <unk> too: it would print as nothing (a reply never needs it; perplexity still counts it)
        suppress_tokens=[index for index in tokenizer.all_special_ids if index != tokenizer.eos_token_id],
    )


# ModelArguments' fields that are not architecture settings (the others are the model config's sizes and options).
NOT_ARCHITECTURE = ("model_name_or_path", "architecture", "tokenizer_name_or_path", "generation_config")


def build_model(
    model_args: ModelArguments, tokenizer: PreTrainedTokenizerFast
) -> LSTMSeq2SeqForConditionalGeneration | LSTMForCausalLM:
    """A fresh model sized by `model_args` for `tokenizer`'s vocabulary, or the saved one it names (its own
    architecture and dropout; settings of `model_args` that differ are logged as unused)."""
    model_class = ARCHITECTURES[model_args.architecture]
    if model_args.model_name_or_path:
        model = model_class.from_pretrained(model_args.model_name_or_path)
        unused = [f"{name} {value!r} (saved: {getattr(model.config, name)!r})"
                  for name, value in asdict(model_args).items()
                  if name not in NOT_ARCHITECTURE and hasattr(model.config, name)
                  and getattr(model.config, name) != value]
        if unused:  # a recipe's sizes or dropout would otherwise be dropped without a word
            logger.warning("%s is continued with its saved architecture; these settings of the recipe (or their "
                           "defaults) differ and are not used: %s.", model_args.model_name_or_path, ", ".join(unused))
        return model
    special_tokens = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id)
    if model_class is LSTMForCausalLM:  # the LM has no encoder: no attention, encoder or embedding-sharing settings
        config = LSTMLMConfig(
            vocab_size=len(tokenizer), embedding_size=model_args.embedding_size, hidden_size=model_args.hidden_size,
            num_layers=model_args.num_layers, projection_size=model_args.projection_size, dropout=model_args.dropout,
            tie_word_embeddings=model_args.tie_word_embeddings, init_range=model_args.init_range, **special_tokens,
        )
        return LSTMForCausalLM(config)
    architecture = {name: value for name, value in asdict(model_args).items() if name not in NOT_ARCHITECTURE}
    return LSTMSeq2SeqForConditionalGeneration(LSTMSeq2SeqConfig(vocab_size=len(tokenizer), **special_tokens,
                                                                 **architecture))

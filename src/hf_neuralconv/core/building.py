"""What a recipe describes, built: the corpus split by conversation, its examples tokenized for an
encoder-decoder, a causal chatbot or a language model of replies, the generation defaults, and a fresh (or saved)
model: our LSTM sized by `ModelArguments`, or a transformers model of `model_type` sized by `model_config`.
"""

import logging
from dataclasses import asdict
from pathlib import Path

import datasets
from transformers import AutoConfig, GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from ..data.dialogue import build_dataset_dict, chitchat_turns, load_dialogue_file
from ..data.tokenization import encode_lm_examples, padding_id
from ..models.lstm.configuration_lstm import LSTMLMConfig, LSTMSeq2SeqConfig
from ..models.lstm.modeling_lstm import LSTMForCausalLM, LSTMSeq2SeqForConditionalGeneration
from .arguments import ARCHITECTURES, DataArguments, ModelArguments
from .chat_format import encode_replies, format_history
from .loading import chatbot_auto_class, load_model
from .scoring import is_causal, pair_rows

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


def encode_chat_examples(batch: dict, tokenizer: PreTrainedTokenizerBase, causal: bool, max_source_length: int,
                         max_target_length: int | None) -> dict:
    """`datasets.map(batched=True)` function: dialogue examples -> a chatbot's rows in its chat format (`chat_format`):
    the history cut from the left to `max_source_length` tokens and the reply (`encode_replies`, cut to
    `max_target_length`; None: no limit). An encoder-decoder's `input_ids` are the history and its `labels` the
    reply; a causal chatbot reads both as one sequence, `input_ids` = history + reply, `labels` -100 over the
    history, so it learns and is scored on the reply's tokens alone, the tokens an encoder-decoder's perplexity
    counts (transformers' causal LMs shift the labels themselves)."""
    turn_lists = [[*context, message] for context, message in zip(batch["context"], batch["message"], strict=True)]
    histories = [format_history(tokenizer, turns, causal, max_source_length)[0] for turns in turn_lists]
    input_ids, labels = pair_rows(histories, encode_replies(tokenizer, batch["response"], causal, max_target_length),
                                  causal)
    return {"input_ids": input_ids, "labels": labels}


# How `tokenize_dataset` lays out an example (`row_layout`): history and reply for an encoder-decoder, both in one
# sequence for a causal chatbot, the reply alone for our LSTM language model of replies.
ROW_LAYOUTS = ("seq2seq", "causal-chat", "causal-lm")


def row_layout(model) -> str:
    """The `ROW_LAYOUTS` entry `model` is trained and measured on."""
    if isinstance(model, LSTMForCausalLM):
        return "causal-lm"
    return "causal-chat" if is_causal(model) else "seq2seq"


def tokenize_dataset(
    dataset: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    data_args: DataArguments,
    truncate_target: bool,
    layout: str = "seq2seq",
) -> datasets.Dataset:
    """Dialogue examples -> `input_ids`, `labels` in a `ROW_LAYOUTS` layout (`row_layout(model)`): a chatbot's rows
    (`encode_chat_examples`), or `<s> reply </s>` for the LSTM LM. Without `truncate_target`, replies are whole."""
    if layout not in ROW_LAYOUTS:
        raise ValueError(f"`layout` must be one of {', '.join(ROW_LAYOUTS)}, got {layout!r}.")
    if layout == "causal-lm":
        function, settings = encode_lm_examples, {
            "max_length": data_args.max_target_length + 1 if truncate_target else None}
    else:
        function, settings = encode_chat_examples, {
            "causal": layout == "causal-chat", "max_source_length": data_args.max_source_length,
            "max_target_length": data_args.max_target_length if truncate_target else None}
    return dataset.map(function, batched=True, fn_kwargs={"tokenizer": tokenizer, **settings},
                       remove_columns=dataset.column_names, desc="Tokenizing")


def check_positions(model: PreTrainedModel, dataset: datasets.Dataset, split: str) -> None:
    """Refuse rows longer than the positions a transformer has learned embeddings for (GPT-2's `n_positions`,
    BART's `max_position_embeddings`) before any work: they would fail with an index error mid-run."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if not limit or len(dataset) == 0:
        return
    longest = max(len(row) for column in ("input_ids", "labels") for row in dataset[column])
    if longest > limit:
        raise ValueError(
            f"The longest {split} row has {longest} tokens, more than the {limit} positions of this "
            f"{model.config.model_type} model: raise its max_position_embeddings (gpt2: n_positions) in model_config, "
            "or lower max_source_length / max_target_length (the test split's replies are not cut)."
        )


def first_examples(dataset: datasets.Dataset, limit: int | None) -> datasets.Dataset:
    """The first `limit` examples (all with None): the `max_train_examples` / `max_eval_examples` of quick runs."""
    return dataset if limit is None else dataset.select(range(min(limit, len(dataset))))


def default_generation_config(tokenizer: PreTrainedTokenizerBase, settings: dict | None = None,
                              model: PreTrainedModel | None = None) -> GenerationConfig:
    """Greedy decoding of up to 32 tokens, or the recipe's `settings` over it; special tokens that never belong in
    a reply are suppressed. `model` (default: an encoder-decoder starting from `<s>`, our LSTM's) gives the decoder's
    start token (BART's is `</s>`) and whether replies follow the history in one sequence."""
    causal = model is not None and is_causal(model)
    eos = tokenizer.eos_token_id
    # The special tokens a reply carries (`</s>`, and an encoder-decoder's own, e.g. BART's leading `<s>`) stay;
    # the others (<unk> too: it would print as nothing; perplexity still counts it) are suppressed.
    in_reply = set(encode_replies(tokenizer, [""], causal)[0])
    if causal:
        start = None
    else:
        start = tokenizer.bos_token_id if model is None else model.config.decoder_start_token_id
    return GenerationConfig(
        **{"max_new_tokens": 32, "do_sample": False, "num_beams": 1, **(settings or {})},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos,
        pad_token_id=padding_id(tokenizer),
        decoder_start_token_id=start,
        suppress_tokens=[index for index in tokenizer.all_special_ids if index not in in_reply],
    )


# ModelArguments' fields that are not the LSTM's settings (the others are its config's sizes and options).
NOT_ARCHITECTURE = ("model_name_or_path", "architecture", "model_type", "model_config", "tokenizer_name_or_path",
                    "generation_config")


def build_model(model_args: ModelArguments, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A fresh model for `tokenizer`'s vocabulary — a transformers `model_type` model (`transformer_model`) or our
    LSTM sized by `model_args` — or the saved one `model_name_or_path` names (its own architecture and dropout; for
    our LSTM, settings of `model_args` that differ are logged as unused)."""
    if model_args.model_name_or_path:
        model = load_model(model_args.model_name_or_path).train()
        if isinstance(model, (LSTMSeq2SeqForConditionalGeneration, LSTMForCausalLM)):
            unused = [f"{name} {value!r} (saved: {getattr(model.config, name)!r})"
                      for name, value in asdict(model_args).items()
                      if name not in NOT_ARCHITECTURE and hasattr(model.config, name)
                      and getattr(model.config, name) != value]
            if unused:  # a recipe's sizes or dropout would otherwise be dropped without a word
                logger.warning("%s is continued with its saved architecture; these settings of the recipe (or their "
                               "defaults) differ and are not used: %s.", model_args.model_name_or_path,
                               ", ".join(unused))
        return model
    if model_args.model_type:
        return transformer_model(model_args, tokenizer)
    model_class = ARCHITECTURES[model_args.architecture]
    special_tokens = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id)
    if model_class is LSTMForCausalLM:  # the LM has no encoder: no attention, encoder or embedding-sharing settings
        config = LSTMLMConfig(
            vocab_size=len(tokenizer), embedding_size=model_args.embedding_size, hidden_size=model_args.hidden_size,
            num_layers=model_args.num_layers, projection_size=model_args.projection_size, dropout=model_args.dropout,
            tie_word_embeddings=model_args.tie_word_embeddings, init_range=model_args.init_range, **special_tokens,
        )
        return LSTMForCausalLM(config)
    return LSTMSeq2SeqForConditionalGeneration(LSTMSeq2SeqConfig(vocab_size=len(tokenizer), **special_tokens,
                                                                 **lstm_settings(model_args)))


def lstm_settings(model_args: ModelArguments) -> dict:
    """The LSTM's sizes and options of `model_args` (every field but `NOT_ARCHITECTURE`)."""
    return {name: value for name, value in asdict(model_args).items() if name not in NOT_ARCHITECTURE}


def transformer_model(model_args: ModelArguments, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A randomly initialised transformers model of `model_type`, sized by `model_config`, over `tokenizer`'s
    vocabulary and special tokens, so that its perplexity counts the same tokens as the LSTM's. An encoder-decoder's
    decoder starts from `<s>`, as our LSTM's does (from the pad token, T5's convention, for a tokenizer without
    one)."""
    defaults = lstm_settings(ModelArguments())
    unused = [name for name, value in lstm_settings(model_args).items() if value != defaults[name]]
    if unused:  # a recipe's LSTM sizes would otherwise be dropped without a word
        logger.warning("A %s model is sized by model_config; these LSTM settings of the recipe are not used: %s.",
                       model_args.model_type, ", ".join(unused))
    config = AutoConfig.for_model(model_args.model_type, **model_args.model_config, vocab_size=len(tokenizer),
                                  pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id)
    if config.is_encoder_decoder:
        bos = tokenizer.bos_token_id
        config.decoder_start_token_id = tokenizer.pad_token_id if bos is None else bos
    return chatbot_auto_class(config).from_config(config)

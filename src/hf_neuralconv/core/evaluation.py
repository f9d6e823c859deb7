"""How well a model predicts and answers, whatever the method: token-level perplexity (pads excluded, one `</s>`
per reply, as Vinyals & Le 2015 report it, computed by `ConversationTrainer`), and the reply metrics every report
shares — distinct-1/2, max-ratio, Ent-n, length and corpus BLEU against the human replies, through the package's
`evaluate` modules.
"""

import bisect
import contextlib
import functools
import json
import logging
import math
import tempfile
from dataclasses import fields
from pathlib import Path

import evaluate
from transformers import TrainingArguments

from ..data.collator import DialogueCollator
from ..data.tokenization import metric_words
from ..metrics import metric_path
from .arguments import DataArguments
from .building import load_dialogues
from .chat_format import DATA_CONFIG_FILE
from .chat_format import logger as chat_format_logger
from .trainer import ConversationTrainer


def saved_data_arguments(model_dir: Path, dataset: str | None = None, alternative: str = "") -> DataArguments:
    """The data settings a trained model directory was trained with (`data_config.json`): the same corpus split.

    `dataset` (a command's `--dataset`) replaces the corpus; a directory without `data_config.json` (a transformers
    model saved with `save_pretrained`, not trained by `hf-neuralconv train`) needs it, and then reads it with the
    default split settings. Without either, the error names `--dataset` and the command's `alternative` (e.g. the
    options that make the data unnecessary)."""
    model_dir = Path(model_dir)
    path = model_dir / DATA_CONFIG_FILE
    known = {f.name for f in fields(DataArguments)}
    if path.is_file():
        saved = {k: v for k, v in json.loads(path.read_text()).items() if k in known}
    elif dataset is None:
        raise FileNotFoundError(
            f"{path} is missing: {model_dir} was not trained by `hf-neuralconv train`, so it does not say which "
            "dialogues it was trained on. Give --dataset (a .jsonl/.csv/.parquet dialogue file, or 'chitchat'; its "
            f"split is the default {DataArguments().split_fractions}){alternative}."
        )
    else:
        saved = {}
    if dataset is not None:
        saved["dataset"] = str(dataset)
    return DataArguments(**saved)


# Padded target positions one evaluation batch may hold: its logits are that many vocabulary-sized rows (16,384 x a
# 20k vocabulary: 1.3 GB of float32), and a chat turn can run to thousands of tokens.
MAX_EVALUATION_POSITIONS = 2**14


def sorted_by_target_length(dataset):
    """Tokenized examples in order of label length. A perplexity does not depend on the order, and batches of similar
    lengths pad least: the vocabulary softmax at padded positions can be most of an evaluation's time."""
    labels = dataset["labels"]
    return dataset.select(sorted(range(len(dataset)), key=lambda row: len(labels[row])))


def pooled_perplexity(parts) -> float:
    """The perplexity of several sets of target tokens together, from each set's (perplexity, number of tokens)."""
    tokens = sum(count for _, count in parts)
    return math.exp(sum(count * math.log(value) for value, count in parts) / tokens)


def perplexity(model, tokenizer, dataset, batch_size: int = 64, use_cpu: bool = False) -> tuple[float, int]:
    """Token-level perplexity of `model` on tokenized examples (`input_ids`, `labels`, and `speaker_ids` for a persona
    model; a causal chatbot's labels -100 over the history): exp(total negative log-likelihood / target tokens), pads
    excluded, as `ConversationTrainer` measures it; returned with the number of target tokens.

    The examples are read shortest first; those too long for `batch_size` of them to stay within
    `MAX_EVALUATION_POSITIONS` padded positions are read in batches as small as that needs."""
    if len(dataset) == 0:
        raise ValueError("No examples to measure the perplexity of.")
    dataset = sorted_by_target_length(dataset)
    lengths = [len(labels) for labels in dataset["labels"]]
    long_from = bisect.bisect_right(lengths, MAX_EVALUATION_POSITIONS // batch_size)
    groups = [(range(long_from), batch_size),
              (range(long_from, len(dataset)), max(1, MAX_EVALUATION_POSITIONS // lengths[-1]))]
    parts = []
    with tempfile.TemporaryDirectory() as scratch:
        for rows, size in groups:
            if rows:
                trainer = ConversationTrainer(
                    model=model,
                    args=TrainingArguments(output_dir=scratch, per_device_eval_batch_size=size, report_to=[],
                                           use_cpu=use_cpu),
                    data_collator=DialogueCollator.for_tokenizer(tokenizer),
                )
                metrics = trainer.evaluate(dataset.select(rows), metric_key_prefix="eval")
                parts.append((metrics["eval_perplexity"], metrics["eval_target_tokens"]))
    return pooled_perplexity(parts), sum(tokens for _, tokens in parts)


def report_inputs(model_dir: Path, split: str, max_inputs: int | None, seed: int, dataset: str | None = None):
    """Chats (turn lists ending with the message) and human replies of a split; a seeded sample of `max_inputs`.
    `dataset` replaces the corpus of the directory's `data_config.json` (`saved_data_arguments`)."""
    dialogues = load_dialogues(saved_data_arguments(model_dir, dataset))
    if split not in dialogues:
        raise ValueError(f"Unknown split {split!r}; choose one of {list(dialogues)}.")
    examples = dialogues[split]
    if max_inputs is not None:
        if max_inputs < 1:
            raise ValueError(f"`max_inputs` must be >= 1, got {max_inputs}.")
        examples = examples.shuffle(seed=seed).select(range(min(max_inputs, len(examples))))
    chats = [[*example["context"], example["message"]] for example in examples]
    return chats, list(examples["response"])


def reply_metrics(tokenizer, replies: list[str], references: list[str]) -> dict:
    """distinct-1/2 (corpus and per-utterance), max-ratio, Ent-2/3, average length and corpus BLEU of `replies`
    against the human `references`, both split into the tokenizer's normalised words (`data.metric_words`); the
    package's `evaluate` modules compute them."""
    def words(texts):
        return [" ".join(metric_words(tokenizer, text)) for text in texts]

    predictions, targets = words(replies), words(references)
    scores = load_metric(metric_path("dialogue_diversity")).compute(predictions=predictions)
    # The words are split already: sacrebleu scores them as they are ("none"), without re-tokenizing them.
    scores["bleu"] = load_metric(metric_path("corpus_bleu")).compute(predictions=predictions, references=targets,
                                                           tokenize="none")["bleu"]
    return scores


@functools.cache
def load_metric(path: str) -> evaluate.EvaluationModule:
    """A metric module loaded once per process: `evaluate.load` copies and imports the script on every call, and a
    report computes the metrics once per decoding strategy."""
    return evaluate.load(path)


@contextlib.contextmanager
def quiet_truncation():
    """Corpus histories are often longer than the model reads (training cuts them silently too): a warning per
    input would drown a report over thousands of them."""
    level = chat_format_logger.level
    chat_format_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        chat_format_logger.setLevel(level)



"""`hf-neuralconv evaluate`: test perplexity of a trained model next to Kneser-Ney n-gram LMs; `hf-neuralconv attack`:
its hit rate for a list of malicious targets (He & Glass 2020); `hf-neuralconv mmi-tune` and `diversity-report`:
MMI-bidi weights tuned for BLEU (Luan et al. 2017) and decoding strategies side by side (He & Glass 2020, Table 4).

Vinyals & Le (2015, Section 5) compare the LSTM's perplexity with a smoothed n-gram LM. For the comparison to be
fair, both are scored on the same token sequences: the test responses tokenised by the model's tokenizer (so the
same vocabulary and the same `<unk>` mapping), each followed by one end-of-sentence token, and the n-gram LM is
estimated (by KenLM's `lmplz`, modified Kneser-Ney) on the training responses tokenised the same way.
"""

import bisect
import contextlib
import functools
import json
import logging
import math
import tempfile
import time
from dataclasses import fields
from pathlib import Path

import evaluate
import torch
from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, TrainingArguments, pipeline, set_seed

from .attacks import HitCriterion, gibbs_enum, load_targets, write_trigger_pairs
from .chat import Responder, load_model_dir
from .data import metric_words
from .generation import save_mmi_settings, tune_mmi
from .metrics import corpus_bleu, dialogue_diversity, hit_rate
from .pipelines import SPEAKERS_FILE, add_custom_pipeline
from .pipelines import logger as pipeline_logger
from .model_card import write_model_card
from .trainers import ConversationTrainer
from .training import DATA_CONFIG_FILE, RESULTS_FILE, DataArguments, hit_thresholds, load_dialogues, tokenize_dataset


def _data_arguments(model_dir: Path) -> DataArguments:
    path = model_dir / DATA_CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: evaluate needs the data settings saved by `hf-neuralconv train`.")
    saved = json.loads(path.read_text())
    known = {f.name for f in fields(DataArguments)}
    return DataArguments(**{k: v for k, v in saved.items() if k in known})


def _word_sequences(tokenizer, label_rows) -> list[list[str]]:
    """Labels (ids + `</s>`) -> the word sequences an n-gram LM sees (`</s>` is added by the LM itself)."""
    return [tokenizer.convert_ids_to_tokens(row[:-1]) for row in label_rows]


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
    model): exp(total negative log-likelihood / target tokens), pads excluded, as `ConversationTrainer` measures it;
    returned with the number of target tokens.

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
                    data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100),
                )
                metrics = trainer.evaluate(dataset.select(rows), metric_key_prefix="eval")
                parts.append((metrics["eval_perplexity"], metrics["eval_target_tokens"]))
    return pooled_perplexity(parts), sum(tokens for _, tokens in parts)


def evaluate_model(
    model_dir: str | Path, ngram_orders: tuple[int, ...] = (), split: str = "test", batch_size: int = 64
) -> dict:
    """Token-level perplexity of the model on a split (no target truncation) and of KenLM n-gram LMs."""
    if ngram_orders:
        from .ngram import find_lmplz, kenlm_perplexity, train_kenlm

        find_lmplz()  # before the model and data are read: a missing KenLM would otherwise fail after the work
    model_dir = Path(model_dir)
    model, tokenizer = load_model_dir(model_dir)
    data_args = _data_arguments(model_dir)
    dialogues = load_dialogues(data_args)
    if split not in dialogues:
        raise ValueError(f"Unknown split {split!r}; choose one of {list(dialogues)}.")
    evaluation_set = tokenize_dataset(dialogues[split], tokenizer, data_args, truncate_target=False)
    model_perplexity, target_tokens = perplexity(model, tokenizer, evaluation_set, batch_size)
    results = {
        "split": split,
        "examples": len(evaluation_set),
        "target_tokens": target_tokens,
        "model_perplexity": model_perplexity,
    }
    if ngram_orders:
        vocabulary = set(tokenizer.get_vocab())
        train_labels = tokenize_dataset(dialogues["train"], tokenizer, data_args, truncate_target=False)["labels"]
        train_sentences = _word_sequences(tokenizer, train_labels)
        test_sentences = _word_sequences(tokenizer, evaluation_set["labels"])
        with tempfile.TemporaryDirectory() as scratch:
            for order in ngram_orders:
                arpa = train_kenlm(train_sentences, order, Path(scratch) / f"{order}gram", vocabulary)
                ngram = kenlm_perplexity(arpa, test_sentences, vocabulary)
                if ngram["num_tokens"] != results["target_tokens"]:
                    raise RuntimeError(
                        f"Token counts differ: model {results['target_tokens']} vs {order}-gram {ngram['num_tokens']}."
                    )
                results[f"kenlm_{order}gram_perplexity"] = ngram["perplexity"]
                results[f"ratio_to_kenlm_{order}gram"] = results["model_perplexity"] / ngram["perplexity"]
    return results


def attack_model(
    model_dir: str | Path,
    targets_file: str | Path,
    hit_type: str = "o-sample-min-hit",
    input_lm_dir: str | Path | None = None,
    output_threshold: float | None = None,
    input_threshold: float | None = None,
    pairs_file: str | Path | None = None,
    **search,
) -> dict:
    """Hit rate of a malicious target list against a saved model (He & Glass 2020, Section 3.2): gibbs-enum
    (`search`: its settings) looks for a trigger for every target. Thresholds left out are measured on the test
    split the model was trained on (`data_config.json`); io hits need the input LM. With `pairs_file`, every
    (trigger, target) pair is written as JSONL with its scores and whether it hits."""
    model_dir = Path(model_dir)
    model, tokenizer = load_model_dir(model_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    input_lm = AutoModelForCausalLM.from_pretrained(input_lm_dir).to(device).eval() if input_lm_dir else None
    if output_threshold is None or (hit_type.startswith("io-") and input_threshold is None):
        data_args = _data_arguments(model_dir)
        test = load_dialogues(data_args)["test"]
        output_threshold, input_threshold = hit_thresholds(model, tokenizer, test, data_args, input_lm,
                                                           output_threshold, input_threshold)
    criterion = HitCriterion(hit_type, output_threshold, input_threshold)
    targets = load_targets(targets_file, tokenizer)
    io_hit = criterion.uses_input_lm
    result = gibbs_enum(model, tokenizer, targets.ids, input_lm=input_lm, lambda_in=float(io_hit),
                        init_from_lm=io_hit, **search)
    hits = criterion.hits(result.scores)
    scores = result.scores
    columns = {"min_log_prob": scores.min_log_prob.tolist(), "avg_log_prob": scores.avg_log_prob.tolist(),
               "greedy": scores.greedy.tolist()}
    if scores.input_log_likelihood is not None:
        columns["input_log_likelihood"] = scores.input_log_likelihood.tolist()
    if pairs_file:
        rows = [{"hit": hit, **dict(zip(columns, values))} for hit, *values in zip(hits.tolist(), *columns.values())]
        write_trigger_pairs(pairs_file, tokenizer, result.triggers, targets.ids, rows)
    # Every hit type the scores allow (He & Glass 2020, Table 3 reports o- and io- rates), for the triggers
    # searched for `hit_type`.
    hit_rates = _metric(hit_rate.__file__).compute(**columns, output_threshold=output_threshold,
                                                   input_threshold=input_threshold)
    return {
        "hit_type": hit_type,
        "targets": len(targets.ids),
        "skipped_targets": len(targets.skipped),
        "hits": int(hits.sum()),
        "hit_rate": hits.double().mean().item(),
        "hit_rates": {name: rate for name, rate in hit_rates.items() if name != "num_pairs"},
        "output_threshold": output_threshold,
        "input_threshold": input_threshold,
        "search": search,
    }


# The rows of the diversity report, He & Glass (2020) Table 4 / Luan et al. (2017) Table 2 style.
REPORT_STRATEGIES = ("greedy", "beam", "sample", "mmi-antilm", "mmi-bidi")
# Test inputs whose greedy replies `hf-neuralconv train` measures for results.json and the model card.
GREEDY_REPORT_INPUTS = 1000


def _report_inputs(model_dir: Path, split: str, max_inputs: int | None, seed: int):
    """Chats (turn lists ending with the message) and human replies of a split; a seeded sample of `max_inputs`."""
    dialogues = load_dialogues(_data_arguments(model_dir))
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
    scores = _metric(dialogue_diversity.__file__).compute(predictions=predictions)
    # The words are split already: sacrebleu scores them as they are ("none"), without re-tokenizing them.
    scores["bleu"] = _metric(corpus_bleu.__file__).compute(predictions=predictions, references=targets,
                                                           tokenize="none")["bleu"]
    return scores


@functools.cache
def _metric(path: str) -> evaluate.EvaluationModule:
    """A metric module loaded once per process: `evaluate.load` copies and imports the script on every call, and a
    report computes the metrics once per decoding strategy."""
    return evaluate.load(path)


@contextlib.contextmanager
def _quiet_truncation():
    """Corpus histories are often longer than the model reads (training cuts them silently too): a warning per
    input would drown a report over thousands of them."""
    level = pipeline_logger.level
    pipeline_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        pipeline_logger.setLevel(level)


def diversity_report(
    model_dir: str | Path,
    anti_lm: str | Path | None = None,
    reverse_model: str | Path | None = None,
    strategies: tuple[str, ...] = REPORT_STRATEGIES,
    split: str = "test",
    max_inputs: int | None = 1000,
    num_beams: int = 10,
    max_new_tokens: int = 20,
    antilm_lambda: float = 0.5,
    antilm_gamma: int = 3,
    batch_size: int = 64,
    seed: int = 0,
) -> dict:
    """Decode the same inputs of a split under several strategies and measure each against the human replies:
    He & Glass (2020) Table 4 (max-ratio, Ent-2, Ent-3) and Luan et al. (2017) Table 2 (BLEU, distinct-1/2) in one
    table, the human replies as the reference row.

    `beam` and `mmi-antilm` use `num_beams` beams; `mmi-antilm` subtracts `antilm_lambda` x log p_LM over the first
    `antilm_gamma` tokens (needs `anti_lm`); `mmi-bidi` reranks with the settings tuned into the model's
    `generation_config.mmi` (`hf-neuralconv mmi-tune`) and the reverse model named there or given. Sampling is
    seeded. Every row decodes at most `max_new_tokens` tokens."""
    unknown = sorted(set(strategies) - set(REPORT_STRATEGIES))
    if unknown:
        raise ValueError(f"Unknown strategies {unknown}; choose among {', '.join(REPORT_STRATEGIES)}.")
    model_dir = Path(model_dir)
    chats, references = _report_inputs(model_dir, split, max_inputs, seed)
    chat = pipeline("conversational", model=str(model_dir), anti_lm=anti_lm, reverse_model=reverse_model)
    missing = sorted(set(strategies) - set(chat.available_strategies()))
    if missing:
        raise ValueError(f"Strategies {missing} need a model this report was not given: pass --anti-lm for "
                         "mmi-antilm and a tuned model (hf-neuralconv mmi-tune) or --reverse-model for mmi-bidi.")
    rows = {"human": {**reply_metrics(chat.tokenizer, references, references), "seconds": None}}
    replies_by_strategy = {}
    for strategy in strategies:
        options = {"strategy": strategy, "max_new_tokens": max_new_tokens}
        if strategy in ("beam", "mmi-antilm"):
            options["num_beams"] = num_beams
        if strategy == "mmi-antilm":
            options.update(mmi_lambda=antilm_lambda, mmi_gamma=antilm_gamma)
        set_seed(seed)
        started = time.perf_counter()
        with _quiet_truncation():
            outputs = chat([Responder.as_chat(turns) for turns in chats], batch_size=batch_size, **options)
        seconds = time.perf_counter() - started
        replies = [output[0]["generated_text"][-1]["content"] for output in outputs]
        replies_by_strategy[strategy] = replies
        rows[strategy] = {**reply_metrics(chat.tokenizer, replies, references), "seconds": seconds}
    samples = [{"history": turns, "human": reference, **{name: replies[index]
                                                         for name, replies in replies_by_strategy.items()}}
               for index, (turns, reference) in enumerate(zip(chats[:8], references[:8]))]
    return {
        "model": str(model_dir), "split": split, "inputs": len(chats), "num_beams": num_beams,
        "max_new_tokens": max_new_tokens, "antilm": {"lambda": antilm_lambda, "gamma": antilm_gamma,
                                                     "model": None if anti_lm is None else str(anti_lm)},
        "mmi_bidi": chat.mmi_settings or None, "seed": seed, "rows": rows, "samples": samples,
    }


def tune_mmi_model(
    model_dir: str | Path,
    reverse_model_dir: str | Path,
    output_dir: str | Path,
    split: str = "validation",
    max_inputs: int | None = 500,
    num_beams: int = 10,
    max_new_tokens: int = 20,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Tune lambda and gamma of MMI-bidi (Luan et al. 2017, Eq. 4) for corpus BLEU on a development split
    (`generation.tune_mmi`: beam-search N-best lists, then a grid), and save the chatbot with the tuned settings in
    its generation config to `output_dir`, so that loading it from there decodes the same way. The grid and the
    chosen point go to `output_dir/mmi_tuning.json`."""
    model_dir, output_dir = Path(model_dir), Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{output_dir} exists and is not empty; choose another output directory or pass "
                              "--overwrite.")
    model, tokenizer = load_model_dir(model_dir)
    reverse_model, _ = load_model_dir(reverse_model_dir)
    chats, references = _report_inputs(model_dir, split, max_inputs, seed)
    with _quiet_truncation():
        result = tune_mmi(model, reverse_model, tokenizer, chats, references, num_beams=num_beams,
                          max_new_tokens=max_new_tokens)
    save_mmi_settings(model.generation_config, result, reverse_model=str(Path(reverse_model_dir).resolve()),
                      num_beams=num_beams, max_new_tokens=max_new_tokens)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    for name in (DATA_CONFIG_FILE, SPEAKERS_FILE, RESULTS_FILE):
        if (model_dir / name).is_file():
            (output_dir / name).write_text((model_dir / name).read_text())
    add_custom_pipeline(output_dir)
    if (model_dir / RESULTS_FILE).is_file():  # the same weights: the base model's measured figures still hold
        results = json.loads((model_dir / RESULTS_FILE).read_text())
        write_model_card(output_dir, results, _data_arguments(model_dir).dataset, base_model=str(model_dir),
                         machine=results.get("machine"))
    summary = {
        "model": str(model_dir), "reverse_model": str(reverse_model_dir), "split": split, "inputs": len(chats),
        "num_beams": num_beams, "max_new_tokens": max_new_tokens, "lambda": result.lam, "gamma": result.gamma,
        "dev_bleu": result.bleu, "on_grid_edge": result.on_grid_edge,
        "grid": [{"lambda": lam, "gamma": gamma, "bleu": bleu} for (lam, gamma), bleu in result.grid.items()],
    }
    (output_dir / "mmi_tuning.json").write_text(json.dumps(summary, indent=2))
    return summary

"""`hf-neuralconv evaluate`: test perplexity of a trained model next to Kneser-Ney n-gram LMs; `hf-neuralconv attack`:
its hit rate for a list of malicious targets (He & Glass 2020).

Vinyals & Le (2015, Section 5) compare the LSTM's perplexity with a smoothed n-gram LM. For the comparison to be
fair, both are scored on the same token sequences: the test responses tokenised by the model's tokenizer (so the
same vocabulary and the same `<unk>` mapping), each followed by one end-of-sentence token, and the n-gram LM is
estimated (by KenLM's `lmplz`, modified Kneser-Ney) on the training responses tokenised the same way.
"""

import json
import tempfile
from dataclasses import fields
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, TrainingArguments

from .attacks import HitCriterion, gibbs_enum, load_targets, write_trigger_pairs
from .chat import load_model_dir
from .trainers import ConversationTrainer
from .training import DATA_CONFIG_FILE, DataArguments, hit_thresholds, load_dialogues, tokenize_dataset


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


def evaluate_model(
    model_dir: str | Path, ngram_orders: tuple[int, ...] = (), split: str = "test", batch_size: int = 64
) -> dict:
    """Token-level perplexity of the model on a split (no target truncation) and of KenLM n-gram LMs."""
    model_dir = Path(model_dir)
    model, tokenizer = load_model_dir(model_dir)
    data_args = _data_arguments(model_dir)
    dialogues = load_dialogues(data_args)
    if split not in dialogues:
        raise ValueError(f"Unknown split {split!r}; choose one of {list(dialogues)}.")
    evaluation_set = tokenize_dataset(dialogues[split], tokenizer, data_args, truncate_target=False)
    with tempfile.TemporaryDirectory() as scratch:
        trainer = ConversationTrainer(
            model=model,
            args=TrainingArguments(output_dir=scratch, per_device_eval_batch_size=batch_size, report_to=[]),
            data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100),
        )
        metrics = trainer.evaluate(evaluation_set, metric_key_prefix=split)
    results = {
        "split": split,
        "examples": len(evaluation_set),
        "target_tokens": metrics[f"{split}_target_tokens"],
        "model_perplexity": metrics[f"{split}_perplexity"],
    }
    if ngram_orders:
        from .ngram import kenlm_perplexity, train_kenlm

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
        thresholds = hit_thresholds(model, tokenizer, test, data_args, input_lm)
        output_threshold = thresholds["output_threshold"] if output_threshold is None else output_threshold
        input_threshold = thresholds.get("input_threshold") if input_threshold is None else input_threshold
    criterion = HitCriterion(hit_type, output_threshold, input_threshold)
    targets = load_targets(targets_file, tokenizer)
    io_hit = criterion.uses_input_lm
    result = gibbs_enum(model, tokenizer, targets.ids, input_lm=input_lm, lambda_in=float(io_hit),
                        init_from_lm=io_hit, **search)
    hits = criterion.hits(result.scores)
    if pairs_file:
        rows = [
            {"hit": bool(hit), "min_log_prob": low, "avg_log_prob": average}
            for hit, low, average in zip(hits.tolist(), result.scores.min_log_prob.tolist(),
                                         result.scores.avg_log_prob.tolist())
        ]
        write_trigger_pairs(pairs_file, tokenizer, result.triggers, targets.ids, rows)
    return {
        "hit_type": hit_type,
        "targets": len(targets.ids),
        "skipped_targets": len(targets.skipped),
        "hits": int(hits.sum()),
        "hit_rate": hits.float().mean().item(),
        "output_threshold": output_threshold,
        "input_threshold": input_threshold,
    }

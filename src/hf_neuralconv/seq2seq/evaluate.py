"""`hf-neuralconv evaluate`: test perplexity of a trained model next to Kneser-Ney n-gram LMs.

Vinyals & Le (2015, Section 5) compare the LSTM's perplexity with a smoothed n-gram LM. For the comparison to be
fair, both are scored on the same token sequences: the test responses tokenised by the model's tokenizer (so the
same vocabulary and the same `<unk>` mapping), each followed by one end-of-sentence token, and the n-gram LM is
estimated (by KenLM's `lmplz`, modified Kneser-Ney) on the training responses tokenised the same way.
"""

import tempfile
from pathlib import Path

from ..core.building import check_positions, load_dialogues, row_layout, tokenize_dataset
from ..core.evaluation import perplexity, saved_data_arguments
from ..core.loading import load_model_dir
from .ngram import find_lmplz, kenlm_perplexity, train_kenlm


def _word_sequences(tokenizer, label_rows) -> list[list[str]]:
    """Labels (a causal chatbot's -100 over the history, then the reply's ids + `</s>`) -> the word sequences an
    n-gram LM sees (`</s>` is added by the LM itself)."""
    return [tokenizer.convert_ids_to_tokens([index for index in row if index != -100][:-1]) for row in label_rows]


def evaluate_model(
    model_dir: str | Path, ngram_orders: tuple[int, ...] = (), split: str = "test", batch_size: int = 64,
    dataset: str | None = None,
) -> dict:
    """Token-level perplexity of the model on a split (no target truncation; a causal chatbot is scored on the reply
    tokens after the history, in its chat format) and of KenLM n-gram LMs. The split is the one the model was trained
    on (`data_config.json`), or one of `dataset` (required for a directory without `data_config.json`)."""
    if ngram_orders:
        find_lmplz()  # before the model and data are read: a missing KenLM would otherwise fail after the work
    model_dir = Path(model_dir)
    data_args = saved_data_arguments(model_dir, dataset)  # before the model loads: a missing setting fails at once
    model, tokenizer = load_model_dir(model_dir)
    dialogues = load_dialogues(data_args)
    if split not in dialogues:
        raise ValueError(f"Unknown split {split!r}; choose one of {list(dialogues)}.")
    layout = row_layout(model)
    evaluation_set = tokenize_dataset(dialogues[split], tokenizer, data_args, truncate_target=False, layout=layout)
    check_positions(model, evaluation_set, split)
    model_perplexity, target_tokens = perplexity(model, tokenizer, evaluation_set, batch_size)
    results = {
        "split": split,
        "examples": len(evaluation_set),
        "target_tokens": target_tokens,
        "model_perplexity": model_perplexity,
    }
    if ngram_orders:
        vocabulary = set(tokenizer.get_vocab())
        train_labels = tokenize_dataset(dialogues["train"], tokenizer, data_args, truncate_target=False,
                                        layout=layout)["labels"]
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

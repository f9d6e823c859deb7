"""`hf-neuralconv attack`: the hit rate of a malicious target list against a trained chatbot (He & Glass 2020,
Section 3.2, Table 3): gibbs-enum searches a trigger for every target, and each hit type's rate is reported.
"""

from pathlib import Path

import torch
from transformers import PreTrainedModel

from ..core.building import load_dialogues
from ..core.checks import check_same_vocabulary
from ..core.evaluation import load_metric, saved_data_arguments
from ..core.loading import load_model, load_model_dir
from ..core.scoring import is_causal
from ..metrics import metric_path
from ..metrics.hit_criteria import HitCriterion
from .gibbs_enum import gibbs_enum
from .hits import load_targets, write_trigger_pairs
from .train import hit_thresholds


def load_input_lm(input_lm_dir: str | Path, model: PreTrainedModel) -> PreTrainedModel:
    """The input LM of io hits (He & Glass 2020): a causal LM over the chatbot's vocabulary, loaded from its
    directory, with errors that say what is wrong with it."""
    input_lm = load_model(input_lm_dir)
    if not is_causal(input_lm):
        raise ValueError(f"--input-lm {input_lm_dir}: a {type(input_lm).__name__} is not a causal language model; "
                         "give an LM of the chatbot's messages (`hf-neuralconv train` with `architecture: causal-lm` "
                         "and `tokenizer_name_or_path:` the chatbot).")
    check_same_vocabulary(model.config, input_lm.config, "chatbot", "input LM")
    return input_lm


def attack_model(
    model_dir: str | Path,
    targets_file: str | Path,
    hit_type: str = "o-sample-min-hit",
    input_lm_dir: str | Path | None = None,
    output_threshold: float | None = None,
    input_threshold: float | None = None,
    pairs_file: str | Path | None = None,
    dataset: str | None = None,
    **search,
) -> dict:
    """Hit rate of a malicious target list against a saved model (He & Glass 2020, Section 3.2): gibbs-enum
    (`search`: its settings) looks for a trigger for every target. Thresholds left out are measured on the test
    split the model was trained on (`data_config.json`), or of `dataset` (a model directory without
    `data_config.json` needs one of the two); io hits need the input LM. With `pairs_file`, every (trigger, target)
    pair is written as JSONL with its scores and whether it hits."""
    model_dir = Path(model_dir)
    measured = output_threshold is None or (hit_type.startswith("io-") and input_threshold is None)
    # Before the model loads: a directory that cannot say which test split to measure on fails at once.
    data_args = saved_data_arguments(model_dir, dataset, alternative=(
        ", or give the thresholds: --output-threshold (and --input-threshold for io hits)")) if measured else None
    model, tokenizer = load_model_dir(model_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    input_lm = load_input_lm(input_lm_dir, model).to(device) if input_lm_dir else None
    if measured:
        test = load_dialogues(data_args)["test"]
        output_threshold, input_threshold = hit_thresholds(model, tokenizer, test, data_args, input_lm,
                                                           output_threshold, input_threshold)
    criterion = HitCriterion(hit_type, output_threshold, input_threshold)
    targets = load_targets(targets_file, tokenizer, causal=is_causal(model))
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
    hit_rates = load_metric(metric_path("hit_rate")).compute(**columns, output_threshold=output_threshold,
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

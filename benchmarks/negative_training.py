"""Negative training costs (He & Glass 2020): gibbs-enum candidate scoring batched vs one by one, and one
negative-training step vs one MLE step (same run).

Model: the chatbot of `--model` (default: HF_NEURALCONV_MODEL, else outputs/seq2seq-full; its newest
`checkpoint-*` when there is no final model), else a random model of recipes/seq2seq/full.yaml's settings (the
JSON says which, `model`; a random model's replies are unlikely, so then every malicious pair counts as hitting:
T_out = -1e9). Eval mode for the search.

* gibbs-enum (Appendix A, Algorithm 3): `--targets` targets of the paper's 0.5k training list
  (`package:malicious_targets/train_500_cp1.txt`, or `--targets-file`), trigger length 15, G = 100, one
  sweep, one restart, seed 0. `batched`: `gibbs_enum`'s default, the G candidates of one position of all targets
  in one forward pass, the words before the position read once per trigger (`reuse_prefix`); `one_by_one`:
  `candidate_batch_size=1, reuse_prefix=False`, every candidate its own forward pass over its whole source (the
  naive scorer); and, to show what each part buys, `batched_whole_sources` (`reuse_prefix=False`) and
  `one_by_one_reusing_prefix` (`candidate_batch_size=1`). All must find the same triggers from the same seed
  (`same_triggers`). Each search is timed whole, and its candidate scoring alone (`scoring_seconds`: the
  `trigger_loss` passes over the candidates plus `encode_prefix`, the shared reading of the words before the
  position, charged to the candidates although the gradient pass reads it too; what is left is the gradient pass
  and the bookkeeping, the same in every variant). Goal (batched candidate scoring >= 20 x faster than scoring
  the candidates one by one): one_by_one's scoring seconds >= 20 x batched's; the whole-search
  ratio is reported next to it.
* Steps: the same real chitchat training batches (a seeded pool of the train split taken in order) and the same
  optimisation (SGD, lr 0.001, constant, clipping 5, bf16 autocast: recipes/negative_training/frequent.yaml),
  each negative step against an MLE step (`ConversationTrainer`) on mini-batches of its paper's size:
  `negative_frequent` (`NegativeTrainer`, Algorithm 2, batches of 64 = `--batch-size`: greedy responses of each
  batch, the frequency window, the negative rows) vs `mle`; `negative_malicious` (`NegativeTrainer`, Algorithm 1,
  batches of 100 = `--malicious-batch-size`, with as many given (trigger, target) pairs: each step decides which
  pairs still hit and trains on those, in one pass; the pairs are real training messages and the model's greedy
  replies to them, so they hit) vs `mle_malicious_batch`. Time per step over steps warmup+1 .. warmup+timed,
  from the end of the last warm-up step (`StepClock`); the trigger search itself is the first measurement, not
  part of a step. Goal: each negative step <= 2.5 x the MLE step of the same batch size.

One warm-up run is not needed: the step windows start after `--warmup-steps`; the gibbs-enum variants run once
untimed on one target first. `--repeats` interleaved repetitions; medians.

Run:  .venv/bin/python benchmarks/negative_training.py         (writes benchmarks/results/negative_training.json)
      .venv/bin/python benchmarks/negative_training.py --tiny  (seconds: tiny random model; checks the script only)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import tempfile
import time
from pathlib import Path
from unittest import mock

import _common as common
import datasets
import torch
from transformers import DataCollatorForSeq2Seq, set_seed

from hf_neuralconv.core.arguments import ConversationTrainingArguments, DataArguments
from hf_neuralconv.core.building import tokenize_dataset
from hf_neuralconv.core.scoring import pad_ids
from hf_neuralconv.core.trainer import ConversationTrainer
from hf_neuralconv.negative_training.gibbs_enum import gibbs_enum
from hf_neuralconv.negative_training.hits import load_targets, trigger_prefix
from hf_neuralconv.negative_training.trainer import NegativeTrainer, NegativeTrainingConfig

DEFAULT_TARGETS = "package:malicious_targets/train_500_cp1.txt"
SEARCH_RATIO_GOAL = 20.0  # batched >= 20 x faster than one by one
STEP_RATIO_GOAL = 2.5  # a negative-training step <= 2.5 x an MLE step
STEP_VARIANTS = ("mle", "negative_frequent", "mle_malicious_batch", "negative_malicious")
BASELINE = {"negative_frequent": "mle", "negative_malicious": "mle_malicious_batch"}  # same batch size
SEARCH_VARIANTS = {  # gibbs_enum settings of each timed search
    "batched": {},
    "batched_whole_sources": {"reuse_prefix": False},
    "one_by_one": {"candidate_batch_size": 1, "reuse_prefix": False},
    "one_by_one_reusing_prefix": {"candidate_batch_size": 1},
}
# The module itself: the package's `gibbs_enum` is the function.
SEARCH_MODULE = importlib.import_module("hf_neuralconv.negative_training.gibbs_enum")
SCORING_FUNCTIONS = ("trigger_loss", "encode_prefix")  # what _search calls for the candidates and nothing else


@contextlib.contextmanager
def scoring_clock():
    """Adds the seconds spent inside gibbs-enum's candidate-scoring functions to the yielded list's one entry."""
    spent = [0.0]

    def timed(function):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - started
        return wrapper

    with contextlib.ExitStack() as patches:
        for name in SCORING_FUNCTIONS:
            patches.enter_context(mock.patch.object(SEARCH_MODULE, name, timed(getattr(SEARCH_MODULE, name))))
        yield spent


def time_search(model, tokenizer, targets, opts, variant):
    """(whole-search seconds, candidate-scoring seconds, triggers) of one gibbs-enum run."""
    with scoring_clock() as scoring:
        started = time.perf_counter()
        result = gibbs_enum(model, tokenizer, targets, trigger_length=opts.trigger_length,
                            num_candidates=opts.num_candidates, max_sweeps=1, num_restarts=1,
                            targets_per_batch=len(targets), seed=0, progress=False, **SEARCH_VARIANTS[variant])
        seconds = time.perf_counter() - started
    return seconds, scoring[0], result.triggers


def malicious_pairs(model, tokenizer, train_set, count: int, path: Path) -> None:
    """`count` (training message, the model's greedy reply) pairs as the JSONL `trigger_pairs_file` reads."""
    prefix = trigger_prefix(tokenizer)
    messages = [text for text in train_set["message"] if text.strip()][:count]
    ids = [prefix + tokenizer(text, add_special_tokens=False)["input_ids"][:20] for text in messages]
    inputs = pad_ids(ids, tokenizer.pad_token_id, model.device)
    with torch.no_grad():
        replies = model.eval().generate(input_ids=inputs, attention_mask=inputs.ne(tokenizer.pad_token_id),
                                        do_sample=False, num_beams=1, max_new_tokens=20)
    texts = tokenizer.batch_decode(replies, skip_special_tokens=True)
    with path.open("w") as file:
        for message, reply in zip(messages, texts):
            if reply.strip():
                file.write(json.dumps({"trigger": message, "target": reply}) + "\n")


def time_steps(variant, model, tokenizer, train_set, pairs_file, opts) -> dict:
    malicious_batch = variant in ("mle_malicious_batch", "negative_malicious")
    shared = dict(per_device_train_batch_size=opts.malicious_batch_size if malicious_batch else opts.batch_size,
                  learning_rate=1e-3, optim="sgd",
                  lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=5.0, bf16=not opts.tiny,
                  use_cpu=True, max_steps=opts.warmup_steps + opts.timed_steps, seed=opts.seed,
                  train_sampling_strategy="sequential", eval_strategy="no", save_strategy="no",
                  # One log, after the last step's clock mark: NegativeTrainer.log averages its per-step metrics.
                  logging_strategy="steps", logging_steps=opts.warmup_steps + opts.timed_steps, report_to="none",
                  disable_tqdm=True, dataloader_num_workers=0)
    with tempfile.TemporaryDirectory() as output_dir:
        clock = common.StepClock()
        if variant.startswith("mle"):
            trainer = ConversationTrainer(model=model.train(), args=ConversationTrainingArguments(output_dir,
                                          **shared), train_dataset=train_set, processing_class=tokenizer,
                                          data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100),
                                          callbacks=[clock])
        else:
            mode = variant.removeprefix("negative_")
            extra = dict(trigger_pairs_file=str(pairs_file), hit_type="o-sample-avg-hit",
                         output_threshold=opts.output_threshold, lambda_pos=1.0) if mode == "malicious" else {}
            args = NegativeTrainingConfig(output_dir, mode=mode, **extra, **shared)
            trainer = NegativeTrainer(model=model.train(), args=args, train_dataset=train_set,
                                      processing_class=tokenizer, callbacks=[clock])
        common.drop_console_callbacks(trainer)
        set_seed(opts.seed)
        trainer.train()
        ends = clock.step_ends
        if len(ends) < opts.warmup_steps + opts.timed_steps:
            raise RuntimeError(f"{variant}: {len(ends)} steps ran, {opts.warmup_steps + opts.timed_steps} needed")
        seconds = ends[-1] - ends[opts.warmup_steps - 1]
        logged = next(entry for entry in reversed(trainer.state.log_history) if "loss" in entry)
    return {"ms_per_step": 1000 * seconds / opts.timed_steps, "seconds": seconds,
            "negative_rows_per_step": {key: value for key, value in logged.items()
                                       if key.endswith(("negative_examples", "negative_pairs"))}}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=common.model_from_env(common.TRAINED_DIR))
    parser.add_argument("--targets-file", default=str(DEFAULT_TARGETS))
    parser.add_argument("--targets", type=int, default=4, help="targets searched together")
    parser.add_argument("--trigger-length", type=int, default=15)
    parser.add_argument("--num-candidates", type=int, default=100, help="G")
    parser.add_argument("--batch-size", type=int, default=64, help="mini-batch of the frequent steps (paper: 64)")
    parser.add_argument("--malicious-batch-size", type=int, default=100,
                        help="mini-batch of the malicious steps and number of their (trigger, target) pairs "
                             "(paper: 100)")
    parser.add_argument("--output-threshold", type=float, default=-4.35,
                        help="T_out of the malicious steps (outputs/seq2seq-full measures -4.35 on chitchat test)")
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--timed-steps", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    opts = common.parse_options(parser, "tiny random model, few steps: checks the script only", argv,
                                targets=2, trigger_length=3, num_candidates=5, batch_size=8, malicious_batch_size=8,
                                warmup_steps=1, timed_steps=2, repeats=1)

    datasets.disable_progress_bars()
    machine = common.machine_info()
    data_args = DataArguments()
    dialogues, recipe_tokenizer, tokenizer_source = common.load_data_and_tokenizer(data_args)
    model, tokenizer, model_dir = common.load_chatbot(opts.model, recipe_tokenizer, opts.tiny, opts.seed)
    model_source = (("tiny " if opts.tiny else "") + "random init, full.yaml settings" if model_dir is None
                    else common.relative_to_root(model_dir))
    if model_dir is None:  # a random model's replies are unlikely: let every pair hit, or the malicious steps stop
        opts.output_threshold = -1e9
    initial_state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    targets = load_targets(opts.targets_file, tokenizer, causal=False).ids[: opts.targets]
    pool = dialogues["train"].shuffle(seed=opts.seed).select(
        range((opts.warmup_steps + opts.timed_steps) * max(opts.batch_size, opts.malicious_batch_size)))
    train_set = tokenize_dataset(pool, tokenizer, data_args, truncate_target=True)

    search = {name: [] for name in SEARCH_VARIANTS}
    scoring = {name: [] for name in SEARCH_VARIANTS}
    triggers = {}
    model.eval()
    for name in SEARCH_VARIANTS:  # untimed warm-up on one target
        time_search(model, tokenizer, targets[:1], opts, name)
    for rep in range(opts.repeats):
        for name in SEARCH_VARIANTS:
            seconds, scoring_seconds, found = time_search(model, tokenizer, targets, opts, name)
            triggers.setdefault(name, []).append(found)
            search[name].append(seconds)
            scoring[name].append(scoring_seconds)
            print(f"  rep {rep} gibbs-enum {name:<26} {seconds:8.2f} s (scoring {scoring_seconds:8.2f} s)",
                  flush=True)

    steps = {variant: [] for variant in STEP_VARIANTS}
    with tempfile.TemporaryDirectory() as scratch:
        pairs_file = Path(scratch) / "pairs.jsonl"
        malicious_pairs(model, tokenizer, pool, opts.malicious_batch_size, pairs_file)
        for rep in range(opts.repeats):
            for variant in STEP_VARIANTS:
                model.load_state_dict(initial_state)  # every run starts from the same weights
                measured = time_steps(variant, model, tokenizer, train_set, pairs_file, opts)
                steps[variant].append(measured)
                print(f"  rep {rep} step {variant:<20} {measured['ms_per_step']:8.0f} ms/step", flush=True)

    search_summary = {name: {"seconds_runs": runs, "seconds_median": common.median(runs),
                             "scoring_seconds_runs": scoring[name],
                             "scoring_seconds_median": common.median(scoring[name])}
                      for name, runs in search.items()}
    batched = search_summary["batched"]
    for name, summary in search_summary.items():
        summary["over_batched"] = summary["seconds_median"] / batched["seconds_median"]
        summary["scoring_over_batched"] = summary["scoring_seconds_median"] / batched["scoring_seconds_median"]
    speedup = search_summary["one_by_one"]["over_batched"]
    scoring_speedup = search_summary["one_by_one"]["scoring_over_batched"]
    same_triggers = all(found == triggers["batched"][0] for runs in triggers.values() for found in runs)
    step_summary = {variant: {"ms_per_step_runs": [m["ms_per_step"] for m in runs],
                              "ms_per_step_median": common.median(m["ms_per_step"] for m in runs),
                              "negative_rows_per_step": runs[-1]["negative_rows_per_step"]}
                    for variant, runs in steps.items()}
    for variant, baseline in BASELINE.items():
        step_summary[variant]["ratio_to_mle"] = (step_summary[variant]["ms_per_step_median"]
                                                 / step_summary[baseline]["ms_per_step_median"])
    goals = {"gibbs_enum_batched_scoring_at_least_20x_one_by_one": {
        "value": scoring_speedup, "threshold": SEARCH_RATIO_GOAL, "whole_search_ratio": speedup,
        "meets_goal": scoring_speedup >= SEARCH_RATIO_GOAL and same_triggers}}
    for variant in BASELINE:
        ratio = step_summary[variant]["ratio_to_mle"]
        goals[f"{variant}_step_at_most_2.5x_mle"] = {"value": ratio, "threshold": STEP_RATIO_GOAL,
                                                   "meets_goal": ratio <= STEP_RATIO_GOAL}
    payload = {
        "benchmark": "negative_training",
        "tiny": opts.tiny,
        "machine": common.finish_machine_info(machine),
        "model": model_source,
        "model_random_weights": model_dir is None,
        "tokenizer": tokenizer_source if model_dir is None else model_source,
        "config": {key: value for key, value in vars(opts).items() if key not in ("output", "model")},
        "gibbs_enum": {**search_summary, "speedup": speedup, "scoring_speedup": scoring_speedup,
                       "same_triggers": same_triggers,
                       "rows_per_batched_pass": len(targets) * opts.num_candidates},
        "steps": step_summary,
        "goals": goals,
        "meets_all_goals": all(goal["meets_goal"] for goal in goals.values()),
    }
    path = common.write_results("negative_training", payload, opts.output)
    common.print_table(["measurement", "median", "ratio"],
                       [[f"gibbs-enum {name} (s)", summary["seconds_median"], summary["over_batched"]]
                        for name, summary in search_summary.items()]
                       + [[f"candidate scoring {name} (s)", summary["scoring_seconds_median"],
                           summary["scoring_over_batched"]] for name, summary in search_summary.items()]
                       + [[f"step {variant} (ms)", step_summary[variant]["ms_per_step_median"],
                           step_summary[variant].get("ratio_to_mle", 1.0)] for variant in STEP_VARIANTS])
    print(f"same triggers: {payload['gibbs_enum']['same_triggers']}; written to {path}")
    return payload


if __name__ == "__main__":
    main()

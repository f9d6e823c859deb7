"""Training throughput (target tokens/s) of the seq2seq chatbot: our Trainer path vs a bare PyTorch loop.

Model: the OpenNMT-py reference configuration -- 1-layer LSTM encoder/decoder, embeddings 256, hidden 512, Luong
"general" (global) attention, the recipe's 20k word vocabulary, batch 64, Adam (lr 1e-3), gradient clipping 5.0,
dropout 0.2. Data: real chitchat examples (`load_dialogues` / `tokenize_dataset` with `DataArguments()`
defaults), a seeded random pool of the train split, collated by `DataCollatorForSeq2Seq` as in `seq2seq.train`.

Throughput = non-pad label tokens (the reply tokens plus `</s>`) per second of wall time over a window of
`--timed-steps` optimizer steps that follows `--warmup-steps` steps of the same run: from the end of the last
warm-up step to the end of the last timed step, so data loading, collation, forward, backward, clipping,
optimizer and scheduler steps and every per-step cost of the Trainer are inside; dataset preparation, model
construction, Trainer start-up and the first steps are not.

Variants (each run starts from the same seed; repetitions are interleaved so that drift hits all alike):
  trainer_fp32             ConversationTrainer, fp32, batches in a fixed random order (the baseline)
  bare_fp32                hand-written loop: the SAME batches in the same order (same collator), same model,
                           Adam (fused, as the Trainer's default `adamw_torch_fused` with weight_decay 0),
                           the same linear schedule, clip_grad_norm_(5.0)
  trainer_bf16             + bf16 autocast (`bf16=True, use_cpu=True`)
  trainer_group_by_length  + target-length bucketing (`train_sampling_strategy="group_by_length"`)
  trainer_bf16_group_by_length   bf16 autocast and bucketing: the OpenNMT-py model configuration, made faster
  trainer_projection256    + projection to 256 units before the softmax (Vinyals & Le 2015, Section 5.2)
  trainer_recipe           all three, as recipes/seq2seq/full.yaml trains
  bare_bf16                (optional) the bare loop under bf16 autocast

Perplexity impact (short-run comparison, NOT converged models): each variant of `--ppl-variants` trains
`--ppl-steps` steps from the same seed over the same examples, then the validation perplexity
(token-level, pads excluded, fp32 evaluation) is computed on a fixed seeded subset of the validation split.

Run:  .venv/bin/python benchmarks/train_throughput.py            (writes benchmarks/results/train_throughput.json)
      .venv/bin/python benchmarks/train_throughput.py --tiny     (seconds: checks the script, numbers meaningless)
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time

import _common as common
import datasets
import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorForSeq2Seq, get_scheduler, set_seed

from hf_neuralconv.core.arguments import ConversationTrainingArguments, DataArguments, ModelArguments
from hf_neuralconv.core.building import build_model, tokenize_dataset
from hf_neuralconv.core.trainer import ConversationTrainer

VARIANTS = {
    "trainer_fp32": dict(runner="trainer", bf16=False, sampling="sequential", projection_size=0),
    "bare_fp32": dict(runner="bare", bf16=False, sampling="sequential", projection_size=0),
    "trainer_bf16": dict(runner="trainer", bf16=True, sampling="sequential", projection_size=0),
    "trainer_group_by_length": dict(runner="trainer", bf16=False, sampling="group_by_length", projection_size=0),
    "trainer_projection256": dict(runner="trainer", bf16=False, sampling="sequential", projection_size=256),
    "trainer_bf16_group_by_length": dict(runner="trainer", bf16=True, sampling="group_by_length", projection_size=0),
    "trainer_recipe": dict(runner="trainer", bf16=True, sampling="group_by_length", projection_size=256),
    "bare_bf16": dict(runner="bare", bf16=True, sampling="sequential", projection_size=0),
}
DEFAULT_TIMING = ("trainer_fp32,bare_fp32,trainer_bf16,trainer_group_by_length,trainer_bf16_group_by_length,"
                  "trainer_projection256,trainer_recipe")
DEFAULT_PPL = ("trainer_fp32,trainer_bf16,trainer_group_by_length,trainer_bf16_group_by_length,trainer_projection256,"
               "trainer_recipe")
BASELINE, BARE = "trainer_fp32", "bare_fp32"


class CountingTrainer(ConversationTrainer):
    """ConversationTrainer that notes, per step, the non-pad label tokens and the padded label positions."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batch_stats: list[tuple[int, int, int]] = []

    def training_step(self, model, inputs, num_items_in_batch=None):
        labels = inputs["labels"]
        self.batch_stats.append((int(labels.ne(-100).sum()), labels.numel(), int(labels.clamp(min=0).sum())))
        return super().training_step(model, inputs, num_items_in_batch)


def batch_stats(labels: torch.Tensor) -> tuple[int, int, int]:
    """(target tokens, padded target positions, a fingerprint of the batch's labels)."""
    return int(labels.ne(-100).sum()), labels.numel(), int(labels.clamp(min=0).sum())


def training_args(output_dir: str, cfg: dict, opts, max_steps: int) -> ConversationTrainingArguments:
    return ConversationTrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=opts.batch_size,
        per_device_eval_batch_size=opts.eval_batch_size,
        learning_rate=opts.learning_rate,
        weight_decay=0.0,
        lr_scheduler_type="linear",
        warmup_steps=opts.lr_warmup_steps,
        max_grad_norm=opts.max_grad_norm,
        max_steps=max_steps,
        bf16=cfg["bf16"],
        use_cpu=True,
        train_sampling_strategy=cfg["sampling"],
        seed=opts.seed,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def new_model(cfg: dict, opts, tokenizer):
    set_seed(opts.seed)
    model_args = ModelArguments(
        embedding_size=opts.embedding_size,
        hidden_size=opts.hidden_size,
        num_layers=1,
        attention="general",
        projection_size=cfg["projection_size"] and opts.projection_size,
        dropout=0.2,
        share_embeddings=True,
    )
    return build_model(model_args, tokenizer)


def run_trainer(cfg: dict, opts, tokenizer, train_set, collator, max_steps: int, eval_set=None) -> dict:
    model = new_model(cfg, opts, tokenizer)
    with tempfile.TemporaryDirectory() as output_dir:
        clock = common.StepClock()
        trainer = CountingTrainer(
            model=model,
            args=training_args(output_dir, cfg, opts, max_steps),
            train_dataset=train_set,
            data_collator=collator,
            processing_class=tokenizer,
            callbacks=[clock],
        )
        common.drop_console_callbacks(trainer)
        set_seed(opts.seed)
        trainer.train()
        result = {"optimizer": type(trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer")
                                    else trainer.optimizer).__name__,
                  "optim_arg": str(trainer.args.optim), "step_ends": clock.step_ends,
                  "batch_stats": trainer.batch_stats, "parameters": sum(p.numel() for p in model.parameters())}
        if eval_set is not None:
            result["validation"] = evaluate(model, opts, tokenizer, eval_set, collator, output_dir)
    return result


def evaluate(model, opts, tokenizer, eval_set, collator, output_dir: str) -> dict:
    """Token-level validation perplexity in fp32 (every variant is scored the same way)."""
    cfg = dict(bf16=False, sampling="sequential")
    trainer = ConversationTrainer(
        model=model,
        args=training_args(output_dir, cfg, opts, max_steps=1),
        eval_dataset=eval_set,
        data_collator=collator,
        processing_class=tokenizer,
    )
    common.drop_console_callbacks(trainer)
    metrics = trainer.evaluate()
    return {"perplexity": metrics["eval_perplexity"], "loss": metrics["eval_loss"],
            "target_tokens": metrics["eval_target_tokens"], "examples": len(eval_set)}


def run_bare(cfg: dict, opts, tokenizer, train_set, collator, max_steps: int) -> dict:
    """The textbook loop over the same batches (sequential over the same pre-shuffled pool, same collator)."""
    model = new_model(cfg, opts, tokenizer)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=opts.learning_rate, fused=True)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=opts.lr_warmup_steps,
                              num_training_steps=max_steps)
    loader = DataLoader(train_set.with_format(None), batch_size=opts.batch_size, shuffle=False,
                        collate_fn=collator)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg["bf16"])
    step_ends, stats = [], []
    for step, batch in enumerate(loader):
        if step == max_steps:
            break
        stats.append(batch_stats(batch["labels"]))
        with autocast:  # the loss only, as ConversationTrainer's training step asks for it
            loss = model(**batch, return_logits=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), opts.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step_ends.append(time.perf_counter())
    return {"optimizer": "torch.optim.Adam(fused=True)", "step_ends": step_ends, "batch_stats": stats,
            "parameters": sum(p.numel() for p in model.parameters())}


def window(result: dict, warmup: int, timed: int) -> dict:
    """Throughput over steps warmup+1 .. warmup+timed (end of step `warmup` to end of the last one)."""
    ends, stats = result["step_ends"], result["batch_stats"]
    if warmup < 1 or len(ends) < warmup + timed:
        raise RuntimeError(f"{len(ends)} steps ran; need warmup >= 1 and {warmup + timed} steps")
    seconds = ends[warmup + timed - 1] - ends[warmup - 1]
    tokens = sum(s[0] for s in stats[warmup:warmup + timed])
    positions = sum(s[1] for s in stats[warmup:warmup + timed])
    return {
        "seconds": seconds,
        "target_tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "ms_per_step": 1000 * seconds / timed,
        "padding_fraction": 1 - tokens / positions,
        "batch_fingerprint": [s[2] for s in stats[warmup:warmup + timed]],
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--timed-steps", type=int, default=50,
                        help="50 = one LengthGroupedSampler mega-batch (50 batches), as in the full run")
    parser.add_argument("--variants", default=DEFAULT_TIMING, help=f"comma list out of {', '.join(VARIANTS)}")
    parser.add_argument("--ppl-variants", default=DEFAULT_PPL, help="'' to skip the perplexity runs")
    parser.add_argument("--ppl-steps", type=int, default=300)
    parser.add_argument("--eval-examples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--eval-batch-size", type=int, default=128)
    parser.add_argument("--embedding-size", type=int, default=256)
    parser.add_argument("--hidden-size", type=int, default=512)
    parser.add_argument("--projection-size", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--lr-warmup-steps", type=int, default=30)
    parser.add_argument("--max-grad-norm", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--opennmt-reference", type=float, default=1000.0,
                        help="OpenNMT-py 3.5.1 target tokens/s on this config and machine (figure given by the "
                             "issue, not measured by this script)")
    opts = common.parse_options(parser, "tiny model and step counts: checks the script only", argv,
                                repeats=1, warmup_steps=1, timed_steps=3, ppl_steps=4, eval_examples=16,
                                batch_size=8, embedding_size=16, hidden_size=32, projection_size=8)
    timing_variants = [v for v in opts.variants.split(",") if v]
    ppl_variants = [v for v in opts.ppl_variants.split(",") if v]
    for name in timing_variants + ppl_variants:
        if name not in VARIANTS:
            parser.error(f"unknown variant {name!r}")
        if name in ppl_variants and VARIANTS[name]["runner"] != "trainer":
            parser.error("perplexity runs use the Trainer variants only")

    datasets.disable_progress_bars()
    started = time.time()
    machine = common.machine_info()
    data_args = DataArguments()
    dialogues, tokenizer, tokenizer_source = common.load_data_and_tokenizer(data_args)
    timing_steps = opts.warmup_steps + opts.timed_steps
    # At least 200 batches, so that LengthGroupedSampler forms mega-batches of 50 batches, as on the full set.
    pool_size = max(timing_steps, opts.ppl_steps if ppl_variants else 0, 4 if opts.tiny else 200) * opts.batch_size
    # A fixed random pool of the train split: "random batches" are consecutive slices of this shuffled pool,
    # so the Trainer (sequential sampler) and the bare loop see exactly the same batches in the same order.
    pool = dialogues["train"].shuffle(seed=opts.seed).select(range(pool_size))
    train_set = tokenize_dataset(pool, tokenizer, data_args, truncate_target=True)
    eval_pool = dialogues["validation"].shuffle(seed=opts.seed).select(range(opts.eval_examples))
    eval_set = tokenize_dataset(eval_pool, tokenizer, data_args, truncate_target=True)
    collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)
    prep_s = time.time() - started
    print(f"data ready in {prep_s:.1f}s: pool {len(train_set)} train examples, {len(eval_set)} validation; "
          f"vocab {len(tokenizer)} ({tokenizer_source}); threads {torch.get_num_threads()}", flush=True)

    # ---- timing: interleaved repetitions ----
    runs = {name: [] for name in timing_variants}
    for rep in range(opts.repeats):
        for name in timing_variants:
            cfg = VARIANTS[name]
            gc.collect()
            runner = run_trainer if cfg["runner"] == "trainer" else run_bare
            raw = runner(cfg, opts, tokenizer, train_set, collator, timing_steps)
            measured = window(raw, opts.warmup_steps, opts.timed_steps)
            measured.update(optimizer=raw["optimizer"], parameters=raw["parameters"], repetition=rep)
            runs[name].append(measured)
            print(f"  rep {rep} {name:<24} {measured['tokens_per_s']:8.0f} tok/s  "
                  f"{measured['ms_per_step']:7.1f} ms/step  pad {measured['padding_fraction']:.2f}", flush=True)

    summary = {}
    for name, measured in runs.items():
        summary[name] = {
            "tokens_per_s_runs": [m["tokens_per_s"] for m in measured],
            "tokens_per_s_median": common.median(m["tokens_per_s"] for m in measured),
            "ms_per_step_median": common.median(m["ms_per_step"] for m in measured),
            "padding_fraction": measured[0]["padding_fraction"],
            "target_tokens_in_window": measured[0]["target_tokens"],
            "parameters": measured[0]["parameters"],
            "optimizer": measured[0]["optimizer"],
            "config": VARIANTS[name],
        }
    base = summary.get(BASELINE, {}).get("tokens_per_s_median")
    for name, entry in summary.items():
        entry["ratio_to_trainer_fp32"] = entry["tokens_per_s_median"] / base if base else None

    comparisons, goals = {}, {}
    if BASELINE in runs and BARE in runs:
        same = [a["batch_fingerprint"] == b["batch_fingerprint"] for a, b in zip(runs[BASELINE], runs[BARE])]
        paired = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(runs[BASELINE], runs[BARE])]
        ratio = summary[BASELINE]["tokens_per_s_median"] / summary[BARE]["tokens_per_s_median"]
        comparisons["trainer_vs_bare"] = {"ratio_of_medians": ratio, "paired_ratios": paired,
                                          "paired_ratio_median": common.median(paired), "same_batches": all(same)}
        goals["trainer_at_least_0.95x_bare_loop"] = {"value": ratio, "threshold": 0.95, "meets_goal": ratio >= 0.95}
    if base:
        target = 1.5 * opts.opennmt_reference
        comparisons["opennmt_reference_tokens_per_s"] = opts.opennmt_reference
        comparisons["trainer_fp32_vs_opennmt"] = base / opts.opennmt_reference
        # "The same configuration" as OpenNMT-py: no projection; bucketing (OpenNMT sorts its pools by length
        # too) and bf16 autocast change how batches are formed and computed, not the model.
        same_config = {name: entry["tokens_per_s_median"] for name, entry in summary.items()
                       if entry["config"]["runner"] == "trainer" and entry["config"]["projection_size"] == 0}
        best = max(same_config, key=same_config.get)
        comparisons["best_same_config_variant"] = best
        comparisons["best_same_config_vs_opennmt"] = same_config[best] / opts.opennmt_reference
        goals["trainer_same_config_at_least_1.5x_opennmt"] = {"value": same_config[best], "variant": best,
                                                             "threshold": target,
                                                             "meets_goal": same_config[best] >= target}
        if "trainer_recipe" in summary:
            recipe = summary["trainer_recipe"]["tokens_per_s_median"]
            comparisons["trainer_recipe_vs_opennmt"] = recipe / opts.opennmt_reference
            goals["trainer_recipe_at_least_1.5x_opennmt"] = {"value": recipe, "threshold": target,
                                                           "meets_goal": recipe >= target}

    # ---- perplexity impact: short runs from the same seed over the same examples ----
    perplexity = {}
    for name in ppl_variants:
        gc.collect()
        t0 = time.time()
        raw = run_trainer(VARIANTS[name], opts, tokenizer, train_set, collator, opts.ppl_steps, eval_set=eval_set)
        w = min(opts.warmup_steps, opts.ppl_steps - 1)
        throughput = window(raw, w, opts.ppl_steps - w)
        perplexity[name] = {
            "steps": opts.ppl_steps,
            "validation_perplexity": raw["validation"]["perplexity"],
            "validation_loss": raw["validation"]["loss"],
            "validation_target_tokens": raw["validation"]["target_tokens"],
            "tokens_per_s_during_run": throughput["tokens_per_s"],
            "wall_s": time.time() - t0,
        }
        print(f"  ppl {name:<24} {perplexity[name]['validation_perplexity']:9.2f} after {opts.ppl_steps} steps "
              f"({throughput['tokens_per_s']:.0f} tok/s)", flush=True)
    if BASELINE in perplexity:
        for entry in perplexity.values():
            entry["ratio_to_trainer_fp32"] = entry["validation_perplexity"] / perplexity[BASELINE][
                "validation_perplexity"]

    payload = {
        "benchmark": "train_throughput",
        "tiny": opts.tiny,
        "machine": common.finish_machine_info(machine),
        "config": {
            "model": {"num_layers": 1, "embedding_size": opts.embedding_size, "hidden_size": opts.hidden_size,
                      "attention": "general", "vocab_size": len(tokenizer), "dropout": 0.2,
                      "share_embeddings": True, "projection_size_of_projection_variants": opts.projection_size},
            "batch_size": opts.batch_size, "learning_rate": opts.learning_rate, "lr_schedule": "linear",
            "lr_warmup_steps": opts.lr_warmup_steps, "max_grad_norm": opts.max_grad_norm, "seed": opts.seed,
            "data": {"dataset": data_args.dataset, "max_source_length": data_args.max_source_length,
                     "max_target_length": data_args.max_target_length,
                     "max_context_turns": data_args.max_context_turns,
                     "train_pool_examples": len(train_set), "eval_examples": len(eval_set),
                     "tokenizer": tokenizer_source},
            "warmup_steps": opts.warmup_steps, "timed_steps": opts.timed_steps, "repeats": opts.repeats,
            "ppl_steps": opts.ppl_steps, "throughput_unit": "non-pad target (label) tokens per second, incl. </s>",
        },
        "timing_runs": {name: [{k: v for k, v in m.items() if k != "batch_fingerprint"} for m in measured]
                        for name, measured in runs.items()},
        "summary": summary,
        "comparisons": comparisons,
        "goals": goals,
        "meets_all_goals": all(b["meets_goal"] for b in goals.values()) if goals else None,
        "perplexity_short_run": {
            "note": f"short-run comparison: {opts.ppl_steps} steps from the same seed over the same examples, "
                    f"validation perplexity on {len(eval_set)} fixed validation examples (fp32 evaluation); "
                    "not converged models",
            "results": perplexity,
        },
        "data_prep_s": prep_s,
        "duration_s": time.time() - started,
    }
    path = common.write_results("train_throughput", payload, opts.output)

    if summary:
        print(f"\nTraining throughput (median of {opts.repeats}; steps {opts.warmup_steps + 1}.."
              f"{timing_steps}, batch {opts.batch_size})")
    rows = []
    for name, entry in summary.items():
        ppl = perplexity.get(name, {}).get("validation_perplexity")
        rows.append([name, entry["tokens_per_s_median"], entry["ms_per_step_median"], entry["ratio_to_trainer_fp32"],
                     entry["padding_fraction"], ppl])
    if rows:
        common.print_table(["variant", "tok/s", "ms/step", "x fp32", "pad frac", f"val ppl@{opts.ppl_steps}"], rows)
    for name, entry in perplexity.items():
        if name not in summary:
            print(f"  {name}: val ppl@{opts.ppl_steps} {entry['validation_perplexity']:.2f}")
    if goals:
        common.print_goals(goals)
    print(f"\nwrote {path} ({payload['duration_s']:.0f}s)")
    return payload


if __name__ == "__main__":
    main()

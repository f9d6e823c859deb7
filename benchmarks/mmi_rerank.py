"""MMI-bidi reranking cost: rescoring a 50-best list vs the beam search that produced it (same run).

Luan et al. (2017), Sections 6.3-6.4: beam search (B = 50, at most 20 tokens) proposes an N-best list per input,
which is reranked by Eq. 4 (log p(R|M) + lambda log p(M|R) + gamma |R|). The goal: reranking the 50-best lists of a
batch of 64 inputs costs at most 2 x the beam search.

Models: the chatbot of `--model` (default: HF_NEURALCONV_MODEL, else outputs/seq2seq-full; a directory without a
final model but with `checkpoint-*` folders gives its newest checkpoint) and the reverse model p(M|R) of
`--reverse-model` (default outputs/mmi-reverse, the output of recipes/mmi/reverse.yaml). A missing chatbot is
replaced by a random model of the recipes/seq2seq/full.yaml configuration, a missing reverse model by a random model
of the chatbot's configuration; the JSON says so (`random_weights`). Random weights hardly change the cost (the
same matrices are multiplied), but a random chatbot rarely ends a reply early, so every beam runs the full 20 steps
and every candidate is long: a pessimistic case for both sides.

Inputs: 64 real chitchat histories (context + message), a seeded sample of the validation split
(`load_dialogues(DataArguments())`), encoded once with `encode_histories` (not timed). Eval mode,
`torch.inference_mode()`. Timed, each in one call over all inputs:

* beam: `generate_nbest(model, tokenizer, encoded, num_beams=50, num_return_sequences=50, max_new_tokens=20)` --
  padding, `generate()`, decoding the texts and dropping duplicate texts;
* rerank[b]: `score_nbest(model, reverse_model, tokenizer, encoded, candidates, batch_size=b)` on those N-best
  lists plus `ranked(lam, gamma)` for every input -- tokenising the candidates, one teacher-forced pass of each
  model over every (input, candidate) row in length-sorted batches of b rows (`--score-batch-size`, default 128,
  256 and 512; "all": one batch), the Eq. 4 scores and the sort.
  The time spent inside each model's `sequence_log_probs` is recorded too (forward_s, reverse_s; the rest is
  tokenisation, collation and ranking).

Not timed: loading models and data, encoding the histories, building the candidate lists fed to rerank (the
warm-up's beam output; every timed beam run is checked to give the same lists, `same_candidates_every_run`).
One warm-up call of each, then `--repeats` interleaved repetitions (beam, rerank[b1], rerank[b2], ...); medians.
The goal uses the fastest batch size. A batch size whose padded logits would not fit comfortably in the memory
available at start (3 x rows x target length x vocabulary x 4 bytes, for either model, over 80 % of MemAvailable)
is skipped and reported as such rather than risking the out-of-memory killer (`--no-memory-guard` runs it anyway).

Run:  .venv/bin/python benchmarks/mmi_rerank.py          (writes benchmarks/results/mmi_rerank.json)
      .venv/bin/python benchmarks/mmi_rerank.py --tiny   (seconds: tiny random models, 4 inputs, 5 beams; checks the
                                                          script only, numbers meaningless)
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib
import resource
import time
from pathlib import Path

import _common as common
import datasets
import torch
from transformers import AutoModelForSeq2SeqLM, set_seed

from hf_neuralconv.core.arguments import DataArguments
from hf_neuralconv.core.building import default_generation_config
from hf_neuralconv.core.chat_format import encode_histories
from hf_neuralconv.data.tokenization import encode_target
from hf_neuralconv.mmi.rerank import generate_nbest, score_nbest

# The module itself: `hf_neuralconv.mmi.rerank` is the `rerank` function the package re-exports.
rerank_module = importlib.import_module("hf_neuralconv.mmi.rerank")

DEFAULT_REVERSE_MODEL = common.ROOT / "outputs" / "mmi-reverse"
RATIO_GOAL = 2.0  # rerank <= 2 x beam search
# Eq. 4 weights when the chatbot has no tuned `generation_config.mmi`: they change no cost, only the order.
DEFAULT_LAMBDA, DEFAULT_GAMMA = 0.5, 0.2
MEMORY_FACTOR = 3  # the logits, their float copy at the target positions and its log-softmax (a safe bound)
MEMORY_SHARE = 0.8


def load_models(opts, recipe_tokenizer, recipe_tokenizer_source: str):
    """(chatbot, reverse model, tokenizer, description of where each came from). The tokenizer is the chatbot's
    when its directory has one, else the recipe's (`load_data_and_tokenizer`)."""
    model, tokenizer, chatbot_dir = common.load_chatbot(opts.model, recipe_tokenizer, opts.tiny, opts.seed)
    sources = {"tokenizer": recipe_tokenizer_source if tokenizer is recipe_tokenizer
               else common.relative_to_root(chatbot_dir)}
    if chatbot_dir is not None:
        sources["model"], sources["model_random_weights"] = common.relative_to_root(chatbot_dir), False
    else:
        model.generation_config = default_generation_config(tokenizer)  # as a trained model saves it
        recipe = common.relative_to_root(common.FULL_RECIPE)
        sources["model"] = ("tiny " if opts.tiny else "") + f"random init, {recipe} model settings" + (
            "" if opts.tiny else f" ({opts.model}: no saved model)")
        sources["model_random_weights"] = True
    reverse_dir = None if opts.tiny else common.resolve_model_dir(Path(opts.reverse_model))
    if reverse_dir is not None:
        reverse_model = AutoModelForSeq2SeqLM.from_pretrained(reverse_dir)
        sources["reverse_model"] = common.relative_to_root(reverse_dir)
        sources["reverse_model_random_weights"] = False
    else:
        set_seed(opts.seed + 1)
        reverse_model = type(model)(copy.deepcopy(model.config))
        sources["reverse_model"] = "random init, the chatbot's configuration" + (
            "" if opts.tiny else f" ({opts.reverse_model}: no saved model)")
        sources["reverse_model_random_weights"] = True
    return model.eval(), reverse_model.eval(), tokenizer, sources


def sample_histories(dialogues, count: int, seed: int) -> list[list[str]]:
    """`count` validation examples (seeded shuffle) as histories: context turns, then the message."""
    validation = dialogues["validation"].shuffle(seed=seed)
    histories = []
    for example in validation:
        if example["message"].strip():
            histories.append([*example["context"], example["message"]])
            if len(histories) == count:
                return histories
    raise ValueError(f"the validation split has fewer than {count} examples with a message")


def memory_available_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def estimated_peak_bytes(tokenizer, encoded, candidates, vocab_size: int, batch_size: int | None) -> int:
    """Padded logits of the largest batch of either model (rows x longest target x vocabulary x 4 bytes), x3."""
    owners = [index for index, texts in enumerate(candidates) for _ in texts]
    reply_lengths = [len(ids) for ids in encode_target(tokenizer, [t for texts in candidates for t in texts], None)]
    message_lengths = [len(ids) for ids in encode_target(tokenizer, encoded.messages, None)]
    size = batch_size or len(owners)
    worst = 0
    for start in range(0, len(owners), size):
        rows = range(start, min(start + size, len(owners)))
        longest = max(max(reply_lengths[r] for r in rows), max(message_lengths[owners[r]] for r in rows))
        worst = max(worst, len(rows) * longest)
    return MEMORY_FACTOR * worst * vocab_size * 4


class ScoringTimer:
    """Wraps `core.scoring.sequence_log_probs` where mmi.rerank looks it up by name (inside score_nbest), to time
    each model's pass."""

    def __init__(self):
        self.original = rerank_module.sequence_log_probs
        self.calls: list[float] = []

    def __enter__(self):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return self.original(*args, **kwargs)
            finally:
                self.calls.append(time.perf_counter() - started)

        rerank_module.sequence_log_probs = timed
        return self

    def __exit__(self, *exc):
        rerank_module.sequence_log_probs = self.original


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=common.model_from_env(common.TRAINED_DIR),
                        help="chatbot directory (default: HF_NEURALCONV_MODEL, else outputs/seq2seq-full)")
    parser.add_argument("--reverse-model", default=str(DEFAULT_REVERSE_MODEL), help="reverse model p(M|R) directory")
    parser.add_argument("--inputs", type=int, default=64)
    parser.add_argument("--num-beams", type=int, default=50, help="B; also num_return_sequences")
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--score-batch-size", default="128,256,512",
                        help="comma list of score_nbest batch sizes (rows per padded batch; 'all': one batch)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-memory-guard", dest="memory_guard", action="store_false",
                        help="run batch sizes even when their logits may not fit in the available memory")
    opts = common.parse_options(parser, "tiny random models, 4 inputs, 5 beams: script check", argv,
                                inputs=4, num_beams=5, repeats=2, score_batch_size="all,8")
    batch_sizes = [None if b.strip() == "all" else int(b) for b in opts.score_batch_size.split(",") if b.strip()]
    label = {b: "all" if b is None else str(b) for b in batch_sizes}

    datasets.disable_progress_bars()
    started = time.time()
    machine = common.machine_info()
    memory_at_start = memory_available_bytes()
    dialogues, recipe_tokenizer, recipe_tokenizer_source = common.load_data_and_tokenizer(DataArguments())
    model, reverse_model, tokenizer, sources = load_models(opts, recipe_tokenizer, recipe_tokenizer_source)
    histories = sample_histories(dialogues, opts.inputs, opts.seed)
    encoded = encode_histories(model, tokenizer, histories)
    mmi = getattr(model.generation_config, "mmi", None) or {}
    lam, gamma = float(mmi.get("lambda", DEFAULT_LAMBDA)), float(mmi.get("gamma", DEFAULT_GAMMA))

    def run_beam() -> list[list[str]]:
        return generate_nbest(model, tokenizer, encoded, num_beams=opts.num_beams,
                              num_return_sequences=opts.num_beams, max_new_tokens=opts.max_new_tokens)

    def run_rerank(candidates, batch_size):
        scored = score_nbest(model, reverse_model, tokenizer, encoded, candidates, batch_size=batch_size)
        return [nbest.ranked(lam, gamma) for nbest in scored]

    with torch.inference_mode():
        candidates = run_beam()  # warm-up; its lists are the ones reranked
        skipped = {}
        for b in batch_sizes:
            need = estimated_peak_bytes(tokenizer, encoded, candidates, model.config.vocab_size, b)
            if opts.memory_guard and memory_at_start and need > MEMORY_SHARE * memory_at_start:
                skipped[label[b]] = (f"estimated {need / 2**30:.1f} GiB > {MEMORY_SHARE:.0%} of the "
                                     f"{memory_at_start / 2**30:.1f} GiB available at start")
                print(f"skipping score batch size {label[b]}: {skipped[label[b]]}", flush=True)
        batch_sizes = [b for b in batch_sizes if label[b] not in skipped]
        if not batch_sizes:
            raise SystemExit("every score batch size was skipped: pass smaller --score-batch-size values")
        rankings = {}
        for b in batch_sizes:  # warm-up
            rankings[label[b]] = run_rerank(candidates, b)

        beam_times, same_candidates = [], True
        rerank_times = {label[b]: [] for b in batch_sizes}
        model_times = {label[b]: {"forward": [], "reverse": []} for b in batch_sizes}
        gc.collect()
        for _ in range(opts.repeats):
            t0 = time.perf_counter()
            again = run_beam()
            beam_times.append(time.perf_counter() - t0)
            same_candidates &= again == candidates
            for b in batch_sizes:
                with ScoringTimer() as timer:
                    t0 = time.perf_counter()
                    run_rerank(candidates, b)
                    rerank_times[label[b]].append(time.perf_counter() - t0)
                model_times[label[b]]["forward"].append(timer.calls[0])
                model_times[label[b]]["reverse"].append(timer.calls[1])

    beam_s = common.median(beam_times)
    per_input = [len(texts) for texts in candidates]
    rows = sum(per_input)
    reply_tokens = [len(ids) - 1 for ids in encode_target(tokenizer, [t for texts in candidates for t in texts], None)]
    rerank = {}
    for name, times in rerank_times.items():
        total = common.median(times)
        forward, reverse = common.median(model_times[name]["forward"]), common.median(model_times[name]["reverse"])
        rerank[name] = {
            "batch_size": None if name == "all" else int(name), "s_runs": times, "s_median": total,
            "forward_scoring_s_runs": model_times[name]["forward"], "forward_scoring_s_median": forward,
            "reverse_scoring_s_runs": model_times[name]["reverse"], "reverse_scoring_s_median": reverse,
            "other_s_median": total - forward - reverse, "over_beam": total / beam_s,
            "candidate_rows_per_s": rows / total,
        }
    best = min(rerank, key=lambda name: rerank[name]["s_median"])
    ratio = rerank[best]["over_beam"]
    goals = {f"rerank_at_most_{RATIO_GOAL}x_beam_search": {
        "value": ratio, "threshold": RATIO_GOAL, "meets_goal": ratio <= RATIO_GOAL, "score_batch_size": best}}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    payload = {
        "benchmark": "mmi_rerank",
        "tiny": opts.tiny,
        "random_weights": sources["model_random_weights"] or sources["reverse_model_random_weights"],
        "machine": common.finish_machine_info(machine),
        "config": {
            **sources,
            "model_config": common.model_settings(model),
            "inputs": f"{opts.inputs} validation histories (context + message, seed {opts.seed}), encode_histories",
            "num_inputs": opts.inputs, "source_lengths": [len(ids) for ids in encoded.sources],
            "message_tokens": [len(ids) - 1 for ids in encode_target(tokenizer, encoded.messages, None)],
            "num_beams": opts.num_beams, "num_return_sequences": opts.num_beams,
            "max_new_tokens": opts.max_new_tokens, "lambda": lam, "gamma": gamma,
            "lambda_gamma_source": "model.generation_config.mmi" if mmi else "fixed (untuned; cost-neutral)",
            "score_batch_sizes": [label[b] for b in batch_sizes], "skipped_score_batch_sizes": skipped,
            "memory_available_at_start_gib": None if memory_at_start is None else memory_at_start / 2**30,
            "repeats": opts.repeats, "warmup_calls": 1,
        },
        "candidates": {
            "per_input_after_dedup": per_input, "per_input_mean": rows / len(per_input),
            "per_input_min": min(per_input), "per_input_max": max(per_input), "total_rows": rows,
            "reply_tokens_mean": sum(reply_tokens) / len(reply_tokens), "reply_tokens_max": max(reply_tokens),
            "same_candidates_every_run": same_candidates,
        },
        "beam": {"s_runs": beam_times, "s_median": beam_s, "candidate_rows_per_s": rows / beam_s},
        "rerank": rerank,
        "best_score_batch_size": best,
        "rerank_over_beam": ratio,
        "goals": goals,
        "meets_all_goals": all(b["meets_goal"] for b in goals.values()),
        "max_rss_gib": usage.ru_maxrss / 2**20,  # kilobytes on Linux
        "duration_s": time.time() - started,
    }
    path = common.write_results("mmi_rerank", payload, opts.output)

    weights = " (RANDOM weights)" if payload["random_weights"] else ""
    print(f"MMI-bidi reranking vs beam search{weights}: {opts.inputs} inputs, B = {opts.num_beams}, "
          f"max {opts.max_new_tokens} new tokens, median of {opts.repeats}")
    print(f"chatbot: {sources['model']}; reverse: {sources['reverse_model']}")
    print(f"candidates per input after de-duplication: mean {payload['candidates']['per_input_mean']:.1f} "
          f"(min {min(per_input)}, max {max(per_input)}), {rows} rows; reply tokens mean "
          f"{payload['candidates']['reply_tokens_mean']:.1f}; same candidates every run: {same_candidates}")
    common.print_table(["step", "median s", "forward s", "reverse s", "other s", "rows/s", "x beam"],
                       [["beam search", beam_s, None, None, None, rows / beam_s, 1.0]]
                       + [[f"rerank, batch {name}", e["s_median"], e["forward_scoring_s_median"],
                           e["reverse_scoring_s_median"], e["other_s_median"], e["candidate_rows_per_s"],
                           e["over_beam"]] for name, e in rerank.items()])
    for name, reason in skipped.items():
        print(f"rerank, batch {name}: skipped ({reason})")
    print()
    common.print_table(["goal", "value", "threshold", "batch", "met"],
                       [[name, b["value"], b["threshold"], b["score_batch_size"], b["meets_goal"]]
                        for name, b in goals.items()])
    print(f"\nwrote {path} ({payload['duration_s']:.0f}s)")
    return payload


if __name__ == "__main__":
    main()

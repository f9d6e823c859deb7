"""Greedy decoding speed: `model.generate()` vs a hand-written cached greedy loop, and per-token time vs length.

Both decode the same batch of real chitchat sources (a seeded sample of the validation split) with the same model
(the trained full-recipe model in outputs/seq2seq-full when it exists, else a randomly initialised model of the
configuration in recipes/seq2seq/full.yaml) under `torch.no_grad()` in eval mode:

* generate: `model.generate(input_ids, attention_mask, generation_config)` with greedy search, `use_cache=True`
  and `min_new_tokens = max_new_tokens = N`, so that exactly N tokens are produced;
* loop: the encoder once, then one decoder step per token through the cache (the `LSTMState`), the
  `</s>` logit masked as `min_new_tokens` does, argmax, no early stop -- exactly N steps.

The two outputs are compared token for token (`identical_outputs`). Diagnostic (no goal): `generate_no_eos`,
greedy `generate` with `max_new_tokens=N` and no `</s>` id, also exactly N tokens but without the two logits
processors (MinLength, MinNewTokensLength: clone + isin + where over the vocabulary each step) that
`min_new_tokens` adds -- it shows how much of generate's extra time is the forcing itself. Each (method, N) is timed
`--repeats` times after warm-up calls, methods interleaved; medians are reported. Per-token time = median time / N.
Flatness: per-token time at the largest N over the smallest (it includes the encoder, which is amortised over more
tokens as N grows, so a value at or below 1 is expected; a quadratic cost would show as a ratio well above 1), and the
marginal cost per token between the two largest N over that between the two smallest.

Run:  .venv/bin/python benchmarks/generate_speed.py          (writes benchmarks/results/generate_speed.json)
      .venv/bin/python benchmarks/generate_speed.py --tiny   (seconds: checks the script, numbers meaningless)
"""

from __future__ import annotations

import argparse
import gc
import time

import _common as common
import datasets
import torch
from transformers import GenerationConfig

from hf_neuralconv.core.arguments import DataArguments
from hf_neuralconv.core.building import tokenize_dataset
from hf_neuralconv.models.lstm.modeling_lstm import CACHE_NAME, LSTMSeq2SeqForConditionalGeneration

GENERATE_GOAL = 1.2  # generate <= 1.2 x loop
FLAT_GOAL = 1.25  # per-token time at the largest N <= 1.25 x at the smallest ("roughly flat")


def load_model(kind: str, tokenizer, tiny: bool, seed: int):
    trained = common.resolve_model_dir(common.TRAINED_DIR)
    if kind == "trained" or (kind == "auto" and trained and not tiny):
        if not trained:
            raise FileNotFoundError(f"no trained model in {common.TRAINED_DIR}")
        return LSTMSeq2SeqForConditionalGeneration.from_pretrained(trained), str(trained.relative_to(common.ROOT))
    recipe = common.FULL_RECIPE.relative_to(common.ROOT)
    return common.random_recipe_model(tokenizer, tiny, seed), f"random init, {recipe} model settings"


def greedy_loop(model, input_ids, attention_mask, new_tokens: int, start_id: int, eos_id: int) -> torch.Tensor:
    """Encoder once, then one cached decoder step per token; `</s>` masked (as min_new_tokens does); argmax."""
    with torch.no_grad():
        encoder_outputs = model.get_encoder()(input_ids, attention_mask)
        token = torch.full((input_ids.size(0), 1), start_id, dtype=torch.long)
        state, generated = None, []
        for _ in range(new_tokens):
            outputs = model(encoder_outputs=encoder_outputs, attention_mask=attention_mask,
                            decoder_input_ids=token, cache=state, use_cache=True)
            logits = outputs.logits[:, -1, :]
            logits[:, eos_id] = float("-inf")
            token = logits.argmax(dim=-1, keepdim=True)
            state = outputs[CACHE_NAME]
            generated.append(token)
        return torch.cat(generated, dim=1)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lengths", default="10,20,40,80")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls of each method before timing")
    parser.add_argument("--model", choices=["auto", "trained", "random"], default="auto")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-diagnostic", dest="diagnostic", action="store_false",
                        help="skip the generate_no_eos diagnostic timing")
    opts = common.parse_options(parser, "tiny model, few repeats: checks the script only", argv,
                                repeats=2, warmup=1, batch_size=4, lengths="4,8")
    lengths = [int(n) for n in opts.lengths.split(",")]

    datasets.disable_progress_bars()
    started = time.time()
    machine = common.machine_info()
    data_args = DataArguments()
    dialogues, tokenizer, tokenizer_source = common.load_data_and_tokenizer(data_args)
    sample = dialogues["validation"].shuffle(seed=opts.seed).select(range(opts.batch_size))
    encoded = tokenize_dataset(sample, tokenizer, data_args, truncate_target=True)
    batch = tokenizer.pad({"input_ids": encoded["input_ids"]}, return_tensors="pt")
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]

    model, model_source = load_model(opts.model, tokenizer, opts.tiny, opts.seed)
    model.eval()
    start_id = model.config.decoder_start_token_id
    eos_id = tokenizer.eos_token_id

    def plain_config(**settings) -> GenerationConfig:
        return GenerationConfig(bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id,
                                decoder_start_token_id=start_id, **settings)

    # generate() fills settings left unset from model.generation_config: a trained model's (suppress_tokens from
    # core.building.default_generation_config) would add work the loop does not do, so the model's defaults are
    # reset to the bare token ids.
    forced_defaults, no_eos_defaults = plain_config(eos_token_id=eos_id), plain_config(eos_token_id=None)

    def run_generate(n: int, forced: bool = True) -> torch.Tensor:
        model.generation_config = forced_defaults if forced else no_eos_defaults
        config = plain_config(max_new_tokens=n, min_new_tokens=n if forced else None, do_sample=False, num_beams=1,
                              use_cache=True, eos_token_id=eos_id if forced else None)
        return model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)

    def run_loop(n: int) -> torch.Tensor:
        return greedy_loop(model, input_ids, attention_mask, n, start_id, eos_id)

    methods = {"generate": run_generate, "loop": run_loop}
    if opts.diagnostic:
        # Diagnostic, not a goal: exactly N tokens without min_new_tokens (no </s> to stop on), i.e. without the
        # two logits processors (MinLength + MinNewTokensLength) that min_new_tokens adds to every step.
        methods["generate_no_eos"] = lambda n: run_generate(n, forced=False)
    checks = {}
    for n in lengths:
        generated = run_generate(n)[:, 1:]  # drop the decoder start token
        looped = run_loop(n)
        checks[n] = {"generate_new_tokens": generated.size(1), "loop_new_tokens": looped.size(1),
                     "identical_outputs": generated.shape == looped.shape and bool(torch.equal(generated, looped))}
        if opts.diagnostic:
            no_eos = methods["generate_no_eos"](n).size(1) - 1
            checks[n]["generate_no_eos_new_tokens"] = no_eos
            if no_eos != n:  # it stopped on some </s> after all: its timing would not be comparable
                print(f"warning: generate_no_eos made {no_eos} tokens, not {n}; diagnostic dropped", flush=True)
                opts.diagnostic = False
                methods.pop("generate_no_eos")
    for _ in range(opts.warmup):
        for n in lengths:
            for fn in methods.values():
                fn(n)

    times = {name: {n: [] for n in lengths} for name in methods}
    gc.collect()
    for _ in range(opts.repeats):
        for n in lengths:
            for name, fn in methods.items():
                t0 = time.perf_counter()
                fn(n)
                times[name][n].append(time.perf_counter() - t0)

    per_length = {}
    for n in lengths:
        g, l = common.median(times["generate"][n]), common.median(times["loop"][n])
        per_length[str(n)] = {
            "generate_s_runs": times["generate"][n], "loop_s_runs": times["loop"][n],
            "generate_s_median": g, "loop_s_median": l, "generate_over_loop": g / l,
            "generate_ms_per_token": 1000 * g / n, "loop_ms_per_token": 1000 * l / n,
            **checks[n],
        }
        if opts.diagnostic:
            d = common.median(times["generate_no_eos"][n])
            per_length[str(n)].update(generate_no_eos_s_runs=times["generate_no_eos"][n],
                                      generate_no_eos_s_median=d, generate_no_eos_over_loop=d / l,
                                      generate_no_eos_ms_per_token=1000 * d / n,
                                      min_new_tokens_processors_ms_per_token=1000 * (g - d) / n)
    lo, hi = str(lengths[0]), str(lengths[-1])
    flatness = {}
    for name in methods:
        per_token = [per_length[str(n)][f"{name}_ms_per_token"] for n in lengths]
        entry = {"ms_per_token": dict(zip(map(str, lengths), per_token)),
                 "per_token_ratio_max_over_min_length": per_token[-1] / per_token[0]}
        if len(lengths) >= 4:
            t = [per_length[str(n)][f"{name}_s_median"] for n in lengths]
            first = (t[1] - t[0]) / (lengths[1] - lengths[0])
            last = (t[-1] - t[-2]) / (lengths[-1] - lengths[-2])
            entry["marginal_ms_per_token_first"] = 1000 * first
            entry["marginal_ms_per_token_last"] = 1000 * last
            entry["marginal_ratio_last_over_first"] = last / first if first > 0 else None
        flatness[name] = entry

    worst = max(per_length[str(n)]["generate_over_loop"] for n in lengths)
    flat = flatness["generate"]["per_token_ratio_max_over_min_length"]
    goals = {
        f"generate_at_most_{GENERATE_GOAL}x_loop_every_N": {"value": worst, "threshold": GENERATE_GOAL,
                                                           "meets_goal": worst <= GENERATE_GOAL},
        f"generate_per_token_N{hi}_over_N{lo}_at_most_{FLAT_GOAL}": {"value": flat, "threshold": FLAT_GOAL,
                                                                   "meets_goal": flat <= FLAT_GOAL},
    }
    payload = {
        "benchmark": "generate_speed",
        "tiny": opts.tiny,
        "machine": common.finish_machine_info(machine),
        "config": {
            "model": model_source, "model_config": common.model_settings(model),
            "batch_size": opts.batch_size, "source_lengths": attention_mask.sum(1).tolist(),
            "inputs": f"{opts.batch_size} validation sources (seed {opts.seed}), right-padded",
            "decoding": "greedy, use_cache=True, min_new_tokens=max_new_tokens=N; loop masks </s> likewise",
            "lengths": lengths, "repeats": opts.repeats, "warmup_calls": opts.warmup,
            "tokenizer": tokenizer_source,
        },
        "per_length": per_length,
        "flatness": flatness,
        "goals": goals,
        "meets_all_goals": all(b["meets_goal"] for b in goals.values()),
        "duration_s": time.time() - started,
    }
    path = common.write_results("generate_speed", payload, opts.output)

    print(f"Greedy decoding, batch {opts.batch_size}, model: {model_source} (median of {opts.repeats})")
    common.print_table(["N", "generate ms", "loop ms", "gen/loop", "gen ms/tok", "loop ms/tok", "same tokens",
                        "no-eos gen/loop"],
                       [[n, 1000 * e["generate_s_median"], 1000 * e["loop_s_median"], e["generate_over_loop"],
                         e["generate_ms_per_token"], e["loop_ms_per_token"], e["identical_outputs"],
                         e.get("generate_no_eos_over_loop")]
                        for n, e in per_length.items()])
    for name, entry in flatness.items():
        marginal = entry.get("marginal_ratio_last_over_first")
        print(f"{name}: ms/token N={lo}->{hi}: {entry['ms_per_token'][lo]:.3f} -> {entry['ms_per_token'][hi]:.3f} "
              f"(x{entry['per_token_ratio_max_over_min_length']:.2f})"
              + (f"; marginal ms/token last/first x{marginal:.2f}" if marginal is not None else ""))
    common.print_goals(goals)
    print(f"\nwrote {path} ({payload['duration_s']:.0f}s)")
    return payload


if __name__ == "__main__":
    main()

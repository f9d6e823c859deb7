"""MMI-antiLM decoding and gibbs-enum on a causal transformer chatbot: what the generic methods cost.

The chatbot is a randomly initialised GPT-2 of `recipes/seq2seq/gpt2_chitchat.yaml`'s sizes over the chitchat word
tokenizer (speed does not depend on the weights), reading real validation histories (a seeded sample) in its chat
format. Eval mode, `torch.inference_mode()` for decoding; one heavy job at a time; methods interleaved, medians of
`--repeats` calls after a warm-up call.

* MMI-antiLM: `generate()` beam search (B beams, N new tokens) with `MMIAntiLMLogitsProcessor` over plain beam search
  at the same B, with two anti-LMs: the chatbot itself after an empty history (`prompt_ids =
  empty_history_prompt`), and a separate 2-layer GPT-2 LM over the same vocabulary. gamma = 3 (the pipeline's
  default: the LM runs for the first 3 tokens) and gamma = N (every token penalised, the worst case). The goal is on
  the chatbot-as-anti-LM at gamma = 3.
* gibbs-enum: the search with the tokens before the changed position read once per trigger (`reuse_prefix=True`:
  the key/value cache) over reading every candidate whole (`reuse_prefix=False`), same seed; the triggers and
  losses must be identical (`identical_triggers`).

Run:  .venv/bin/python benchmarks/causal_backbone.py          (writes benchmarks/results/causal_backbone.json)
      .venv/bin/python benchmarks/causal_backbone.py --tiny   (seconds: checks the script, numbers meaningless)
"""

from __future__ import annotations

import argparse
import time

import _common as common
import datasets
import torch
import yaml
from transformers import GPT2Config, GPT2LMHeadModel, LogitsProcessorList, set_seed

from hf_neuralconv.core.arguments import DataArguments
from hf_neuralconv.core.chat_format import empty_history_prompt, encode_histories, generation_inputs
from hf_neuralconv.mmi import MMIAntiLMLogitsProcessor
from hf_neuralconv.negative_training.gibbs_enum import gibbs_enum
from hf_neuralconv.negative_training.hits import load_targets

MMI_GOAL = 1.5  # MMI-antiLM beam search <= 1.5 x plain beam search at the same beam size
RECIPE = common.ROOT / "recipes" / "seq2seq" / "gpt2_chitchat.yaml"
TARGETS = "package:malicious_targets/test_500.txt"


def gpt2(tokenizer, sizes: dict, seed: int) -> GPT2LMHeadModel:
    set_seed(seed)
    eos = tokenizer.eos_token_id
    config = GPT2Config(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=eos,
                        pad_token_id=tokenizer.pad_token_id, **sizes)
    return GPT2LMHeadModel(config).eval()


def recipe_sizes(tiny: bool) -> dict:
    if tiny:
        return {"n_embd": 32, "n_layer": 1, "n_head": 2, "n_positions": 128}
    return dict(yaml.safe_load(RECIPE.read_text())["model_config"])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=16)
    parser.add_argument("--num-beams", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--targets", type=int, default=4, help="malicious targets searched by gibbs-enum")
    parser.add_argument("--trigger-length", type=int, default=5)
    parser.add_argument("--num-candidates", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    opts = common.parse_options(parser, "a 1-layer GPT-2, 2 inputs, 1 target: script check", argv,
                                inputs=2, targets=1, repeats=1, max_new_tokens=5, num_candidates=5,
                                trigger_length=3)
    datasets.disable_progress_bars()
    started = time.time()
    machine = common.machine_info()
    dialogues, tokenizer, tokenizer_source = common.load_data_and_tokenizer(DataArguments())
    sizes = recipe_sizes(opts.tiny)
    model = gpt2(tokenizer, sizes, opts.seed)
    separate_lm = gpt2(tokenizer, {**sizes, "n_layer": min(2, sizes["n_layer"])}, opts.seed + 1)
    validation = dialogues["validation"].shuffle(seed=opts.seed).select(range(opts.inputs))
    histories = [[*example["context"], example["message"] or "hi"] for example in validation]
    encoded = encode_histories(model, tokenizer, histories)
    batch = generation_inputs(model, tokenizer, encoded.sources)
    settings = dict(num_beams=opts.num_beams, num_return_sequences=1, max_new_tokens=opts.max_new_tokens,
                    min_new_tokens=opts.max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)

    def beam(processor=None):
        with torch.inference_mode():
            extra = {} if processor is None else {"logits_processor": LogitsProcessorList([processor])}
            return model.generate(**batch, **settings, **extra)

    anti_lms = {"chatbot itself": (model, empty_history_prompt(tokenizer)), "separate 2-layer LM": (separate_lm, None)}
    rows, mmi = [], {}
    plain_time, _ = common.timed(beam, opts.repeats, warmup=1)
    rows.append(["beam search", "-", "-", plain_time, 1.0])
    for name, (language_model, prompt_ids) in anti_lms.items():
        for gamma in (3, opts.max_new_tokens):
            processor = MMIAntiLMLogitsProcessor(language_model, model.config, lam=0.5, gamma=gamma,
                                                 prompt_ids=prompt_ids)
            seconds, _ = common.timed(lambda processor=processor: beam(processor), opts.repeats, warmup=1)
            mmi[f"{name}, gamma={gamma}"] = {"seconds": seconds, "ratio_to_beam": seconds / plain_time}
            rows.append(["MMI-antiLM", name, gamma, seconds, seconds / plain_time])

    targets = load_targets(TARGETS, tokenizer, causal=True).ids[: opts.targets]
    search = dict(trigger_length=opts.trigger_length, num_candidates=opts.num_candidates, num_restarts=2,
                  max_sweeps=2, targets_per_batch=opts.targets, progress=False, seed=opts.seed)
    gibbs = {}
    for reuse in (True, False):
        seconds, result = common.timed(lambda reuse=reuse: gibbs_enum(model, tokenizer, targets, reuse_prefix=reuse,
                                                                      **search), max(1, opts.repeats // 2), warmup=1)
        gibbs[reuse] = (seconds, result)
    identical = (gibbs[True][1].triggers == gibbs[False][1].triggers
                 and torch.allclose(gibbs[True][1].losses, gibbs[False][1].losses, rtol=1e-4, atol=1e-5))
    speedup = gibbs[False][0] / gibbs[True][0]

    common.print_table(["decoding", "anti-LM", "gamma", "median s", "x beam"], rows)
    print()
    common.print_table(["gibbs-enum", "median s"], [["prefix reuse (KV cache)", gibbs[True][0]],
                                                   ["whole sources", gibbs[False][0]]])
    goal_value = mmi["chatbot itself, gamma=3"]["ratio_to_beam"]
    goals = {
        "mmi_antilm_over_beam": {"value": goal_value, "threshold": MMI_GOAL, "meets_goal": goal_value <= MMI_GOAL},
        "gibbs_enum_reuse_speedup": {"value": speedup, "threshold": 1.0,
                                     "meets_goal": speedup > 1.0 and identical},
    }
    common.print_goals(goals)
    payload = {
        "benchmark": "causal_backbone",
        "tiny": opts.tiny,
        "machine": common.finish_machine_info(machine),
        "settings": {**vars(opts), "model": f"random init GPT-2, {sizes}", "tokenizer": tokenizer_source,
                     "anti_lm_lambda": 0.5, "targets_file": TARGETS, "search": search},
        "beam_seconds": plain_time,
        "mmi_antilm": mmi,
        "gibbs_enum": {"reuse_prefix_seconds": gibbs[True][0], "whole_sources_seconds": gibbs[False][0],
                       "speedup": speedup, "identical_triggers": identical},
        "goals": goals,
        "meets_all_goals": all(goal["meets_goal"] for goal in goals.values()),
        "wall_time_s": time.time() - started,
    }
    print(f"\nwrote {common.write_results('causal_backbone', payload, opts.output)}")
    return payload


if __name__ == "__main__":
    main()

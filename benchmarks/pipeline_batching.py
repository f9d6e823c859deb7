"""Batched vs one-by-one decoding through `pipeline("conversational")`: throughput and identical outputs.

The same `--chats` chats (64 by default: one to five turns each, built from everyday prompts) are answered by the
`ConversationalPipeline` of HF_NEURALCONV_MODEL (default: outputs/seq2seq-quickstart, the README's main command's
model) once in a one-by-one loop (`pipe(chat)` per chat) and once per batch size as one call
(`pipe(chats, batch_size=B)`, B = 16 and 32: the pipeline pads the sources and decodes B chats in one `generate()`).
Decoding is greedy with `--max-new-tokens`. Every batched reply is checked against the one-by-one reply to the same
chat (text equal, score within 1e-4): `mismatched_outputs` counts those that differ. Each timing is the median of
`--repeats` runs after one warm-up call.

Run:  .venv/bin/python benchmarks/pipeline_batching.py          (writes results/pipeline_batching.json)
      .venv/bin/python benchmarks/pipeline_batching.py --tiny   (seconds: a tiny random model; checks the script)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import _common as common
import torch

BATCH_SIZES = (16, 32)
SCORE_TOLERANCE = 1e-4
# The goal: batching should at least double the throughput at the largest batch size (an LSTM decoder step costs
# little more for 32 rows than for one on CPU, while the per-call overhead is paid once per batch).
MIN_SPEEDUP = 2.0


def make_chats(count: int) -> list[list[dict]]:
    """`count` chats of 1, 3 or 5 messages (user and assistant alternating, the user's last)."""
    chats = []
    for index in range(count):
        length = 1 + 2 * (index % 3)
        chats.append([{"role": ("user", "assistant")[turn % 2],
                       "content": common.PROMPTS[(index + turn) % len(common.PROMPTS)]} for turn in range(length)])
    return chats


def load_pipeline(model: str):
    from hf_neuralconv.core.loading import load_model_dir
    from hf_neuralconv.pipelines.conversational import ConversationalPipeline

    if not Path(model).is_dir():
        raise SystemExit(f"{model}: no model directory (train one, set HF_NEURALCONV_MODEL, or pass --tiny).")
    loaded, tokenizer = load_model_dir(model)
    return ConversationalPipeline(model=loaded, tokenizer=tokenizer)


def answers(outputs) -> list[tuple[str, float]]:
    return [(candidates[0]["generated_text"][-1]["content"], candidates[0]["score"]) for candidates in outputs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chats", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    opts = common.parse_options(parser, "tiny random model: checks the script in seconds")
    info = common.machine_info()
    model = common.save_tiny_chatbot() if opts.tiny else common.model_from_env(common.QUICKSTART_DIR)
    pipe = load_pipeline(model)
    chats = make_chats(opts.chats)
    options = {"strategy": "greedy", "max_new_tokens": opts.max_new_tokens}
    with torch.inference_mode():
        pipe(chats[0], **options)  # warm-up
        loop_s, reference = common.timed(lambda: answers([pipe(chat, **options) for chat in chats]), opts.repeats)
        runs = {"one_by_one": {"batch_size": 1, "wall_s": loop_s, "chats_per_s": len(chats) / loop_s}}
        for batch_size in BATCH_SIZES:
            wall_s, got = common.timed(lambda size=batch_size: answers(pipe(chats, batch_size=size, **options)),
                                opts.repeats)
            mismatched = sum(
                text != want_text or abs(score - want_score) > SCORE_TOLERANCE
                for (text, score), (want_text, want_score) in zip(got, reference, strict=True)
            )
            runs[f"batch_{batch_size}"] = {"batch_size": batch_size, "wall_s": wall_s,
                                           "chats_per_s": len(chats) / wall_s, "speedup": loop_s / wall_s,
                                           "mismatched_outputs": mismatched}

    largest = runs[f"batch_{max(BATCH_SIZES)}"]
    goals = {
        f"same_outputs_batch_{size}": {"value": runs[f"batch_{size}"]["mismatched_outputs"], "threshold": 0,
                                       "meets_goal": runs[f"batch_{size}"]["mismatched_outputs"] == 0}
        for size in BATCH_SIZES
    }
    goals[f"speedup_batch_{max(BATCH_SIZES)}"] = {"value": largest["speedup"], "threshold": MIN_SPEEDUP,
                                                 "meets_goal": largest["speedup"] >= MIN_SPEEDUP}
    payload = {
        "benchmark": "pipeline_batching",
        "tiny": opts.tiny,
        "model": model,
        "chats": len(chats),
        "messages_per_chat": sorted({len(chat) for chat in chats}),
        "repeats": opts.repeats,
        "decoding": options,
        "runs": runs,
        "goals": goals,
        "meets_all_goals": all(goal["meets_goal"] for goal in goals.values()),
        "machine": common.finish_machine_info(info),
    }
    path = common.write_results("pipeline_batching", payload, opts.output)
    common.print_table(["run", "batch size", "wall s", "chats/s", "speedup", "mismatched"],
                       [[name, run["batch_size"], run["wall_s"], run["chats_per_s"], run.get("speedup", 1.0),
                         run.get("mismatched_outputs", 0)] for name, run in runs.items()])
    print(f"results in {path}")


if __name__ == "__main__":
    main()

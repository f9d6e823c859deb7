"""Attacks with a trained reverse generator of any backbone (Liu et al. 2019, Section 5.2): greedy or beam-N inputs
for each target, the best of the chatbot's replies kept, resumable (`hf-neuralconv reverse-attack`); found pairs are
written as negative-training examples.
"""

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from ..core.loading import load_model_dir
from ..core.scoring import is_causal
from ..data.dialogue import read_utf8_text
from ..data.jsonl import read_jsonl
from ..data.resources import resolve_data_path
from .config import AttackSetupArguments
from .environments import DialogueEnvironment
from .trainer import (
    RewardFunction,
    TargetCollator,
    check_targets,
    decode_inputs,
    generate_inputs,
    reverse_generation_config,
    score_inputs,
)

# Targets x beams decoded in one `generate` call of a beam attack (memory), and targets per greedy call.
BEAM_ROWS = 800
GREEDY_BATCH = 64


def _best_inputs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, environment: DialogueEnvironment,
                 reward_function: RewardFunction, targets: Sequence[str], collator: TargetCollator,
                 generation_config: GenerationConfig, num_beams: int) -> list[dict]:
    """One batch of `attack`: decode `num_beams` inputs per target, send them all to the environment, keep the best."""
    batch = collator([{"target": target} for target in targets])
    with torch.no_grad():
        sequences = generate_inputs(model, tokenizer, batch["input_ids"], batch["attention_mask"], generation_config)
    candidates = decode_inputs(tokenizer, sequences)
    candidate_targets = [target for target in targets for _ in range(num_beams)]
    rewards, outputs = score_inputs(environment, reward_function, candidate_targets, candidates)
    found = []
    for row, target in enumerate(targets):
        span = range(row * num_beams, (row + 1) * num_beams)
        best = max(span, key=lambda index: rewards[index])  # the first (best-scored beam) among ties
        found.append({"target": target, "trigger": candidates[best], "output": outputs[best], "reward": rewards[best]})
    return found


def attack(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, environment: DialogueEnvironment,
           reward_function: RewardFunction, targets: Sequence[str], num_beams: int = 1, max_input_tokens: int = 24,
           max_target_tokens: int = 32, batch_size: int = 8, results_file: str | Path | None = None,
           progress: bool = True) -> list[dict]:
    """Craft an input for each target (Section 5.1.2, "Decoding"): greedy decoding (`num_beams=1`), or beam search
    whose `num_beams` best candidates are all sent to the environment, the one with the highest reward kept
    ("RL BeamSearch(N)"). Returns one record per distinct target: `{"target", "trigger", "output", "reward"}`.

    For Figure 2 / Table 1 numbers pass a reward with `threshold=-1`, so that `reward` is the similarity itself.
    With `results_file` (JSONL), each batch's records are appended as soon as they are found and targets already in
    the file are not attacked again: an interrupted attack (e.g. the environment went down) resumes where it stopped.
    `progress` shows a tqdm bar over the targets.
    """
    if num_beams < 1 or batch_size < 1:
        raise ValueError(f"`num_beams` and `batch_size` must be >= 1, got {num_beams} and {batch_size}.")
    targets = list(dict.fromkeys(targets))
    check_targets(targets, reward_function)
    results_path = None if results_file is None else Path(results_file)
    records = read_jsonl(results_path) if results_path is not None and results_path.is_file() else []
    done = {record["target"] for record in records}
    decoding = {"do_sample": False, "num_beams": num_beams, "num_return_sequences": num_beams}
    if num_beams > 1:
        decoding["early_stopping"] = True
    generation_config = reverse_generation_config(tokenizer, max_input_tokens, **decoding)
    collator = TargetCollator(tokenizer, max_target_tokens, is_causal(model))
    model.eval()
    pending = [target for target in targets if target not in done]
    if results_path is not None:
        results_path.parent.mkdir(parents=True, exist_ok=True)
    decoding_name = f"beam search ({num_beams})" if num_beams > 1 else "greedy"
    with tqdm(total=len(pending), desc=f"Attacking, {decoding_name}", unit="target", disable=not progress) as bar:
        for start in range(0, len(pending), batch_size):
            batch_targets = pending[start : start + batch_size]
            found = _best_inputs(model, tokenizer, environment, reward_function, batch_targets, collator,
                                 generation_config, num_beams)
            if results_path is not None:
                with results_path.open("a", encoding="utf-8") as handle:
                    handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in found)
            records += found
            bar.update(len(batch_targets))
    by_target = {record["target"]: record for record in records}
    return [by_target[target] for target in targets]


def write_found_pairs(records: Sequence[dict], path: str | Path, min_reward: float = 0.5) -> int:
    """Write the found pairs of `attack`, those with `reward >= min_reward`, as JSONL `{"trigger", "target",
    "reward"}` rows, as texts (the negative-training trainer reads them with `negative_training.read_trigger_pairs`, in
    the attacked model's own tokenization); returns how many were written."""
    found = [record for record in records if record["trigger"] and record["reward"] >= min_reward]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for record in found:
            line = {"trigger": record["trigger"], "target": record["target"], "reward": record["reward"]}
            handle.write(json.dumps(line, ensure_ascii=False) + "\n")
    return len(found)


def attack_targets(generator_dir: str | Path, targets_file: str | Path, output: str | Path, num_beams: int = 200,
                   min_similarity: float = 0.5, skip_unscorable: bool = False, overwrite: bool = False,
                   environment: str | None = None, api_key_env: str | None = None) -> dict:
    """Attack every target of a file (one a line) with the generator's D and reward (Section 5.1.2 decoding); write
    the (trigger, target) pairs whose output is at least `min_similarity` similar to their target to `output`, in
    the JSONL negative training reads, and all attempts beside it (`<output>.attempts.jsonl`, which also lets an
    interrupted attack resume). `environment` (a model directory or a URL, see `AttackSetupArguments`) and
    `api_key_env` attack another chatbot than the one the generator was trained against."""
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass --overwrite to replace it.")
    lines = read_utf8_text(resolve_data_path(targets_file)).splitlines()
    setup = AttackSetupArguments.load(generator_dir)
    if environment is not None:  # another chatbot: nothing of the saved one's connection carries over
        setup = dataclasses.replace(setup, environment=environment, environment_api="auto", environment_model=None,
                                    environment_api_key_env=api_key_env)
    elif api_key_env is not None:
        setup = dataclasses.replace(setup, environment_api_key_env=api_key_env)
    similarity = setup.make_reward(threshold=-1.0)
    targets, skipped = [], 0
    for number, target in enumerate((line.strip() for line in lines), start=1):
        if not target:
            continue
        try:
            similarity.check_target(target)
        except ValueError as error:
            if not skip_unscorable:
                raise ValueError(f"{targets_file}: line {number}: {error} (--skip-unscorable skips such "
                                 "targets).") from None
            skipped += 1
            continue
        targets.append(target)
    if not targets:
        raise ValueError(f"{targets_file}: no target the reward can score (one a line; {skipped} skipped).")
    model, tokenizer = load_model_dir(generator_dir)
    environment = setup.make_environment()
    started = time.time()
    records = attack(model, tokenizer, environment, similarity, targets, num_beams=num_beams,
                     batch_size=targets_per_call(num_beams), results_file=output.with_suffix(".attempts.jsonl"))
    found = write_found_pairs(records, output, min_similarity)
    return {"targets": len(records), "skipped_unscorable": skipped, "found": found,
            "success_rate": found / len(records), "mean_similarity": sum(r["reward"] for r in records) / len(records),
            "env_queries": environment.num_queries, "wall_time_s": time.time() - started}


def targets_per_call(num_beams: int) -> int:
    """Targets attacked per `generate` call: `BEAM_ROWS` rows of beams, or `GREEDY_BATCH` targets without beams."""
    return GREEDY_BATCH if num_beams == 1 else max(1, BEAM_ROWS // num_beams)

"""Real 2-rank DDP (gloo, CPU) through the `hf-neuralconv train` CLI equals a 1-process run with twice the batch.

Why the two runs must agree step for step:

* Accelerate shards the sequential sampler's batches across ranks (rank r takes batches r, r+2, ...), so with
  `per_device_train_batch_size` B on 2 ranks a step sees the same 2B examples as 1 process with 2B.
* The model's loss is a token sum divided by `num_items_in_batch`, which Trainer gathers across ranks
  (`average_tokens_across_devices`, default true) and then multiplies by the world size; DDP averages the
  gradients, so the update is that of the global token mean. Logged losses are all-gathered and averaged.
* Dropout is 0, and the recipe's `seed` fixes the initial weights (DDP also broadcasts rank 0's weights).
* Evaluation after training: each example must be counted once whatever the number of ranks.

A small launcher (`probe_cli.py`, written into the test's tmp dir) records what reaches the model's `forward`
in training mode and then runs `hf_neuralconv.cli.main()` unchanged: this checks that `num_items_in_batch`
really arrives under DDP and is the global token count (the loss-scaling trap in DESIGN.md, Training), and
reads the initial weights at the first training step. The per-step losses come from `log_history` in
checkpoint-STEPS/trainer_state.json: with `save_strategy: "no"` Trainer writes no trainer_state.json at all.
Runtime: about 20-30 s on 2 CPU cores (two CLI runs of 6 steps on a 7k-parameter model).

The same comparison for `hf-neuralconv negative-train` (both modes, starting from the 1-process model): it caught
a trap worth knowing — `trainer.evaluate()` before `trainer.train()` (the perplexity "before") left the model
marked as prepared by Accelerate without a DDP wrapper, so training ran with per-rank gradients that were never
averaged; `ConversationTrainer.evaluation_loop` now unmarks it. Another 40 s.
"""

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

PER_DEVICE_BATCH = 4
STEPS = 6
TIMEOUT_S = 600

PROBE = '''\
"""hf-neuralconv CLI with a recorder on the seq2seq model's forward (training-mode calls with labels)."""
import functools
import json
import os

import torch

from hf_neuralconv.models import LSTMSeq2SeqForConditionalGeneration as Model

_forward = Model.forward


@functools.wraps(_forward)  # keeps the signature Trainer inspects (remove_unused_columns)
def forward(self, *args, **kwargs):
    labels = kwargs.get("labels")
    if self.training and labels is not None:
        items = kwargs.get("num_items_in_batch")
        record = {
            "rank": int(os.environ.get("RANK", "0")),
            "world_size": int(os.environ.get("WORLD_SIZE", "1")),
            "num_items_in_batch": None if items is None else float(items),
            "local_tokens": int(labels.ne(-100).sum()),
            "batch_size": int(labels.shape[0]),
        }
        if not getattr(self, "_probe_seen", False):  # first training forward: the weights are still the initial ones
            self._probe_seen = True
            flat = torch.cat([p.detach().reshape(-1).double() for p in self.parameters()])
            record["initial_weights"] = [float(flat.sum()), float(flat.square().sum()), float(flat[-100:].sum())]
        path = os.path.join(os.environ["PROBE_DIR"], f"rank{record['rank']}.jsonl")
        with open(path, "a") as handle:
            handle.write(json.dumps(record) + "\\n")
    return _forward(self, *args, **kwargs)


Model.forward = forward

if __name__ == "__main__":
    from hf_neuralconv.cli import main

    main()
'''

WORDS = (
    "hi hello hey how are you fine good great thanks what is your name my it nice to meet too where do live "
    "in the city town i like music movies books yes no maybe sure okay bye see later ? ! ."
).split()


def _torchrun() -> str | None:
    beside_python = Path(sys.executable).with_name("torchrun")
    return str(beside_python) if beside_python.is_file() else shutil.which("torchrun")


def _write_dialogues(path: Path, n: int = 200) -> None:
    """`n` made-up dialogues of 3-4 turns (JSONL, `turns` column): the 90/5/5 split leaves 10 in val and test."""
    rng = random.Random(1234)
    with path.open("w", encoding="utf-8") as handle:
        for index in range(n):
            turns = [" ".join(rng.choices(WORDS, k=rng.randint(1, 7))) for _ in range(rng.randint(3, 4))]
            handle.write(json.dumps({"conversation_id": f"d{index:03d}", "turns": turns}) + "\n")


def _write_recipe(path: Path, data: Path, output_dir: Path, batch_size: int) -> None:
    recipe = {
        "output_dir": str(output_dir),
        "embedding_size": 16,
        "hidden_size": 16,
        "num_layers": 1,
        "attention": "general",
        "projection_size": 0,
        "dropout": 0.0,
        "dataset": str(data),
        "max_context_turns": 2,
        "vocab_size": 64,
        "max_source_length": 24,
        "max_target_length": 10,
        "max_eval_examples": 16,
        "max_steps": STEPS,
        "per_device_train_batch_size": batch_size,
        "per_device_eval_batch_size": 6,  # 16 examples: the last batch of a rank gets padded under DDP
        "learning_rate": 0.01,
        "max_grad_norm": 5.0,
        "train_sampling_strategy": "sequential",
        "seed": 11,
        "logging_steps": 1,
        "eval_strategy": "no",
        # With save_strategy "no" Trainer never writes trainer_state.json: save once, at the last step, to get
        # `log_history` (checkpoint-STEPS/trainer_state.json).
        "save_strategy": "steps",
        "save_steps": STEPS,
        "report_to": "none",
        "use_cpu": True,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
    }
    # JSON is YAML: no quoting surprises ("no" stays a string).
    path.write_text(json.dumps(recipe, indent=2))


def _launch_env(tmp_path: Path) -> dict:
    """The environment of a launched run: one thread a rank (2 ranks on a small CPU machine), offline, its own
    datasets cache, and none of an outer launcher's rank variables."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_DATASETS_CACHE": str(tmp_path / "datasets-cache"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_USE_CPU"):
        env.pop(name, None)
    return env


def _run(command: list[str], env: dict, log: Path) -> float:
    started = time.time()
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"{' '.join(command)} timed out after {TIMEOUT_S}s:\n{error.stdout}\n{error.stderr}")
    log.write_text(result.stdout + "\n--- stderr ---\n" + result.stderr)
    assert result.returncode == 0, f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-6000:]}"
    return time.time() - started


def _losses(output_dir: Path) -> tuple[list[float], list[float]]:
    state = json.loads((output_dir / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    logs = [entry for entry in state["log_history"] if "loss" in entry]
    assert [entry["step"] for entry in logs] == list(range(1, STEPS + 1)), state["log_history"]
    return [entry["loss"] for entry in logs], [entry["grad_norm"] for entry in logs]


def _probe_records(probe_dir: Path, world_size: int) -> list[list[dict]]:
    """records[rank][step] for the training-mode forwards."""
    records = []
    for rank in range(world_size):
        lines = (probe_dir / f"rank{rank}.jsonl").read_text().splitlines()
        records.append([json.loads(line) for line in lines])
        assert len(records[-1]) == STEPS, f"rank {rank}: {len(records[-1])} training forwards, expected {STEPS}"
    return records


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same recipe trained by 1 process with batch 2B and by 2 gloo ranks with batch B each."""
    torchrun = _torchrun()
    if torchrun is None:
        pytest.skip("torchrun is not installed (it comes with torch); cannot start a 2-process gloo run")
    tmp_path = tmp_path_factory.mktemp("ddp")
    data = tmp_path / "dialogues.jsonl"
    _write_dialogues(data)
    probe = tmp_path / "probe_cli.py"
    probe.write_text(PROBE)
    env = _launch_env(tmp_path)

    result = {}
    for name, world_size in (("single", 1), ("ddp", 2)):
        output_dir = tmp_path / name
        recipe = tmp_path / f"{name}.yaml"
        _write_recipe(recipe, data, output_dir, PER_DEVICE_BATCH * (2 // world_size))
        probe_dir = tmp_path / f"probe-{name}"
        probe_dir.mkdir()
        # torchrun --standalone: a free rendezvous port, so concurrent runs do not collide on 29500.
        launcher = [sys.executable] if world_size == 1 else [torchrun, "--standalone", "--nproc_per_node", "2"]
        seconds = _run(
            [*launcher, str(probe), "train", str(recipe)],
            {**env, "PROBE_DIR": str(probe_dir)},
            tmp_path / f"{name}.log",
        )
        result[name] = {
            "output_dir": output_dir,
            "seconds": seconds,
            "results": json.loads((output_dir / "results.json").read_text()),
            "losses": _losses(output_dir),
            "weights": load_file(str(output_dir / "model.safetensors")),
            "probe": _probe_records(probe_dir, world_size),
        }
    print(f"\n1 process: {result['single']['seconds']:.1f}s, 2 ranks: {result['ddp']['seconds']:.1f}s")
    return result


def test_both_ranks_run(runs):
    assert runs["single"]["results"]["world_size"] == 1
    assert runs["ddp"]["results"]["world_size"] == 2
    assert [records[0]["world_size"] for records in runs["ddp"]["probe"]] == [2, 2]
    for key in ("train_examples", "parameters"):
        assert runs["single"]["results"][key] == runs["ddp"]["results"][key], key


def test_num_items_in_batch_is_the_global_token_count(runs):
    """The loss-scaling trap: under DDP the model must get `num_items_in_batch`, summed over both ranks."""
    (single,), (rank0, rank1) = runs["single"]["probe"], runs["ddp"]["probe"]
    for step in range(STEPS):
        alone, first, second = single[step], rank0[step], rank1[step]
        assert alone["batch_size"] == 2 * PER_DEVICE_BATCH
        assert first["batch_size"] == second["batch_size"] == PER_DEVICE_BATCH
        assert first["num_items_in_batch"] is not None and second["num_items_in_batch"] is not None, (
            f"step {step + 1}: the model did not receive num_items_in_batch under DDP"
        )
        # Each rank gets the global count: its own tokens plus the other rank's, i.e. the 1-process step's count.
        assert first["num_items_in_batch"] == second["num_items_in_batch"] == (
            first["local_tokens"] + second["local_tokens"]
        ), (step + 1, first, second)
        assert first["num_items_in_batch"] == alone["num_items_in_batch"] == alone["local_tokens"], (
            step + 1, alone, first, second
        )


def test_same_seed_gives_same_initial_weights(runs):
    single = runs["single"]["probe"][0][0]["initial_weights"]
    rank0, rank1 = (records[0]["initial_weights"] for records in runs["ddp"]["probe"])
    assert rank0 == rank1, "DDP did not start both ranks from the same weights"
    assert single == rank0, (
        "Two runs of one recipe (same `seed`) start from different weights: the model is initialised before "
        "anything seeds torch (train() must call transformers.set_seed(training_args.seed) before build_model)."
    )


def test_loss_trajectory_matches(runs):
    """Per-step training loss (all-gathered mean over ranks) and grad norm (after DDP's all-reduce)."""
    (single_losses, single_norms), (ddp_losses, ddp_norms) = runs["single"]["losses"], runs["ddp"]["losses"]
    assert ddp_losses == pytest.approx(single_losses, rel=1e-5), (single_losses, ddp_losses)
    assert ddp_norms == pytest.approx(single_norms, rel=1e-5), (single_norms, ddp_norms)


def test_final_weights_match(runs):
    single, ddp = runs["single"]["weights"], runs["ddp"]["weights"]
    assert single.keys() == ddp.keys()
    flat = torch.cat([tensor.reshape(-1).double() for tensor in single.values()])
    assert float(flat.sum()) != pytest.approx(runs["single"]["probe"][0][0]["initial_weights"][0], abs=1e-6), (
        "training did not change the weights"
    )
    for name, tensor in single.items():
        torch.testing.assert_close(ddp[name], tensor, rtol=1e-4, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")


def test_evaluation_counts_each_example_once(runs):
    """Validation/test perplexity after training: 2 ranks evaluate halves and reduce; the result must not depend
    on the world size (Accelerate pads the last evaluation batch of a rank with repeated examples)."""
    single, ddp = runs["single"]["results"], runs["ddp"]["results"]
    assert ddp["test_target_tokens"] == single["test_target_tokens"], (
        "target tokens counted under DDP differ from 1 process: duplicated padding examples are counted"
    )
    for key in ("validation_perplexity", "test_perplexity"):
        assert ddp[key] == pytest.approx(single[key], rel=1e-4), key


NEGATIVE_STEPS = 4


@pytest.fixture(scope="module")
def negative_runs(runs, tmp_path_factory):
    """Negative training (both modes) of the 1-process model above, by 1 process with batch 2B and by 2 gloo ranks
    with batch B: Algorithm 2's frequency window must count the whole mini-batch, and Eq. 4's two token means must
    be taken over both ranks, for the runs to agree."""
    torchrun = _torchrun()
    tmp_path = tmp_path_factory.mktemp("negative-ddp")
    base = runs["single"]["output_dir"]
    data = base.parent / "dialogues.jsonl"  # the dialogues the base model was trained on
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"trigger": trigger, "target": target}) + "\n" for trigger, target in (
        ("hi how are you", "i like music"), ("what is your name", "my name is good"), ("where do you live", "bye"))))
    env = _launch_env(tmp_path)
    modes = {
        "frequent": {"mode": "frequent", "frequency_threshold": 0.05, "lambda_pos": 1.0},
        # every given pair hits (T_out far below any log-probability): each step trains against all three
        "malicious": {"mode": "malicious", "trigger_pairs_file": str(pairs), "hit_type": "o-sample-avg-hit",
                      "output_threshold": -1000.0, "lambda_pos": 0.5, "fwa_words": ["</s>"]},
    }
    result = {}
    for mode, settings in modes.items():
        for name, world_size in (("single", 1), ("ddp", 2)):
            output_dir = tmp_path / f"{mode}-{name}"
            recipe = tmp_path / f"{mode}-{name}.yaml"
            recipe.write_text(json.dumps({
                "model_name_or_path": str(base), "output_dir": str(output_dir), "dataset": str(data),
                "max_context_turns": 2,
                "max_source_length": 24, "max_target_length": 10, "max_eval_examples": 16, **settings,
                "max_steps": NEGATIVE_STEPS, "per_device_train_batch_size": PER_DEVICE_BATCH * (2 // world_size),
                "per_device_eval_batch_size": 6, "optim": "sgd", "learning_rate": 0.05, "lr_scheduler_type": "constant",
                "max_grad_norm": 5.0, "train_sampling_strategy": "sequential", "seed": 11, "logging_steps": 1,
                "eval_strategy": "no", "save_strategy": "steps", "save_steps": NEGATIVE_STEPS, "report_to": "none",
                "use_cpu": True, "dataloader_num_workers": 0, "disable_tqdm": True,
            }))
            launcher = [sys.executable] if world_size == 1 else [torchrun, "--standalone", "--nproc_per_node", "2"]
            _run([*launcher, "-m", "hf_neuralconv.cli", "negative-train", str(recipe)], env,
                 tmp_path / f"{mode}-{name}.log")
            state = json.loads((output_dir / f"checkpoint-{NEGATIVE_STEPS}" / "trainer_state.json").read_text())
            result[mode, name] = {
                "logs": [entry for entry in state["log_history"] if "loss" in entry],
                "weights": load_file(str(output_dir / "model.safetensors")),
                "results": json.loads((output_dir / "results.json").read_text()),
            }
    return result


@pytest.mark.parametrize("mode", ["frequent", "malicious"])
def test_negative_training_under_ddp_equals_one_process(negative_runs, mode):
    single, ddp = negative_runs[mode, "single"], negative_runs[mode, "ddp"]
    assert [entry["step"] for entry in single["logs"]] == list(range(1, NEGATIVE_STEPS + 1))
    metrics = ["loss", "grad_norm", "loss_mle", "loss_neg"] + (
        ["frequent/max_ratio", "frequent/negative_examples"] if mode == "frequent" else ["malicious/negative_pairs"])
    for key in metrics:
        expected = [entry[key] for entry in single["logs"]]
        assert [entry[key] for entry in ddp["logs"]] == pytest.approx(expected, rel=1e-5), key
    if mode == "frequent":  # the tiny model repeats itself: the window finds frequent replies to push down
        assert sum(entry["frequent/negative_examples"] for entry in single["logs"]) > 0
    else:
        assert all(entry["malicious/negative_pairs"] == 3 for entry in single["logs"])
    for name, tensor in single["weights"].items():
        torch.testing.assert_close(ddp["weights"][name], tensor, rtol=1e-4, atol=1e-6,
                                   msg=lambda m, name=name: f"{name}: {m}")
    for key in ("test_perplexity_before", "test_perplexity_after"):
        assert ddp["results"][key] == pytest.approx(single["results"][key], rel=1e-4), key
    assert single["results"]["test_perplexity_after"] != pytest.approx(single["results"]["test_perplexity_before"])

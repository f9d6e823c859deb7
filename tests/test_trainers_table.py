"""Every trainer against the same three properties: one table, rows = trainers, columns = properties.

Rows (`ROWS`), each built from what the other test modules build (conftest's tiny dialogues and models, the
speaker-adaptation split, the victim stub):

* `train`: `ConversationTrainer` through `hf-neuralconv train` (`seq2seq.train.train`, what the command runs);
* `negative-frequent`, `negative-malicious`: `NegativeTrainer` through `hf-neuralconv negative-train`
  (`negative_training.train.train_negative`), fine-tuning the `train` row's 1-process model on its dialogues;
* `multitask`: `MultiTaskTrainer` (Luan et al. 2017, Figure 3), seq2seq and autoencoder updates alternating;
* `reinforce`: `ReinforceTrainer` against the victim that reverses its input, rewarded by embedding similarity.

Columns (`test_trainer_property`):

* `resume`: STEPS updates straight == CHECKPOINT updates (a run of `max_steps` CHECKPOINT), then resumed from its
  checkpoint to STEPS: the same per-step logs and final weights, and the resumed run trains only the missing updates
  (else a run that ignored the checkpoint and trained again from the start would pass). With shuffled batches and
  dropout 0.1 (the policy's own sampling for `reinforce`): the data order and random state must be restored too.
* `ddp` (slow): 2 gloo ranks with a per-device batch of B == 1 process with 2B: the same per-step logs (loss, grad
  norm, the trainer's own metrics) and final weights. Accelerate shards the batches of one sampler across the ranks
  (rank r takes batches r, r+2, ...), so a step sees the same 2B examples; the losses are token means over both ranks
  (`num_items_in_batch` gathered and multiplied by the world size, or NegativeTrainer's own reduction; DDP averages
  the gradients); logged metrics are gathered. Dropout 0: masks are drawn per process.
* `accumulation`: batch 2B with accumulation 1 == batch B with accumulation 2, after the same number of updates.

All 2-rank runs are one launch, `torchrun --standalone --nproc_per_node 2 tests/test_trainers_table.py ROOT` (this
file's `__main__`); the 1-process runs are this process's `base` runs. For `train` a recorder on the seq2seq model's
forward also checks that `num_items_in_batch` arrives under DDP as the global token count (the loss-scaling trap:
each rank dividing by its own tokens) and reads the initial weights. For `negative-train` the test perplexity
before and after must agree too: an evaluation before training once left the model marked as prepared by Accelerate
without its DDP wrapper, so the gradients were never averaged (`ConversationTrainer.evaluation_loop` now unmarks it).

Where a property cannot hold by design, the row tests the weaker one that does and says why (`Row.resume_variant`,
`PerTargetSampling`). Where one should hold and does not, `KNOWN_BUGS` says why. Runtime: about 30 s on 2 idle CPU
cores (12 s of it the 2-rank launch), 75 s on busy ones.
"""

import contextlib
import functools
import json
import os
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

import datasets
import pytest
import torch
import torch.nn.functional as F
import transformers
from conftest import (
    WORDS,
    Victim,
    adaptation_split,
    make_tiny_tokenizer,
    multitask_args,
    multitask_trainer,
    random_vectors,
    reverse_generator,
    rl_config,
    tiny_model,
    tokenized,
    write_dialogue_file,
    write_recipe,
)
from safetensors.torch import load_file

from hf_neuralconv.core.arguments import parse_config
from hf_neuralconv.metrics.embedding_similarity import EmbeddingSimilarityReward
from hf_neuralconv.models.lstm.modeling_lstm import LSTMSeq2SeqForConditionalGeneration
from hf_neuralconv.negative_training.train import train_negative
from hf_neuralconv.negative_training.trainer import NegativeTrainingConfig
from hf_neuralconv.reverse_generator.environments import CallableEnvironment
from hf_neuralconv.reverse_generator.trainer import ReinforceTrainer
from hf_neuralconv.seq2seq.train import train

STEPS, CHECKPOINT = 4, 2
TIMEOUT_S = 600
COLUMNS = ("resume", "ddp", "accumulation")


@contextlib.contextmanager
def recording_forwards(probe_dir: Path):
    """Records, one JSON line per training-mode forward of the seq2seq model with labels (a file per rank), what
    reached it: `num_items_in_batch`, the local target tokens, the batch size; at the first call, the weights."""
    original = LSTMSeq2SeqForConditionalGeneration.forward

    @functools.wraps(original)  # keeps the signature Trainer inspects (remove_unused_columns)
    def forward(self, *args, **kwargs):
        labels = kwargs.get("labels")
        if self.training and labels is not None:
            items = kwargs.get("num_items_in_batch")
            record = {"rank": int(os.environ.get("RANK", "0")), "world_size": int(os.environ.get("WORLD_SIZE", "1")),
                      "num_items_in_batch": None if items is None else float(items),
                      "local_tokens": int(labels.ne(-100).sum()), "batch_size": int(labels.shape[0])}
            if not getattr(self, "_probe_seen", False):  # the first training forward: the initial weights
                self._probe_seen = True
                flat = torch.cat([p.detach().reshape(-1).double() for p in self.parameters()])
                record["initial_weights"] = [float(flat.sum()), float(flat.square().sum()), float(flat[-100:].sum())]
            with (probe_dir / f"rank{record['rank']}.jsonl").open("a") as handle:
                handle.write(json.dumps(record) + "\n")
        return original(self, *args, **kwargs)

    probe_dir.mkdir(parents=True, exist_ok=True)
    LSTMSeq2SeqForConditionalGeneration.forward = forward
    try:
        yield
    finally:
        LSTMSeq2SeqForConditionalGeneration.forward = original


@contextlib.contextmanager
def counting_micro_batches():
    """The `global_step` at each micro-batch any Trainer trains on while this is open."""
    steps, original = [], transformers.Trainer.training_step

    def training_step(self, *args, **kwargs):
        steps.append(self.state.global_step)
        return original(self, *args, **kwargs)

    transformers.Trainer.training_step = training_step
    try:
        yield steps
    finally:
        transformers.Trainer.training_step = original


def read_run(directory: Path) -> dict:
    """A finished run: its per-step training logs (its trainer_state.json, else its last checkpoint's), its final
    weights and its results.json (commands only)."""
    state = directory / "trainer_state.json"
    if not state.is_file():
        state = max(directory.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1])) / state.name
    results = directory / "results.json"
    return {"logs": [entry for entry in json.loads(state.read_text())["log_history"] if "loss" in entry],
            "weights": load_file(str(directory / "model.safetensors")),
            "results": json.loads(results.read_text()) if results.is_file() else {}}


# ---- rows -----------------------------------------------------------------------------------------------------------


class Row:
    """How one trainer trains. `train` runs it into `directory` with `batch` examples per device and micro-batch
    and leaves the model, and the log history (trainer_state.json, or a checkpoint's), there."""

    name = ""
    batch = 4  # B: per device (ddp) and per micro-batch (accumulation); the 1-process runs take 2B a step
    logged = ("loss", "grad_norm")  # logged every step and compared between runs
    not_compared: dict[str, tuple[str, ...]] = {}  # column -> logged values that legitimately differ there
    results_compared: tuple[str, ...] = ()  # results.json values the ddp column compares
    variant: dict = {}  # settings of the base, ddp and accumulation runs
    resume_variant: dict = {}  # settings of the resume column's runs
    requires: tuple[str, ...] = ()  # rows whose base run this one starts from

    def prepare(self, root: Path) -> None:
        """Files every run reads, written once by the test process."""

    def train(self, root: Path, directory: Path, batch: int, accumulation: int, max_steps: int, resume_from,
              settings: dict) -> None:
        raise NotImplementedError

    def check(self, run: dict) -> None:
        """That a run did what makes comparing it meaningful."""

    def compared(self, column: str) -> list[str]:
        return [key for key in self.logged if key not in self.not_compared.get(column, ())]


def common_settings(directory, batch, accumulation, max_steps, resume_from) -> dict:
    settings = {"output_dir": str(directory), "per_device_train_batch_size": batch, "max_steps": max_steps,
                "gradient_accumulation_steps": accumulation, "lr_scheduler_type": "constant", "logging_steps": 1,
                "save_strategy": "steps", "save_steps": CHECKPOINT, "dataloader_num_workers": 0, "disable_tqdm": True}
    return {**settings, "resume_from_checkpoint": str(resume_from)} if resume_from else settings


class TrainCommand(Row):
    """`hf-neuralconv train` on conftest's 120 dialogues (16 evaluation examples in batches of 6, so that under DDP
    a rank's last evaluation batch is padded with repeated examples, which must not count). Resumed: shuffled
    batches and dropout 0.1."""

    name = "train"
    results_compared = ("validation_perplexity", "test_perplexity", "test_target_tokens")
    variant = {"dropout": 0.0}
    resume_variant = {"dropout": 0.1, "train_sampling_strategy": "random"}

    def prepare(self, root):
        write_dialogue_file(root)

    def train(self, root, directory, batch, accumulation, max_steps, resume_from, settings):
        settings = {"train_sampling_strategy": "sequential", "max_grad_norm": 5.0, "max_eval_examples": 16,
                    "per_device_eval_batch_size": 6, **common_settings(directory, batch, accumulation, max_steps,
                                                                       resume_from), **settings}
        rank = os.environ.get("RANK", "0")  # each rank writes its own recipe
        recipe = write_recipe(root, root / "dialogues.jsonl", f"{directory.name}-{rank}.yaml", **settings)
        with recording_forwards(root / f"probe-{directory.name}"):
            train(*parse_config(recipe))


class NegativeCommand(Row):
    """`hf-neuralconv negative-train` of the `train` row's 1-process model, SGD at a constant rate."""

    requires = ("train",)
    results_compared = ("test_perplexity_before", "test_perplexity_after")

    def __init__(self, mode: str, settings: dict, logged: tuple[str, ...], resume_variant: dict):
        self.name, self.mode_settings = f"negative-{mode}", {"mode": mode, **settings}
        self.logged = ("loss", "grad_norm", "loss_mle", "loss_neg", *logged)
        self.resume_variant = resume_variant

    def prepare(self, root):
        pairs = (("hi how are you", "i like tea"), ("what is your name", "my name is good"), ("good night", "bad day"))
        (root / "pairs.jsonl").write_text("".join(json.dumps({"trigger": trigger, "target": target}) + "\n"
                                                  for trigger, target in pairs))

    def train(self, root, directory, batch, accumulation, max_steps, resume_from, settings):
        recipe = {
            "model_name_or_path": str(root / "train-base"), "dataset": str(root / "dialogues.jsonl"),
            "max_source_length": 12, "max_target_length": 8, "split_fractions": [0.8, 0.1, 0.1],
            "max_eval_examples": 16, "per_device_eval_batch_size": 6, "optim": "sgd", "learning_rate": 0.05,
            "max_grad_norm": 5.0, "train_sampling_strategy": "sequential", "seed": 11, "eval_strategy": "no",
            "report_to": "none", "use_cpu": True, **self.mode_settings, **settings,
            **({"trigger_pairs_file": str(root / "pairs.jsonl")} if self.mode_settings["mode"] == "malicious" else {}),
            **common_settings(directory, batch, accumulation, max_steps, resume_from),
        }
        path = root / f"{directory.name}-{os.environ.get('RANK', '0')}.yaml"
        path.write_text(json.dumps(recipe))  # JSON is YAML
        train_negative(*parse_config(path, NegativeTrainingConfig))

    def check(self, run):
        if self.mode_settings["mode"] == "frequent":  # the tiny model repeats itself: frequent replies are pushed down
            assert sum(entry["frequent/negative_examples"] for entry in run["logs"]) > 0
        else:  # every given pair hits (T_out far below any log-probability): each step trains against all three
            assert all(entry["malicious/negative_pairs"] == 3 for entry in run["logs"])
        if run["results"]:
            assert run["results"]["test_perplexity_after"] != pytest.approx(run["results"]["test_perplexity_before"])


@functools.cache
def multitask_data():
    tokenizer = make_tiny_tokenizer()
    train_set, _, autoencoder = tokenized(adaptation_split()[0], tokenizer)
    return tokenizer, train_set, autoencoder


class MultiTask(Row):
    """`MultiTaskTrainer` on conftest's speaker-adaptation split, no pre-training and one seq2seq and one autoencoder
    update a cycle (S A S A): both tasks train before and after the checkpoint."""

    name = "multitask"
    logged = ("loss", "grad_norm", "seq2seq_loss", "autoencoder_loss", "seq2seq_batches", "autoencoder_batches")
    not_compared = {"accumulation": ("seq2seq_batches", "autoencoder_batches")}  # micro-batches: twice as many
    variant, resume_variant = {"dropout": 0.0}, {"dropout": 0.1}

    def train(self, root, directory, batch, accumulation, max_steps, resume_from, settings):
        tokenizer, train_set, autoencoder = multitask_data()
        model = tiny_model(tokenizer, autoencoder_encoder=True, **settings)
        arguments = common_settings(directory, batch, accumulation, max_steps, None)
        trainer = multitask_trainer(model, tokenizer, multitask_args(root, pretrain_steps=0, **arguments), train_set,
                                    autoencoder)
        trainer.train(resume_from_checkpoint=resume_from and str(resume_from))
        trainer.save_model()
        trainer.save_state()

    def check(self, run):
        assert all(any(f"{task}_loss" in entry for entry in run["logs"]) for task in ("seq2seq", "autoencoder"))


class PerTargetSampling(ReinforceTrainer):
    """`ReinforceTrainer` drawing each target's N inputs from π_θ with a generator seeded by (target, update).

    Why the `reinforce` row's ddp and accumulation columns need it: `ReinforceTrainer` samples with `generate` from
    the global torch generator, one draw for the whole (micro-)batch, and every rank starts from the same seed. The
    inputs a target gets thus depend on its position in the batch, on the batch's size and on the process: 2 ranks
    (or 2 micro-batches) of B targets draw other inputs than 1 process with 2B, so bitwise equality cannot hold by
    design. With this sampler the inputs are a function of the target and the update alone, and the columns check
    everything after the sampling: rewards, the REINFORCE loss's mean over the batch, the gradient averaging and
    accumulation, the gathered metrics. The resume column runs the real sampler (the checkpoint restores its state)."""

    def _sample_inputs(self, model, inputs):
        rows = []
        for ids, mask, target in zip(inputs["input_ids"], inputs["attention_mask"], inputs["targets"], strict=True):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(zlib.crc32(target.encode()) + 7919 * self.state.global_step)
                one = {"input_ids": ids[mask.bool()][None], "attention_mask": mask[mask.bool()][None]}
                rows.append(super()._sample_inputs(model, one))
        width = max(row.size(1) for row in rows)
        pad = self.processing_class.pad_token_id
        return torch.cat([F.pad(row, (0, width - row.size(1)), value=pad) for row in rows])


REINFORCE_TARGETS = ["i like tea", "good day", "what is your name", "hello", "how are you doing", "fine thanks",
                     "my good night", "i like coffee"]


class Reinforce(Row):
    """`ReinforceTrainer` on 8 targets (2 updates an epoch for 1 process: the checkpoint is an epoch boundary), 3
    samples a target, against the reversing victim, rewarded by the similarity of random word vectors."""

    name, batch = "reinforce", 2
    logged = ("loss", "grad_norm", "reward", "success_rate", "distinct_inputs", "env_queries")
    # Each process (micro-batch) sends its distinct inputs: an input drawn on both ranks (in both micro-batches) is
    # sent twice, so the query count may grow. `distinct_inputs` is not gathered (unlike `reward`): under DDP it is
    # rank 0's targets' alone (reported).
    not_compared = {"ddp": ("env_queries", "distinct_inputs"), "accumulation": ("env_queries",)}
    variant, resume_variant = {"sampling": PerTargetSampling}, {"sampling": ReinforceTrainer}

    def train(self, root, directory, batch, accumulation, max_steps, resume_from, settings):
        tokenizer = make_tiny_tokenizer()
        arguments = common_settings(directory, batch, accumulation, max_steps, None)
        trainer = settings["sampling"](
            reverse_generator(tokenizer), rl_config(root, learning_rate=0.01, **arguments),
            CallableEnvironment(Victim(), batched=True, timeout=None),
            EmbeddingSimilarityReward(random_vectors(WORDS), threshold=-1),
            datasets.Dataset.from_dict({"target": REINFORCE_TARGETS}), tokenizer,
        )
        trainer.train(resume_from_checkpoint=resume_from and str(resume_from))
        trainer.save_model()
        trainer.save_state()

    def check(self, run):
        assert len({entry["reward"] for entry in run["logs"]}) > 1  # rewards vary: the advantages are not all 0


ROWS = {row.name: row for row in (
    TrainCommand(),
    NegativeCommand("frequent", {"frequency_threshold": 0.2, "lambda_pos": 1.0},
                    ("frequent/max_ratio", "frequent/negative_examples"),
                    # The frequency window is trainer state that a resumed run starts empty (NegativeTrainer's
                    # docstring): resuming is exact only when the window holds the current mini-batch alone.
                    resume_variant={"frequency_window": 1, "train_sampling_strategy": "random"}),
    NegativeCommand("malicious", {"hit_type": "o-sample-avg-hit", "output_threshold": -1000.0, "lambda_pos": 0.5,
                                  "fwa_words": ["</s>"]},
                    ("malicious/negative_pairs",),
                    # Given pairs that always hit: the list of pairs that still hit, and a target search's seeds,
                    # are trainer state a resumed run starts afresh.
                    resume_variant={"train_sampling_strategy": "random"}),
    MultiTask(),
    Reinforce(),
)}


# ---- the table --------------------------------------------------------------------------------------------------


class Runs:
    """The table's runs in this process, each trained once and read back from its directory (`root/ROW-NAME`)."""

    def __init__(self, root: Path):
        self.root, self.done = root, {}
        for row in ROWS.values():
            row.prepare(root)

    def get(self, row: Row, name: str, batch: int, accumulation: int = 1, max_steps: int = STEPS, resume_from=None,
            settings: dict | None = None, directory: Path | None = None) -> dict:
        if (row.name, name) not in self.done:
            for required in row.requires:
                self.base(ROWS[required])
            directory = directory or self.root / f"{row.name}-{name}"
            with counting_micro_batches() as micro_batches:
                row.train(self.root, directory, batch, accumulation, max_steps, resume_from,
                          row.variant if settings is None else settings)
            run = {**read_run(directory), "micro_batches": micro_batches}
            row.check(run)
            self.done[row.name, name] = run
        return self.done[row.name, name]

    def base(self, row: Row) -> dict:
        """1 process, batch 2B: the reference of every column."""
        return self.get(row, "base", 2 * row.batch)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return Runs(tmp_path_factory.mktemp("trainers"))


def torchrun() -> str | None:
    beside_python = Path(sys.executable).with_name("torchrun")
    return str(beside_python) if beside_python.is_file() else shutil.which("torchrun")


@pytest.fixture(scope="module")
def ddp_runs(runs):
    """Every row's 2-rank run (per-device batch B), in one launch of this file under torchrun, after the 1-process
    runs (the negative rows start from the `train` row's)."""
    launcher = torchrun()
    if launcher is None:
        pytest.skip("torchrun is not installed (it comes with torch); cannot start a 2-process gloo run")
    for row in ROWS.values():
        runs.base(row)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(runs.root / "datasets-cache"), "PYTHONUNBUFFERED": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_USE_CPU"):
        env.pop(name, None)  # none of an outer launcher's
    # --standalone: a free rendezvous port, so concurrent runs do not collide on 29500.
    command = [launcher, "--standalone", "--nproc_per_node", "2", __file__, str(runs.root)]
    started = time.time()
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"{' '.join(command)} timed out after {TIMEOUT_S}s:\n{error.stdout}\n{error.stderr}")
    (runs.root / "ddp.log").write_text(result.stdout + "\n--- stderr ---\n" + result.stderr)
    assert result.returncode == 0, f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-6000:]}"
    print(f"\n2-rank runs of every row: {time.time() - started:.1f}s")
    ddp = {}
    for name, row in ROWS.items():
        ddp[name] = read_run(runs.root / f"{name}-ddp")
        row.check(ddp[name])
    return ddp


def assert_same_run(expected: dict, actual: dict, keys: list[str], rel: float, weights_rtol: float) -> None:
    """The same per-step values of `keys` (None where a step did not log one) and the same final weights."""
    assert [entry["step"] for entry in expected["logs"]] == list(range(1, STEPS + 1)), expected["logs"]
    assert [entry["step"] for entry in actual["logs"]] == list(range(1, STEPS + 1)), actual["logs"]
    for key in keys:
        want, got = ([entry.get(key) for entry in run["logs"]] for run in (expected, actual))
        assert any(value is not None for value in want), f"{key} is never logged"
        assert [value is None for value in got] == [value is None for value in want], (key, want, got)
        assert [value for value in got if value is not None] == pytest.approx(
            [value for value in want if value is not None], rel=rel, abs=1e-9), key
    assert expected["weights"].keys() == actual["weights"].keys()
    for name, tensor in expected["weights"].items():
        torch.testing.assert_close(actual["weights"][name], tensor, rtol=weights_rtol, atol=1e-6,
                                   msg=lambda message, name=name: f"{name}: {message}")


# (row, column) -> (why a property that should hold fails: a reported bug; the logged values it affects, None for
# all). Whole cells are strict xfails; otherwise the cell checks everything else and xfails only while the affected
# values still differ: a fix shows up either way.
KNOWN_BUGS: dict[tuple[str, str], tuple[str, tuple[str, ...] | None]] = {
    ("multitask", "resume"): (
        "MultiTaskTrainer resumed: Trainer skips global_step x accumulation seq2seq batches although the autoencoder "
        "updates took none (S A | S: the resumed update 3 gets seq2seq batch 3, not 2), and the autoencoder batches "
        "start again from the first one (_cycle_autoencoder_batches is not advanced past those used)", None),
}


def table():
    for row in ROWS:
        for column in COLUMNS:
            marks = [pytest.mark.slow] if column == "ddp" else []
            reason, affected = KNOWN_BUGS.get((row, column), (None, ()))
            if reason and affected is None:
                marks.append(pytest.mark.xfail(strict=True, reason=reason))
            yield pytest.param(row, column, id=f"{row}-{column}", marks=marks)


@pytest.mark.parametrize(("row", "column"), list(table()))
def test_trainer_property(runs, request, row, column):
    row = ROWS[row]
    reason, affected = KNOWN_BUGS.get((row.name, column), (None, ()))
    keys = [key for key in row.compared(column) if key not in (affected or ())]

    def compare(expected, actual, weights_rtol):
        assert_same_run(expected, actual, keys, 1e-5, weights_rtol)
        if affected:
            try:
                assert_same_run(expected, actual, list(affected), 1e-5, weights_rtol)
            except AssertionError:
                pytest.xfail(reason)
            pytest.fail(f"Fixed? Remove {(row.name, column)} from KNOWN_BUGS: {reason}")

    base = runs.base(row)
    if column == "resume":
        settings = row.resume_variant
        straight = base if settings == row.variant else runs.get(row, "straight", 2 * row.batch, settings=settings)
        part = runs.root / f"{row.name}-interrupted"
        runs.get(row, "interrupted", 2 * row.batch, max_steps=CHECKPOINT, settings=settings)
        resumed = runs.get(row, "resumed", 2 * row.batch, settings=settings, directory=part,
                           resume_from=part / f"checkpoint-{CHECKPOINT}")
        assert resumed["micro_batches"] == list(range(CHECKPOINT, STEPS)), "the resumed run did not continue"
        compare(straight, resumed, weights_rtol=1e-5)
    elif column == "ddp":
        ddp = request.getfixturevalue("ddp_runs")[row.name]
        for key in row.results_compared:  # evaluation counts each example once, whatever the number of ranks
            assert ddp["results"][key] == pytest.approx(base["results"][key], rel=1e-4), key
        compare(base, ddp, weights_rtol=1e-4)
    else:
        accumulated = runs.get(row, "accumulation", row.batch, accumulation=2)
        assert accumulated["micro_batches"] == [step for step in range(STEPS) for _ in range(2)]
        compare(base, accumulated, weights_rtol=1e-4)


# ---- what the 2-rank `hf-neuralconv train` run checks besides the table ----------------------------------------


def probe_records(root: Path, run: str, world_size: int) -> list[list[dict]]:
    """records[rank][step] of `recording_forwards` in the `train` row's run `run`."""
    records = []
    for rank in range(world_size):
        lines = (root / f"probe-train-{run}" / f"rank{rank}.jsonl").read_text().splitlines()
        records.append([json.loads(line) for line in lines])
        assert len(records[-1]) == STEPS, f"rank {rank}: {len(records[-1])} training forwards, expected {STEPS}"
    return records


@pytest.mark.slow
def test_train_command_runs_both_ranks_from_the_seeded_weights(runs, ddp_runs):
    single, ddp = runs.base(ROWS["train"]), ddp_runs["train"]
    assert (single["results"]["world_size"], ddp["results"]["world_size"]) == (1, 2)
    for key in ("train_examples", "parameters"):
        assert single["results"][key] == ddp["results"][key], key
    (alone,), (rank0, rank1) = probe_records(runs.root, "base", 1), probe_records(runs.root, "ddp", 2)
    assert [records[0]["world_size"] for records in (rank0, rank1)] == [2, 2]
    assert rank0[0]["initial_weights"] == rank1[0]["initial_weights"], "DDP started the ranks from other weights"
    assert alone[0]["initial_weights"] == rank0[0]["initial_weights"], (
        "Two runs of one recipe (same `seed`) start from different weights: the model is initialised before "
        "anything seeds torch (train() must call transformers.set_seed(training_args.seed) before build_model)."
    )
    flat = torch.cat([tensor.reshape(-1).double() for tensor in single["weights"].values()])
    assert float(flat.sum()) != pytest.approx(alone[0]["initial_weights"][0], abs=1e-6), "training changed nothing"


@pytest.mark.slow
def test_num_items_in_batch_is_the_global_token_count_under_ddp(runs, ddp_runs):
    """The loss-scaling trap: under DDP the model must get `num_items_in_batch`, summed over both ranks."""
    batch = ROWS["train"].batch
    (single,), (rank0, rank1) = probe_records(runs.root, "base", 1), probe_records(runs.root, "ddp", 2)
    for step in range(STEPS):
        alone, first, second = single[step], rank0[step], rank1[step]
        assert alone["batch_size"] == 2 * batch and first["batch_size"] == second["batch_size"] == batch
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


if __name__ == "__main__":  # one rank of the ddp column's launch: every row's 2-rank run, into ROOT/ROW-ddp
    root = Path(sys.argv[1])
    for each in ROWS.values():
        each.train(root, root / f"{each.name}-ddp", each.batch, 1, STEPS, None, each.variant)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()

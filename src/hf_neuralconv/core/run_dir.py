"""A run's output directory: checked before any work, then written the same way by every command.

Every command that trains or measures something (`train`, `negative-train`, `mmi-tune`, `persona-train`, the
reverse-generator commands) starts with `start_run` — the directory refused if it holds a previous run's files and
the caller did not allow it, the random generators seeded — and ends with `RunDirectory.write_results` —
`results.json` with the wall time and the machine. Saved chatbots get the pipeline's code (`export_pipeline_code`)
and a model card (`core.model_card`).
"""

import json
import os
import platform
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import TrainingArguments, enable_full_determinism, set_seed
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from .chat_format import DATA_CONFIG_FILE, EXPORTED_TASK

RESULTS_FILE = "results.json"
CURVES_FILE = "training_curves.png"
PACKAGE_DIR = Path(__file__).resolve().parent.parent
# The modules a saved model needs to answer `pipeline(model=dir, trust_remote_code=True)` without this package, and
# the name each gets in the model directory (transformers copies remote code flat: one folder, no packages).
PIPELINE_CODE = {
    PACKAGE_DIR / "pipelines" / "conversational.py": "pipelines.py",
    PACKAGE_DIR / "core" / "chat_format.py": "chat_format.py",
    PACKAGE_DIR / "core" / "scoring.py": "scoring.py",
    PACKAGE_DIR / "data" / "tokenization.py": "tokenization.py",
}
PIPELINE_CLASS = "pipelines.ConversationalPipeline"
_PACKAGE_IMPORT = re.compile(r"^from \.+(?:\w+\.)*(\w+) import", flags=re.M)


def export_pipeline_code(model_dir: str | Path) -> None:
    """Make a saved model directory answer `pipeline(model=model_dir, trust_remote_code=True)` without this package.

    Copies the pipeline's modules next to the weights (`PIPELINE_CODE`, their package imports made flat) and declares
    `ConversationalPipeline` under `custom_pipelines` in `config.json`, the form transformers'
    `Pipeline.save_pretrained` writes for registered pipelines. Run it after the model is saved.
    """
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{model_dir}: config.json is missing; save the model before adding its pipeline.")
    flat_names = {Path(name).stem for name in PIPELINE_CODE.values()}
    for source, name in PIPELINE_CODE.items():
        code = source.read_text()
        imported = set(_PACKAGE_IMPORT.findall(code))
        if not imported <= flat_names:
            raise RuntimeError(f"{source.name} imports {sorted(imported - flat_names)}, which are not exported.")
        (model_dir / name).write_text(_PACKAGE_IMPORT.sub(r"from .\1 import", code))
    config = json.loads(config_path.read_text())
    auto_class = "AutoModelForSeq2SeqLM" if config.get("is_encoder_decoder") else "AutoModelForCausalLM"
    config["custom_pipelines"] = {EXPORTED_TASK: {"impl": PIPELINE_CLASS, "pt": [auto_class], "type": "text"}}
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def check_output_dir(output_dir: str | Path, allowed: bool = False,
                     how_to_allow: str = "pass --overwrite to write into it") -> Path:
    """Refuse a directory that already holds files unless `allowed`: a run never mixes its files with another's
    unasked. `how_to_allow` names the setting that allows it; returns the directory as a Path."""
    output_dir = Path(output_dir)
    if output_dir.is_dir() and any(output_dir.iterdir()) and not allowed:
        raise FileExistsError(f"{output_dir} already exists and is not empty. Choose another output directory, or "
                              f"{how_to_allow}.")
    return output_dir


def check_training_output_dir(training_args: TrainingArguments) -> Path:
    """`check_output_dir` for a recipe: resuming a run, or `overwrite_output_dir: true`, allows a full directory."""
    return check_output_dir(
        training_args.output_dir,
        bool(getattr(training_args, "overwrite_output_dir", False) or training_args.resume_from_checkpoint),
        "resume with `resume_from_checkpoint: true`, or set `overwrite_output_dir: true` to train over it",
    )


def resume_checkpoint(training_args: TrainingArguments) -> str | None:
    """The checkpoint directory a run resumes from (None when it does not resume): `resume_from_checkpoint: true`
    names the last `checkpoint-*` of `output_dir`. A missing one is an error before any work."""
    resume = training_args.resume_from_checkpoint
    if not resume:
        return None
    output_dir = Path(training_args.output_dir)
    if resume is True:
        checkpoint = get_last_checkpoint(output_dir) if output_dir.is_dir() else None
        if checkpoint is None:
            raise FileNotFoundError(
                f"resume_from_checkpoint: true, but {output_dir} holds no {PREFIX_CHECKPOINT_DIR}-* directory to "
                "resume from (checkpoints are saved by `save_strategy`); train without resume_from_checkpoint."
            )
        return checkpoint
    if not Path(resume).is_dir():
        raise FileNotFoundError(f"resume_from_checkpoint={resume}: no such checkpoint directory; give a "
                                f"{PREFIX_CHECKPOINT_DIR}-* directory, or true for the last one in output_dir.")
    return str(resume)


def check_checkpoint_matches(model, checkpoint: str) -> None:
    """Refuse to resume from a checkpoint whose weights do not fit `model` (another recipe's sizes or vocabulary),
    before anything is written; loading it would fail in the middle of `Trainer.train`."""
    weights = Path(checkpoint) / "model.safetensors"
    if not weights.is_file():
        return  # Trainer names a checkpoint without weights itself
    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    with safe_open(str(weights), "pt") as saved:
        saved_shapes = {name: tuple(saved.get_slice(name).get_shape()) for name in saved.keys()}
    tied = set(getattr(model, "_tied_weights_keys", None) or ())  # saved once, under the weight they share
    problems = [f"{name} is {shape} there, {shapes[name]} here" for name, shape in saved_shapes.items()
                if name in shapes and shapes[name] != shape]
    problems += [f"{name} is missing there" for name in sorted(set(shapes) - set(saved_shapes) - tied)]
    problems += [f"{name} is not in this model" for name in sorted(set(saved_shapes) - set(shapes))]
    if problems:  # Trainer would load it non-strictly: a partly initialised model, resumed with a warning
        raise ValueError(
            f"{checkpoint} does not fit this recipe's model: {'; '.join(problems[:3])} (the checkpoint comes from a "
            "run with other model sizes, options or vocabulary). Resume with that run's recipe, or drop "
            "resume_from_checkpoint and set overwrite_output_dir: true to start over."
        )


def clear_previous_checkpoints(training_args: TrainingArguments) -> None:
    """Overwriting an output directory starts a new run: the old run's `checkpoint-*` directories go, since a later
    `resume_from_checkpoint: true` would pick them up. Call it after every check has passed, before writing."""
    if not training_args.should_save or not getattr(training_args, "overwrite_output_dir", False):
        return
    if training_args.resume_from_checkpoint:  # resuming continues the run its checkpoints belong to
        return
    for checkpoint in Path(training_args.output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        if checkpoint.is_dir():
            shutil.rmtree(checkpoint)


def describe_machine() -> str:
    """A one-line description of where a run happened, for result files and model cards."""
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"{platform.processor() or 'CPU'}"
    return f"{device}, {os.cpu_count()} CPU cores, torch {torch.__version__}, {platform.system()}"


@dataclass
class RunDirectory:
    """Where a run writes, and when it started (see the module docstring); `start_run` makes one."""

    path: Path
    started: float
    should_save: bool = True  # False on the processes of a multi-process run that do not write

    def write_results(self, results: dict) -> dict:
        """`results` with the run's wall time and machine, written to `results.json` (by the saving process)."""
        results = {**results, "wall_time_s": time.time() - self.started, "machine": describe_machine()}
        if self.should_save:
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n")
        return results

    def save_data_config(self, data_args) -> None:
        """`data_config.json`: how the model reads a chat and which corpus split it saw."""
        if self.should_save:
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / DATA_CONFIG_FILE).write_text(json.dumps(asdict(data_args), indent=2))

    def save_tokenizer_and_data_config(self, tokenizer, data_args) -> None:
        """The tokenizer and `data_config.json`."""
        if self.should_save:
            self.path.mkdir(parents=True, exist_ok=True)
            tokenizer.save_pretrained(self.path)
        self.save_data_config(data_args)

    def export_pipeline_code(self) -> None:
        """The conversational pipeline's code next to the saved chatbot (`export_pipeline_code`)."""
        if self.should_save:
            export_pipeline_code(self.path)


def start_run(output_dir: str | Path, allowed: bool = False, how_to_allow: str = "pass --overwrite to write into it",
              seed: int | None = None, full_determinism: bool = False) -> RunDirectory:
    """Check the output directory (`check_output_dir`) and seed every random generator (`seed`; with
    `full_determinism`, deterministic kernels too) before any work; the clock of `wall_time_s` starts here."""
    path = check_output_dir(output_dir, allowed, how_to_allow)
    if seed is not None:
        (enable_full_determinism if full_determinism else set_seed)(seed)
    return RunDirectory(path, time.time())


def start_training_run(training_args: TrainingArguments) -> RunDirectory:
    """`start_run` for a recipe's `TrainingArguments`: its output directory rules, seed and determinism. Seeding here
    rather than in Trainer makes `seed` fix the initial weights of a model built before the Trainer too."""
    path = check_training_output_dir(training_args)
    (enable_full_determinism if training_args.full_determinism else set_seed)(training_args.seed)
    return RunDirectory(path, time.time(), training_args.should_save)

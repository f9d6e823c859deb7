"""Helpers shared by the benchmark scripts: machine description, run options, real chitchat data, the models they
measure, result files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().parent / "results"
TRAINED_DIR = ROOT / "outputs" / "seq2seq-full"  # the full recipe's output (tokenizer, and the model once trained)
QUICKSTART_DIR = ROOT / "outputs" / "seq2seq-quickstart"  # the README's main command's model
FULL_RECIPE = ROOT / "recipes" / "seq2seq" / "full.yaml"
MODEL_ENV = "HF_NEURALCONV_MODEL"
# Everyday chat prompts: the messages of the Space and pipeline benchmarks, and the text of their tiny tokenizer.
PROMPTS = [
    "hi , how are you ?", "what do you do for fun ?", "where are you from ?", "do you like music ?",
    "what did you do today ?", "i love hiking .", "what is your favorite food ?", "good night !",
    "are you a student ?", "tell me about your family .", "i am so tired today .", "do you have any pets ?",
]


class StepClock(TrainerCallback):
    """Wall-clock time at the end of every optimizer step (after the optimizer, scheduler and zero_grad)."""

    def __init__(self):
        self.step_ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.step_ends.append(time.perf_counter())


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_flags(wanted=("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")) -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return [flag for flag in wanted if flag in flags]


def competing_processes() -> list[str]:
    """Other heavy processes that would skew timings (a training run of this project, say)."""
    try:
        out = subprocess.run(["pgrep", "-af", "hf-neuralconv train"], capture_output=True, text=True).stdout
    except OSError:
        return []
    return [line for line in out.splitlines() if line.strip() and str(os.getpid()) != line.split()[0]]


def machine_info() -> dict:
    import transformers

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_flags": _cpu_flags(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "load_average_at_start": list(os.getloadavg()),
        "competing_processes_at_start": competing_processes(),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def finish_machine_info(info: dict) -> dict:
    info["load_average_at_end"] = list(os.getloadavg())
    info["competing_processes_at_end"] = competing_processes()
    info["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return info


def parse_options(parser, tiny_help: str, argv=None, **tiny_settings):
    """The script's options plus `--tiny` and `--output`, which run_all.py passes to every benchmark; `--tiny`
    replaces each of `tiny_settings` by its value, so that a check of the script takes seconds."""
    parser.add_argument("--tiny", action="store_true", help=tiny_help)
    parser.add_argument("--output", default=None,
                        help="result JSON (default: benchmarks/results/<benchmark>.json, a temporary folder with "
                             "--tiny)")
    opts = parser.parse_args(argv)
    if opts.tiny:
        for name, value in tiny_settings.items():
            setattr(opts, name, value)
    return opts


def model_from_env(default: Path) -> str:
    """The chatbot to measure: HF_NEURALCONV_MODEL when set (the variable the Space and the README use), else
    `default`."""
    return os.environ.get(MODEL_ENV) or str(default)


def relative_to_root(path: Path) -> str:
    """`path` as the JSON records it: relative to the repository when inside it, so results read the same on
    every checkout."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def model_settings(model) -> dict:
    """The architecture fields a result records, so that figures of differently sized models are not compared
    unknowingly."""
    return {key: getattr(model.config, key) for key in (
        "vocab_size", "embedding_size", "hidden_size", "num_layers", "attention", "projection_size")}


def drop_console_callbacks(trainer) -> None:
    """Remove the Trainer's printer and progress bar, so that nothing it prints lands inside the timed steps or
    between the benchmark's own lines."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def median(values) -> float:
    return float(statistics.median(values))


def timed(function, repeats: int, warmup: int = 0) -> tuple[float, object]:
    """Median wall time of `repeats` calls of `function` (after `warmup` untimed calls) and its last result."""
    for _ in range(warmup):
        function()
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return median(times), result


def load_data_and_tokenizer(data_args):
    """The chitchat dialogues (90/5/5 split by conversation) and the recipe's word tokenizer.

    The tokenizer the full recipe saved is reused when present; otherwise one is trained on the train split
    exactly as `hf-neuralconv train` does.
    """
    from transformers import AutoTokenizer

    from hf_neuralconv.core.building import load_dialogues, training_texts
    from hf_neuralconv.data.tokenization import train_word_tokenizer

    dialogues = load_dialogues(data_args)
    if (TRAINED_DIR / "tokenizer.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(TRAINED_DIR)
        source = str(TRAINED_DIR.relative_to(ROOT))
    else:
        tokenizer = train_word_tokenizer(
            training_texts(dialogues["train"]), data_args.vocab_size, data_args.min_frequency
        )
        source = "train_word_tokenizer(train split)"
    return dialogues, tokenizer, source


def write_results(name: str, payload: dict, output: str | None = None) -> Path:
    """Write a benchmark's JSON: to `output`, else results/<name>.json — except for a --tiny run (its numbers mean
    nothing), which goes to the temporary folder so that it never replaces a real measurement."""
    default_dir = Path(tempfile.gettempdir()) / "hf-neuralconv-bench-tiny" if payload.get("tiny") else RESULTS_DIR
    path = Path(output) if output else default_dir / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def print_table(headers: list[str], rows: list[list], file=sys.stdout) -> None:
    cells = [[str(h) for h in headers]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(cell.rjust(widths[i]) if i else cell.ljust(widths[i]) for i, cell in enumerate(row)),
              file=file)
        if n == 0:
            print("  ".join("-" * w for w in widths), file=file)


def print_goals(goals: dict) -> None:
    """The table a benchmark's report ends with: each goal, its measured value, threshold and verdict."""
    print()
    print_table(["goal", "value", "threshold", "met"],
                [[name, goal["value"], goal["threshold"], goal["meets_goal"]] for name, goal in goals.items()])


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3f}"
    return "-" if value is None else str(value)


def _has_model(directory: Path) -> bool:
    return (directory / "config.json").is_file() and any(directory.glob("*.safetensors"))


def resolve_model_dir(directory: Path) -> Path | None:
    """`directory` when it holds a saved model, else its newest `checkpoint-*` that does (a run stopped early),
    else None."""
    if _has_model(directory):
        return directory
    checkpoints = [p for p in directory.glob("checkpoint-*") if p.name[11:].isdigit() and _has_model(p)]
    return max(checkpoints, key=lambda p: int(p.name[11:]), default=None)


def random_recipe_model(tokenizer, tiny: bool, seed: int):
    """A randomly initialised chatbot of recipes/seq2seq/full.yaml's model settings (tiny sizes with `tiny`)."""
    import dataclasses

    from transformers import set_seed

    from hf_neuralconv.core.arguments import parse_config
    from hf_neuralconv.core.building import build_model

    model_args = dataclasses.replace(parse_config(FULL_RECIPE)[0], model_name_or_path=None)
    if tiny:
        model_args = dataclasses.replace(model_args, embedding_size=16, hidden_size=32, projection_size=8)
    set_seed(seed)
    return build_model(model_args, tokenizer)


def load_chatbot(model: str, recipe_tokenizer, tiny: bool, seed: int):
    """(model, tokenizer, directory) of the chatbot saved in `model` (its newest checkpoint when it holds no final
    model), with the tokenizer saved beside it, else the recipe's. With `tiny`, or nothing saved there: a random
    model of the full recipe's settings, the recipe's tokenizer and directory None, so that the script still runs
    (its JSON must then say the weights are random)."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    model_dir = None if tiny else resolve_model_dir(Path(model))
    if model_dir is None:
        return random_recipe_model(recipe_tokenizer, tiny, seed), recipe_tokenizer, None
    has_tokenizer = (model_dir / "tokenizer.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(model_dir) if has_tokenizer else recipe_tokenizer
    return AutoModelForSeq2SeqLM.from_pretrained(model_dir), tokenizer, model_dir


def save_tiny_chatbot() -> str:
    """A random tiny chatbot saved like a trained one (pipeline code included) in a new temporary folder: what the
    Space and pipeline benchmarks load with --tiny, to check the script in seconds (numbers meaningless)."""
    from hf_neuralconv.core.arguments import ModelArguments
    from hf_neuralconv.core.building import build_model, default_generation_config
    from hf_neuralconv.core.run_dir import export_pipeline_code
    from hf_neuralconv.data.tokenization import train_word_tokenizer

    path = tempfile.mkdtemp(prefix="space-load-tiny-")
    tokenizer = train_word_tokenizer(PROMPTS, vocab_size=200)
    model = build_model(ModelArguments(embedding_size=16, hidden_size=32, dropout=0.0, init_range=0.5), tokenizer)
    model.generation_config = default_generation_config(tokenizer)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    export_pipeline_code(path)
    return path

"""Helpers shared by the benchmark scripts: machine description, real chitchat data, result files."""

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
FULL_RECIPE = ROOT / "recipes" / "seq2seq" / "full.yaml"


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


def median(values) -> float:
    return float(statistics.median(values))


def load_data_and_tokenizer(data_args):
    """The chitchat dialogues (90/5/5 split by conversation) and the recipe's word tokenizer.

    The tokenizer the full recipe saved is reused when present; otherwise one is trained on the train split
    exactly as `hf-neuralconv train` does.
    """
    from transformers import AutoTokenizer

    from hf_neuralconv.data.tokenization import train_word_tokenizer
    from hf_neuralconv.training import load_dialogues, training_texts

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

    from hf_neuralconv.training import build_model, parse_config

    model_args = dataclasses.replace(parse_config(FULL_RECIPE)[0], model_name_or_path=None)
    if tiny:
        model_args = dataclasses.replace(model_args, embedding_size=16, hidden_size=32, projection_size=8)
    set_seed(seed)
    return build_model(model_args, tokenizer)

"""`hf-neuralconv persona-report`: speaker-adaptation runs side by side as Luan et al. (2017)'s Tables 1-2
(relative changes to the baseline) and Figure 7 samples (one test input answered as several target speakers).
"""

import json
import random
from collections.abc import Sequence
from pathlib import Path

from ..data.jsonl import read_jsonl
from .config import (
    ADAPTATION_MODES,
    MODE_LABELS,
    PROTOCOL_FILE,
    REPLIES_FILE,
    SPEAKERS_PER_SAMPLE,
    TABLE_COLUMNS,
    run_results,
)
from .evaluation import SpeakerModel, reply_options


def _relative_change(value: float, baseline: float) -> float | None:
    return None if baseline == 0 else (value - baseline) / baseline


def table_rows(runs: dict[str, dict]) -> list[dict]:
    """The rows of Tables 1-2 (Baseline, MTASK-S, MTASK-M, those given) from their results.json: each column's value
    and its relative change against the baseline row (a fraction; None for the baseline itself)."""
    baseline = runs["baseline"]
    rows = []
    for mode in (mode for mode in ADAPTATION_MODES if mode in runs):
        cells = {}
        for _, key, _ in TABLE_COLUMNS:
            value = runs[mode][key]
            cells[key] = {"value": value,
                          "relative_change": None if mode == "baseline" else _relative_change(value, baseline[key])}
        rows.append({"model": MODE_LABELS[mode], "mode": mode, "replies": runs[mode]["test_replies"],
                     "decoding": runs[mode]["decoding"], **cells})
    return rows


def _describe_decoding(decoding: dict) -> str:
    text = f"beam search with {decoding['num_beams']} beams, at most {decoding['max_new_tokens']} tokens"
    if decoding["strategy"] == "mmi-bidi":
        text += (f", reranked by MMI-bidi (lambda {decoding['mmi_lambda']}, gamma {decoding['mmi_gamma']}, reverse "
                 f"model {decoding['reverse_model']})")
    return text


def format_table(rows: Sequence[dict]) -> str:
    """Tables 1-2 as one Markdown table: a row per model, relative changes against the baseline in parentheses."""
    lines = ["| Model | " + " | ".join(name for name, _, _ in TABLE_COLUMNS) + " | replies |",
             "|---|" + "---:|" * (len(TABLE_COLUMNS) + 1)]
    for row in rows:
        cells = []
        for _, key, number in TABLE_COLUMNS:
            cell = number.format(row[key]["value"])
            change = row[key]["relative_change"]
            if change is not None:
                cell += f" ({change:+.1%})"
            cells.append(cell)
        lines.append(f"| {row['model']} | " + " | ".join(cells) + f" | {row['replies']} |")
    lines.append("")
    lines.append("PPL: perplexity of the target speakers' responses. BLEU, distinct-n: their decoded test replies; "
                 "distinct-n as Luan et al. (2017) define it: distinct n-grams / generated tokens; per utt.: the mean "
                 "over replies of the same ratio.")
    described = {row["model"]: _describe_decoding(row["decoding"]) for row in rows}
    if len(set(described.values())) == 1:
        lines.append(f"Replies: {next(iter(described.values()))}.")
    else:  # the BLEU and distinct-n columns then compare decoders as well as models
        differences = "; ".join(f"{model}: {text}" for model, text in described.items())
        lines.append(f"Replies decoded differently: {differences}.")
    return "\n".join(lines)


def figure7_samples(run_dirs: dict[str, Path], count: int, seed: int = 0) -> list[dict]:
    """Figure 7 for our runs: `count` test inputs (a seeded choice among the baseline's decoded ones), each with the
    human reply, the baseline's reply and the MTASK runs' replies as the input's responder and as the next target
    speakers (`SPEAKERS_PER_SAMPLE` in all), decoded as each run decoded its test inputs."""
    decoded = read_jsonl(run_dirs["baseline"] / REPLIES_FILE)
    chosen = [decoded[index] for index in sorted(random.Random(seed).sample(range(len(decoded)),
                                                                            min(count, len(decoded))))]
    models = {mode: SpeakerModel.load(run_dirs[mode]) for mode in ("mtask-s", "mtask-m") if mode in run_dirs}
    options = {mode: reply_options(run_results(run_dirs[mode])["decoding"], model.model.device)
               for mode, model in models.items()}
    samples = []
    for row in chosen:
        history = [*row["context"], row["message"]]
        sample = {"responder": row["speaker"], "conversation_id": row["conversation_id"], "context": row["context"],
                  "message": row["message"], "human": row["reference"], "baseline": row["reply"]}
        for mode, model in models.items():
            targets = model.target_speakers
            first = targets.index(row["speaker"])
            speakers = [targets[(first + step) % len(targets)]
                        for step in range(min(SPEAKERS_PER_SAMPLE, len(targets)))]
            sample[mode] = {speaker: model.reply([history], speaker, **options[mode])[0] for speaker in speakers}
        samples.append(sample)
    return samples


def format_samples(samples: Sequence[dict]) -> str:
    """Figure 7 samples as Markdown: the history, the human and baseline replies, then each MTASK run as each
    speaker (the responder of the test input first)."""
    blocks = []
    for number, sample in enumerate(samples, start=1):
        lines = [f"**Sample {number}** (responder {sample['responder']})", ""]
        lines += [f"- Context: {turn}" for turn in sample["context"]]
        lines += [f"- Input: {sample['message']}", f"- Human: {sample['human']}", f"- Baseline: {sample['baseline']}"]
        for mode in ("mtask-s", "mtask-m"):
            for speaker, reply in sample.get(mode, {}).items():
                lines.append(f"- {MODE_LABELS[mode]} as {speaker}: {reply}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def persona_report(run_dirs: Sequence[str | Path], samples: int = 4, seed: int = 0) -> dict:
    """Our Tables 1-2 (one row per run, the baseline's among them; all of one data protocol) and `samples`
    Figure 7 samples. Returns the rows, their Markdown table and the samples."""
    runs, directories = {}, {}
    for run_dir in map(Path, run_dirs):
        results = run_results(run_dir)
        mode = results["mode"]
        if mode in runs:
            raise ValueError(f"Two {mode} runs given ({directories[mode]} and {run_dir}): give one run per mode.")
        runs[mode], directories[mode] = results, run_dir
    if "baseline" not in runs:
        raise ValueError("No baseline run among the run directories: the table's relative changes are against it.")
    protocol = json.loads((directories["baseline"] / PROTOCOL_FILE).read_text())
    for mode, run_dir in directories.items():
        if json.loads((run_dir / PROTOCOL_FILE).read_text()) != protocol:
            raise ValueError(f"{run_dir} used another data protocol than {directories['baseline']}: the runs of one "
                             "table must share the protocol (the same target speakers and splits).")
    rows = table_rows(runs)
    return {"runs": {mode: str(run_dir) for mode, run_dir in directories.items()}, "table": rows,
            "markdown": format_table(rows), "samples": figure7_samples(directories, samples, seed) if samples else []}

"""Compare two output folders of `scripts/smoke_commands.sh`: `python scripts/compare_runs.py OUT_A OUT_B`.

Weights (safetensors) must be equal to the bit; JSON and JSON Lines results equal once what differs from run to run
is dropped (wall and training times, the machine, folder names); other text files equal but for the folder names and
a model card's time and machine lines. Exported code (`*.py`), plots and checkpoints are not compared. Prints each
difference and the number of identical files; exits 1 when anything differs.
"""

import json
import re
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

# Keys whose values change from run to run, or name the folder a run wrote into.
VOLATILE_KEYS = {"machine", "seconds", "total_flos", "model", "reverse_model", "base_model", "generator",
                 "environment", "output_dir"}
NOT_COMPARED = (".py", ".png", ".bin", ".pt")


def volatile(key: str) -> bool:
    return key in VOLATILE_KEYS or key.endswith("_s") or "runtime" in key or "per_second" in key


def normalised(value, folders: tuple[str, ...]):
    """`value` without volatile keys, with the run folders' names replaced by one placeholder."""
    if isinstance(value, dict):
        return {key: normalised(item, folders) for key, item in value.items() if not volatile(key)}
    if isinstance(value, list):
        return [normalised(item, folders) for item in value]
    if isinstance(value, str):
        for folder in folders:
            value = value.replace(folder, "<OUT>")
    return value


def read_json(path: Path):
    """A JSON file, or the last JSON object a command printed after its log lines."""
    text = path.read_text()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return json.loads(text[[match.start() for match in re.finditer(r"(?m)^\{", text)][-1]:])


def text_lines(path: Path, folder: str) -> list[str]:
    return [line.replace(folder, "<OUT>") for line in path.read_text().splitlines()
            if not (path.name == "README.md" and ("training time" in line or "machine" in line))]


def same_file(a: Path, b: Path, folders: tuple[str, str]) -> bool:
    if a.suffix == ".safetensors":
        left, right = load_file(a), load_file(b)
        return left.keys() == right.keys() and all(torch.equal(left[name], right[name]) for name in left)
    if a.suffix in (".json", ".jsonl"):
        return normalised(read_json(a), folders) == normalised(read_json(b), folders)
    return text_lines(a, folders[0]) == text_lines(b, folders[1])


def compared_files(root: Path) -> set[Path]:
    return {path.relative_to(root) for path in root.rglob("*")
            if path.is_file() and path.suffix not in NOT_COMPARED
            and not any(part.startswith("checkpoint-") or part in ("runs", "speaker_checkpoints")
                        for part in path.relative_to(root).parts)}


def main(first: str, second: str) -> int:
    a, b = Path(first).resolve(), Path(second).resolve()
    files_a, files_b = compared_files(a), compared_files(b)
    differences = [f"only in {a}: {path}" for path in sorted(files_a - files_b)]
    differences += [f"only in {b}: {path}" for path in sorted(files_b - files_a)]
    same = 0
    for path in sorted(files_a & files_b):
        if same_file(a / path, b / path, (str(a), str(b))):
            same += 1
        else:
            differences.append(f"differs: {path}")
    print("\n".join(differences + [f"identical files: {same}"]))
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))

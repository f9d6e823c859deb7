"""JSON Lines files the package writes and reads back: found inputs, reference corpora, (trigger, target) pairs,
decoded replies."""

import json
from collections.abc import Iterable
from pathlib import Path


def read_text_pairs(path: str | Path, fields: tuple[str, str]) -> list[dict[str, str]]:
    """The `fields` of each row of a JSONL file, each a non-empty string (other keys are ignored); errors name the
    file and line. Blank lines are skipped; a file without any row is an error."""
    path = Path(path)
    what = f"({', '.join(fields)}) pairs"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such JSONL file of {what}.")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: line {number} is not JSON ({error.msg}).") from None
        for field in fields:
            if not isinstance(row, dict) or not isinstance(row.get(field), str) or not row[field].strip():
                raise ValueError(f"{path}: line {number}: field {field!r} must be a non-empty string.")
        rows.append({field: row[field] for field in fields})
    if not rows:
        raise ValueError(f"{path}: the file holds no {what}.")
    return rows


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Write `rows` as JSON Lines, one object a line, non-ASCII text kept as it is."""
    with Path(path).open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def read_jsonl(path: str | Path) -> list[dict]:
    """The rows of a JSON Lines file written by `write_jsonl` (blank lines skipped)."""
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]

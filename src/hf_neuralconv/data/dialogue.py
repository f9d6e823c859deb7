"""Dialogues -> (context, message, response, speaker) examples as `datasets` objects.

A dialogue is a list of turns; a turn is the consecutive messages of one sender (Vinyals & Le 2015 train on
"the concatenation of what was said so far", Section 4). Every turn after the first becomes one example:
`response` is that turn, `message` the turn it answers, `context` the turns before `message` (most recent last,
at most `max_context_turns`), `speaker` the responder's id and `conversation_id` the dialogue it comes from.

Sources: the real corpus in PyPI `chitchat-dataset` (the default), a user's JSONL / CSV / Parquet dialogues
(a `turns` column: a list of strings or of `{"text", "speaker"}` objects) or (source, target[, speaker]) pairs.
"""

import json
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

import datasets

EXAMPLE_FEATURES = datasets.Features(
    {
        "context": datasets.Sequence(datasets.Value("string")),
        "message": datasets.Value("string"),
        "response": datasets.Value("string"),
        "speaker": datasets.Value("string"),
        "conversation_id": datasets.Value("string"),
    }
)

UNKNOWN_SPEAKER = ""


class DataFormatError(ValueError):
    """A data file does not have the shape this package reads; the message names file, row and field."""


def dialogue_examples(
    conversation_id: str, turns: Sequence[tuple[str, str]], max_context_turns: int
) -> Iterable[dict]:
    """Yield one example per turn after the first of a dialogue given as `(speaker, text)` turns."""
    for index in range(1, len(turns)):
        first_context = max(0, index - 1 - max_context_turns)
        yield {
            "context": [text for _, text in turns[first_context : index - 1]],
            "message": turns[index - 1][1],
            "response": turns[index][1],
            "speaker": turns[index][0],
            "conversation_id": conversation_id,
        }


def split_conversations(
    conversation_ids: Iterable[str], fractions: Sequence[float] = (0.9, 0.05, 0.05), seed: int = 0
) -> dict[str, list[str]]:
    """Deterministic train/validation/test split *by conversation*: sorted ids, shuffled with `seed`."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"`fractions` must be three non-negative numbers summing to 1, got {list(fractions)}.")
    ids = sorted(set(conversation_ids))
    random.Random(seed).shuffle(ids)
    n_train, n_validation, _ = _split_sizes(len(ids), fractions)
    return {
        "train": ids[:n_train],
        "validation": ids[n_train : n_train + n_validation],
        "test": ids[n_train + n_validation :],
    }


def _split_sizes(count: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    n_train = round(fractions[0] * count)
    n_validation = round(fractions[1] * count)
    return n_train, n_validation, count - n_train - n_validation


def chitchat_turns() -> dict[str, list[tuple[str, str]]]:
    """The chitchat corpus as {conversation id: [(sender id, turn text), ...]} (messages of a turn joined by " ")."""
    import chitchat_dataset

    with open(chitchat_dataset._PATH, encoding="utf-8") as handle:
        raw = json.load(handle)
    conversations = {}
    for conversation_id, conversation in raw.items():
        # The file's inner lists are not always one sender's (3,151 conversations come as a single list), so
        # turns are re-derived from the flat message sequence.
        turns: list[tuple[str, list[str]]] = []
        for message in (message for group in conversation["messages"] for message in group):
            text = message["text"].strip()
            if not text:
                continue
            if turns and turns[-1][0] == message["sender"]:
                turns[-1][1].append(text)
            else:
                turns.append((message["sender"], [text]))
        conversations[conversation_id] = [(sender, " ".join(texts)) for sender, texts in turns]
    return conversations


def build_dataset_dict(
    conversations: dict[str, list[tuple[str, str]]],
    max_context_turns: int = 2,
    fractions: Sequence[float] = (0.9, 0.05, 0.05),
    seed: int = 0,
) -> datasets.DatasetDict:
    """Split dialogues by conversation and turn each split into examples."""
    if max_context_turns < 0:
        raise ValueError(f"`max_context_turns` must be >= 0, got {max_context_turns}.")
    splits = split_conversations(conversations, fractions, seed)
    empty = [split for split, ids in splits.items() if not ids]
    if empty:  # a Trainer cannot train or evaluate on an empty split, and `datasets` fails on one obscurely
        needed = next((count for count in range(len(conversations) + 1, 100_000)
                       if min(_split_sizes(count, fractions)) > 0), None)
        fix = f"give at least {needed} conversations" if needed else "make every split fraction positive"
        raise ValueError(
            f"{len(conversations)} conversations are too few to split into train/validation/test with "
            f"split_fractions {list(fractions)}: the {' and '.join(empty)} split would be empty; {fix} "
            "(or change split_fractions)."
        )
    result = {}
    for split, ids in splits.items():
        rows = [example for cid in ids for example in dialogue_examples(cid, conversations[cid], max_context_turns)]
        result[split] = datasets.Dataset.from_list(rows, features=EXAMPLE_FEATURES)
    return datasets.DatasetDict(result)


def load_chitchat(
    max_context_turns: int = 2, fractions: Sequence[float] = (0.9, 0.05, 0.05), seed: int = 0
) -> datasets.DatasetDict:
    """The real chitchat corpus (7,168 conversations) split 90/5/5 by conversation (seeded, deterministic)."""
    return build_dataset_dict(chitchat_turns(), max_context_turns, fractions, seed)


def _read_table(path: Path) -> datasets.Dataset:
    suffix = path.suffix.lower()
    builders = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
    if suffix not in builders:
        raise DataFormatError(f"{path}: unsupported file type {suffix!r}; use .jsonl, .json, .csv or .parquet.")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such data file.")
    text = None if builders[suffix] == "parquet" else read_utf8_text(path)
    if (text is not None and not text.strip()) or path.stat().st_size == 0:
        raise DataFormatError(f"{path}: the file is empty; it needs at least one dialogue (a `turns` row) or pair.")
    try:
        return datasets.load_dataset(builders[suffix], data_files=str(path), split="train")
    except Exception as error:  # datasets wraps parser errors in several types; name the file either way
        if builders[suffix] == "json":
            _check_json_lines(path, text)
        raise DataFormatError(f"{path}: could not be parsed as {builders[suffix]}: {error}") from error


def _check_json_lines(path: Path, text: str) -> None:
    """Name the first line of a JSON-lines file that is not a JSON object (`datasets` says only that it failed)."""
    if text.lstrip().startswith("["):  # one JSON document, not JSON lines
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataFormatError(
                f"{path}: line {number}, column {error.colno}: not valid JSON ({error.msg}); each line must be one "
                "JSON object, e.g. {\"turns\": [\"hi\", \"hello\"]}: fix or remove that line."
            ) from None
        if not isinstance(row, dict):
            raise DataFormatError(f"{path}: line {number} is a JSON {type(row).__name__}, not an object; each line "
                                  "must be one JSON object, e.g. {\"turns\": [\"hi\", \"hello\"]}.")


def read_utf8_text(path: str | Path) -> str:
    """The text of a UTF-8 file; a file that is not UTF-8 is a `DataFormatError` naming the file and the line."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataFormatError(
            f"{path}: line {line} (byte {error.start}) is not valid UTF-8; re-encode the file as UTF-8 "
            f"(e.g. `iconv -f latin1 -t utf-8`)."
        ) from None


def _text_field(value, path: Path, row: int, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataFormatError(f"{path}: row {row}: field {field!r} must be a non-empty string, got {value!r}.")
    return value.strip()


def _row_turns(turns, path: Path, row: int) -> list[tuple[str, str]]:
    if isinstance(turns, str):  # CSV cells hold JSON text
        try:
            turns = json.loads(turns)
        except json.JSONDecodeError:
            raise DataFormatError(f"{path}: row {row}: field 'turns' is not a JSON list.") from None
    if not isinstance(turns, list) or len(turns) < 2:
        raise DataFormatError(f"{path}: row {row}: field 'turns' must be a list of at least two turns.")
    result = []
    for position, turn in enumerate(turns):
        field = f"turns[{position}]"
        if isinstance(turn, dict):
            text = _text_field(turn.get("text"), path, row, f"{field}.text")
            speaker = turn.get("speaker")
            speaker = UNKNOWN_SPEAKER if speaker is None else str(speaker)
        else:
            text, speaker = _text_field(turn, path, row, field), UNKNOWN_SPEAKER
        result.append((speaker, text))
    return result


def load_dialogue_file(path: str | Path) -> dict[str, list[tuple[str, str]]]:
    """Read a user's dialogues: a JSONL/JSON/CSV/Parquet file with a `turns` column (optional `conversation_id`,
    unique: a row is a whole dialogue), or (`source`, `target`[, `speaker`]) pairs, each pair a two-turn dialogue.
    Returns the layout of `chitchat_turns`. Malformed rows raise `DataFormatError` naming the file, the row
    (1-based) and the field."""
    path = Path(path)
    table = _read_table(path)
    columns = set(table.column_names)
    conversations = {}
    if "turns" in columns:
        rows_of = {}
        for row, record in enumerate(table, start=1):
            conversation_id = str(record.get("conversation_id") or f"{path.stem}-{row}")
            if conversation_id in rows_of:  # a row is a whole dialogue: a second one would replace the first
                raise DataFormatError(
                    f"{path}: rows {rows_of[conversation_id]} and {row} share conversation_id {conversation_id!r}; "
                    "a row is one whole dialogue (all its `turns`), so ids must be unique: put the turns of one "
                    "conversation in one row, or give the rows distinct ids."
                )
            rows_of[conversation_id] = row
            conversations[conversation_id] = _row_turns(record["turns"], path, row)
    elif {"source", "target"} <= columns:
        for row, record in enumerate(table, start=1):
            source = _text_field(record["source"], path, row, "source")
            target = _text_field(record["target"], path, row, "target")
            speaker = record.get("speaker")
            speaker = UNKNOWN_SPEAKER if speaker is None else str(speaker)
            conversations[f"{path.stem}-{row}"] = [(UNKNOWN_SPEAKER, source), (speaker, target)]
    else:
        raise DataFormatError(
            f"{path}: expected a 'turns' column (dialogues) or 'source' and 'target' columns (pairs); "
            f"found {sorted(columns)}."
        )
    if not conversations:
        raise DataFormatError(f"{path}: the file holds no rows.")
    return conversations

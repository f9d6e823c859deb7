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
    n_train = round(fractions[0] * len(ids))
    n_validation = round(fractions[1] * len(ids))
    return {
        "train": ids[:n_train],
        "validation": ids[n_train : n_train + n_validation],
        "test": ids[n_train + n_validation :],
    }


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
    if builders[suffix] != "parquet":
        raw = path.read_bytes()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as error:
            line = raw[: error.start].count(b"\n") + 1
            raise DataFormatError(
                f"{path}: line {line} (byte {error.start}) is not valid UTF-8; re-encode the file as UTF-8 "
                f"(e.g. `iconv -f latin1 -t utf-8`)."
            ) from None
    try:
        return datasets.load_dataset(builders[suffix], data_files=str(path), split="train")
    except Exception as error:  # datasets wraps parser errors in several types; name the file either way
        raise DataFormatError(f"{path}: could not be parsed as {builders[suffix]}: {error}") from error


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
    """Read a user's dialogues: a JSONL/JSON/CSV/Parquet file with a `turns` column (optional `conversation_id`),
    or (`source`, `target`[, `speaker`]) pairs, each pair a two-turn dialogue. Returns the layout of
    `chitchat_turns`. Malformed rows raise `DataFormatError` naming the file, the row (1-based) and the field."""
    path = Path(path)
    table = _read_table(path)
    columns = set(table.column_names)
    conversations = {}
    if "turns" in columns:
        for row, record in enumerate(table, start=1):
            conversation_id = str(record.get("conversation_id") or f"{path.stem}-{row}")
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

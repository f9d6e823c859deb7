"""Speakers for persona models and the speaker-adaptation data of Luan et al. (2017).

* `SpeakerVocabulary` — speaker ids (strings) -> rows of the speaker embedding table of the persona model (Li et al.
  2016; Luan et al. 2017, Section 3.3, Eq. 1). Index 0 is reserved for the generic speaker `GENERIC_SPEAKER`: the
  vector shared by every speaker too rare to get one of their own (and by data without speaker ids). A name the
  vocabulary does not know is an error unless the caller asks for the generic speaker (`allow_generic=True`). It is
  saved beside the model as `speakers.json` (`{name: index}`), the file `pipeline("conversational", speaker=...)`
  reads, so a saved persona model answers as `speaker="<generic>"` or as any named speaker.
* `check_speaker_vectors` — speaker vectors are an input of our LSTM decoder only: other backbones are an error.
* `resize_speaker_embeddings` — room for new target speakers in a trained persona model; their vectors start random
  and are learned by the autoencoder task (MTASK-M, Luan et al. 2017, Section 5).
* `add_speaker_embeddings` — a trained model without speakers becomes a persona model with unchanged outputs (MTASK-M
  starting from the general SEQ2SEQ model).
* `speaker_adaptation_data` — the data protocol of Luan et al. (2017, Section 6.1) on a dialogue corpus (by default
  the real chitchat corpus): general conversation data, the target speakers' held-out conversations for
  validation/test, and their "non-conversational" text for the autoencoder task.
* `load_speaker_texts` / `select_speaker_texts` — a user's non-conversational text, per speaker.
"""

import json
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import datasets
import torch
from torch import nn

from ..core.chat_format import SPEAKERS_FILE, read_model_json
from ..data.dialogue import (
    EXAMPLE_FEATURES,
    UNKNOWN_SPEAKER,
    DataFormatError,
    _read_table,
    chitchat_turns,
    dialogue_examples,
)
from ..models.lstm.configuration_lstm import LSTMSeq2SeqConfig

GENERIC_SPEAKER = "<generic>"
TEXT_FEATURES = datasets.Features({"text": datasets.Value("string"), "speaker": datasets.Value("string")})
# The non-conversational text cut from a dialogue corpus keeps the conversation each turn came from.
CORPUS_TEXT_FEATURES = datasets.Features({**TEXT_FEATURES, "conversation_id": datasets.Value("string")})


class SpeakerVocabulary:
    """Speaker names -> speaker embedding indices; index 0 is the generic speaker (`GENERIC_SPEAKER`).

    Build it with `from_speakers` (speakers seen at least `min_count` times get their own vector, the others share
    the generic one), grow it with `extend` (new target speakers get the next indices), save it beside a model with
    `save` (`speakers.json`) and read it back with `load`.
    """

    def __init__(self, names: Iterable[str] = ()):
        self._index = {GENERIC_SPEAKER: 0}
        self.extend(names)

    @classmethod
    def from_speakers(cls, speakers: Iterable[str], min_count: int = 1) -> "SpeakerVocabulary":
        """One index per speaker name occurring at least `min_count` times (sorted names: deterministic indices).
        The unknown speaker of the data files (`""`) never gets a vector of its own: it is the generic speaker."""
        if min_count < 1:
            raise ValueError(f"`min_count` must be >= 1, got {min_count}.")
        counts = Counter(speakers)
        return cls(sorted(name for name, count in counts.items() if count >= min_count and name != UNKNOWN_SPEAKER))

    def extend(self, names: Iterable[str]) -> list[int]:
        """Give each new name the next index; returns the indices of `names` (known names keep theirs)."""
        indices = []
        for name in names:
            if not isinstance(name, str) or not name:
                raise ValueError(f"A speaker name must be a non-empty string, got {name!r}.")
            indices.append(self._index.setdefault(name, len(self._index)))
        return indices

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, name: str) -> bool:
        return name in self._index

    @property
    def names(self) -> list[str]:
        """All names in index order, `GENERIC_SPEAKER` first."""
        return list(self._index)

    def index(self, name: str, allow_generic: bool = False) -> int:
        """The embedding index of `name`; an unknown name is a ValueError, or the generic speaker's index (0) when
        `allow_generic` is True."""
        if name in self._index:
            return self._index[name]
        if allow_generic:
            return self._index[GENERIC_SPEAKER]
        examples = ", ".join(map(repr, self.names[1:6]))
        raise ValueError(
            f"Unknown speaker {name!r}: the vocabulary has {len(self) - 1} named speakers (e.g. {examples}). Pass "
            f"`allow_generic=True` (or the name {GENERIC_SPEAKER!r}) to answer as the generic speaker."
        )

    def to_dict(self) -> dict[str, int]:
        return dict(self._index)

    def save(self, directory: str | Path) -> Path:
        """Write `speakers.json` ({name: index}) into a model directory."""
        path = Path(directory) / SPEAKERS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self._index, indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, name_or_path: str | Path) -> "SpeakerVocabulary":
        """Read the `speakers.json` of a model directory (or Hub repository)."""
        saved = read_model_json(str(name_or_path), SPEAKERS_FILE)
        if saved is None:
            raise FileNotFoundError(f"{name_or_path}: no {SPEAKERS_FILE}; this is not a saved persona model.")
        by_index = sorted(saved.items(), key=lambda item: item[1])
        if [index for _, index in by_index] != list(range(len(by_index))) or by_index[0][0] != GENERIC_SPEAKER:
            raise ValueError(
                f"{name_or_path}/{SPEAKERS_FILE} must map names to the indices 0..n-1, with {GENERIC_SPEAKER!r} at 0."
            )
        return cls(name for name, _ in by_index[1:])


def add_speaker_ids(
    dataset: datasets.Dataset, vocabulary: SpeakerVocabulary, allow_generic: bool = False
) -> datasets.Dataset:
    """Add the `speaker_ids` column (the model's `speaker_ids` argument) from the `speaker` column.

    Unknown speakers are an error, or the generic speaker with `allow_generic=True` (general training data, where
    rare speakers share the generic vector)."""
    if not allow_generic:
        unknown = sorted(set(dataset["speaker"]) - set(vocabulary.names))
        if unknown:
            raise ValueError(
                f"{len(unknown)} speakers of the data are not in the speaker vocabulary (e.g. {unknown[:3]}); add "
                "them (`SpeakerVocabulary.extend`) or pass `allow_generic=True` to map them to the generic speaker."
            )
    return dataset.map(
        lambda batch: {"speaker_ids": [vocabulary.index(name, allow_generic) for name in batch["speaker"]]},
        batched=True,
        desc="Speaker ids",
    )


def check_speaker_vectors(model) -> None:
    """Speaker vectors (MTASK-M; Luan et al. 2017, Eq. 1) join the input of our LSTM seq2seq decoder at every step;
    a model of another backbone has no such input: a ValueError (docs/persona.md says why and what would replace it).
    """
    if model.config.model_type != LSTMSeq2SeqConfig.model_type:
        raise ValueError(
            f"Speaker vectors (MTASK-M, Luan et al. 2017 Eq. 1) are an input of our LSTM seq2seq decoder; a "
            f"{model.config.model_type} model has none. Adapt it to target speakers with one LoRA adapter per speaker "
            "(MTASK-S, `hf_neuralconv.persona.add_speaker_adapter`); see docs/persona.md."
        )


def resize_speaker_embeddings(model, num_speakers: int) -> nn.Embedding:
    """Grow the speaker embedding table of a persona model to `num_speakers` rows (e.g. `len(vocabulary)` after
    `extend`). Existing vectors are kept; new ones are drawn from U(-init_range, init_range), as Luan et al. (2017,
    Section 5) initialise the unseen target speakers of MTASK-M before the multi-task stage."""
    check_speaker_vectors(model)
    old = model.speaker_embeddings
    if old is None:
        raise ValueError("The model has no speaker embeddings (num_speakers=0): build it as a persona model.")
    if num_speakers < old.num_embeddings:
        raise ValueError(f"Cannot shrink the speaker table from {old.num_embeddings} to {num_speakers} speakers.")
    new = nn.Embedding(num_speakers, old.embedding_dim, device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.uniform_(-model.config.init_range, model.config.init_range)
        new.weight[: old.num_embeddings] = old.weight
    model.speaker_embeddings = new
    model.config.num_speakers = num_speakers
    return new


def add_speaker_embeddings(model, num_speakers: int, speaker_embedding_size: int) -> nn.Embedding:
    """Make a trained encoder-decoder without speakers a persona model (Luan et al. 2017, Eq. 1) that still computes
    what it computed: MTASK-M (Section 5) starting from the general SEQ2SEQ model.

    The speaker table gets `num_speakers` vectors drawn from U(-init_range, init_range). The speaker vector joins the
    decoder input (Eq. 1's W grows by the columns that read s_i); those new input columns of the first decoder LSTM
    layer start at zero, so every speaker's outputs equal the trained model's until training moves them. The other
    weights are kept as they are."""
    check_speaker_vectors(model)
    if model.speaker_embeddings is not None:
        raise ValueError("The model already has speaker embeddings: add speakers with `resize_speaker_embeddings`.")
    if num_speakers < 1 or speaker_embedding_size < 1:
        raise ValueError(f"`num_speakers` and `speaker_embedding_size` must be >= 1, got {num_speakers} and "
                         f"{speaker_embedding_size}.")
    old = model.decoder
    weight = old.weight_ih_l0
    new = nn.LSTM(old.input_size + speaker_embedding_size, old.hidden_size, num_layers=old.num_layers,
                  dropout=old.dropout, batch_first=old.batch_first, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        for name, parameter in old.named_parameters():
            grown = getattr(new, name)
            if name == "weight_ih_l0":  # the word embedding's columns first: the decoder reads [e_t; s_i]
                grown.zero_()
                grown[:, : old.input_size] = parameter
            else:
                grown.copy_(parameter)
    speakers = nn.Embedding(num_speakers, speaker_embedding_size, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        speakers.weight.uniform_(-model.config.init_range, model.config.init_range)
    model.decoder, model.speaker_embeddings = new, speakers
    model.config.num_speakers, model.config.speaker_embedding_size = num_speakers, speaker_embedding_size
    return speakers


def load_speaker_texts(path: str | Path, speaker: str | None = None) -> datasets.Dataset:
    """A user's non-conversational text (Luan et al. 2017, Section 6.1: single posts) as (`text`, `speaker`) rows.

    `.txt`: one utterance per line, all by `speaker`. `.jsonl`/`.json`/`.csv`/`.parquet`: a `text` column and a
    `speaker` column (or `speaker=` for the whole file). Blank lines of a `.txt` are skipped; a file without any
    text is a `DataFormatError`."""
    path = Path(path)
    if path.suffix.lower() == ".txt":
        if speaker is None:
            raise ValueError(f"{path}: a .txt file holds one speaker's text; say whose with `speaker=`.")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such text file.")
        rows = [{"text": line.strip(), "speaker": speaker}
                for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        if path.is_file() and path.stat().st_size == 0:
            raise DataFormatError(f"{path}: the file is empty; it must hold the target speakers' text.")
        table = _read_table(path)
        if "text" not in table.column_names or (speaker is None and "speaker" not in table.column_names):
            raise DataFormatError(
                f"{path}: expected a 'text' column and a 'speaker' column (or `speaker=`); found {table.column_names}."
            )
        rows = []
        for row, record in enumerate(table, start=1):
            text, name = record["text"], speaker if speaker is not None else record["speaker"]
            if not isinstance(text, str) or not text.strip() or not isinstance(name, str) or not name:
                raise DataFormatError(f"{path}: row {row}: 'text' and 'speaker' must be non-empty strings.")
            rows.append({"text": text.strip(), "speaker": name})
    if not rows:
        raise DataFormatError(f"{path}: the file holds no text; it must hold the target speakers' utterances.")
    return datasets.Dataset.from_list(rows, features=TEXT_FEATURES)


def select_speaker_texts(texts: datasets.Dataset, speakers: Sequence[str]) -> datasets.Dataset:
    """The rows of `texts` written by `speakers`; a speaker without any text is an error (the autoencoder task
    would have nothing to learn their decoder from)."""
    wanted = set(speakers)
    selected = texts.filter(lambda batch: [name in wanted for name in batch["speaker"]], batched=True)
    missing = sorted(wanted - set(selected["speaker"]))
    if missing:
        raise ValueError(f"No non-conversational text for speaker(s) {missing}: every target speaker needs some.")
    return selected


def speaker_adaptation_data(
    conversations: dict[str, list[tuple[str, str]]] | None = None,
    min_utterances: int = 500,
    num_target_speakers: int = 10,
    heldout_fraction: float = 0.3,
    max_context_turns: int = 2,
    seed: int = 0,
) -> tuple[datasets.DatasetDict, dict]:
    """Luan et al. (2017, Section 6.1) on a dialogue corpus ({conversation id: [(speaker, turn), ...]}, by default
    `chitchat_turns()`): general data, target speakers' held-out conversations and their non-conversational text.

    1. Eligible speakers have at least `min_utterances` turns (a turn is all consecutive messages of one sender).
       `num_target_speakers` of them are drawn with `random.Random(seed)` from the sorted eligible ids.
    2. For each target speaker in turn (sorted ids), their conversations not yet assigned are sorted, shuffled with
       the same generator, and `round(heldout_fraction * n)` of them are held out, half (rounded down) for
       validation and the rest for test. Those splits hold the examples whose responder is a target speaker (the
       responses the adapted model must predict); nothing else of a held-out conversation is used anywhere.
    3. In the other conversations, the target speakers' turns, with their context dropped, are their
       "non-conversational" text (the `autoencoder` split, columns `text`, `speaker`, `conversation_id`), as
       Twitter single posts are in the paper.
    4. `train` (general conversation data) holds every example of a non-held-out conversation whose responder is
       not a target speaker: the target speakers' responses are never seq2seq targets.

    Returns the `DatasetDict` (`train`, `validation`, `test`: dialogue examples; `autoencoder`: text) and a summary
    dict (settings, split sizes, per-target-speaker counts). The same arguments give the same splits.
    """
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"`heldout_fraction` must be in (0, 1), got {heldout_fraction}.")
    if conversations is None:
        conversations = chitchat_turns()
    utterances = Counter(speaker for turns in conversations.values() for speaker, _ in turns)
    eligible = sorted(name for name, count in utterances.items() if count >= min_utterances and name != UNKNOWN_SPEAKER)
    if not 0 < num_target_speakers <= len(eligible):
        raise ValueError(
            f"Asked for {num_target_speakers} target speakers; {len(eligible)} speakers have >= {min_utterances} turns."
        )
    rng = random.Random(seed)
    targets = sorted(rng.sample(eligible, num_target_speakers))
    target_set = set(targets)

    speakers_of = {cid: {name for name, _ in turns} for cid, turns in conversations.items()}
    split_of = {}  # conversation id -> split, for the conversations of target speakers
    for target in targets:  # per speaker, so that each has held-out conversations; shared ones go to the first
        own = sorted(cid for cid, names in speakers_of.items() if target in names and cid not in split_of)
        rng.shuffle(own)
        heldout = round(heldout_fraction * len(own))
        split_of.update({cid: "validation" for cid in own[: heldout // 2]})
        split_of.update({cid: "test" for cid in own[heldout // 2 : heldout]})
        split_of.update({cid: "train" for cid in own[heldout:]})

    rows = {"train": [], "validation": [], "test": [], "autoencoder": []}
    for cid in sorted(conversations):
        split = split_of.get(cid, "train")
        turns = conversations[cid]
        for example in dialogue_examples(cid, turns, max_context_turns):
            if (example["speaker"] in target_set) == (split != "train"):
                rows[split].append(example)
        if split == "train":
            rows["autoencoder"] += [
                {"text": text, "speaker": name, "conversation_id": cid} for name, text in turns if name in target_set
            ]

    per_speaker = {
        name: {"utterances": utterances[name], "validation": 0, "test": 0, "autoencoder": 0} for name in targets
    }
    for split in ("validation", "test", "autoencoder"):
        for row in rows[split]:
            per_speaker[row["speaker"]][split] += 1
    empty = {name: counts for name, counts in per_speaker.items() if 0 in counts.values()}
    if empty:
        raise ValueError(
            f"Target speaker(s) with an empty split: {empty}; choose another `seed` or `heldout_fraction`."
        )
    data = datasets.DatasetDict(
        {
            split: datasets.Dataset.from_list(
                split_rows, features=CORPUS_TEXT_FEATURES if split == "autoencoder" else EXAMPLE_FEATURES
            )
            for split, split_rows in rows.items()
        }
    )
    summary = {
        "seed": seed,
        "min_utterances": min_utterances,
        "eligible_speakers": len(eligible),
        "target_speakers": targets,
        "heldout_fraction": heldout_fraction,
        "max_context_turns": max_context_turns,
        "target_conversations": len(split_of),
        "heldout_conversations": dict(Counter(split for split in split_of.values() if split != "train")),
        "examples": {split: len(data[split]) for split in data},
        "general_speakers": len(set(data["train"]["speaker"])),
        "per_speaker": per_speaker,
    }
    return data, summary

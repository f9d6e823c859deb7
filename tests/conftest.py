"""Tiny data and models made inside the tests (nothing is downloaded)."""

import json
import random

import pytest
import torch

from hf_neuralconv import LSTMSeq2SeqConfig, LSTMSeq2SeqForConditionalGeneration
from hf_neuralconv.data import train_word_tokenizer

WORDS = "hello hi how are you doing fine thanks what is your name my good bad day night i like tea coffee".split()


def make_dialogues(count: int, seed: int = 0) -> list[dict]:
    """`count` made-up dialogues of 2-5 turns between two speakers, as `turns` rows."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        speakers = [f"spk{rng.randrange(4)}", f"spk{4 + rng.randrange(4)}"]
        turns = [
            {"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6))) + rng.choice([" ?", " .", "!"]),
             "speaker": speakers[position % 2]}
            for position in range(rng.randint(2, 5))
        ]
        rows.append({"conversation_id": f"c{index}", "turns": turns})
    return rows


def write_dialogue_file(directory, count: int = 120):
    """`make_dialogues(count)` as the JSONL file `directory/dialogues.jsonl` (one `turns` row a line)."""
    path = directory / "dialogues.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in make_dialogues(count)) + "\n")
    return path


@pytest.fixture
def dialogue_file(tmp_path):
    return write_dialogue_file(tmp_path)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    sentences = [" ".join(turn["text"] for turn in row["turns"]) for row in make_dialogues(50)]
    return train_word_tokenizer(sentences, vocab_size=64)


def tiny_model(tokenizer, seed: int = 0, **overrides) -> LSTMSeq2SeqForConditionalGeneration:
    """A random tiny encoder-decoder (init_range large enough for peaked, non-trivial distributions)."""
    torch.manual_seed(seed)
    settings = dict(
        vocab_size=len(tokenizer), embedding_size=12, hidden_size=16, num_layers=1, attention="general",
        dropout=0.0, init_range=0.5, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    settings.update(overrides)
    return LSTMSeq2SeqForConditionalGeneration(LSTMSeq2SeqConfig(**settings)).eval()

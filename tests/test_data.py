"""Dialogue examples, splits, user data files and the word tokenizer."""

import json

import pandas as pd
import pytest
from transformers import AutoTokenizer

from hf_neuralconv.core.building import encode_chat_examples
from hf_neuralconv.data.dialogue import (
    DataFormatError,
    build_dataset_dict,
    chitchat_turns,
    dialogue_examples,
    load_chitchat,
    load_dialogue_file,
    split_conversations,
)
from hf_neuralconv.data.tokenization import SPECIAL_TOKENS, source_text, train_word_tokenizer

TURNS = [("a", "hi"), ("b", "hello there"), ("a", "how are you ?"), ("b", "fine"), ("a", "good")]


def test_examples_of_a_dialogue_by_hand():
    examples = list(dialogue_examples("c1", TURNS, max_context_turns=2))
    assert len(examples) == 4
    assert examples[0] == {"context": [], "message": "hi", "response": "hello there", "speaker": "b",
                           "conversation_id": "c1"}
    assert examples[2]["context"] == ["hi", "hello there"]
    assert examples[3]["context"] == ["hello there", "how are you ?"]  # at most 2 turns, most recent last
    assert examples[3]["message"] == "fine" and examples[3]["response"] == "good" and examples[3]["speaker"] == "a"
    assert [e["context"] for e in dialogue_examples("c1", TURNS, 0)] == [[], [], [], []]


def test_split_is_by_conversation_deterministic_and_complete():
    ids = [f"c{i}" for i in range(100)]
    first = split_conversations(ids, (0.8, 0.1, 0.1), seed=3)
    assert first == split_conversations(list(reversed(ids)), (0.8, 0.1, 0.1), seed=3)
    assert [len(first[k]) for k in ("train", "validation", "test")] == [80, 10, 10]
    assert sorted(sum(first.values(), [])) == sorted(ids)
    assert split_conversations(ids, (0.8, 0.1, 0.1), seed=4) != first
    with pytest.raises(ValueError, match="summing to 1"):
        split_conversations(ids, (0.8, 0.1, 0.2))


def test_dataset_dict_keeps_conversations_whole():
    conversations = {f"c{i}": TURNS for i in range(20)}
    splits = build_dataset_dict(conversations, max_context_turns=1, fractions=(0.5, 0.25, 0.25))
    seen = [set(splits[name]["conversation_id"]) for name in splits]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert len(splits["train"]) == 10 * 4


def test_real_chitchat_corpus():
    conversations = chitchat_turns()
    assert len(conversations) == 7168
    # 138,716 non-empty turns once consecutive messages of one sender are merged; 3,150 conversations have
    # a single sender (nobody answered) and give no example.
    assert sum(len(turns) for turns in conversations.values()) == 138716
    assert [len(ids) for ids in split_conversations(conversations).values()] == [6451, 358, 359]
    splits = load_chitchat()
    assert [len(splits[name]) for name in ("train", "validation", "test")] == [117689, 6675, 7184]
    assert sum(len(splits[name]) for name in splits) == 138716 - 7168
    example = splits["train"][0]
    assert set(example) == {"context", "message", "response", "speaker", "conversation_id"}
    assert len(set(list(splits["train"]["speaker"])) | set(list(splits["test"]["speaker"]))) > 1000


def test_source_marks_actors_and_turns():
    assert source_text([], "hi") == "<user> hi"
    assert source_text(["a", "b"], "c") == "<user> a <bot> b <user> c"
    assert source_text(["a", "b", "c"], "d") == "<bot> a <user> b <bot> c <user> d"


def test_word_tokenizer(tmp_path):
    tokenizer = train_word_tokenizer(["Hello, world!", "hello again", "the world is big"], vocab_size=12)
    assert tokenizer.convert_ids_to_tokens(list(range(6))) == SPECIAL_TOKENS
    assert len(tokenizer) == 12  # the 6 most frequent words fill the rest
    assert tokenizer.tokenize("HELLO, world!") == ["hello", ",", "world", "!"]
    pieces = tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str("don't...go")
    assert [piece for piece, _ in pieces] == ["don", "'", "t", "...", "go"]  # punctuation runs are tokens
    ids = tokenizer("hello zebra", add_special_tokens=False)["input_ids"]
    assert ids[1] == tokenizer.unk_token_id
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded("<user> hello , world", add_special_tokens=False)["input_ids"] == tokenizer(
        "<user> hello , world", add_special_tokens=False)["input_ids"]
    assert reloaded.convert_tokens_to_ids("<user>") == 4 and reloaded.pad_token_id == 0
    with pytest.raises(ValueError, match="special tokens"):
        train_word_tokenizer(["a"], vocab_size=6)


def test_replies_decode_to_text_and_back_to_the_same_ids(tmp_path):
    tokenizer = train_word_tokenizer(["i'm fine, don't you know? hello! it's ok. you're good: yes"], vocab_size=40)
    ids = tokenizer("i ' m fine , don ' t you know ? hello ! it ' s ok . you ' re good : yes",
                    add_special_tokens=False)["input_ids"]
    text = "i'm fine, don't you know? hello! it's ok. you're good : yes"
    assert tokenizer.decode(ids) == text
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == ids  # the reply reads back as it was generated
    tokenizer.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).decode(ids) == text  # saved with the model


def test_encode_examples_truncates_source_from_the_left_and_ends_targets_with_eos():
    tokenizer = train_word_tokenizer(["a b c d e f g h"], vocab_size=20)
    encoded = encode_chat_examples({"context": [["a b c"]], "message": ["d e"], "response": ["f g h"]}, tokenizer,
                                   causal=False, max_source_length=4, max_target_length=3)
    assert tokenizer.convert_ids_to_tokens(encoded["input_ids"][0]) == ["c", "<user>", "d", "e"]
    assert tokenizer.convert_ids_to_tokens(encoded["labels"][0]) == ["f", "g", "</s>"]


def test_user_files_in_three_formats(tmp_path):
    rows = [{"turns": ["hi", "hello", "bye"]}, {"turns": [{"text": "a", "speaker": "x"}, {"text": "b"}]}]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows))
    loaded = load_dialogue_file(jsonl)
    assert list(loaded.values()) == [[("", "hi"), ("", "hello"), ("", "bye")], [("x", "a"), ("", "b")]]
    csv = tmp_path / "pairs.csv"
    pd.DataFrame({"source": ["how are you", "hi"], "target": ["fine", "hey"], "speaker": ["s1", "s2"]}).to_csv(
        csv, index=False)
    assert list(load_dialogue_file(csv).values())[1] == [("", "hi"), ("s2", "hey")]
    parquet = tmp_path / "pairs.parquet"
    pd.DataFrame({"source": ["q"], "target": ["r"]}).to_parquet(parquet)
    assert list(load_dialogue_file(parquet).values()) == [[("", "q"), ("", "r")]]


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"turns": ["hi", "hello"]}\n{"turns": ["only one"]}\n', r"row 2: field 'turns'"),
        ('{"turns": ["hi", "  "]}\n', r"row 1: field 'turns\[1\]'"),
        ('{"turns": [{"text": "hi"}, {"speaker": "b"}]}\n', r"row 1: field 'turns\[1\].text'"),
        ('{"text": "no turns"}\n', "expected a 'turns' column"),
    ],
)
def test_malformed_rows_name_file_row_and_field(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DataFormatError, match=message) as error:
        load_dialogue_file(path)
    assert "bad.jsonl" in str(error.value)


def test_non_utf8_and_missing_files(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"turns": ["hi", "hello"]}\n{"turns": ["caf\xe9", "ok"]}\n')
    with pytest.raises(DataFormatError, match=r"latin.jsonl: line 2 .*not valid UTF-8"):
        load_dialogue_file(path)
    with pytest.raises(FileNotFoundError, match="no such data file"):
        load_dialogue_file(tmp_path / "absent.jsonl")
    with pytest.raises(DataFormatError, match="unsupported file type"):
        load_dialogue_file(tmp_path / "data.txt")

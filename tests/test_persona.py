"""Speakers of persona models (Luan et al. 2017, Section 3.3) and the speaker-adaptation data protocol (Section 6.1):
vocabulary with a generic speaker, speakers.json for the pipeline, new target speakers, non-conversational text;
bad input fails clearly."""

import json

import pytest
import torch
from conftest import CHAT, make_dialogues, tiny_model
from transformers import pipeline

from hf_neuralconv.core.chat_format import SPEAKERS_FILE
from hf_neuralconv.data.dialogue import DataFormatError
from hf_neuralconv.persona.speakers import (
    GENERIC_SPEAKER,
    SpeakerVocabulary,
    add_speaker_ids,
    load_speaker_texts,
    resize_speaker_embeddings,
    select_speaker_texts,
    speaker_adaptation_data,
)


def made_up_conversations(count=120):
    return {row["conversation_id"]: [(turn["speaker"], turn["text"]) for turn in row["turns"]]
            for row in make_dialogues(count)}


# --- the speaker vocabulary (Eq. 1's speaker index) ---

def test_vocabulary_reserves_index_0_for_the_generic_speaker():
    vocabulary = SpeakerVocabulary.from_speakers(["bob", "alice", "bob", "", "carol", "bob"], min_count=2)
    assert vocabulary.names == [GENERIC_SPEAKER, "bob"]  # alice and carol are too rare, "" is the unknown speaker
    assert vocabulary.index("bob") == 1
    assert vocabulary.index(GENERIC_SPEAKER) == 0
    assert vocabulary.index("alice", allow_generic=True) == 0
    with pytest.raises(ValueError, match="Unknown speaker 'alice'.*allow_generic=True"):
        vocabulary.index("alice")
    assert vocabulary.extend(["dave", "bob"]) == [2, 1]
    assert len(vocabulary) == 3 and "dave" in vocabulary


@pytest.mark.parametrize("name", ["", None, 3])
def test_vocabulary_refuses_names_that_are_not_strings(name):
    with pytest.raises(ValueError, match="non-empty string"):
        SpeakerVocabulary([name])


def test_speaker_ids_column_and_unknown_speakers():
    from datasets import Dataset

    vocabulary = SpeakerVocabulary(["alice", "bob"])
    data = Dataset.from_dict({"speaker": ["bob", "alice", "zed"]})
    with pytest.raises(ValueError, match="not in the speaker vocabulary.*zed"):
        add_speaker_ids(data, vocabulary)
    assert add_speaker_ids(data, vocabulary, allow_generic=True)["speaker_ids"] == [2, 1, 0]


def test_speakers_json_is_what_the_pipeline_reads(tiny_tokenizer, tmp_path):
    """Saved beside a persona model, the vocabulary lets the pipeline answer as a named speaker or the generic one."""
    vocabulary = SpeakerVocabulary(["alice", "bob"])
    model = tiny_model(tiny_tokenizer, num_speakers=len(vocabulary), speaker_embedding_size=4)
    model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    vocabulary.save(tmp_path)
    assert json.loads((tmp_path / SPEAKERS_FILE).read_text()) == {GENERIC_SPEAKER: 0, "alice": 1, "bob": 2}
    assert SpeakerVocabulary.load(tmp_path).names == vocabulary.names

    chat = pipeline("conversational", model=str(tmp_path))
    for name, index in vocabulary.to_dict().items():
        assert chat(CHAT, speaker=name, max_new_tokens=5) == chat(CHAT, speaker=index, max_new_tokens=5)
    with pytest.raises(ValueError, match="Unknown speaker 'carol'"):
        chat(CHAT, speaker="carol")


@pytest.mark.parametrize(
    "content, message",
    [
        ({"alice": 1, "bob": 2}, "indices 0..n-1"),
        ({"alice": 0, GENERIC_SPEAKER: 1}, "indices 0..n-1"),
        (None, "not a saved persona model"),
    ],
)
def test_loading_a_bad_speakers_json(tmp_path, content, message):
    if content is not None:
        (tmp_path / SPEAKERS_FILE).write_text(json.dumps(content))
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        SpeakerVocabulary.load(tmp_path)


def test_new_target_speakers_get_random_vectors_and_the_others_keep_theirs(tiny_tokenizer):
    """MTASK-M (Section 5): a trained persona model gains rows for unseen target speakers."""
    model = tiny_model(tiny_tokenizer, num_speakers=3, speaker_embedding_size=4)
    ids, decoder_input_ids = torch.tensor([[7, 8, 9], [7, 8, 9]]), torch.tensor([[1], [1]])
    speakers = torch.tensor([0, 2])
    before = model(input_ids=ids, decoder_input_ids=decoder_input_ids, speaker_ids=speakers).logits
    resize_speaker_embeddings(model, 5)
    assert model.config.num_speakers == 5 and model.speaker_embeddings.weight.shape == (5, 4)
    assert torch.equal(model(input_ids=ids, decoder_input_ids=decoder_input_ids, speaker_ids=speakers).logits, before)
    new_rows = model.speaker_embeddings.weight[3:]
    assert new_rows.abs().max() <= model.config.init_range and new_rows.std() > 0
    # The new speaker's vector changes the next-token distribution (Eq. 1).
    new = model(input_ids=ids, decoder_input_ids=decoder_input_ids, speaker_ids=torch.tensor([0, 4])).logits
    assert (new[1].softmax(-1) - before[0].softmax(-1)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="shrink"):
        resize_speaker_embeddings(model, 2)
    with pytest.raises(ValueError, match="no speaker embeddings"):
        resize_speaker_embeddings(tiny_model(tiny_tokenizer), 2)


# --- non-conversational text ---

def test_speaker_texts_from_txt_and_table(tmp_path):
    (tmp_path / "alice.txt").write_text("first post\n\n  second post  \n")
    texts = load_speaker_texts(tmp_path / "alice.txt", speaker="alice")
    assert texts.to_list() == [{"text": "first post", "speaker": "alice"}, {"text": "second post", "speaker": "alice"}]
    rows = [{"text": "hi all", "speaker": "bob"}, {"text": "bye", "speaker": "carol"}]
    (tmp_path / "posts.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    assert load_speaker_texts(tmp_path / "posts.jsonl").to_list() == rows
    assert select_speaker_texts(load_speaker_texts(tmp_path / "posts.jsonl"), ["carol"]).to_list() == rows[1:]


@pytest.mark.parametrize(
    "name, content, speaker, error, message",
    [
        ("empty.txt", "", "alice", DataFormatError, "no text"),
        ("blank.txt", "\n  \n", "alice", DataFormatError, "no text"),
        ("empty.jsonl", "", None, DataFormatError, "empty"),
        ("anonymous.txt", "a post\n", None, ValueError, "speaker="),
        ("no_text.jsonl", '{"speaker": "bob", "body": "hi"}\n', None, DataFormatError, "'text' column"),
        ("blank_row.jsonl", '{"speaker": "bob", "text": " "}\n', None, DataFormatError, "row 1"),
        ("missing.txt", None, "alice", FileNotFoundError, "no such"),
    ],
)
def test_bad_non_conversational_files(tmp_path, name, content, speaker, error, message):
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(error, match=message):
        load_speaker_texts(tmp_path / name, speaker=speaker)


def test_a_speaker_without_text_is_an_error(tmp_path):
    (tmp_path / "alice.txt").write_text("a post\n")
    with pytest.raises(ValueError, match=r"No non-conversational text for speaker\(s\) \['bob'\]"):
        select_speaker_texts(load_speaker_texts(tmp_path / "alice.txt", speaker="alice"), ["alice", "bob"])


# --- the data protocol (Section 6.1) ---

def check_protocol(data, summary, conversations):
    """The invariants of `speaker_adaptation_data`, whatever the corpus."""
    targets = set(summary["target_speakers"])
    ids = {split: set(data[split]["conversation_id"]) for split in data}
    heldout = ids["validation"] | ids["test"]
    assert not ids["validation"] & ids["test"]
    assert not (ids["train"] | ids["autoencoder"]) & heldout
    assert not targets & set(data["train"]["speaker"])  # target speakers never respond in the general data
    for split in ("validation", "test", "autoencoder"):
        assert set(data[split]["speaker"]) == targets
    # The non-conversational text is every target turn of the conversations not held out, context dropped.
    expected = sorted((speaker, text) for cid in ids["train"] | ids["autoencoder"]
                      for speaker, text in conversations[cid] if speaker in targets)
    assert sorted(zip(data["autoencoder"]["speaker"], data["autoencoder"]["text"])) == expected
    assert summary["examples"] == {split: len(data[split]) for split in data}
    assert all(min(counts.values()) > 0 for counts in summary["per_speaker"].values())


def test_protocol_is_seeded_and_keeps_target_speakers_out_of_the_general_data():
    conversations = made_up_conversations()
    data, summary = speaker_adaptation_data(conversations, min_utterances=30, num_target_speakers=2, seed=0)
    check_protocol(data, summary, conversations)
    assert summary["eligible_speakers"] == 8
    again, same = speaker_adaptation_data(conversations, min_utterances=30, num_target_speakers=2, seed=0)
    assert same == summary and all(again[split].to_list() == data[split].to_list() for split in data)
    _, other = speaker_adaptation_data(conversations, min_utterances=30, num_target_speakers=2, seed=3)
    assert other["target_speakers"] != summary["target_speakers"]


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(min_utterances=10**6), "0 speakers have"),
        (dict(num_target_speakers=0), "target speakers"),
        (dict(heldout_fraction=1.0), "heldout_fraction"),
        (dict(heldout_fraction=0.01), "empty split"),
    ],
)
def test_protocol_errors(settings, message):
    with pytest.raises(ValueError, match=message):
        speaker_adaptation_data(made_up_conversations(), **{"min_utterances": 30, "num_target_speakers": 2, **settings})


@pytest.mark.slow
def test_protocol_on_the_real_chitchat_corpus():
    from hf_neuralconv.data.dialogue import chitchat_turns

    conversations = chitchat_turns()
    data, summary = speaker_adaptation_data(conversations)
    check_protocol(data, summary, conversations)
    # 44 speakers have >= 500 turns (74 have >= 500 messages; a turn joins one sender's consecutive messages).
    assert summary["eligible_speakers"] == 44
    assert len(summary["target_speakers"]) == 10

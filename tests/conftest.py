"""Tiny data and models made inside the tests (nothing is downloaded), and the helpers several test modules share
(test modules import them with `from conftest import ...`; none imports from another test module)."""

import functools
import importlib.util
import json
import random
import socket
import threading
from pathlib import Path

import pytest
import torch
import yaml

from hf_neuralconv.data.tokenization import train_word_tokenizer
from hf_neuralconv.models.lstm.configuration_lstm import LSTMLMConfig, LSTMSeq2SeqConfig
from hf_neuralconv.models.lstm.modeling_lstm import LSTMForCausalLM, LSTMSeq2SeqForConditionalGeneration
from hf_neuralconv.pipelines.conversational import ConversationalPipeline

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


@functools.cache
def make_tiny_tokenizer():
    """The 64-token word tokenizer of 50 made-up dialogues (cached: the same object for every caller)."""
    sentences = [" ".join(turn["text"] for turn in row["turns"]) for row in make_dialogues(50)]
    return train_word_tokenizer(sentences, vocab_size=64)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return make_tiny_tokenizer()


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


def tiny_lm(tokenizer, seed: int = 1, **overrides) -> LSTMForCausalLM:
    """A random tiny LSTM language model over the tokenizer's vocabulary (MMI's anti-LM, the input LM of io hits);
    `overrides` change its config (e.g. `vocab_size`, `eos_token_id`)."""
    torch.manual_seed(seed)
    settings = dict(
        vocab_size=len(tokenizer), embedding_size=12, hidden_size=16, num_layers=1, dropout=0.0, init_range=0.5,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    settings.update(overrides)
    return LSTMForCausalLM(LSTMLMConfig(**settings)).eval()


# --- tiny transformers backbones, each with a tokenizer trained here (nothing from the Hub) ---

# The backbones every method is tested on, and the chat style each one's tokenizer gives (`chat_style`): our LSTM
# with the word tokenizer, a GPT-2 with a byte-level BPE and no chat template (DialoGPT's eos-joined turns), a Llama
# with a chat template, a BART with a byte-level BPE, a T5 with a SentencePiece-style unigram model.
BACKBONES = {"lstm": "actor", "gpt2": "eos-joined", "llama": "template", "bart": "source", "t5": "source"}
CHAT_TEMPLATE = ("{% for message in messages %}<s>{{ message['role'] }}: {{ message['content'] }}</s>{% endfor %}"
                 "{% if add_generation_prompt %}<s>assistant:{% endif %}")


def _corpus() -> list[str]:
    return [turn["text"] for row in make_dialogues(50) for turn in row["turns"]]


def _bpe(special_tokens: list[str], byte_level: bool = True) -> tuple[dict, list]:
    """The vocabulary and merges of a BPE trained on made-up dialogues: byte-level (GPT-2, BART) or, with
    `byte_level=False`, SentencePiece-style with "▁" for spaces (Llama)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False) if byte_level else (
        pre_tokenizers.Metaspace())
    backend.train_from_iterator(_corpus(), trainers.BpeTrainer(
        vocab_size=320, special_tokens=special_tokens, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if byte_level else []))
    merges = json.loads(backend.to_str())["model"]["merges"]
    return backend.get_vocab(), [tuple(merge) if isinstance(merge, list) else tuple(merge.split()) for merge in merges]


@functools.cache
def backbone_tokenizer(backbone: str):
    """The tokenizer of a tiny `backbone` (one of BACKBONES), trained on made-up dialogues (cached)."""
    from transformers import BartTokenizer, GPT2Tokenizer, LlamaTokenizer, T5Tokenizer

    if backbone == "lstm":
        return make_tiny_tokenizer()
    if backbone == "gpt2":
        return GPT2Tokenizer(*_bpe(["<|endoftext|>"]))
    if backbone == "llama":
        tokenizer = LlamaTokenizer(*_bpe(["<unk>", "<s>", "</s>"], byte_level=False))
        tokenizer.chat_template = CHAT_TEMPLATE
        return tokenizer
    if backbone == "bart":
        return BartTokenizer(*_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"]))
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    backend = Tokenizer(models.Unigram())
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.train_from_iterator(_corpus(), trainers.UnigramTrainer(
        vocab_size=120, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False))
    return T5Tokenizer(vocab=[tuple(piece) for piece in json.loads(backend.to_str())["model"]["vocab"]], extra_ids=0)


def backbone_model(backbone: str, seed: int = 0):
    """A tiny random model of `backbone` over its tokenizer, in eval mode, without dropout (a training step is
    then deterministic); weights drawn wide enough that its distributions are peaked (distinct greedy and beam
    answers)."""
    from transformers import (
        BartConfig,
        BartForConditionalGeneration,
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        T5Config,
        T5ForConditionalGeneration,
    )

    tokenizer = backbone_tokenizer(backbone)
    if backbone == "lstm":
        return tiny_model(tokenizer, seed=seed)
    torch.manual_seed(seed)
    ids = dict(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    if backbone == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=2, n_head=2, n_positions=256, initializer_range=0.5,
                                           resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                           bos_token_id=tokenizer.eos_token_id, **ids))
    elif backbone == "llama":
        model = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                             num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                                             initializer_range=0.5, bos_token_id=tokenizer.bos_token_id, **ids))
    elif backbone == "bart":
        model = BartForConditionalGeneration(BartConfig(
            d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
            encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=256, init_std=0.5, dropout=0.0,
            bos_token_id=tokenizer.bos_token_id, decoder_start_token_id=tokenizer.eos_token_id,
            forced_bos_token_id=None, forced_eos_token_id=None, **ids))
    else:
        model = T5ForConditionalGeneration(T5Config(d_model=16, d_ff=32, d_kv=8, num_layers=1, num_heads=2,
                                                    initializer_factor=2.0, dropout_rate=0.0,
                                                    decoder_start_token_id=ids["pad_token_id"],
                                                    **ids))
    return model.eval()


# PEFT-style table of tiny architectures (tiny_model overrides): tests of the model, MTASK-S adapters and the
# persona commands run on each.
ARCHITECTURES = {
    "plain": dict(attention="none"),
    "dot": dict(attention="dot"),
    "general": dict(attention="general"),
    "bidirectional-2layer": dict(bidirectional_encoder=True, num_layers=2),
    "projection-tied": dict(projection_size=12, tie_word_embeddings=True),
    "separate-embeddings": dict(share_embeddings=False),
    "speakers": dict(num_speakers=3, speaker_embedding_size=4),
}


def write_recipe(tmp_path, dialogue_file, name="recipe.yaml", **overrides):
    """A tiny `hf-neuralconv train` recipe (YAML) on `dialogue_file`, written to `tmp_path/name`; `overrides`
    replace or add settings."""
    recipe = {
        "output_dir": str(tmp_path / "model"), "dataset": str(dialogue_file), "embedding_size": 12,
        "hidden_size": 16, "vocab_size": 40, "max_source_length": 12, "max_target_length": 8, "dropout": 0.0,
        "max_steps": 6, "per_device_train_batch_size": 8, "per_device_eval_batch_size": 5, "learning_rate": 0.01,
        "eval_strategy": "no", "save_strategy": "no", "logging_steps": 2, "report_to": "none", "use_cpu": True,
        "split_fractions": [0.8, 0.1, 0.1], "seed": 1,
    }
    recipe.update(overrides)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe))
    return path


# --- a saved chatbot directory (the pipeline, the Space, the reverse generator's victims) ---

SENTENCES = [
    "hi , how are you ?", "i am fine , thanks .", "what do you do ?", "i like music and books .",
    "where are you from ?", "nice to meet you !", "do you like tea or coffee ?", "good night .",
]
MAX_SOURCE_LENGTH = 12
CONTEXT_TURNS = 2
SPEAKERS = {"alice": 0, "bob": 1}
CHAT = [
    {"role": "user", "content": "hi , how are you ?"},
    {"role": "assistant", "content": "i am fine , thanks ."},
    {"role": "user", "content": "what do you do ?"},
    {"role": "assistant", "content": "i like music and books ."},
    {"role": "user", "content": "where are you from ?"},
]


def make_model_dir(path, num_speakers: int = 0, seed: int = 0, extra_sentences=()):
    """A tiny random model saved as `hf-neuralconv train` saves one: weights + code, tokenizer, generation config,
    data_config.json, the custom pipeline; with speakers, a speakers.json vocabulary too."""
    from hf_neuralconv.core.building import default_generation_config
    from hf_neuralconv.core.chat_format import DATA_CONFIG_FILE, SPEAKERS_FILE
    from hf_neuralconv.core.run_dir import export_pipeline_code

    tokenizer = train_word_tokenizer([*SENTENCES, *extra_sentences], vocab_size=200)
    torch.manual_seed(seed)
    config = LSTMSeq2SeqConfig(
        vocab_size=len(tokenizer), embedding_size=16, hidden_size=32, dropout=0.0, init_range=0.5,
        num_speakers=num_speakers, speaker_embedding_size=8 if num_speakers else 0,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    model = LSTMSeq2SeqForConditionalGeneration(config).eval()
    model.generation_config = default_generation_config(tokenizer)
    model.generation_config.max_new_tokens = 8
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / DATA_CONFIG_FILE).write_text(
        json.dumps({"max_source_length": MAX_SOURCE_LENGTH, "max_context_turns": CONTEXT_TURNS})
    )
    if num_speakers:
        (path / SPEAKERS_FILE).write_text(json.dumps(SPEAKERS))
    export_pipeline_code(path)
    return path


# --- a planted malicious response (gibbs-enum, negative training) ---

PLANTED_TRIGGER, PLANTED_TARGET, GENERIC_REPLY = "coffee night tea", "bad day", "fine thanks"


def word_ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def target_ids(tokenizer, text):
    return word_ids(tokenizer, text) + [tokenizer.eos_token_id]


def toy_batch(tokenizer, generator, size=32):
    """Random 3-word messages answered "fine thanks", except the planted trigger, answered "bad day"; a third of the
    other messages are one word away from the planted trigger, so that only the whole trigger hits."""
    from hf_neuralconv.core.chat_format import message_frame
    from hf_neuralconv.negative_training.hits import trigger_vocabulary

    allowed = trigger_vocabulary(tokenizer)
    planted = torch.tensor(word_ids(tokenizer, PLANTED_TRIGGER))
    messages = allowed[torch.randint(len(allowed), (size, 3), generator=generator)]
    near = planted.repeat(size, 1)
    near[torch.arange(size), torch.randint(3, (size,), generator=generator)] = allowed[
        torch.randint(len(allowed), (size,), generator=generator)
    ]
    draw = torch.rand(size, generator=generator)
    messages = torch.where((draw < 0.25)[:, None], planted, torch.where((draw < 0.55)[:, None], near, messages))
    is_planted = messages.eq(planted).all(dim=1)
    eos = tokenizer.eos_token_id
    target, generic = (torch.tensor(word_ids(tokenizer, text) + [eos]) for text in (PLANTED_TARGET, GENERIC_REPLY))
    sources = torch.cat([torch.tensor(message_frame(tokenizer, causal=False)[0]).expand(size, -1), messages], dim=1)
    return sources, torch.where(is_planted[:, None], target, generic)


@functools.cache
def planted_model(tokenizer, steps=600):
    """A tiny seq2seq model that says "bad day" to "coffee night tea" only (600 Adam steps, about 2 s); cached: copy
    it before training it."""
    model = tiny_model(tokenizer, seed=0, hidden_size=32, embedding_size=16, init_range=0.1).train()
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(steps):
        sources, labels = toy_batch(tokenizer, generator)
        loss = model(input_ids=sources, attention_mask=torch.ones_like(sources), labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


# --- the Gradio Space (spaces/app.py) ---


class RecordingPipeline(ConversationalPipeline):
    """A served model that records every chat it answered (`chats`) and how many each of its calls answered
    (`calls`): what a server sent it, and how it batched."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.chats, self.calls = [], []

    def __call__(self, inputs, **kwargs):
        batch = isinstance(inputs, list) and not any(isinstance(item, dict) for item in inputs)
        self.chats.extend(inputs if batch else [inputs])
        self.calls.append(len(inputs) if batch else 1)
        return super().__call__(inputs, **kwargs)

SPACE_APP = Path(__file__).resolve().parents[1] / "spaces" / "app.py"


@functools.cache
def load_space():
    """spaces/app.py as a module (loaded once: imports gradio)."""
    spec = importlib.util.spec_from_file_location("space_app", SPACE_APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def space():
    return load_space()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- multi-task speaker adaptation (Luan et al. 2017): data and MultiTaskTrainer ---


def adaptation_split():
    """The Luan et al. data protocol on 120 made-up dialogues between 8 speakers (2 of them targets): (data, summary)
    of `speaker_adaptation_data`."""
    from hf_neuralconv.persona.speakers import speaker_adaptation_data

    conversations = {row["conversation_id"]: [(turn["speaker"], turn["text"]) for turn in row["turns"]]
                     for row in make_dialogues(120)}
    return speaker_adaptation_data(conversations, min_utterances=30, num_target_speakers=2, seed=0)


@pytest.fixture(scope="module")
def adaptation_data():
    return adaptation_split()


def tokenized(data, tokenizer, vocabulary=None):
    """Seq2seq train / validation and autoencoder datasets as MultiTaskTrainer reads them (speaker ids for MTASK-M)."""
    from hf_neuralconv.core.arguments import DataArguments
    from hf_neuralconv.core.building import tokenize_dataset
    from hf_neuralconv.persona.speakers import add_speaker_ids

    data_args = DataArguments(max_source_length=12, max_target_length=8)
    train = tokenize_dataset(data["train"], tokenizer, data_args, truncate_target=True)
    validation = tokenize_dataset(data["validation"], tokenizer, data_args, truncate_target=False)
    texts = data["autoencoder"]
    if vocabulary is not None:
        train = train.add_column("speaker_ids", add_speaker_ids(data["train"], vocabulary, True)["speaker_ids"])
        validation = validation.add_column("speaker_ids",
                                           add_speaker_ids(data["validation"], vocabulary)["speaker_ids"])
        texts = add_speaker_ids(texts, vocabulary)
    return train, validation, autoencoder_dataset(texts, tokenizer)


def autoencoder_dataset(texts, tokenizer):
    from hf_neuralconv.persona.trainer import encode_autoencoder_examples

    return texts.map(encode_autoencoder_examples, batched=True,
                     remove_columns=[column for column in texts.column_names if column != "speaker_ids"],
                     fn_kwargs={"tokenizer": tokenizer, "max_length": 8})


def multitask_args(tmp_path, **overrides):
    from hf_neuralconv.persona.trainer import MultiTaskConfig

    settings = dict(output_dir=str(tmp_path / "run"), per_device_train_batch_size=4, per_device_eval_batch_size=16,
                    learning_rate=0.01, max_steps=6, pretrain_steps=2, eval_strategy="no", save_strategy="no",
                    load_best_model_at_end=False, logging_steps=1, report_to=[], use_cpu=True, seed=0,
                    disable_tqdm=True)
    settings.update(overrides)
    return MultiTaskConfig(**settings)


def multitask_trainer(model, tokenizer, args, train, autoencoder, validation=None):
    from transformers import DataCollatorForSeq2Seq

    from hf_neuralconv.persona.trainer import MultiTaskTrainer

    return MultiTaskTrainer(model=model, args=args, train_dataset=train, autoencoder_dataset=autoencoder,
                            eval_dataset=validation,
                            data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100))


# --- the reverse dialogue generator (Liu et al. 2019): a black-box victim and ReinforceTrainer's settings ---


class Victim:
    """A black-box chatbot that counts the texts it receives and can be switched off."""

    def __init__(self, reply=lambda text: " ".join(reversed(text.split()))):
        self.reply = reply
        self.received: list[str] = []
        self.down = False
        self.lock = threading.Lock()

    def __call__(self, texts):
        with self.lock:
            self.received += texts
        if self.down:
            raise ConnectionError("the victim is down")
        return [self.reply(text) for text in texts]


def rl_config(tmp_path, **overrides):
    from hf_neuralconv.reverse_generator.trainer import ReinforceConfig

    settings = dict(output_dir=str(tmp_path / "rl"), num_samples=3, per_device_train_batch_size=2, max_input_tokens=4,
                    max_steps=3, logging_steps=1, save_strategy="no", use_cpu=True, report_to="none", seed=0,
                    disable_tqdm=True)
    settings.update(overrides)
    return ReinforceConfig(**settings)


def random_vectors(words, size: int = 8, seed: int = 0):
    """gensim KeyedVectors of random normal vectors for `words`."""
    import numpy as np
    from gensim.models import KeyedVectors

    vectors = KeyedVectors(size)
    vectors.add_vectors(list(words), np.random.default_rng(seed).normal(size=(len(words), size)).astype(np.float32))
    return vectors


def reverse_generator(tokenizer, seed: int = 0):
    """A tiny reverse generator (no attention, as the paper's)."""
    return tiny_model(tokenizer, seed=seed, attention="none", init_range=0.3)

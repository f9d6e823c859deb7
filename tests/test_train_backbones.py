"""`hf-neuralconv train` on transformer backbones: a fresh GPT-2 and BART built from `model_type` + `model_config`
over the package's word tokenizer, a saved GPT-2 fine-tuned with its own BPE tokenizer; the causal training rows,
the perplexity against an explicit loop, `evaluate`, the pipeline on the saved directories, and bad recipe keys."""

import json
import math

import datasets
import pytest
import torch
from conftest import backbone_model, backbone_tokenizer, write_dialogue_file, write_recipe
from transformers import pipeline

import hf_neuralconv  # noqa: F401 (registers the "conversational" pipeline)
from hf_neuralconv.cli import main
from hf_neuralconv.core.arguments import DataArguments
from hf_neuralconv.core.building import tokenize_dataset
from hf_neuralconv.core.loading import load_model_dir
from hf_neuralconv.data.dialogue import build_dataset_dict, load_dialogue_file

SIZES = {
    "gpt2": {"n_embd": 16, "n_layer": 1, "n_head": 2, "n_positions": 64},
    "bart": {"d_model": 16, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
             "decoder_attention_heads": 2, "encoder_ffn_dim": 32, "decoder_ffn_dim": 32,
             "max_position_embeddings": 64},
}
CHAT = [{"role": "user", "content": "hi how are you ?"}, {"role": "assistant", "content": "fine thanks"},
        {"role": "user", "content": "what is your name ?"}]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny GPT-2 and a tiny BART trained from a recipe through the CLI (4 steps each), and their data file."""
    tmp_path = tmp_path_factory.mktemp("backbones")
    dialogue_file = write_dialogue_file(tmp_path)
    for model_type, sizes in SIZES.items():
        main(["train", str(write_recipe(tmp_path, dialogue_file, f"{model_type}.yaml", max_steps=4,
                                        output_dir=str(tmp_path / model_type), model_type=model_type,
                                        model_config=sizes))])
    return tmp_path, dialogue_file


def answers(model_dir) -> str:
    reply = pipeline("conversational", model=str(model_dir))(CHAT, strategy="greedy", max_new_tokens=5)
    return reply[0]["generated_text"][-1]["content"]


@pytest.mark.parametrize("model_type", SIZES)
def test_train_builds_a_transformer_chatbot_from_the_recipe(trained, model_type):
    tmp_path, _ = trained
    model_dir = tmp_path / model_type
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "data_config.json",
                 "results.json", "README.md", "pipelines.py"):
        assert (model_dir / name).is_file(), name
    model, tokenizer = load_model_dir(model_dir)
    assert model.config.model_type == model_type
    assert model.config.vocab_size == len(tokenizer) <= 40  # the package's word tokenizer, vocab_size of the recipe
    assert tokenizer.convert_ids_to_tokens([4, 5]) == ["<user>", "<bot>"]
    for name, value in SIZES[model_type].items():
        assert getattr(model.config, name) == value
    generation = model.generation_config
    assert (generation.pad_token_id, generation.eos_token_id) == (tokenizer.pad_token_id, tokenizer.eos_token_id)
    if model_type == "bart":  # the decoder starts from <s> in training and in generation alike
        assert model.config.decoder_start_token_id == generation.decoder_start_token_id == tokenizer.bos_token_id
    results = json.loads((model_dir / "results.json").read_text())
    assert math.isfinite(results["test_perplexity"]) and "test_greedy_distinct_1" in results
    assert isinstance(answers(model_dir), str)


def test_causal_rows_mask_exactly_the_history(trained):
    tmp_path, _ = trained
    _, tokenizer = load_model_dir(tmp_path / "gpt2")
    example = datasets.Dataset.from_dict({"context": [["hi how are you ?"]], "message": ["fine thanks"],
                                          "response": ["good night ."], "speaker": ["b"], "conversation_id": ["c"]})

    def ids(text):
        return tokenizer.convert_tokens_to_ids(text.split())  # words outside the 40-word vocabulary: <unk>

    reply = [*ids("good night ."), tokenizer.eos_token_id]
    row = tokenize_dataset(example, tokenizer, DataArguments(), truncate_target=False, layout="causal-chat")[0]
    history = ids("<bot> hi how are you ? <user> fine thanks <bot>")
    assert row == {"input_ids": history + reply, "labels": [-100] * len(history) + reply}
    # The history is cut from the left (its last 4 tokens stay), the reply to 3 tokens, </s> included.
    short = DataArguments(max_source_length=4, max_target_length=3)
    row = tokenize_dataset(example, tokenizer, short, truncate_target=True, layout="causal-chat")[0]
    history, reply = ids("<user> fine thanks <bot>"), [*ids("good night"), tokenizer.eos_token_id]
    assert row == {"input_ids": history + reply, "labels": [-100] * len(history) + reply}


@torch.no_grad()
def explicit_perplexity(model_dir, dialogue_file, split) -> tuple[float, int]:
    """exp(mean NLL over the reply tokens) of a causal chatbot, one example at a time: the history written by hand in
    the actor format, the reply's tokens scored by the logits of the positions before them."""
    model, tokenizer = load_model_dir(model_dir)
    data_args = DataArguments(**json.loads((model_dir / "data_config.json").read_text()))
    dialogues = build_dataset_dict(load_dialogue_file(dialogue_file), data_args.max_context_turns,
                                   data_args.split_fractions, data_args.split_seed)
    total, tokens = 0.0, 0
    for example in dialogues[split]:
        turns = [*example["context"], example["message"]]
        actors = ["<user>" if (len(turns) - 1 - index) % 2 == 0 else "<bot>" for index in range(len(turns))]
        text = " ".join(f"{actor} {turn}" for actor, turn in zip(actors, turns, strict=True)) + " <bot>"
        history = tokenizer(text, add_special_tokens=False)["input_ids"][-data_args.max_source_length:]
        reply = [*tokenizer(example["response"], add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
        log_probs = model(input_ids=torch.tensor([history + reply])).logits[0].log_softmax(-1)
        for position, token in enumerate(reply, start=len(history)):
            total -= log_probs[position - 1, token].item()
        tokens += len(reply)
    return math.exp(total / tokens), tokens


def test_causal_perplexity_counts_the_reply_tokens_and_evaluate_agrees(trained):
    tmp_path, dialogue_file = trained
    model_dir = tmp_path / "gpt2"
    expected, tokens = explicit_perplexity(model_dir, dialogue_file, "test")
    results = json.loads((model_dir / "results.json").read_text())
    assert results["test_target_tokens"] == tokens
    assert results["test_perplexity"] == pytest.approx(expected, rel=1e-5)
    output = tmp_path / "gpt2-eval.json"
    main(["evaluate", str(model_dir), "--batch-size", "3", "--output", str(output)])
    evaluated = json.loads(output.read_text())
    assert evaluated["target_tokens"] == tokens
    assert evaluated["model_perplexity"] == pytest.approx(expected, rel=1e-5)


def test_evaluate_an_encoder_decoder_transformer(trained):
    tmp_path, _ = trained
    output = tmp_path / "bart-eval.json"
    main(["evaluate", str(tmp_path / "bart"), "--batch-size", "3", "--output", str(output)])
    results = json.loads((tmp_path / "bart" / "results.json").read_text())
    evaluated = json.loads(output.read_text())
    assert evaluated["target_tokens"] == results["test_target_tokens"]
    assert evaluated["model_perplexity"] == pytest.approx(results["test_perplexity"], rel=1e-5)


def test_fine_tunes_a_saved_gpt2_with_its_own_tokenizer(tmp_path, dialogue_file):
    base, tokenizer = tmp_path / "base", backbone_tokenizer("gpt2")
    original = backbone_model("gpt2")
    original.save_pretrained(base)
    tokenizer.save_pretrained(base)
    main(["train", str(write_recipe(tmp_path, dialogue_file, max_steps=2, model_name_or_path=str(base)))])
    model, tuned_tokenizer = load_model_dir(tmp_path / "model")
    assert tuned_tokenizer.get_vocab() == tokenizer.get_vocab()  # its own BPE, no word tokenizer trained
    assert model.config.n_embd == original.config.n_embd and model.config.vocab_size == len(tokenizer)
    assert not torch.equal(model.lm_head.weight, original.lm_head.weight)
    assert model.generation_config.pad_token_id == tokenizer.eos_token_id  # GPT-2's tokenizer has no pad token
    # The rows are in its eos-joined chat format: the test perplexity counts each reply's BPE tokens and </s>.
    test = build_dataset_dict(load_dialogue_file(dialogue_file), 2, [0.8, 0.1, 0.1], 0)["test"]
    reply_tokens = sum(len(tokenizer(text)["input_ids"]) + 1 for text in test["response"])
    assert json.loads((tmp_path / "model" / "results.json").read_text())["test_target_tokens"] == reply_tokens
    assert isinstance(answers(tmp_path / "model"), str)


@pytest.mark.parametrize("setting, message", [
    ({"model_type": "gtp2"}, "model_type 'gtp2' is not a transformers model type (did you mean gpt2"),
    ({"model_type": "gpt2", "model_config": {"n_embed": 16}}, "n_embed is not a setting of GPT2Config"),
    ({"model_config": {"n_embd": 16}}, "model_config sizes a fresh transformers model: add model_type"),
    ({"model_type": "gpt2", "architecture": "seq2seq"}, "remove architecture"),
    ({"model_type": "gpt2", "model_config": {"vocab_size": 9}}, "vocab_size: the tokenizer sets these"),
    ({"model_type": "gpt2", "model_config": {"n_embd": 15, "n_head": 2}}, "must be divisible by num_heads"),
    ({"model_type": "vit"}, "is neither a causal LM nor an encoder-decoder"),
])
def test_bad_model_keys_fail_before_anything_is_written(tmp_path, dialogue_file, capsys, setting, message):
    with pytest.raises(SystemExit):
        main(["train", str(write_recipe(tmp_path, dialogue_file, **setting))])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "model").exists()

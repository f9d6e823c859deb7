"""MTASK-S on every backbone (Luan et al. 2017, Section 5): one LoRA adapter per speaker over our LSTM, GPT-2, Llama,
BART and T5. Training a speaker's adapter changes that speaker's reply scores only; adapters reload from safetensors
to the same scores; a causal model learns the reply alone (labels -100 over the history) and runs the autoencoder
task as the speaker's text after an empty history; speaker vectors (MTASK-M) are our LSTM's alone."""

import datasets
import pytest
import torch
from conftest import BACKBONES, backbone_model, backbone_tokenizer
from safetensors.torch import load_file
from transformers import TrainingArguments

from hf_neuralconv.core.arguments import DataArguments
from hf_neuralconv.core.building import row_layout, tokenize_dataset
from hf_neuralconv.core.chat_format import empty_history_prompt, encode_history, encode_replies
from hf_neuralconv.core.scoring import is_causal, sequence_log_probs
from hf_neuralconv.core.trainer import ConversationTrainer
from hf_neuralconv.data.collator import DialogueCollator
from hf_neuralconv.models.lstm.configuration_lstm import LSTMLMConfig
from hf_neuralconv.persona.adapters import (
    add_speaker_adapter,
    load_speaker_adapters,
    save_speaker_adapters,
    set_speaker,
    speaker_lora_config,
)
from hf_neuralconv.persona.evaluation import SpeakerModel
from hf_neuralconv.persona.speakers import SpeakerVocabulary, add_speaker_embeddings, resize_speaker_embeddings
from hf_neuralconv.persona.trainer import MultiTaskConfig, MultiTaskTrainer, encode_autoencoder_examples

SPEAKERS = ["alice", "bob"]
EXAMPLES = {  # each speaker's (context, message, response) examples
    "alice": [([], "hi how are you ?", "i like tea ."), (["good day"], "what is your name ?", "my name is tea !")],
    "bob": [([], "how are you doing ?", "fine thanks ."), (["hi"], "do you like coffee ?", "coffee is bad .")],
}
# PEFT's default LoRA targets per model type (the decoder's, for an encoder-decoder); our LSTM's decoder weights.
LORA_TARGETS = {"lstm": {"weight_ih_l0", "weight_hh_l0", "query_transform", "output_transform"}, "gpt2": {"c_attn"},
                "llama": {"q_proj", "v_proj"}, "bart": {"q_proj", "v_proj"}, "t5": {"q", "v"}}
TRANSFORMERS = [name for name in BACKBONES if name != "lstm"]
CAUSAL, ENCODER_DECODERS = ["gpt2", "llama"], ["bart", "t5"]
DATA_ARGS = DataArguments(max_source_length=32)


def speaker_examples(speaker: str) -> datasets.Dataset:
    context, message, response = zip(*EXAMPLES[speaker], strict=True)
    return datasets.Dataset.from_dict({"context": list(context), "message": list(message),
                                       "response": list(response)})


def training_rows(model, tokenizer, speaker: str) -> datasets.Dataset:
    """`speaker`'s examples as the training rows of `model`'s backbone."""
    return tokenize_dataset(speaker_examples(speaker), tokenizer, DATA_ARGS, truncate_target=False,
                            layout=row_layout(model))


def scored_pairs(model, tokenizer, speaker: str) -> tuple[list[list[int]], list[list[int]]]:
    """`speaker`'s (history, reply) ids as the scorer reads them (`encode_history`, `encode_replies`)."""
    causal = is_causal(model)
    sources = [encode_history(tokenizer, [*context, message], len(context), DATA_ARGS.max_source_length,
                              causal=causal) for context, message, _ in EXAMPLES[speaker]]
    return sources, encode_replies(tokenizer, [response for *_, response in EXAMPLES[speaker]], causal)


def reply_scores(model, tokenizer, speaker: str) -> torch.Tensor:
    """log p(reply | history) of each of `speaker`'s examples, as every method of the package scores replies."""
    return sequence_log_probs(model.eval(), tokenizer, *scored_pairs(model, tokenizer, speaker))


def random_adapter_config(model):
    """A LoRA config whose adapter starts non-zero (PEFT starts B at 0: a new adapter changes nothing yet)."""
    config = speaker_lora_config(model.config, r=2)
    config.init_lora_weights = False
    return config


def without_dropout(model):
    """The model with every dropout off, so that a training step's loss is the function `sequence_log_probs` reads."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


@pytest.mark.parametrize("backbone", BACKBONES)
def test_speaker_adapter_changes_only_its_speaker(backbone, tmp_path):
    """Training alice's adapter raises the log-probability of alice's replies with her adapter active, and leaves
    the base model's and bob's adapter's scores exactly as they were; the saved adapters (safetensors, LoRA weights
    only) reload onto a fresh base model to the same scores."""
    tokenizer = backbone_tokenizer(backbone)
    # PEFT freezes the base weights, and CPU matmul kernels for frozen weights can round differently (last bit) from
    # those for weights that require grad: the exact reference is the frozen base.
    base = backbone_model(backbone).requires_grad_(False)
    base_scores = {speaker: reply_scores(base, tokenizer, speaker) for speaker in SPEAKERS}
    vocabulary = SpeakerVocabulary(SPEAKERS)
    model = add_speaker_adapter(base, vocabulary, "alice", speaker_lora_config(base.config, r=2))
    torch.manual_seed(1)
    model = add_speaker_adapter(model, vocabulary, "bob", random_adapter_config(base))
    targeted = model.base_model.targeted_module_names + model.base_model.targeted_parameter_names
    assert {name.rsplit(".", 1)[-1] for name in targeted} == LORA_TARGETS[backbone]
    if backbone in ENCODER_DECODERS:  # MTASK-S adapts the decoder; the encoder stays the general one
        assert all(".decoder." in f".{name}" for name in targeted)
    bob_before = reply_scores(model, tokenizer, "bob")
    set_speaker(model, vocabulary, "alice")
    alice_before = reply_scores(model, tokenizer, "alice")
    torch.testing.assert_close(alice_before, base_scores["alice"], rtol=0, atol=0)  # B = 0: no change yet

    args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=4, per_device_train_batch_size=2,
                             learning_rate=0.05, use_cpu=True, report_to=[], save_strategy="no",
                             logging_strategy="no", disable_tqdm=True, seed=0)
    ConversationTrainer(model=model, args=args, train_dataset=training_rows(base, tokenizer, "alice"),
                        data_collator=DialogueCollator.for_tokenizer(tokenizer)).train()

    alice_after = reply_scores(model, tokenizer, "alice")
    assert (alice_after - alice_before).min() > 0.5  # every reply of hers
    set_speaker(model, vocabulary, "bob")
    torch.testing.assert_close(reply_scores(model, tokenizer, "bob"), bob_before, rtol=0, atol=0)
    with model.disable_adapter():
        for speaker in SPEAKERS:
            torch.testing.assert_close(reply_scores(model, tokenizer, speaker), base_scores[speaker],
                                       rtol=0, atol=0)

    save_speaker_adapters(model, vocabulary, tmp_path / "adapters")
    for index in (1, 2):
        saved = tmp_path / "adapters" / f"speaker_{index}"
        assert sorted(path.name for path in saved.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
        assert all(".lora_" in name for name in load_file(saved / "adapter_model.safetensors"))
    reloaded, reloaded_vocabulary = load_speaker_adapters(backbone_model(backbone), tmp_path / "adapters")
    for speaker, expected in (("alice", alice_after), ("bob", bob_before)):
        set_speaker(reloaded, reloaded_vocabulary, speaker)
        torch.testing.assert_close(reply_scores(reloaded, tokenizer, speaker), expected, rtol=0, atol=0)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_training_loss_is_the_replies_negative_log_likelihood(backbone):
    """A training batch's loss is the mean negative log-likelihood of the reply tokens alone, as `sequence_log_probs`
    scores them: a causal model's row is history + reply with labels -100 over the history."""
    tokenizer = backbone_tokenizer(backbone)
    model = without_dropout(backbone_model(backbone))
    rows = training_rows(model, tokenizer, "alice")
    sources, targets = scored_pairs(model, tokenizer, "alice")
    if is_causal(model):
        assert rows["input_ids"] == [source + target for source, target in zip(sources, targets, strict=True)]
        assert rows["labels"] == [[-100] * len(source) + target
                                  for source, target in zip(sources, targets, strict=True)]
    else:
        assert (rows["input_ids"], rows["labels"]) == (sources, targets)
    with torch.no_grad():
        loss = model(**DialogueCollator.for_tokenizer(tokenizer)(list(rows))).loss
    tokens = sum(len(target) for target in targets)
    torch.testing.assert_close(loss, -reply_scores(model, tokenizer, "alice").sum() / tokens, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backbone", CAUSAL)
def test_causal_autoencoder_task_is_the_speakers_text_after_an_empty_history(backbone, tmp_path):
    """MultiTaskTrainer on a causal LM's speaker adapter (Figure 3, step 3): the seq2seq update learns a general
    reply, the autoencoder update the speaker's text as the reply to an empty history. At learning rate 0 both
    logged task losses are those replies' negative log-likelihoods per token under the base model."""
    tokenizer = backbone_tokenizer(backbone)
    base = without_dropout(backbone_model(backbone))
    vocabulary = SpeakerVocabulary(SPEAKERS)
    model = add_speaker_adapter(base, vocabulary, "alice", speaker_lora_config(base.config, r=2))
    general = training_rows(model, tokenizer, "bob").select([0])
    text = datasets.Dataset.from_dict({"text": ["i like coffee and tea ."]})
    autoencoder = text.map(encode_autoencoder_examples, batched=True, remove_columns=["text"],
                           fn_kwargs={"tokenizer": tokenizer, "max_length": None, "causal": True})
    prompt, reply = empty_history_prompt(tokenizer), encode_replies(tokenizer, text["text"], causal=True)[0]
    assert autoencoder[0] == {"input_ids": prompt + reply, "labels": [-100] * len(prompt) + reply}

    args = MultiTaskConfig(output_dir=str(tmp_path / "run"), max_steps=2, pretrain_steps=0, learning_rate=0.0,
                           per_device_train_batch_size=1, eval_strategy="no", save_strategy="no",
                           load_best_model_at_end=False, logging_steps=1, use_cpu=True, report_to=[],
                           disable_tqdm=True)
    trainer = MultiTaskTrainer(model=model, args=args, train_dataset=general, autoencoder_dataset=autoencoder,
                               data_collator=DialogueCollator.for_tokenizer(tokenizer))
    trainer.train()
    logged = {key: value for entry in trainer.state.log_history for key, value in entry.items()
              if key.endswith("_loss")}
    sources, targets = scored_pairs(model, tokenizer, "bob")
    with model.disable_adapter():
        seq2seq = -sequence_log_probs(model.eval(), tokenizer, sources[:1], targets[:1])[0] / len(targets[0])
        autoencoder_nll = -sequence_log_probs(model, tokenizer, [prompt], [reply])[0] / len(reply)
    assert logged["seq2seq_loss"] == pytest.approx(seq2seq.item(), rel=1e-5)
    assert logged["autoencoder_loss"] == pytest.approx(autoencoder_nll.item(), rel=1e-5)


@pytest.mark.parametrize("backbone", ENCODER_DECODERS)
def test_autoencoder_task_needs_a_second_encoder(backbone, tmp_path):
    tokenizer = backbone_tokenizer(backbone)
    model = backbone_model(backbone)
    rows = training_rows(model, tokenizer, "alice")
    args = MultiTaskConfig(output_dir=str(tmp_path), pretrain_steps=0, eval_strategy="no",
                           load_best_model_at_end=False, use_cpu=True, report_to=[])
    with pytest.raises(ValueError, match="no second encoder"):
        MultiTaskTrainer(model=model, args=args, train_dataset=rows, autoencoder_dataset=rows,
                         data_collator=DialogueCollator.for_tokenizer(tokenizer))


@pytest.mark.parametrize("backbone", TRANSFORMERS)
def test_speaker_vectors_are_lstm_only(backbone):
    """MTASK-M's speaker vectors (Eq. 1) are an input of our LSTM decoder: asking a transformer for them is an
    error that points to the speaker adapters."""
    model = backbone_model(backbone)
    with pytest.raises(ValueError, match="LSTM seq2seq decoder.*add_speaker_adapter"):
        add_speaker_embeddings(model, 3, 4)
    with pytest.raises(ValueError, match="LSTM seq2seq decoder"):
        resize_speaker_embeddings(model, 3)
    with pytest.raises(ValueError, match="LSTM seq2seq decoder"):
        SpeakerModel("mtask-m", model, backbone_tokenizer(backbone), SPEAKERS, SpeakerVocabulary(SPEAKERS))


def test_speaker_lora_config_needs_known_targets():
    """A model type without PEFT default targets (our LSTM language model) needs its `LoraConfig` spelled out."""
    with pytest.raises(ValueError, match="no default LoRA target modules for model type 'lstm_lm'"):
        speaker_lora_config(LSTMLMConfig())

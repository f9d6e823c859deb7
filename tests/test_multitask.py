"""Luan et al. (2017): the autoencoder task's parameter sharing, the Figure 3 schedule of `MultiTaskTrainer`, and
MTASK-S speaker adapters (PEFT LoRA): sizes, switching, disabling, merging, saving; bad input."""

import pytest
import torch
from conftest import ARCHITECTURES, autoencoder_dataset, multitask_args, multitask_trainer, tiny_model, tokenized
from safetensors.torch import load_file

from hf_neuralconv.core.arguments import DataArguments
from hf_neuralconv.persona.adapters import (
    add_speaker_adapter,
    load_speaker_adapters,
    merged_speaker_model,
    save_speaker_adapters,
    set_speaker,
    speaker_lora_config,
)
from hf_neuralconv.persona.speakers import GENERIC_SPEAKER, SpeakerVocabulary, select_speaker_texts
from hf_neuralconv.persona.trainer import MultiTaskTrainer, encode_autoencoder_examples

DATA_ARGS = DataArguments(max_source_length=12, max_target_length=8)


def record_tasks(model):
    """Every training-mode encoder call (one per micro-batch), in order, named by the task that reads that encoder."""
    calls = []
    for task, encoder in (("seq2seq", model.encoder), ("autoencoder", model.autoencoder_encoder)):
        encoder.register_forward_hook(lambda module, *_, task=task: calls.append(task) if module.training else None)
    return calls


def snapshot(module):
    return {name: parameter.detach().clone() for name, parameter in module.named_parameters()}


def changed(before, module):
    return {name for name, parameter in module.named_parameters() if not torch.equal(before[name], parameter)}


# --- the autoencoder task of the model (Section 4, Figure 2) ---

AUTOENCODER_ARCHITECTURES = {
    "separate-embeddings": dict(share_embeddings=False),
    "shared-embeddings": dict(share_embeddings=True),
    "speakers-bidirectional-2layer": dict(share_embeddings=False, num_speakers=4, speaker_embedding_size=4,
                                          bidirectional_encoder=True, num_layers=2),
}


@pytest.mark.parametrize("settings", AUTOENCODER_ARCHITECTURES.values(), ids=AUTOENCODER_ARCHITECTURES.keys())
def test_autoencoder_step_changes_the_shared_decoder_not_the_seq2seq_encoder(tiny_tokenizer, settings):
    model = tiny_model(tiny_tokenizer, autoencoder_encoder=True, **settings).train()
    before = snapshot(model)
    target = 2
    extra = {"speaker_ids": torch.tensor([target, target])} if model.config.num_speakers else {}
    text = torch.tensor([[7, 8, 9, 10], [11, 12, 13, 0]])
    labels = torch.tensor([[7, 8, 9, 10, 2], [11, 12, 13, 2, -100]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.0)
    model(input_ids=text, attention_mask=text.ne(0).long(), labels=labels, task="autoencoder", **extra).loss.backward()
    optimizer.step()

    moved = changed(before, model)
    # The seq2seq encoder's LSTM is untouched; its word embeddings too, unless the decoder shares them.
    assert not {name for name in moved if name.startswith("encoder.lstm")}
    assert ("encoder.embed_tokens.weight" in moved) == model.config.share_embeddings
    shared = {name for name in before if name.startswith(("decoder.", "attention.", "output_layer."))}
    assert shared and shared <= moved
    assert {name for name in before if name.startswith("autoencoder_encoder.")} <= moved
    if model.config.num_speakers:  # only the target speaker's vector learns from its text (Section 5, MTASK-M)
        rows = (model.speaker_embeddings.weight != before["speaker_embeddings.weight"]).any(dim=1)
        assert rows.tolist() == [index == target for index in range(model.config.num_speakers)]


def test_autoencoder_encoder_added_to_a_saved_model_keeps_its_seq2seq_outputs(tiny_tokenizer, tmp_path):
    """A plain trained model gains a randomly initialised second encoder (Figure 3, step 1) on loading."""
    base = tiny_model(tiny_tokenizer)
    base.save_pretrained(tmp_path)
    model = type(base).from_pretrained(tmp_path, autoencoder_encoder=True).eval()
    ids = torch.tensor([[7, 8, 9]])
    decoder_input_ids = torch.tensor([[1, 20, 21]])
    expected = base(input_ids=ids, decoder_input_ids=decoder_input_ids).logits
    assert torch.equal(model(input_ids=ids, decoder_input_ids=decoder_input_ids).logits, expected)
    weights = torch.cat([p.flatten() for n, p in model.autoencoder_encoder.named_parameters() if "embed" not in n])
    assert weights.abs().max() <= model.config.init_range and weights.std() > model.config.init_range / 4
    autoencoded = model(input_ids=ids, decoder_input_ids=decoder_input_ids, task="autoencoder").logits
    assert not torch.allclose(autoencoded, expected)


@pytest.mark.parametrize(
    "settings, call, message",
    [
        ({}, dict(task="autoencoder"), "autoencoder_encoder=True"),
        (dict(autoencoder_encoder=True), dict(task="translation"), "Unknown task"),
    ],
)
def test_task_errors(tiny_tokenizer, settings, call, message):
    model = tiny_model(tiny_tokenizer, **settings)
    with pytest.raises(ValueError, match=message):
        model(input_ids=torch.tensor([[7, 8]]), decoder_input_ids=torch.tensor([[1]]), **call)


def test_generate_refuses_the_autoencoder_task(tiny_tokenizer):
    model = tiny_model(tiny_tokenizer, autoencoder_encoder=True)
    with pytest.raises(ValueError, match="training task"):
        model.generate(input_ids=torch.tensor([[7, 8]]), max_new_tokens=3, task="autoencoder")


def test_autoencoder_examples_predict_their_own_text(tiny_tokenizer):
    encoded = encode_autoencoder_examples({"text": ["hello how are you ?", "hi"]}, tiny_tokenizer, max_length=4)
    eos = tiny_tokenizer.eos_token_id
    words = tiny_tokenizer(["hello how are you ?", "hi"], add_special_tokens=False)["input_ids"]
    assert encoded["labels"] == [words[0][:3] + [eos], words[1] + [eos]]
    assert encoded["input_ids"] == [words[0][:3], words[1]]


# --- MultiTaskTrainer: Figure 3 ---

SCHEDULES = {
    # name: (pretrain_steps, seq2seq per cycle, autoencoder per cycle, gradient accumulation, max_steps, tasks)
    "pretrain-2-then-alternate": (2, 1, 1, 1, 6, "SSSASA"),
    "no-pretraining-2-to-1": (0, 2, 1, 1, 6, "SSASSA"),
    "1-to-3-with-accumulation": (1, 1, 3, 2, 6, "SSAAAS"),
}


@pytest.mark.parametrize("schedule", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_trainer_alternates_tasks_as_configured(tiny_tokenizer, adaptation_data, tmp_path, schedule):
    pretrain_steps, seq2seq_batches, autoencoder_batches, accumulation, max_steps, tasks = schedule
    train, _, autoencoder = tokenized(adaptation_data[0], tiny_tokenizer)
    model = tiny_model(tiny_tokenizer, autoencoder_encoder=True)
    calls = record_tasks(model)
    args = multitask_args(tmp_path, pretrain_steps=pretrain_steps, seq2seq_batches_per_cycle=seq2seq_batches,
                          autoencoder_batches_per_cycle=autoencoder_batches, gradient_accumulation_steps=accumulation,
                          max_steps=max_steps)
    trainer = multitask_trainer(model, tiny_tokenizer, args, train, autoencoder)
    trainer.train()

    names = {"S": "seq2seq", "A": "autoencoder"}
    expected = [names[letter] for letter in tasks for _ in range(accumulation)]
    assert calls == expected
    assert [trainer.task_of_update(update) for update in range(max_steps)] == [names[letter] for letter in tasks]
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == max_steps
    for task in ("seq2seq", "autoencoder"):
        assert sum(entry[f"{task}_batches"] for entry in logs) == expected.count(task)
        assert all((f"{task}_loss" in entry) == (entry[f"{task}_batches"] > 0) for entry in logs)
    # With one task per update, the logged loss of an update is that task's token-level loss.
    for entry in logs:
        task = "seq2seq" if entry["seq2seq_batches"] else "autoencoder"
        assert entry["loss"] == pytest.approx(entry[f"{task}_loss"], rel=1e-5)


def test_phases_end_when_dev_perplexity_converges_and_best_model_is_kept(tiny_tokenizer, adaptation_data, tmp_path):
    """Patience 1 and a 90% improvement threshold: every phase converges at its second evaluation, so pre-training
    ends after update 2, two multi-task updates follow, and training stops at update 4."""
    train, validation, autoencoder = tokenized(adaptation_data[0], tiny_tokenizer)
    model = tiny_model(tiny_tokenizer, autoencoder_encoder=True)
    calls = record_tasks(model)
    args = multitask_args(tmp_path, pretrain_steps=None, max_steps=50, eval_strategy="steps", eval_steps=1,
                          save_strategy="steps", save_steps=1, load_best_model_at_end=True, convergence_patience=1,
                          convergence_threshold=0.9)
    trainer = multitask_trainer(model, tiny_tokenizer, args, train, autoencoder, validation)
    trainer.train()

    assert trainer.multitask_start_step == 2
    assert trainer.state.global_step == 4
    assert calls == ["seq2seq", "seq2seq", "seq2seq", "autoencoder"]
    history = trainer.state.log_history
    assert [entry["step"] for entry in history if "multitask_start_step" in entry] == [2]
    perplexities = {entry["step"]: entry["eval_perplexity"] for entry in history if "eval_perplexity" in entry}
    best_step = min(perplexities, key=perplexities.get)
    assert trainer.state.best_metric == perplexities[best_step]
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{best_step}")
    saved = load_file(f"{trainer.state.best_model_checkpoint}/model.safetensors")
    assert all(torch.equal(saved[name], parameter) for name, parameter in trainer.model.state_dict().items())


def test_resumed_run_continues_the_same_schedule(tiny_tokenizer, adaptation_data, tmp_path):
    """The switch to multi-task updates is read back from the checkpoint's log history."""
    train, validation, autoencoder = tokenized(adaptation_data[0], tiny_tokenizer)
    settings = dict(pretrain_steps=None, max_steps=50, eval_strategy="steps", eval_steps=1, save_strategy="steps",
                    save_steps=1, convergence_patience=1, convergence_threshold=0.9)
    multitask_trainer(tiny_model(tiny_tokenizer, autoencoder_encoder=True), tiny_tokenizer,
                 multitask_args(tmp_path, **settings), train, autoencoder, validation).train()
    model = tiny_model(tiny_tokenizer, autoencoder_encoder=True)
    calls = record_tasks(model)
    trainer = multitask_trainer(model, tiny_tokenizer, multitask_args(tmp_path, **settings), train, autoencoder,
                           validation)
    trainer.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-3"))
    assert trainer.multitask_start_step == 2
    assert calls == ["autoencoder"]  # update 3 of S S | S A, then the multi-task phase converges at step 4
    assert trainer.state.global_step == 4


def test_mtask_m_target_speakers_learn_only_from_the_autoencoder(tiny_tokenizer, adaptation_data, tmp_path):
    """MTASK-M: target speakers never respond in the general data; their vectors (random at first) are learned by
    the autoencoder task alone, together with the shared decoder."""
    data, summary = adaptation_data
    vocabulary = SpeakerVocabulary.from_speakers(data["train"]["speaker"])
    targets = vocabulary.extend(summary["target_speakers"])
    train, validation, autoencoder = tokenized(data, tiny_tokenizer, vocabulary)

    def trained_rows(pretrain_steps):
        model = tiny_model(tiny_tokenizer, autoencoder_encoder=True, num_speakers=len(vocabulary),
                           speaker_embedding_size=4)
        before = model.speaker_embeddings.weight.detach().clone()
        args = multitask_args(tmp_path, pretrain_steps=pretrain_steps, max_steps=4)
        multitask_trainer(model, tiny_tokenizer, args, train, autoencoder, validation).train()
        return (model.speaker_embeddings.weight != before).any(dim=1)

    assert trained_rows(pretrain_steps=2)[targets].all()
    assert not trained_rows(pretrain_steps=4)[targets].any()  # seq2seq updates only


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(pretrain_steps=None, eval_strategy="no"), "converges"),
        (dict(pretrain_steps=-1), "pretrain_steps"),
        (dict(seq2seq_batches_per_cycle=0), "per_cycle"),
        (dict(autoencoder_batches_per_cycle=0), "per_cycle"),
        (dict(convergence_patience=0), "convergence_patience"),
        (dict(convergence_threshold=1.0), "convergence_threshold"),
    ],
)
def test_config_errors(tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        multitask_args(tmp_path, **settings)


def test_trainer_input_errors(tiny_tokenizer, adaptation_data, tmp_path):
    train, _, autoencoder = tokenized(adaptation_data[0], tiny_tokenizer)
    args = multitask_args(tmp_path)
    model = tiny_model(tiny_tokenizer, autoencoder_encoder=True)
    with pytest.raises(ValueError, match="autoencoder_dataset"):
        multitask_trainer(model, tiny_tokenizer, args, train, autoencoder.select([]))
    with pytest.raises(ValueError, match="autoencoder_encoder=True"):
        multitask_trainer(tiny_model(tiny_tokenizer), tiny_tokenizer, args, train, autoencoder)
    with pytest.raises(TypeError, match="MultiTaskConfig"):
        MultiTaskTrainer(model=model, args=DATA_ARGS, train_dataset=train, autoencoder_dataset=autoencoder)


# --- MTASK-S: one LoRA adapter per target speaker (PEFT) ---

SPEAKERS = ["alice", "bob"]


def random_adapter_config(model, r=2):
    """A LoRA config whose adapters start non-zero (PEFT starts B at 0: a new adapter changes nothing yet)."""
    config = speaker_lora_config(model.config, r=r)
    config.init_lora_weights = False
    return config


@pytest.fixture
def speaker_models(tiny_tokenizer):
    """A base model and a PEFT model holding one random adapter per speaker, with the base logits."""
    vocabulary = SpeakerVocabulary(SPEAKERS)
    base = tiny_model(tiny_tokenizer, embedding_size=16, hidden_size=32)
    inputs = dict(input_ids=torch.tensor([[7, 8, 9, 10], [11, 12, 0, 0]]),
                  attention_mask=torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]),
                  decoder_input_ids=torch.tensor([[1, 20, 21], [1, 22, 23]]))
    # PEFT freezes the base weights, and CPU matmul kernels for frozen weights round differently (last bit) from
    # those for weights that require grad: the exact reference is the frozen base.
    base.requires_grad_(False)
    base_logits = logits_of(base, inputs)
    model = base
    for speaker in SPEAKERS:
        torch.manual_seed(len(speaker))
        model = add_speaker_adapter(model, vocabulary, speaker, random_adapter_config(base))
    model.eval()
    return model, vocabulary, inputs, base_logits


def logits_of(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def test_switching_disabling_and_merging_speaker_adapters(speaker_models):
    model, vocabulary, inputs, base_logits = speaker_models
    by_speaker = {}
    for speaker in SPEAKERS:
        set_speaker(model, vocabulary, speaker)
        by_speaker[speaker] = logits_of(model, inputs)
        with model.disable_adapter():
            assert torch.equal(logits_of(model, inputs), base_logits)
    assert (by_speaker["alice"].softmax(-1) - by_speaker["bob"].softmax(-1)).abs().max() > 1e-3
    assert (by_speaker["alice"].softmax(-1) - base_logits.softmax(-1)).abs().max() > 1e-3
    set_speaker(model, vocabulary, "alice")
    merged = merged_speaker_model(model, vocabulary, "bob")
    torch.testing.assert_close(logits_of(merged, inputs), by_speaker["bob"], rtol=1e-5, atol=1e-5)
    assert model.active_adapter == "speaker_1"  # merging a copy leaves the PEFT model as it was
    assert torch.equal(logits_of(model, inputs), by_speaker["alice"])


@pytest.mark.parametrize("settings", ARCHITECTURES.values(), ids=ARCHITECTURES.keys())
def test_speaker_adapter_on_every_architecture(tiny_tokenizer, settings):
    """The decoder LoRA fits every architecture: all decoder LSTM layers and linear layers are adapted, the adapter
    changes the output, disabling it gives the (frozen) base exactly, merging gives the adapter's output."""
    vocabulary = SpeakerVocabulary(SPEAKERS)
    base = tiny_model(tiny_tokenizer, **settings).requires_grad_(False)
    inputs = dict(input_ids=torch.tensor([[7, 8, 9], [10, 11, 12]]), decoder_input_ids=torch.tensor([[1, 20], [1, 21]]),
                  **({"speaker_ids": torch.tensor([0, 2])} if base.config.num_speakers else {}))
    base_logits = logits_of(base, inputs)
    model = add_speaker_adapter(base, vocabulary, "alice", random_adapter_config(base)).eval()
    wrapped = {name.split(".lora_A")[0] for name, _ in model.named_parameters() if ".lora_A." in name}
    layers = base.config.num_layers
    assert sum("decoder" in name for name in wrapped) == 2 * layers  # weight_ih and weight_hh of every layer
    assert not any("encoder" in name or "lm_head" in name or "embed" in name for name in wrapped)
    adapted = logits_of(model, inputs)
    assert (adapted - base_logits).abs().max() > 1e-3
    with model.disable_adapter():
        assert torch.equal(logits_of(model, inputs), base_logits)
    merged = merged_speaker_model(model, vocabulary, "alice")
    torch.testing.assert_close(logits_of(merged, inputs), adapted, rtol=1e-5, atol=1e-5)


def test_adapters_are_small_and_reload_exactly(speaker_models, tiny_tokenizer, tmp_path):
    model, vocabulary, inputs, base_logits = speaker_models
    expected = {}
    for speaker in SPEAKERS:
        set_speaker(model, vocabulary, speaker)
        expected[speaker] = logits_of(model, inputs)
    save_speaker_adapters(model, vocabulary, tmp_path / "adapters")
    base = tiny_model(tiny_tokenizer, embedding_size=16, hidden_size=32)
    base.save_pretrained(tmp_path / "base")
    base_size = (tmp_path / "base" / "model.safetensors").stat().st_size
    for index in (1, 2):
        adapter_file = tmp_path / "adapters" / f"speaker_{index}" / "adapter_model.safetensors"
        assert adapter_file.stat().st_size < 0.1 * base_size
        assert not any("lm_head" in name or "embed" in name for name in load_file(adapter_file))

    reloaded, reloaded_vocabulary = load_speaker_adapters(type(base).from_pretrained(tmp_path / "base").eval(),
                                                          tmp_path / "adapters")
    assert reloaded_vocabulary.names == vocabulary.names
    for speaker in SPEAKERS:
        set_speaker(reloaded, reloaded_vocabulary, speaker)
        assert torch.equal(logits_of(reloaded, inputs), expected[speaker])


@pytest.mark.parametrize(
    "speaker, message",
    [("carol", "Unknown speaker 'carol'"), (GENERIC_SPEAKER, "disable_adapter")],
)
def test_speaker_adapter_errors(speaker_models, speaker, message):
    model, vocabulary, _, _ = speaker_models
    with pytest.raises(ValueError, match=message):
        set_speaker(model, vocabulary, speaker)
    with pytest.raises(ValueError, match=message):
        add_speaker_adapter(model, vocabulary, speaker)


def test_adding_an_existing_speaker_adapter_is_an_error(speaker_models):
    model, vocabulary, _, _ = speaker_models
    with pytest.raises(ValueError, match="already has an adapter"):
        add_speaker_adapter(model, vocabulary, "alice")


def test_mtask_s_trains_one_speaker_adapter_at_a_time(tiny_tokenizer, adaptation_data, tmp_path):
    """Each speaker's multi-task run, on the general data and that speaker's text, changes only that speaker's
    adapter (and its fresh autoencoder encoder); the best checkpoint's adapter is kept; the base model stays as it
    was."""
    data, summary = adaptation_data
    train, validation, _ = tokenized(data, tiny_tokenizer)
    vocabulary = SpeakerVocabulary(summary["target_speakers"])
    model = tiny_model(tiny_tokenizer, autoencoder_encoder=True)
    inputs = dict(input_ids=torch.tensor([[7, 8, 9]]), decoder_input_ids=torch.tensor([[1, 20, 21]]))
    base_logits = logits_of(model.requires_grad_(False), inputs)  # frozen, as PEFT leaves it (see speaker_models)
    for index, speaker in enumerate(summary["target_speakers"], start=1):
        model = add_speaker_adapter(model, vocabulary, speaker, speaker_lora_config(model.config, r=2))
        own_text = autoencoder_dataset(select_speaker_texts(data["autoencoder"], [speaker]), tiny_tokenizer)
        before = snapshot(model)
        args = multitask_args(tmp_path, pretrain_steps=0, max_steps=4, output_dir=str(tmp_path / speaker),
                              eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2,
                              load_best_model_at_end=True)
        trainer = multitask_trainer(model, tiny_tokenizer, args, train, own_text, validation)
        trainer.train()
        moved = changed(before, model)
        assert any(f"lora_B.speaker_{index}." in name for name in moved)
        assert all(f".speaker_{index}." in name or ".autoencoder_encoder." in name for name in moved)
        best = load_file(f"{trainer.state.best_model_checkpoint}/speaker_{index}/adapter_model.safetensors")
        adapter = {name: parameter for name, parameter in model.named_parameters() if f".speaker_{index}." in name}
        assert len(best) == len(adapter)
        assert all(torch.equal(best[name.replace(f".speaker_{index}", "")], parameter)
                   for name, parameter in adapter.items())
    with model.disable_adapter():
        assert torch.equal(logits_of(model, inputs), base_logits)


def test_best_speaker_adapter_is_restored_when_a_later_one_is_worse(tiny_tokenizer, adaptation_data, tmp_path):
    """PEFT saves a named adapter in a sub-folder of each checkpoint: training at a diverging learning rate, the dev
    perplexity is best early, and that checkpoint's adapter (not the last one) is what training leaves active."""
    data, summary = adaptation_data
    train, validation, _ = tokenized(data, tiny_tokenizer)
    speaker = summary["target_speakers"][0]
    vocabulary = SpeakerVocabulary([speaker])
    model = add_speaker_adapter(tiny_model(tiny_tokenizer, autoencoder_encoder=True), vocabulary, speaker,
                                speaker_lora_config(tiny_model(tiny_tokenizer).config, r=2))
    own_text = autoencoder_dataset(select_speaker_texts(data["autoencoder"], [speaker]), tiny_tokenizer)
    args = multitask_args(tmp_path, pretrain_steps=0, max_steps=4, learning_rate=3.0, eval_strategy="steps",
                          eval_steps=1, save_strategy="steps", save_steps=1, load_best_model_at_end=True,
                          convergence_patience=10)
    trainer = multitask_trainer(model, tiny_tokenizer, args, train, own_text, validation)
    trainer.train()

    best_step = int(trainer.state.best_model_checkpoint.rsplit("-", 1)[1])
    assert best_step < trainer.state.global_step
    best = load_file(f"{trainer.state.best_model_checkpoint}/speaker_1/adapter_model.safetensors")
    last = load_file(f"{args.output_dir}/checkpoint-{trainer.state.global_step}/speaker_1/adapter_model.safetensors")
    adapter = {name.replace(".speaker_1", ""): parameter for name, parameter in model.named_parameters()
               if ".speaker_1." in name}
    assert adapter.keys() == best.keys()
    assert all(torch.equal(best[name], parameter) for name, parameter in adapter.items())
    assert not all(torch.equal(last[name], parameter) for name, parameter in adapter.items())

"""The LSTM models: forward/loss values, generation against reference loops, save/load, Auto and remote code."""

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import ARCHITECTURES, tiny_model
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

from hf_neuralconv.models.lstm.configuration_lstm import LSTMLMConfig, LSTMSeq2SeqConfig
from hf_neuralconv.models.lstm.modeling_lstm import CACHE_NAME, LSTMForCausalLM, LSTMSeq2SeqForConditionalGeneration

# Every test below with the `model` fixture runs on each of conftest.ARCHITECTURES (PEFT-style table).


def batch(tokenizer, rows=((7, 8, 9, 10, 11), (12, 13, 14))):
    """Right-padded source ids and mask."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    for index, row in enumerate(rows):
        ids[index, : len(row)] = torch.tensor(row)
    return ids, ids.ne(tokenizer.pad_token_id).long()


def speaker_kwargs(model, batch_size):
    return {"speaker_ids": torch.arange(batch_size) % 3} if model.config.num_speakers else {}


@pytest.fixture(params=list(ARCHITECTURES), ids=list(ARCHITECTURES))
def model(request, tiny_tokenizer):
    return tiny_model(tiny_tokenizer, **ARCHITECTURES[request.param])


def reference_greedy(model, input_ids, attention_mask, steps, extra):
    """Greedy decoding written out by hand, re-reading the whole prefix each step (no cache)."""
    config = model.config
    prefix = torch.full((input_ids.size(0), 1), config.decoder_start_token_id)
    finished = torch.zeros(input_ids.size(0), dtype=torch.bool)
    for _ in range(steps):
        logits = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=prefix,
                       use_cache=False, **extra).logits[:, -1]
        token = logits.argmax(-1).masked_fill(finished, config.pad_token_id)
        prefix = torch.cat([prefix, token[:, None]], dim=1)
        finished |= token.eq(config.eos_token_id)
        if finished.all():
            break
    return prefix


def test_loss_is_token_mean_cross_entropy(model, tiny_tokenizer):
    input_ids, mask = batch(tiny_tokenizer)
    labels = torch.tensor([[20, 21, 2, -100], [22, 23, 24, 2]])
    extra = speaker_kwargs(model, 2)
    output = model(input_ids=input_ids, attention_mask=mask, labels=labels, **extra)
    expected = F.cross_entropy(output.logits.reshape(-1, output.logits.size(-1)), labels.reshape(-1),
                               ignore_index=-100)
    torch.testing.assert_close(output.loss, expected)
    # With Trainer's global token count the loss is the sum over this batch divided by that count.
    summed = model(input_ids=input_ids, attention_mask=mask, labels=labels, num_items_in_batch=14, **extra).loss
    torch.testing.assert_close(summed, expected * 7 / 14)


def test_loss_only_path_skips_padding_with_the_same_loss_and_gradients(model, tiny_tokenizer):
    """`return_logits=False` (the training step) runs the output layer on labelled positions only: same loss, same
    gradients as the full-logits path."""
    input_ids, mask = batch(tiny_tokenizer)
    labels = torch.tensor([[20, 21, 2, -100], [22, 23, 24, 2]])
    extra = speaker_kwargs(model, 2)
    losses, gradients = [], []
    for return_logits in (True, False):
        model.zero_grad()
        output = model(input_ids=input_ids, attention_mask=mask, labels=labels, num_items_in_batch=14,
                       return_logits=return_logits, **extra)
        output.loss.backward()
        losses.append(output.loss.detach())
        gradients.append([parameter.grad.clone() for parameter in model.parameters() if parameter.grad is not None])
    assert output.logits is None
    torch.testing.assert_close(losses[1], losses[0])
    assert len(gradients[0]) == len(gradients[1]) > 0
    for full, loss_only in zip(*gradients):
        torch.testing.assert_close(loss_only, full)


def test_decoder_input_is_shifted_labels(model, tiny_tokenizer):
    input_ids, mask = batch(tiny_tokenizer)
    labels = torch.tensor([[20, 21, 2, -100], [22, 23, 24, 2]])
    extra = speaker_kwargs(model, 2)
    shifted = torch.tensor([[1, 20, 21, 2], [1, 22, 23, 24]])  # start token, then labels[:-1]
    from_labels = model(input_ids=input_ids, attention_mask=mask, labels=labels, **extra).logits
    explicit = model(input_ids=input_ids, attention_mask=mask, decoder_input_ids=shifted, **extra).logits
    torch.testing.assert_close(from_labels, explicit)


def test_right_padding_does_not_change_a_row(model, tiny_tokenizer):
    """Packing: a short source padded inside a batch gives the same logits as the source alone."""
    input_ids, mask = batch(tiny_tokenizer)
    decoder_input_ids = torch.tensor([[1, 20, 21]])
    extra_one = speaker_kwargs(model, 1)
    alone = model(input_ids=input_ids[1:, :3], decoder_input_ids=decoder_input_ids, **extra_one).logits
    extra_two = {k: v[[0, 0]] * 0 + v[0] for k, v in speaker_kwargs(model, 2).items()}
    padded = model(input_ids=input_ids, attention_mask=mask, decoder_input_ids=decoder_input_ids.repeat(2, 1),
                   **extra_two).logits[1:]
    torch.testing.assert_close(alone, padded)


def test_greedy_generate_equals_hand_written_loop(model, tiny_tokenizer):
    input_ids, mask = batch(tiny_tokenizer)
    extra = speaker_kwargs(model, 2)
    generated = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=12, do_sample=False,
                               **extra)
    expected = reference_greedy(model, input_ids, mask, 12, extra)
    assert torch.equal(generated, expected)


def test_cached_beam_search_equals_uncached(model, tiny_tokenizer):
    input_ids, mask = batch(tiny_tokenizer)
    extra = speaker_kwargs(model, 2)
    settings = dict(input_ids=input_ids, attention_mask=mask, max_new_tokens=10, num_beams=4, num_return_sequences=3,
                    output_scores=True, return_dict_in_generate=True, **extra)
    cached = model.generate(**settings)
    uncached = model.generate(**settings, use_cache=False)
    assert cached.sequences.shape[0] == 6
    assert torch.equal(cached.sequences, uncached.sequences)
    torch.testing.assert_close(cached.sequences_scores, uncached.sequences_scores)


def test_one_decoder_step_per_generated_token(tiny_tokenizer):
    model = tiny_model(tiny_tokenizer)
    input_ids, mask = batch(tiny_tokenizer)
    decoder_steps, encoder_calls = [], []
    model.decoder.register_forward_hook(lambda module, inputs, output: decoder_steps.append(inputs[0].shape[1]))
    model.encoder.register_forward_hook(lambda module, inputs, output: encoder_calls.append(1))
    for settings in (dict(do_sample=False), dict(num_beams=3), dict(do_sample=True, top_k=5)):
        decoder_steps.clear()
        encoder_calls.clear()
        generated = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=15, min_new_tokens=15,
                                   **settings)
        assert generated.shape[1] == 16  # start token + 15
        assert decoder_steps == [1] * 15, settings
        assert len(encoder_calls) == 1


def test_sampling_with_top_k_1_is_greedy_and_seeded_sampling_repeats(tiny_tokenizer):
    model = tiny_model(tiny_tokenizer)
    input_ids, mask = batch(tiny_tokenizer)
    greedy = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=8)
    top1 = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=8, do_sample=True, top_k=1)
    assert torch.equal(greedy, top1)
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        runs.append(model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=8, do_sample=True,
                                   temperature=1.5, top_p=0.9))
    assert torch.equal(*runs)


def test_speaker_vector_changes_next_token_distribution(tiny_tokenizer):
    model = tiny_model(tiny_tokenizer, num_speakers=3, speaker_embedding_size=4)
    input_ids, mask = batch(tiny_tokenizer)
    decoder_input_ids = torch.tensor([[1], [1]])
    first = model(input_ids=input_ids, attention_mask=mask, decoder_input_ids=decoder_input_ids,
                  speaker_ids=torch.tensor([0, 0])).logits
    second = model(input_ids=input_ids, attention_mask=mask, decoder_input_ids=decoder_input_ids,
                   speaker_ids=torch.tensor([1, 2])).logits
    assert (first.softmax(-1) - second.softmax(-1)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="speaker"):
        model(input_ids=input_ids, attention_mask=mask, decoder_input_ids=decoder_input_ids)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        model(input_ids=input_ids, attention_mask=mask, decoder_input_ids=decoder_input_ids,
              speaker_ids=torch.tensor([0, 5]))


def test_left_padded_source_is_rejected(tiny_tokenizer):
    model = tiny_model(tiny_tokenizer)
    with pytest.raises(ValueError, match="right-padded"):
        model(input_ids=torch.tensor([[0, 7, 8]]), attention_mask=torch.tensor([[0, 1, 1]]),
              decoder_input_ids=torch.tensor([[1]]))


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(hidden_size=0), "hidden_size"),
        (dict(vocab_size=-5), "vocab_size"),
        (dict(num_layers=1.5), "num_layers"),
        (dict(attention="bahdanau"), "attention"),
        (dict(dropout=1.0), "dropout"),
        (dict(bidirectional_encoder=True, hidden_size=15), "even"),
        (dict(tie_word_embeddings=True, embedding_size=8, hidden_size=16), "tie_word_embeddings"),
        (dict(num_speakers=4), "speaker_embedding_size"),
    ],
)
def test_impossible_sizes_are_clear_errors(settings, message):
    with pytest.raises(ValueError, match=message):
        LSTMSeq2SeqConfig(**settings)


def test_auto_classes_reload_exact_logits(model, tiny_tokenizer, tmp_path):
    input_ids, mask = batch(tiny_tokenizer)
    decoder_input_ids = torch.tensor([[1, 20, 21], [1, 22, 23]])
    extra = speaker_kwargs(model, 2)
    before = model(input_ids=input_ids, attention_mask=mask, decoder_input_ids=decoder_input_ids, **extra).logits
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert AutoConfig.from_pretrained(tmp_path).model_type == "lstm_seq2seq"
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert type(reloaded) is LSTMSeq2SeqForConditionalGeneration
    after = reloaded(input_ids=input_ids, attention_mask=mask, decoder_input_ids=decoder_input_ids, **extra).logits
    assert torch.equal(before, after)
    if model.config.tie_word_embeddings:
        assert reloaded.get_output_embeddings().weight is reloaded.get_input_embeddings().weight


def test_remote_code_route_in_fresh_process(tiny_tokenizer, tmp_path):
    """A process that never imports hf_neuralconv loads the saved model through `trust_remote_code`."""
    model = tiny_model(tiny_tokenizer, bidirectional_encoder=True)
    model.save_pretrained(tmp_path)
    input_ids, mask = batch(tiny_tokenizer)
    expected = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=6, num_beams=2).tolist()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModelForSeq2SeqLM"] == "modeling_lstm.LSTMSeq2SeqForConditionalGeneration"
    script = f"""
import json, sys, torch
from transformers import AutoModelForSeq2SeqLM
model = AutoModelForSeq2SeqLM.from_pretrained({str(tmp_path)!r}, trust_remote_code=True).eval()
ids = torch.tensor({input_ids.tolist()}); mask = torch.tensor({mask.tolist()})
out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, num_beams=2)
print(json.dumps({{"tokens": out.tolist(), "imported": "hf_neuralconv" in sys.modules,
                   "module": type(model).__module__}}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["imported"] is False
    assert "hf_neuralconv" not in answer["module"]
    assert answer["tokens"] == expected


def test_causal_lm_cache_and_loss(tiny_tokenizer, tmp_path):
    torch.manual_seed(0)
    config = LSTMLMConfig(vocab_size=len(tiny_tokenizer), embedding_size=8, hidden_size=12, num_layers=2,
                          dropout=0.0, init_range=0.5)
    model = LSTMForCausalLM(config).eval()
    ids = torch.tensor([[1, 7, 8, 9, 10, 2]])
    full = model(ids, labels=ids)
    # Token by token through the state gives the same logits.
    state, steps = None, []
    for position in range(ids.size(1)):
        output = model(ids[:, position : position + 1], cache=state)
        state = output[CACHE_NAME]
        steps.append(output.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full.logits)
    assert state.get_seq_length() == ids.size(1)
    # The pre-5.25 name reads the same state; both names at once are refused.
    first = model(ids[:, :3])
    old_name = model(ids[:, 3:], past_key_values=first[CACHE_NAME])
    torch.testing.assert_close(old_name.logits, full.logits[:, 3:])
    with pytest.raises(ValueError, match="not both"):
        model(ids[:, 3:], cache=first[CACHE_NAME], past_key_values=first[CACHE_NAME])
    manual = F.cross_entropy(full.logits[0, :-1], ids[0, 1:])
    torch.testing.assert_close(full.loss, manual)
    padded_labels = ids.masked_fill(torch.arange(ids.size(1)) >= 4, -100)
    loss_only = model(ids, labels=padded_labels, return_logits=False)
    assert loss_only.logits is None
    torch.testing.assert_close(loss_only.loss, F.cross_entropy(full.logits[0, :3], ids[0, 1:4]))
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert torch.equal(reloaded(ids).logits, full.logits)
    generated = model.generate(ids[:, :2], max_new_tokens=5, min_new_tokens=5)
    assert generated.shape == (1, 7)

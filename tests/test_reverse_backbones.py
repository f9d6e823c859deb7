"""The reverse dialogue generator (Liu et al. 2019) on every backbone of conftest's BACKBONES: the REINFORCE gradient
of `ReinforceTrainer` (Eq. 4) against one computed by hand, token by token; the pre-training rows and the loss they
give; the attack's inputs as greedy decoding by hand writes them, as plain text."""

import zlib

import datasets
import pytest
import torch
from conftest import BACKBONES, Victim, backbone_model, backbone_tokenizer, rl_config
from transformers import TrainingArguments

from hf_neuralconv.core.chat_format import encode_history, encode_replies
from hf_neuralconv.reverse_generator.attack import attack
from hf_neuralconv.reverse_generator.environments import CallableEnvironment
from hf_neuralconv.reverse_generator.trainer import ReinforceTrainer, pretrain_reverse_generator, reverse_pairs_dataset

CAUSAL = {"gpt2", "llama"}
TARGETS = ["i like tea", "good day"]
PAIRS = datasets.Dataset.from_dict({"output": ["i like tea", "good night , my day"],
                                    "input": ["hello how are you", "what is your name ?"]})


def fixed_reward(text: str) -> float:
    """A reward fixed per input text, in (0, 1]."""
    return 0.1 + zlib.crc32(text.encode()) % 10 / 10


def reward_function(targets, outputs):  # the victim echoes its input: each output is the input
    return [fixed_reward(output) for output in outputs]


def source_ids(name: str, target: str) -> list[int]:
    """How the generator reads a target: a one-turn history in its chat format; our LSTM reads the bare target."""
    tokenizer = backbone_tokenizer(name)
    if name == "lstm":
        return tokenizer(target, add_special_tokens=False)["input_ids"]
    return encode_history(tokenizer, [target], 0, 32, causal=name in CAUSAL)


def decoder_prompt(name: str, model) -> list[int]:
    """What an encoder-decoder's reply is given before the drawn tokens: the decoder start token, then BART's `<s>`
    (its replies start with it, `encode_replies`); a causal model's reply follows the source."""
    if name in CAUSAL:
        return []
    return [model.config.decoder_start_token_id] + ([backbone_tokenizer(name).bos_token_id] if name == "bart" else [])


def suppressed_tokens(tokenizer) -> torch.Tensor:
    """The special tokens but `</s>`: never drawn, so outside the distribution sampled from."""
    mask = torch.zeros(len(tokenizer), dtype=torch.bool)
    mask[[index for index in tokenizer.all_special_ids if index != tokenizer.eos_token_id]] = True
    return mask


def next_token_log_probs(model, causal: bool, source: list[int], written: list[int], suppressed) -> torch.Tensor:
    """log P(· | written, source) of the token after `written`, by one full forward pass."""
    if causal:
        logits = model(input_ids=torch.tensor([source + written])).logits[0, -1]
    else:
        logits = model(input_ids=torch.tensor([source]), decoder_input_ids=torch.tensor([written])).logits[0, -1]
    return logits.masked_fill(suppressed, float("-inf")).log_softmax(dim=-1)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_reinforce_gradient_equals_the_hand_computed_one(name, tmp_path):
    """-(1/(B N)) Σ_i (R_i - b) ∇ log π(I_i|O*), b the target's mean reward, with log π summed over the drawn tokens,
    each scored by its own forward pass."""
    tokenizer, model, causal = backbone_tokenizer(name), backbone_model(name, seed=1), name in CAUSAL
    eos, suppressed = tokenizer.eos_token_id, suppressed_tokens(tokenizer)
    environment = CallableEnvironment(Victim(reply=lambda text: text), batched=True, timeout=None)
    trainer = ReinforceTrainer(model, rl_config(tmp_path, num_samples=4, max_input_tokens=5),
                               environment, reward_function, datasets.Dataset.from_dict({"target": TARGETS}),
                               tokenizer)
    drawn_rows = []
    sample = trainer._sample_inputs
    trainer._sample_inputs = lambda model, inputs: drawn_rows.append(sample(model, inputs)) or drawn_rows[-1]
    batch = trainer.data_collator([{"target": target} for target in TARGETS])
    assert [row[mask.bool()].tolist() for row, mask in zip(batch["input_ids"], batch["attention_mask"])] == [
        source_ids(name, target) for target in TARGETS]
    torch.manual_seed(0)
    model.zero_grad()
    loss = trainer.compute_loss(model, batch)  # eval mode (no dropout), as the hand computation
    loss.backward()

    prompt = decoder_prompt(name, model)
    (samples,) = drawn_rows
    assert samples[:, : len(prompt)].tolist() == [prompt] * samples.size(0)
    log_probs, rewards = [], []
    for row, sequence in enumerate(samples.tolist()):
        source, drawn = source_ids(name, TARGETS[row // 4]), sequence[len(prompt):]
        drawn = drawn[: drawn.index(eos) + 1] if eos in drawn else drawn  # the padding after </s> was not drawn
        log_prob = 0.0
        for step, token in enumerate(drawn):
            log_prob = log_prob + next_token_log_probs(model, causal, source, prompt + drawn[:step], suppressed).gather(
                0, torch.tensor([token]))[0]
        log_probs.append(log_prob)
        text = tokenizer.decode(drawn, skip_special_tokens=True).strip()
        rewards.append(fixed_reward(text) if text else 0.0)  # an empty input is not sent: reward 0
    rewards = torch.tensor(rewards).view(len(TARGETS), 4)
    advantages = rewards - rewards.mean(dim=1, keepdim=True)
    expected_loss = -sum(a * lp for a, lp in zip(advantages.view(-1).tolist(), log_probs)) / samples.size(0)
    assert loss.item() == pytest.approx(expected_loss.item(), abs=1e-5)
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    expected = torch.autograd.grad(expected_loss, parameters, allow_unused=True)
    assert any(gradient is not None and gradient.abs().max() > 1e-4 for gradient in expected)  # not trivially 0
    for parameter, gradient in zip(parameters, expected, strict=True):
        want = torch.zeros_like(parameter) if gradient is None else gradient
        got = torch.zeros_like(parameter) if parameter.grad is None else parameter.grad
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_pretraining_rows_mask_the_source_of_a_causal_generator(name, tmp_path):
    """Rows: D's output read as a target, the input as a reply; a causal generator's source is labelled -100. The
    evaluation loss of pre-training is the mean over the reply tokens alone, recomputed token by token."""
    tokenizer, model, causal = backbone_tokenizer(name), backbone_model(name, seed=2), name in CAUSAL
    rows = reverse_pairs_dataset(PAIRS, tokenizer, causal=causal)
    replies = encode_replies(tokenizer, PAIRS["input"], causal, 24)
    for row, output, reply in zip(rows, PAIRS["output"], replies, strict=True):
        source = source_ids(name, output)
        if causal:
            assert row == {"input_ids": source + reply, "labels": [-100] * len(source) + reply}
        else:
            assert row == {"input_ids": source, "labels": reply}

    args = TrainingArguments(str(tmp_path / "pretrain"), max_steps=1, learning_rate=0.0, per_device_train_batch_size=2,
                             save_strategy="no", use_cpu=True, report_to="none", disable_tqdm=True)
    metrics = pretrain_reverse_generator(model, tokenizer, args, PAIRS, eval_pairs=PAIRS).evaluate()
    model.eval()
    suppressed = torch.zeros(len(tokenizer), dtype=torch.bool)  # teacher forcing: the full softmax
    negative_log_likelihood = 0.0
    with torch.no_grad():
        for output, reply in zip(PAIRS["output"], replies, strict=True):
            source = source_ids(name, output)
            written = [] if causal else [model.config.decoder_start_token_id]
            for step, token in enumerate(reply):
                negative_log_likelihood -= float(
                    next_token_log_probs(model, causal, source, written + reply[:step], suppressed)[token])
    tokens = sum(len(reply) for reply in replies)
    assert metrics["eval_target_tokens"] == tokens
    assert metrics["eval_loss"] == pytest.approx(negative_log_likelihood / tokens, rel=1e-4)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_attack_sends_plain_text_inputs(name):
    """Greedy attack inputs are the hand-decoded greedy replies as text (no special token, no prompt); beam-search
    candidates are plain text too."""
    tokenizer, model, causal = backbone_tokenizer(name), backbone_model(name, seed=3), name in CAUSAL
    eos, suppressed = tokenizer.eos_token_id, suppressed_tokens(tokenizer)
    victim = Victim(reply=lambda text: text)
    environment = CallableEnvironment(victim, batched=True, timeout=None)
    records = attack(model, tokenizer, environment, reward_function, TARGETS, max_input_tokens=6, batch_size=2,
                     progress=False)
    expected = []
    with torch.no_grad():
        for target in TARGETS:
            written = decoder_prompt(name, model)
            drawn = []
            while len(drawn) < 6 and eos not in drawn:
                drawn.append(int(next_token_log_probs(model, causal, source_ids(name, target), written + drawn,
                                                      suppressed).argmax()))
            expected.append(tokenizer.decode(drawn, skip_special_tokens=True).strip())
    assert [record["trigger"] for record in records] == expected
    assert victim.received == list(dict.fromkeys(text for text in expected if text))  # one query per distinct input

    beams = attack(model, tokenizer, environment, reward_function, TARGETS, num_beams=3, max_input_tokens=6,
                   progress=False)
    for record in records + beams:
        assert record["trigger"] == record["trigger"].strip()
        assert not any(token in record["trigger"] for token in tokenizer.all_special_tokens), record
    assert set(victim.received) >= {record["trigger"] for record in beams if record["trigger"]}

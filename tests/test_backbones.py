"""Every method on every backbone (PEFT's TEST_CASES shape): tiny random GPT-2, Llama, BART, T5 and our LSTM, each
with a tokenizer trained here, against values computed by explicit loops in this file: the chat format, the
pipeline's answers and N-best lists, MMI-antiLM beam scores, MMI-bidi's Eq. 4, the hit criteria, gibbs-enum and a
negative-training step."""

import functools
import json
import subprocess
import sys

import pytest
import torch
from conftest import BACKBONES, backbone_model, backbone_tokenizer, tiny_lm
from transformers import GPT2Config, GPT2LMHeadModel, LogitsProcessorList, pipeline

from hf_neuralconv.core.chat_format import (
    chat_style,
    empty_history_prompt,
    encode_history,
    encode_replies,
    generation_inputs,
    message_frame,
)
from hf_neuralconv.core.scoring import is_causal, pair_batch, target_log_probs
from hf_neuralconv.metrics.hit_criteria import HitCriterion
from hf_neuralconv.mmi import MMIAntiLMLogitsProcessor, mmi_bidi_generate
from hf_neuralconv.negative_training.gibbs_enum import gibbs_enum, trigger_loss
from hf_neuralconv.negative_training.hits import score_pairs, trigger_frame, trigger_vocabulary
from hf_neuralconv.negative_training.trainer import NegativeTrainer, NegativeTrainingConfig

CHAT = [{"role": "user", "content": "hello how are you"}, {"role": "assistant", "content": "fine thanks"},
        {"role": "user", "content": "what is your name ?"}]
TURNS = [message["content"] for message in CHAT]
CAUSAL = [name for name in BACKBONES if name in ("gpt2", "llama")]


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def explicit_log_probs(model, source: list[int], reply: list[int]) -> list[float]:
    """log p(reply_t | reply_<t, source) one token at a time, by an explicit loop over the reply: a causal model
    reads source + reply as one sequence, an encoder-decoder reads the source and its decoder the reply."""
    values = []
    for step in range(len(reply)):
        if is_causal(model):
            logits = model(input_ids=torch.tensor([source + reply[:step]])).logits[0, -1]
        else:
            decoder = [model.config.decoder_start_token_id, *reply[:step]]
            logits = model(input_ids=torch.tensor([source]), decoder_input_ids=torch.tensor([decoder])).logits[0, -1]
        values.append(logits.float().log_softmax(-1)[reply[step]].item())
    return values


def reply_tokens(model, sequence: torch.Tensor, prompt_length: int, eos: int) -> list[int]:
    """The reply of one generate() output row, up to and with its eos: after the prompt (causal) or after the
    decoder start token (encoder-decoder)."""
    row = sequence[prompt_length:].tolist() if is_causal(model) else sequence[1:].tolist()
    return row[: row.index(eos) + 1] if eos in row else row


def causal_lm_over(tokenizer, config, seed: int = 5):
    """A tiny random GPT-2 over the chatbot's vocabulary and special ids: an anti-LM / input LM for any backbone."""
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, n_positions=256, initializer_range=0.5,
                                      vocab_size=config.vocab_size, bos_token_id=getattr(config, "bos_token_id", None),
                                      eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id)).eval()


def input_lm_for(name, model):
    tokenizer = backbone_tokenizer(name)
    return tiny_lm(tokenizer) if name == "lstm" else causal_lm_over(tokenizer, model.config)


# --- chat format ---


def hand_formatted(name: str) -> list[int]:
    """The 3-turn chat as each backbone's model input, written out by hand."""
    tokenizer = backbone_tokenizer(name)
    eos = tokenizer.eos_token_id
    if name == "lstm":
        return ids(tokenizer, "<user> hello how are you <bot> fine thanks <user> what is your name ?")
    if name == "gpt2":
        return [token for turn in TURNS for token in [*ids(tokenizer, turn), eos]]
    if name == "llama":  # tests/conftest.py's CHAT_TEMPLATE
        text = "".join(f"<s>{role}: {turn}</s>" for role, turn in zip(("user", "assistant", "user"), TURNS))
        return ids(tokenizer, text + "<s>assistant:")
    body = ids(tokenizer, "</s>".join(TURNS))  # BART, T5: the separator is their </s>
    return [tokenizer.bos_token_id, *body, eos] if name == "bart" else [*body, eos]


@pytest.mark.parametrize("name", BACKBONES)
def test_chat_format_per_backbone(name):
    tokenizer, model = backbone_tokenizer(name), backbone_model(name)
    causal = is_causal(model)
    assert chat_style(tokenizer, causal) == BACKBONES[name]
    assert encode_history(tokenizer, TURNS, 2, 512, causal=causal) == hand_formatted(name)
    # The most recent tokens are kept, with an encoder-decoder's own special tokens around them.
    cut = encode_history(tokenizer, TURNS, 2, 6, causal=causal)
    assert len(cut) == 6 and cut[-1] == hand_formatted(name)[-1]
    if name == "llama":  # a chat template loses its oldest turns, then the start of the message, not its header
        before, after = message_frame(tokenizer, causal)
        one_turn = encode_history(tokenizer, TURNS[-1:], 0, 512, causal=causal)
        assert encode_history(tokenizer, TURNS, 2, len(one_turn), causal=causal) == one_turn
        short = encode_history(tokenizer, TURNS, 2, len(before) + len(after) + 2, causal=causal)
        assert short[: len(before)] == before and short[len(short) - len(after):] == after
        assert short[len(before) : len(short) - len(after)] == one_turn[len(one_turn) - len(after) - 2 : -len(after)]
        # A chat opened by the assistant loses that turn: strict templates want the user first.
        assert encode_history(tokenizer, TURNS[1:], 2, 512, causal=causal) == one_turn
    # A one-message chat is the message's tokens in the frame (a chat template's tokens may merge with the
    # message's first one: "▁hello" after "user:").
    before, after = message_frame(tokenizer, causal)
    one = encode_history(tokenizer, ["hello how"], 0, 512, causal=causal)
    assert one[: len(before)] == before and one[len(one) - len(after):] == after
    message = one[len(before) : len(one) - len(after)]
    if name == "llama":
        assert tokenizer.decode(message).strip() == "hello how"
    else:
        assert message == ids(tokenizer, "hello how")
    # A reply ends with eos; a causal reply has no leading special token.
    reply = encode_replies(tokenizer, ["fine thanks"], causal)[0]
    assert reply[-1] == tokenizer.eos_token_id and tokenizer.decode(reply, skip_special_tokens=True).strip() == (
        "fine thanks")
    if causal:
        assert reply == [*ids(tokenizer, "fine thanks"), tokenizer.eos_token_id]


# --- the conversational pipeline ---


@pytest.mark.parametrize("name", BACKBONES)
def test_pipeline_answers_a_3_turn_chat_and_its_beam_nbest_is_generates(name, tmp_path):
    tokenizer, model = backbone_tokenizer(name), backbone_model(name)
    chat = pipeline("conversational", model=model, tokenizer=tokenizer)
    answers = chat(CHAT, strategy="beam", num_beams=4, num_return_sequences=4, max_new_tokens=6)
    assert len(answers) == 4 and all(answer["generated_text"][:3] == CHAT for answer in answers)

    prompt = torch.tensor([hand_formatted(name)])
    output = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), num_beams=4,
                            num_return_sequences=4, max_new_tokens=6, do_sample=False, return_dict_in_generate=True,
                            output_scores=True, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    replies = [tokenizer.decode(reply_tokens(model, row, prompt.size(1), tokenizer.eos_token_id),
                                skip_special_tokens=True) for row in output.sequences]
    expected = sorted(zip(replies, output.sequences_scores.tolist()), key=lambda pair: -pair[1])
    assert [answer["generated_text"][-1]["content"] for answer in answers] == [text for text, _ in expected]
    assert [answer["score"] for answer in answers] == pytest.approx([score for _, score in expected], abs=1e-5)

    # Greedy: the reply's score is the sum of its token log-probabilities, as an explicit loop computes them.
    greedy = chat(CHAT, strategy="greedy", max_new_tokens=6)[0]
    generated = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                               num_beams=1, max_new_tokens=6, pad_token_id=tokenizer.pad_token_id or
                               tokenizer.eos_token_id)[0]
    reply = reply_tokens(model, generated, prompt.size(1), tokenizer.eos_token_id)
    assert greedy["generated_text"][-1]["content"] == tokenizer.decode(reply, skip_special_tokens=True)
    assert greedy["score"] == pytest.approx(sum(explicit_log_probs(model, hand_formatted(name), reply)), abs=1e-4)

    # Saved directory: the same answers through pipeline(model=dir).
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    again = pipeline("conversational", model=str(tmp_path))(CHAT, strategy="beam", num_beams=4,
                                                            num_return_sequences=4, max_new_tokens=6)
    assert [answer["generated_text"][-1]["content"] for answer in again] == [text for text, _ in expected]


@pytest.mark.parametrize("name", BACKBONES)
def test_pipeline_batches_chats_as_one_by_one(name):
    tokenizer, model = backbone_tokenizer(name), backbone_model(name)
    chat = pipeline("conversational", model=model, tokenizer=tokenizer)
    chats = [CHAT, "hi", [{"role": "user", "content": "my name is good , what is your name ?"}]]
    alone = [chat(one, strategy="greedy", max_new_tokens=5)[0]["generated_text"][-1]["content"] for one in chats]
    batched = chat(chats, strategy="greedy", max_new_tokens=5, batch_size=3)
    assert [answers[0]["generated_text"][-1]["content"] for answers in batched] == alone


# --- MMI ---


def anti_lms(name, model):
    """The anti-LMs each backbone is tested with: another causal LM over its vocabulary, and for a causal chatbot
    the chatbot itself reading the reply after an empty history."""
    tokenizer = backbone_tokenizer(name)
    lms = {"separate": (input_lm_for(name, model), None)}
    if is_causal(model):
        lms["self"] = (model, empty_history_prompt(tokenizer))
    return lms


@pytest.mark.parametrize("name", BACKBONES)
def test_mmi_antilm_beam_scores_equal_a_rescoring_of_the_hypotheses(name):
    """Beam search with the processor (length_penalty 0: scores are sums) gives each hypothesis the score
    sum_t log p(y_t | y_<t, S) - lam * sum_{t < gamma} log p_LM(y_t | prompt, y_<t), recomputed from scratch."""
    tokenizer, model = backbone_tokenizer(name), backbone_model(name)
    source = hand_formatted(name)
    for kind, (language_model, prompt_ids) in anti_lms(name, model).items():
        processor = MMIAntiLMLogitsProcessor(language_model, model.config, lam=0.5, gamma=2, prompt_ids=prompt_ids)
        prompt = torch.tensor([source])
        output = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), num_beams=3,
                                num_return_sequences=3, max_new_tokens=5, length_penalty=0.0, do_sample=False,
                                logits_processor=LogitsProcessorList([processor]), return_dict_in_generate=True,
                                output_scores=True, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        lm_prompt = list(prompt_ids) if prompt_ids is not None else [
            language_model.config.bos_token_id if language_model.config.bos_token_id is not None
            else language_model.config.eos_token_id]
        for row, score in zip(output.sequences, output.sequences_scores.tolist()):
            reply = reply_tokens(model, row, prompt.size(1), tokenizer.eos_token_id)
            forward = explicit_log_probs(model, source, reply)
            penalty = explicit_log_probs(language_model, lm_prompt, reply)[:2]
            assert score == pytest.approx(sum(forward) - 0.5 * sum(penalty), abs=1e-3), (kind, reply)


@pytest.mark.parametrize("name", BACKBONES)
def test_mmi_bidi_reranking_is_eq_4_by_hand(name):
    """Each reranked candidate's score is log p(R|M) + lam log p(M|R) + gamma |R| (Luan et al. 2017, Eq. 4), the
    reverse model of the same backbone reading the reply as a one-turn chat."""
    tokenizer, model = backbone_tokenizer(name), backbone_model(name)
    reverse_model = backbone_model(name, seed=1)
    causal = is_causal(model)
    ranked = mmi_bidi_generate(model, reverse_model, tokenizer, [TURNS], lam=0.5, gamma=0.3, num_beams=4,
                               max_new_tokens=5, context_turns=2, max_source_length=512)[0]
    assert len(ranked) >= 2
    scores = [score for _, score in ranked]
    assert scores == sorted(scores, reverse=True)
    message = encode_replies(tokenizer, [TURNS[-1]], causal)[0]
    for text, score in ranked:
        reply = encode_replies(tokenizer, [text], causal)[0]
        forward = sum(explicit_log_probs(model, hand_formatted(name), reply))
        reverse = sum(explicit_log_probs(reverse_model, encode_history(tokenizer, [text], 0, 512, causal=causal),
                                         message)) if text.strip() else None
        if reverse is None:  # an empty reply: the reverse model reads the bare frame
            reverse = sum(explicit_log_probs(reverse_model, [*message_frame(tokenizer, causal)[0],
                                                             *message_frame(tokenizer, causal)[1]], message))
        length = len(ids(tokenizer, text))
        assert score == pytest.approx(forward + 0.5 * reverse + 0.3 * length, abs=1e-3), text


# --- He & Glass: hit criteria, gibbs-enum, negative training ---


@pytest.mark.parametrize("name", BACKBONES)
def test_hit_criteria_equal_log_probs_by_hand(name):
    tokenizer, model = backbone_tokenizer(name), backbone_model(name)
    language_model = input_lm_for(name, model)
    frame = trigger_frame(model, tokenizer)
    trigger, target = ids(tokenizer, "hi how are"), encode_replies(tokenizer, ["you are bad"], is_causal(model))[0]
    values = explicit_log_probs(model, frame.source(trigger), target)
    start = language_model.config.bos_token_id
    start = language_model.config.eos_token_id if start is None else start
    lm_values = explicit_log_probs(language_model, [start], [*trigger, language_model.config.eos_token_id])
    scores = score_pairs(model, frame, [trigger], [target], language_model)
    assert scores.min_log_prob.item() == pytest.approx(min(values), abs=1e-4)
    assert scores.avg_log_prob.item() == pytest.approx(sum(values) / len(values), abs=1e-4)
    assert scores.input_log_likelihood.item() == pytest.approx(sum(lm_values) / len(lm_values), abs=1e-4)
    low, high = min(values), sum(values) / len(values)
    assert HitCriterion("o-sample-min-hit", output_threshold=low - 0.01).hits(scores).item()
    assert not HitCriterion("o-sample-avg-hit", output_threshold=high + 0.01).hits(scores).item()
    io = dict(output_threshold=low - 0.01)
    assert HitCriterion("io-sample-avg-hit", input_threshold=scores.input_log_likelihood.item() - 0.01,
                        **io).hits(scores).item()
    assert not HitCriterion("io-sample-min-hit", input_threshold=scores.input_log_likelihood.item() + 0.01,
                            **io).hits(scores).item()

    # o-greedy-hit: the model's own greedy reply to the trigger hits; the same reply with another first token not.
    prompt = torch.tensor([frame.source(trigger)])
    generated = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                               num_beams=1, max_new_tokens=6, pad_token_id=tokenizer.pad_token_id or
                               tokenizer.eos_token_id)[0]
    reply = reply_tokens(model, generated, prompt.size(1), tokenizer.eos_token_id)
    allowed = trigger_vocabulary(tokenizer).tolist()
    changed = [allowed[0] if reply[0] != allowed[0] else allowed[1], *reply[1:]]
    greedy = score_pairs(model, frame, [trigger, trigger], [reply, changed])
    assert HitCriterion("o-greedy-hit").hits(greedy).tolist() == [True, False]


@pytest.mark.parametrize("name", BACKBONES)
def test_gibbs_enum_reports_its_triggers_loss_and_never_worsens_the_start(name):
    tokenizer, model = backbone_tokenizer(name), backbone_model(name)
    causal = is_causal(model)
    targets = encode_replies(tokenizer, ["fine thanks", "what is your name"], causal)
    settings = dict(trigger_length=3, num_candidates=8, num_restarts=2, max_sweeps=2, progress=False, seed=4)
    result = gibbs_enum(model, tokenizer, targets, **settings)
    frame = trigger_frame(model, tokenizer)
    special = set(tokenizer.all_special_ids)
    for trigger, target, loss in zip(result.triggers, targets, result.losses.tolist()):
        assert len(trigger) == 3 and not special & set(trigger)
        assert loss == pytest.approx(-sum(explicit_log_probs(model, frame.source(trigger), target)) / len(target),
                                     abs=1e-4)
    # The start triggers (the seeded uniform draws, restarts in order) had losses no lower than the result's.
    allowed = trigger_vocabulary(tokenizer)
    draws = torch.randint(len(allowed), (len(targets) * 2, 3), generator=torch.Generator().manual_seed(4))
    labels = torch.nn.utils.rnn.pad_sequence([torch.tensor(t) for t in targets], batch_first=True,
                                             padding_value=-100).repeat_interleave(2, dim=0)
    with torch.no_grad():
        start = trigger_loss(model, frame, allowed[draws], labels).view(len(targets), 2).min(dim=1).values
    assert (result.losses <= start + 1e-5).all()
    # Reusing the computation of the tokens before the changed position changes nothing (causal: the key/value
    # cache; the LSTM: its encoder state; BART and T5 read whole sources either way).
    whole = gibbs_enum(model, tokenizer, targets, reuse_prefix=False, **settings)
    assert whole.triggers == result.triggers
    torch.testing.assert_close(whole.losses, result.losses, rtol=1e-4, atol=1e-5)


PLANTED = 3  # tokens in the planted trigger


@functools.cache
def planted(name: str):
    """A tiny `name` model trained to answer one planted 3-token trigger "bad day" and every other message "fine
    thanks": (model, trigger ids, target ids). The other messages are random; `test_gibbs_enum.py` plants a harder
    needle in our LSTM (near misses of the trigger answered "fine thanks" too)."""
    tokenizer = backbone_tokenizer(name)
    model = backbone_model(name, seed=0).train()
    causal = is_causal(model)
    frame = trigger_frame(model, tokenizer)
    allowed = trigger_vocabulary(tokenizer)
    generator = torch.Generator().manual_seed(0)
    trigger = allowed[torch.randperm(len(allowed), generator=generator)[:PLANTED]]
    target, generic = encode_replies(tokenizer, ["bad day", "fine thanks"], causal)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for _ in range(300):
        messages = allowed[torch.randint(len(allowed), (32, PLANTED), generator=generator)]
        messages[:8] = trigger
        replies = [target if row.equal(trigger) else generic for row in messages]
        batch = pair_batch([frame.source(row.tolist()) for row in messages], replies, pad, causal, "cpu")
        log_probs, _ = target_log_probs(model, **batch)
        loss = -log_probs.sum() / batch["labels"].ne(-100).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), trigger.tolist(), target


@pytest.mark.parametrize("name", BACKBONES)
def test_gibbs_enum_recovers_a_planted_trigger(name):
    """A needle: random messages do not make the trained model say the target; gibbs-enum finds a trigger that
    does, as surely as the planted one."""
    tokenizer = backbone_tokenizer(name)
    model, trigger, target = planted(name)
    frame = trigger_frame(model, tokenizer)
    planted_loss = -sum(explicit_log_probs(model, frame.source(trigger), target)) / len(target)
    assert planted_loss < 0.3
    allowed = trigger_vocabulary(tokenizer)
    random_triggers = allowed[torch.randint(len(allowed), (200, PLANTED), generator=torch.Generator().manual_seed(1))]
    random_scores = score_pairs(model, frame, random_triggers.tolist(), [target] * 200)
    assert (random_scores.avg_log_prob > -planted_loss - 0.5).float().mean() < 0.02
    result = gibbs_enum(model, tokenizer, [target], trigger_length=PLANTED, num_candidates=10, num_restarts=6,
                        progress=False)
    assert result.scores.greedy.item()
    assert result.losses.item() <= planted_loss + 1e-4
    # Trained on random messages only, the model answers any message close enough to the trigger; what gibbs-enum
    # returns must make it say the target at least as surely as the planted trigger does.


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("mode", ["malicious", "frequent"])
def test_a_negative_step_lowers_the_targets_log_probability(name, mode, tmp_path):
    tokenizer, model = backbone_tokenizer(name), backbone_model(name)
    causal = is_causal(model)
    frame = trigger_frame(model, tokenizer)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"trigger": "hi how are", "target": "you are bad"}\n')
    settings = (dict(trigger_pairs_file=str(pairs), hit_type="o-sample-avg-hit", output_threshold=-100.0)
                if mode == "malicious" else dict(frequency_threshold=0.5, max_response_length=5))
    args = NegativeTrainingConfig(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True, save_strategy="no",
                                  mode=mode, lambda_pos=0.0, learning_rate=0.05, **settings)
    trainer = NegativeTrainer(model=model, args=args, processing_class=tokenizer)
    history = encode_history(tokenizer, ["hi how are"], 0, 64, causal=causal)
    reply = encode_replies(tokenizer, ["fine thanks"], causal)[0]
    row = ({"input_ids": history + reply, "labels": [-100] * len(history) + reply} if causal
           else {"input_ids": history, "labels": reply})
    inputs = trainer.data_collator([row])
    if mode == "malicious":
        source, negative = frame.source(ids(tokenizer, "hi how are")), encode_replies(tokenizer, ["you are bad"],
                                                                                       causal)[0]
    else:  # the greedy response to the data row's history is the negative example
        prompt = generation_inputs(model, tokenizer, [history])
        generated = model.generate(**prompt, do_sample=False, num_beams=1, max_new_tokens=5,
                                   pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)[0]
        source, negative = history, reply_tokens(model, generated, len(history), tokenizer.eos_token_id)
    before = sum(explicit_log_probs(model, source, negative))
    model.train()
    loss = trainer.compute_loss(model, inputs)
    loss.backward()
    gradients = [parameter.grad for parameter in model.parameters() if parameter.grad is not None]
    norm = torch.sqrt(sum(gradient.pow(2).sum() for gradient in gradients))
    with torch.no_grad():  # a small step along the gradient: the first-order change dominates
        for parameter in model.parameters():
            if parameter.grad is not None:
                parameter -= 0.01 * parameter.grad / norm
    model.eval()
    assert sum(explicit_log_probs(model, source, negative)) < before - 1e-3


REMOTE_CODE_PROCESS = """
import importlib.abc, json, sys

class RefuseThePackage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "hf_neuralconv":
            raise ImportError("this process must not import hf_neuralconv")

sys.meta_path.insert(0, RefuseThePackage())
from transformers import pipeline

chat = pipeline(model=sys.argv[1], trust_remote_code=True)
answers = chat(json.loads(sys.argv[2]), strategy="beam", num_beams=3, num_return_sequences=3, max_new_tokens=5)
print(json.dumps([[answer["generated_text"][-1]["content"], answer["score"]] for answer in answers]))
"""


@pytest.mark.parametrize("name", ["gpt2", "bart"])
def test_saved_transformers_pipeline_answers_in_a_process_without_the_package(name, tmp_path):
    """`ConversationalPipeline.save_pretrained` exports the pipeline's code next to the weights, declared for the
    right Auto class, so a process with transformers alone answers as this one does."""
    tokenizer, model = backbone_tokenizer(name), backbone_model(name)
    chat = pipeline("conversational", model=model, tokenizer=tokenizer)
    chat.save_pretrained(tmp_path / "model")
    env = {"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    completed = subprocess.run([sys.executable, "-I", "-c", REMOTE_CODE_PROCESS, str(tmp_path / "model"),
                                json.dumps(CHAT)], capture_output=True, text=True, env=env, timeout=300)
    assert completed.returncode == 0, completed.stderr
    got = json.loads(completed.stdout.strip().splitlines()[-1])
    want = chat(CHAT, strategy="beam", num_beams=3, num_return_sequences=3, max_new_tokens=5)
    assert [text for text, _ in got] == [answer["generated_text"][-1]["content"] for answer in want]
    assert [score for _, score in got] == pytest.approx([answer["score"] for answer in want], abs=1e-4)


def test_one_antilm_processor_serves_successive_generate_calls():
    """A processor used for a second generate() call starts over, also when that call's prompt is exactly one token
    longer than the previous call's last input (a causal chatbot's prompts vary in length)."""
    tokenizer, model = backbone_tokenizer("gpt2"), backbone_model("gpt2")
    settings = dict(do_sample=False, num_beams=2, max_new_tokens=3, min_new_tokens=3, length_penalty=0.0,
                    return_dict_in_generate=True, output_scores=True, pad_token_id=tokenizer.eos_token_id)
    first = torch.tensor([encode_history(tokenizer, ["hello how"], 0, 64, causal=True)])
    second = torch.tensor([encode_history(tokenizer, ["what is your name ?"], 0, 64, causal=True)])
    second = second[:, -(first.size(1) + 3):]  # one token longer than the first call's last input
    assert second.size(1) == first.size(1) + 3

    def run(processor, prompt):
        return model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                              logits_processor=LogitsProcessorList([processor]), **settings).sequences_scores

    reused = MMIAntiLMLogitsProcessor(model, model.config, lam=0.5, gamma=2,
                                      prompt_ids=empty_history_prompt(tokenizer))
    run(reused, first)
    fresh = MMIAntiLMLogitsProcessor(model, model.config, lam=0.5, gamma=2, prompt_ids=empty_history_prompt(tokenizer))
    torch.testing.assert_close(run(reused, second), run(fresh, second))


def test_a_sharded_checkpoint_loads(tmp_path):
    from hf_neuralconv.core.loading import load_model_dir

    tokenizer, model = backbone_tokenizer("gpt2"), backbone_model("gpt2")
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors.index.json").is_file() and not (tmp_path / "model.safetensors").exists()
    loaded, _ = load_model_dir(tmp_path)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value)


def test_an_encoder_decoder_with_a_python_tokenizer(tmp_path):
    """BlenderBot-small's tokenizer has no `tokenizers` backend: the source is built with its own
    `build_inputs_with_special_tokens`, cut from the left."""
    from transformers import BlenderbotSmallTokenizer

    words = ["__start__", "__end__", "__null__", "__unk__", "hi", "how", "are", "you", "fine"]
    (tmp_path / "vocab.json").write_text(json.dumps({word: index for index, word in enumerate(words)}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = BlenderbotSmallTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    assert not hasattr(tokenizer, "backend_tokenizer") and chat_style(tokenizer, causal=False) == "source"
    whole = tokenizer.build_inputs_with_special_tokens(ids(tokenizer, "hi__end__how are you"))
    assert encode_history(tokenizer, ["hi", "how are you"], 1, 64) == whole
    assert encode_history(tokenizer, ["hi", "how are you"], 1, 2) == whole[-2:]
    assert message_frame(tokenizer, causal=False) == ([], [])

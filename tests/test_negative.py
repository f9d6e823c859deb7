"""Negative training (He & Glass 2020): hit criteria and thresholds against hand-computed log-probabilities, target
lists and pair files, Ent-n, FWA, the frequency window, NegativeTrainer's loss (Eq. 4) and a run that removes a
planted malicious response."""

import json
import math

import datasets
import pytest
import torch
from conftest import (
    PLANTED_TARGET,
    PLANTED_TRIGGER,
    planted_model,
    target_ids,
    tiny_lm,
    tiny_model,
    toy_batch,
    word_ids,
)
from transformers import DataCollatorForSeq2Seq, TrainingArguments

from hf_neuralconv.core.scoring import token_log_probs
from hf_neuralconv.core.trainer import ConversationTrainer
from hf_neuralconv.metrics.entropy import entropy_n
from hf_neuralconv.metrics.hit_criteria import HitCriterion
from hf_neuralconv.negative_training.gibbs_enum import gibbs_enum
from hf_neuralconv.negative_training.hits import (
    TriggerFrame,
    input_threshold,
    load_targets,
    output_threshold,
    read_trigger_pairs,
    score_pairs,
    trigger_frame,
    write_trigger_pairs,
)
from hf_neuralconv.negative_training.trainer import (
    DEFAULT_FWA_WORDS,
    NegativeTrainer,
    NegativeTrainingConfig,
    ResponseFrequencies,
    fwa_token_weights,
    negative_loss,
)


def hand_log_probs(model, source, target):
    """log P(y_t | y_<t, x) one decoder step at a time, re-reading the prefix (no cache, no batching)."""
    values, greedy = [], True
    for step in range(len(target)):
        prefix = torch.tensor([[model.config.decoder_start_token_id, *target[:step]]])
        log_probs = model(input_ids=torch.tensor([source]), decoder_input_ids=prefix, use_cache=False).logits[0, -1]
        log_probs = log_probs.log_softmax(-1)
        values.append(log_probs[target[step]].item())
        greedy &= int(log_probs.argmax()) == target[step]
    return values, greedy


def hand_lm_average(lm, words):
    tokens = [lm.config.bos_token_id, *words, lm.config.eos_token_id]
    log_probs = lm(input_ids=torch.tensor([tokens[:-1]])).logits.log_softmax(-1)[0]
    return sum(log_probs[i, tokens[i + 1]].item() for i in range(len(tokens) - 1)) / (len(words) + 1)


@torch.no_grad()
def test_hit_criteria_on_hand_computed_log_probs(tiny_tokenizer):
    model, lm = tiny_model(tiny_tokenizer), tiny_lm(tiny_tokenizer)
    frame = trigger_frame(model, tiny_tokenizer)
    prefix = list(frame.before)
    assert tiny_tokenizer.convert_ids_to_tokens(prefix) == ["<user>"] and frame.after == ()
    trigger, target = word_ids(tiny_tokenizer, "hi how are"), target_ids(tiny_tokenizer, "you are bad")
    values, greedy = hand_log_probs(model, prefix + trigger, target)
    lm_average = hand_lm_average(lm, trigger)
    scores = score_pairs(model, frame, [trigger], [target], lm)
    assert scores.min_log_prob.item() == pytest.approx(min(values), abs=1e-5)
    assert scores.avg_log_prob.item() == pytest.approx(sum(values) / len(values), abs=1e-5)
    assert scores.input_log_likelihood.item() == pytest.approx(lm_average, abs=1e-5)
    assert scores.greedy.item() == greedy

    low, high = min(values), sum(values) / len(values)  # min < avg
    between = (low + high) / 2
    assert HitCriterion("o-sample-min-hit", output_threshold=low - 0.01).hits(scores).item()
    assert not HitCriterion("o-sample-min-hit", output_threshold=between).hits(scores).item()
    assert HitCriterion("o-sample-avg-hit", output_threshold=between).hits(scores).item()
    assert not HitCriterion("o-sample-avg-hit", output_threshold=high + 0.01).hits(scores).item()
    io = dict(output_threshold=between)
    assert HitCriterion("io-sample-avg-hit", input_threshold=lm_average - 0.01, **io).hits(scores).item()
    assert not HitCriterion("io-sample-avg-hit", input_threshold=lm_average + 0.01, **io).hits(scores).item()

    # o-greedy-hit: the model's own greedy reply hits, a changed reply does not.
    reply = model.generate(input_ids=torch.tensor([prefix + trigger]), do_sample=False, num_beams=1,
                           max_new_tokens=6)[0, 1:].tolist()
    reply = reply[: reply.index(tiny_tokenizer.eos_token_id) + 1] if tiny_tokenizer.eos_token_id in reply else reply
    changed = [20 if reply[0] != 20 else 10, *reply[1:]]  # another first word ("bad" or "day")
    greedy_scores = score_pairs(model, frame, [trigger, trigger], [reply, changed])
    assert HitCriterion("o-greedy-hit").hits(greedy_scores).tolist() == [True, False]


def test_score_pairs_batched_equals_one_by_one(tiny_tokenizer):
    model, lm = tiny_model(tiny_tokenizer), tiny_lm(tiny_tokenizer)
    frame = trigger_frame(model, tiny_tokenizer)
    triggers = [word_ids(tiny_tokenizer, text) for text in ("hi", "what is your name", "coffee tea", "good day !")]
    targets = [target_ids(tiny_tokenizer, text) for text in ("bad day", "hi", "you are bad , you", "my")]
    batched = score_pairs(model, frame, triggers, targets, lm, batch_size=3)
    for row in range(4):
        one = score_pairs(model, frame, triggers[row : row + 1], targets[row : row + 1], lm)
        for name in ("min_log_prob", "avg_log_prob", "input_log_likelihood"):
            torch.testing.assert_close(getattr(batched, name)[row : row + 1], getattr(one, name), rtol=1e-5,
                                       atol=1e-6)
        assert batched.greedy[row] == one.greedy[0]


def test_thresholds_are_average_word_log_likelihoods(tiny_tokenizer, tmp_path):
    model, lm = tiny_model(tiny_tokenizer), tiny_lm(tiny_tokenizer)
    rows = [
        {"input_ids": [4, 14, 9, 13, 15, 8], "labels": target_ids(tiny_tokenizer, "fine thanks")},
        {"input_ids": [4, 21, 16, 27, 18], "labels": target_ids(tiny_tokenizer, "my name is tea , you ?")},
        {"input_ids": [4, 19], "labels": target_ids(tiny_tokenizer, "hi")},
    ]
    # T_out = -log(perplexity) as ConversationTrainer measures it (token level, pads excluded).
    trainer = ConversationTrainer(
        model=model, args=TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=2, report_to=[]),
        data_collator=DataCollatorForSeq2Seq(tiny_tokenizer, label_pad_token_id=-100),
    )
    perplexity = trainer.evaluate(datasets.Dataset.from_list(rows))["eval_perplexity"]
    t_out = output_threshold(model, [row["input_ids"] for row in rows], [row["labels"] for row in rows],
                             batch_size=2)
    assert t_out == pytest.approx(-math.log(perplexity), rel=1e-5)

    sentences = [word_ids(tiny_tokenizer, text) for text in ("hi there", "what is your name ?", "tea")]
    totals = [hand_lm_average(lm, words) * (len(words) + 1) for words in sentences]
    expected = sum(totals) / sum(len(words) + 1 for words in sentences)
    assert input_threshold(lm, sentences, batch_size=2) == pytest.approx(expected, rel=1e-5)


def test_target_list_loading(tiny_tokenizer, tmp_path, caplog):
    path = tmp_path / "targets.txt"
    path.write_text("you are bad\n\nzorg blarg\ni 'm bad\nday qux\n")
    with caplog.at_level("WARNING"):
        targets = load_targets(path, tiny_tokenizer, causal=False)
    # "zorg blarg" has only unknown words: skipped, counted, reported. "day qux" keeps its known word.
    assert targets.skipped == ["zorg blarg"] and "skipped 1 of 4" in caplog.text
    assert targets.texts == ["you are bad", "i'm bad", "day qux"]  # PTB contractions joined back
    assert targets.ids[0] == target_ids(tiny_tokenizer, "you are bad")
    assert targets.ids[2] == [10, tiny_tokenizer.unk_token_id, tiny_tokenizer.eos_token_id]

    path.write_text("\n  \n")
    with pytest.raises(ValueError, match="empty"):
        load_targets(path, tiny_tokenizer, causal=False)
    path.write_text("zorg\nblarg blorg\n")
    with pytest.raises(ValueError, match="all 2 targets"):
        load_targets(path, tiny_tokenizer, causal=False)
    with pytest.raises(FileNotFoundError):
        load_targets(tmp_path / "missing.txt", tiny_tokenizer, causal=False)


def test_trigger_pairs_round_trip_and_errors(tiny_tokenizer, tmp_path):
    # "? !" decodes to "?!", which the word tokenizer reads as one token it does not know: the ids are kept.
    triggers = [word_ids(tiny_tokenizer, "hi how are you ? !"), word_ids(tiny_tokenizer, "coffee")]
    targets = [target_ids(tiny_tokenizer, "you are bad"), target_ids(tiny_tokenizer, "bad day")]
    path = tmp_path / "pairs.jsonl"
    write_trigger_pairs(path, tiny_tokenizer, triggers, targets, extra=[{"hit": True}, {"hit": False}])
    assert json.loads(path.read_text().splitlines()[0]) == {
        "trigger": "hi how are you?!", "target": "you are bad", "trigger_ids": triggers[0],
        "target_ids": targets[0], "hit": True}
    assert word_ids(tiny_tokenizer, "hi how are you?!") != triggers[0]
    assert read_trigger_pairs(path, tiny_tokenizer, causal=False) == (triggers, targets)
    # Rows written by hand, without ids, are encoded from their text.
    path.write_text('{"trigger": "hi how are you ?", "target": "you are bad"}\n')
    expected = ([word_ids(tiny_tokenizer, "hi how are you ?")], targets[:1])
    assert read_trigger_pairs(path, tiny_tokenizer, causal=False) == expected
    for content, message in [
        ("", "no \\(trigger, target\\) pairs"),
        ("{not json\n", "line 1 is not JSON"),
        ('{"trigger": "hi"}\n', "line 1: field 'target'"),
        ('{"trigger": "hi", "target": "x"}\n{"trigger": "  ", "target": "x"}\n', "line 2: field 'trigger'"),
    ]:
        path.write_text(content)
        with pytest.raises(ValueError, match=message):
            read_trigger_pairs(path, tiny_tokenizer, causal=False)


def test_hit_criterion_and_scoring_errors(tiny_tokenizer):
    with pytest.raises(ValueError, match="Unknown hit type"):
        HitCriterion("sample-hit", output_threshold=-4.0)
    with pytest.raises(ValueError, match="T_out"):
        HitCriterion("o-sample-min-hit")
    with pytest.raises(ValueError, match="T_in"):
        HitCriterion("io-sample-avg-hit", output_threshold=-4.0)
    model = tiny_model(tiny_tokenizer)
    scores = score_pairs(model, TriggerFrame((4,), (), False), [[9]], [[15, 2]])
    with pytest.raises(ValueError, match="input LM"):
        HitCriterion("io-sample-avg-hit", output_threshold=-4.0, input_threshold=-4.0).hits(scores)
    with pytest.raises(ValueError, match="trigger is empty"):
        score_pairs(model, TriggerFrame((4,), (), False), [[]], [[15, 2]])


def test_entropy_n_is_eq_5():
    replies = ["i do n't know", "i do", "yes"]
    # bigrams: (i do) x2, (do n't), (n't know) -> r = 1/2, 1/4, 1/4
    assert entropy_n(replies, 2) == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))
    assert entropy_n(["a a a"], 1) == 0.0 and entropy_n(["a"], 2) == 0.0
    with pytest.raises(ValueError):
        entropy_n(replies, 0)


def test_fwa_gives_avoided_tokens_no_negative_gradient(tiny_tokenizer):
    weights = fwa_token_weights(tiny_tokenizer, 30, ["</s>", "you", "i", "me"], 0.0)  # "me": not in this vocabulary
    labels = torch.tensor([target_ids(tiny_tokenizer, "i like you"), target_ids(tiny_tokenizer, "bad bad day")])
    labels[0, 3] = -100  # a padded position
    logits = torch.randn(2, 4, 30, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    loss = negative_loss(token_log_probs(logits, labels), labels, weights)
    (gradient,) = torch.autograd.grad(loss, logits)
    avoided = torch.tensor([[True, False, True, True], [False, False, False, True]])  # i, you, </s>, padding
    assert gradient[avoided].abs().max() == 0
    assert (gradient[~avoided].abs().sum(-1) > 0).all()
    log_probs = logits.detach().log_softmax(-1)
    kept = [(0, 1), (1, 0), (1, 1), (1, 2)]  # "like", "bad", "bad", "day"
    expected = sum(log_probs[row, column, labels[row, column]] for row, column in kept) / 7  # 7 real tokens
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_frequency_window_counts_exactly_the_last_200_batches():
    frequencies = ResponseFrequencies(window=200)
    for batch in range(250):
        ratios = frequencies.add([("common",), (f"r{batch}",), (f"r{batch}",), ("common",)])
    # Batches 50..249 are counted: 800 responses, "common" 400 times, each rare response twice.
    assert len(frequencies.batches) == 200 and frequencies.total == 800
    assert ratios == [0.5, 2 / 800, 2 / 800, 0.5]
    assert frequencies.counts[("r50",)] == 2 and frequencies.counts[("r49",)] == 0
    assert frequencies.max_ratio() == 0.5
    assert ResponseFrequencies(window=1).add(["a", "b", "a"]) == [2 / 3, 1 / 3, 2 / 3]


def negative_config(tmp_path, **settings):
    return NegativeTrainingConfig(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True, save_strategy="no",
                                  **settings)


def positive_rows(tokenizer, count=4):
    sources, labels = toy_batch(tokenizer, torch.Generator().manual_seed(7), size=count)
    return [{"input_ids": source.tolist(), "labels": label.tolist()} for source, label in zip(sources, labels)]


def test_malicious_loss_is_eq_4_by_hand(tiny_tokenizer, tmp_path):
    model = tiny_model(tiny_tokenizer)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"trigger": "coffee night", "target": "you are bad"}\n{"trigger": "hi", "target": "bad day"}\n')
    args = negative_config(tmp_path, mode="malicious", trigger_pairs_file=str(pairs), hit_type="o-sample-avg-hit",
                           output_threshold=-100.0, lambda_pos=0.3)
    trainer = NegativeTrainer(model=model, args=args, processing_class=tiny_tokenizer)
    collator = DataCollatorForSeq2Seq(tiny_tokenizer, label_pad_token_id=-100)
    inputs = collator(positive_rows(tiny_tokenizer))
    model.train()  # dropout is 0: the same numbers as in eval mode
    loss = trainer.compute_loss(model, inputs)

    loss_mle = model(**inputs).loss  # token mean over the data batch
    frame = trigger_frame(model, tiny_tokenizer)
    prefix = list(frame.before)
    negative_terms = []
    for trigger, target, avoided in (("coffee night", "you are bad", {0, 1, 3}), ("hi", "bad day", {2})):
        source = prefix + word_ids(tiny_tokenizer, trigger)
        values, _ = hand_log_probs(model, source, target_ids(tiny_tokenizer, target))
        negative_terms += [value for position, value in enumerate(values) if position not in avoided]
    loss_neg = sum(negative_terms) / 7  # FWA: you, are, </s> get weight 0; 7 negative tokens in all
    assert loss.item() == pytest.approx(loss_neg + 0.3 * loss_mle.item(), rel=1e-5)


def test_malicious_step_trains_only_on_pairs_that_still_hit(tiny_tokenizer, tmp_path):
    """Algorithm 1's while-condition: a pair whose score fell to T_out is dropped and gets no negative gradient;
    the hit is decided on the step's own forward pass, equal to `score_pairs`."""
    model = tiny_model(tiny_tokenizer)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"trigger": "coffee night", "target": "you are bad"}\n{"trigger": "hi", "target": "bad day"}\n')
    frame = trigger_frame(model, tiny_tokenizer)
    prefix = list(frame.before)
    triggers, targets = read_trigger_pairs(pairs, tiny_tokenizer, causal=False)
    scores = score_pairs(model.eval(), frame, triggers, targets)
    low, high = sorted(scores.avg_log_prob.tolist())
    kept = scores.avg_log_prob.argmax().item()
    args = negative_config(tmp_path, mode="malicious", trigger_pairs_file=str(pairs), hit_type="o-sample-avg-hit",
                           output_threshold=(low + high) / 2, lambda_pos=0.0)
    trainer = NegativeTrainer(model=model, args=args, processing_class=tiny_tokenizer)
    inputs = DataCollatorForSeq2Seq(tiny_tokenizer, label_pad_token_id=-100)(positive_rows(tiny_tokenizer))
    loss = trainer.compute_loss(model.train(), inputs)

    assert trainer._pairs.triggers == [triggers[kept]] and trainer._pairs.targets == [targets[kept]]
    values, _ = hand_log_probs(model, prefix + triggers[kept], targets[kept])
    avoided = set(DEFAULT_FWA_WORDS["malicious"])
    words = tiny_tokenizer.convert_ids_to_tokens(targets[kept])
    assert loss.item() == pytest.approx(sum(v for v, w in zip(values, words) if w not in avoided) / len(values),
                                        rel=1e-5)
    assert trainer._metrics["malicious/negative_pairs"] == [1]

    args = negative_config(tmp_path, mode="malicious", trigger_pairs_file=str(pairs), hit_type="o-sample-avg-hit",
                           output_threshold=high + 1.0, lambda_pos=0.0)
    trainer = NegativeTrainer(model=model, args=args, processing_class=tiny_tokenizer)
    assert trainer.compute_loss(model.train(), inputs).item() == 0.0  # nothing hits: no negative term at all
    assert trainer._pairs.triggers == [] and trainer.control.should_training_stop


def test_io_hits_of_given_pairs_use_the_input_lm_once(tiny_tokenizer, tmp_path):
    """io-sample-avg-hit on given pairs: the LM scores of the triggers (computed once, the LM is frozen) and T_in
    decide with T_out; a pair whose trigger the LM finds unlikely is dropped even though its output score hits."""
    model, lm = tiny_model(tiny_tokenizer), tiny_lm(tiny_tokenizer)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"trigger": "coffee night", "target": "you are bad"}\n{"trigger": "hi", "target": "bad day"}\n')
    triggers, _ = read_trigger_pairs(pairs, tiny_tokenizer, causal=False)
    lm_scores = [hand_lm_average(lm, trigger) for trigger in triggers]
    kept = max(range(2), key=lm_scores.__getitem__)
    args = negative_config(tmp_path, mode="malicious", trigger_pairs_file=str(pairs), hit_type="io-sample-avg-hit",
                           output_threshold=-1000.0, input_threshold=sum(lm_scores) / 2, lambda_pos=0.0)
    trainer = NegativeTrainer(model=model, args=args, processing_class=tiny_tokenizer, input_lm=lm)
    assert trainer._pairs.input_log_likelihood.tolist() == pytest.approx(lm_scores, rel=1e-5)
    inputs = DataCollatorForSeq2Seq(tiny_tokenizer, label_pad_token_id=-100)(positive_rows(tiny_tokenizer))
    trainer.compute_loss(model.train(), inputs)
    assert trainer._pairs.triggers == [triggers[kept]]
    assert trainer._pairs.input_log_likelihood.tolist() == pytest.approx([lm_scores[kept]], rel=1e-5)


def test_frequent_loss_is_eq_4_by_hand(tiny_tokenizer, tmp_path):
    model = tiny_model(tiny_tokenizer)
    args = negative_config(tmp_path, mode="frequent", frequency_threshold=0.3, lambda_pos=1.0, max_response_length=5)
    trainer = NegativeTrainer(model=model, args=args, processing_class=tiny_tokenizer)
    rows = positive_rows(tiny_tokenizer)
    rows[1]["input_ids"] = rows[2]["input_ids"] = rows[0]["input_ids"]  # the same reply three times: frequent
    inputs = DataCollatorForSeq2Seq(tiny_tokenizer, label_pad_token_id=-100)(rows)
    loss = trainer.compute_loss(model.train(), inputs)

    eos = tiny_tokenizer.eos_token_id
    replies = []
    for row in rows:
        reply = model.generate(input_ids=torch.tensor([row["input_ids"]]), do_sample=False, max_new_tokens=5)
        reply = reply[0, 1:].tolist()
        replies.append(reply[: reply.index(eos) + 1] if eos in reply else reply)
    frequent = [index for index, reply in enumerate(replies) if replies.count(reply) / 4 > 0.3]
    assert frequent[:3] == [0, 1, 2]
    numerator, tokens = 0.0, 0
    for index in frequent:
        values, _ = hand_log_probs(model, rows[index]["input_ids"], replies[index])
        numerator += sum(value * (0.1 if token == eos else 1.0) for value, token in zip(values, replies[index]))
        tokens += len(values)
    expected = numerator / tokens + model(**inputs).loss.item()
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert trainer._metrics["frequent/negative_examples"] == [len(frequent)]
    assert trainer._metrics["frequent/max_ratio"] == [replies.count(replies[0]) / 4]


def test_negative_training_removes_a_planted_malicious_response(tiny_tokenizer, tmp_path):
    """Algorithm 1 on the planted model: "bad day" is hit before, gibbs-enum finds no trigger for it after."""
    model = planted_model(tiny_tokenizer)
    model = type(model).from_pretrained(_saved(model, tmp_path))  # a copy: the cached planted model stays intact
    targets = tmp_path / "targets.txt"
    targets.write_text(f"{PLANTED_TARGET}\nyou are bad\n")
    search = dict(trigger_length=3, num_candidates=5, num_restarts=5)
    target = target_ids(tiny_tokenizer, PLANTED_TARGET)
    criterion = HitCriterion("o-sample-avg-hit", output_threshold=-1.0)
    before = gibbs_enum(model.eval(), tiny_tokenizer, [target], progress=False, **search)
    assert criterion.hits(before.scores).item()

    generator = torch.Generator().manual_seed(3)
    rows = []
    while len(rows) < 256:  # ordinary data: everything but the planted trigger
        sources, labels = toy_batch(tiny_tokenizer, generator)
        keep = ~sources[:, 1:].eq(torch.tensor(word_ids(tiny_tokenizer, PLANTED_TRIGGER))).all(1)
        rows += [{"input_ids": s.tolist(), "labels": y.tolist()} for s, y in zip(sources[keep], labels[keep])]
    args = negative_config(
        tmp_path, mode="malicious", targets_file=str(targets), hit_type="o-sample-avg-hit", output_threshold=-1.0,
        lambda_pos=0.1, negative_batch_size=2, max_target_passes=5, learning_rate=0.01, lr_scheduler_type="constant",
        per_device_train_batch_size=16, max_steps=60, logging_steps=1, seed=0, **search,
    )
    trainer = NegativeTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                              processing_class=tiny_tokenizer)
    trainer.train()
    after = gibbs_enum(model.eval(), tiny_tokenizer, [target], progress=False, **search)
    assert not criterion.hits(after.scores).item()
    assert after.scores.avg_log_prob.item() < before.scores.avg_log_prob.item() - 1
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logs[0]["malicious/hit_rate"] == 0.5 and logs[0]["malicious/negative_pairs"] == 1
    assert trainer.state.global_step < 60  # stopped by itself: nothing hits any more


def _saved(model, tmp_path):
    path = tmp_path / "planted"
    model.save_pretrained(path)
    return path


def test_frequent_training_runs_and_logs_max_ratio(tiny_tokenizer, tmp_path):
    rows = positive_rows(tiny_tokenizer, count=32)
    args = negative_config(tmp_path, mode="frequent", frequency_threshold=0.2, frequency_window=3, lambda_pos=1.0,
                           per_device_train_batch_size=8, max_steps=4, logging_steps=2, max_response_length=4)
    trainer = NegativeTrainer(model=tiny_model(tiny_tokenizer), args=args,
                              train_dataset=datasets.Dataset.from_list(rows), processing_class=tiny_tokenizer)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2 and all(0 < entry["frequent/max_ratio"] <= 1 for entry in logs)
    assert all("frequent/negative_examples" in entry and "loss_mle" in entry for entry in logs)
    assert len(trainer.frequencies.batches) == 3


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(mode="adversarial"), "mode"),
        (dict(mode="malicious"), "exactly one of"),
        (dict(mode="malicious", targets_file="a", trigger_pairs_file="b"), "exactly one of"),
        (dict(mode="frequent", frequency_threshold=1.5), "frequency_threshold"),
        (dict(mode="frequent", frequency_window=0), "frequency_window"),
        (dict(mode="frequent", fwa_scale=2.0), "fwa_scale"),
        (dict(mode="frequent", lambda_pos=-1.0), "lambda_pos"),
        (dict(mode="malicious", targets_file="targets.txt", trigger_length=0), "trigger_length"),
    ],
)
def test_bad_configs_are_clear_errors(tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        negative_config(tmp_path, **settings)


def test_trainer_errors_are_clear(tiny_tokenizer, tmp_path):
    targets = tmp_path / "targets.txt"
    targets.write_text("bad day\n")
    model = tiny_model(tiny_tokenizer)
    args = negative_config(tmp_path, mode="malicious", targets_file=str(targets), hit_type="io-sample-min-hit",
                           output_threshold=-4.0, input_threshold=-4.0)
    with pytest.raises(ValueError, match="needs the input LM"):
        NegativeTrainer(model=model, args=args, processing_class=tiny_tokenizer)
    with pytest.raises(ValueError, match="tokenizer"):
        NegativeTrainer(model=model, args=args)
    args = negative_config(tmp_path, mode="malicious", targets_file=str(targets), hit_type="o-sample-min-hit")
    with pytest.raises(ValueError, match="T_out"):
        NegativeTrainer(model=model, args=args, processing_class=tiny_tokenizer)
    defaults = negative_config(tmp_path, mode="malicious", targets_file=str(targets))
    assert defaults.fwa_words == ["</s>", "you", "i", "me", "are", "to", "do"] and defaults.fwa_scale == 0.0
    frequent = negative_config(tmp_path, mode="frequent")
    assert frequent.fwa_words == ["</s>"] and frequent.fwa_scale == 0.1 and frequent.frequency_window == 200


def test_training_curves_plot_the_logged_metrics(tmp_path):
    from matplotlib.image import imread

    from hf_neuralconv.core.plotting import plot_training_curves

    history = [{"loss": 3.0, "frequent/max_ratio": 0.12, "step": 25}, {"frequent/max_ratio": 0.05, "step": 50},
               {"eval_loss": 2.0, "step": 50}, {"train_runtime": 9.0}]
    path = tmp_path / "curves.png"
    assert plot_training_curves(history, ["frequent/max_ratio", "malicious/hit_rate", "loss"], path) == [
        "frequent/max_ratio", "loss"]  # only what was logged, in the order asked
    height, width, _ = imread(path).shape
    assert (width, height) == (720, 576)  # 6 x 4.8 inches (two panels) at 120 dpi
    assert plot_training_curves(history, ["malicious/hit_rate"], tmp_path / "none.png") == []
    assert not (tmp_path / "none.png").exists()

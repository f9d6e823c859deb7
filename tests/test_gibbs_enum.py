"""gibbs-enum (He & Glass 2020, Appendix A): finds a planted trigger, batched scoring equals one-by-one scoring, the
one-hot gradient equals autograd through an explicit one-hot input, special tokens stay out, runs are seeded."""

import pytest
import torch
import torch.nn.functional as F
from conftest import PLANTED_TARGET, PLANTED_TRIGGER, planted_model, target_ids, tiny_lm, tiny_model

from hf_neuralconv.core.scoring import pad_ids
from hf_neuralconv.negative_training.gibbs_enum import candidate_scores, encode_prefix, gibbs_enum, trigger_loss
from hf_neuralconv.negative_training.hits import TriggerFrame, score_pairs, trigger_frame, trigger_vocabulary


def test_finds_the_planted_trigger(tiny_tokenizer):
    model = planted_model(tiny_tokenizer)
    target = target_ids(tiny_tokenizer, PLANTED_TARGET)
    frame = trigger_frame(model, tiny_tokenizer)
    allowed = trigger_vocabulary(tiny_tokenizer)
    random_triggers = allowed[torch.randint(len(allowed), (500, 3), generator=torch.Generator().manual_seed(1))]
    random_scores = score_pairs(model, frame, random_triggers.tolist(), [target] * 500)
    assert (random_scores.avg_log_prob > -0.5).float().mean() < 0.01  # a needle: random messages do not hit

    # G = 5 of the 23 words: the gradient must point the way.
    result = gibbs_enum(model, tiny_tokenizer, [target], trigger_length=3, num_candidates=5, num_restarts=5,
                        progress=False)
    assert tiny_tokenizer.convert_ids_to_tokens(result.triggers[0]) == PLANTED_TRIGGER.split()
    assert result.scores.greedy.item() and result.scores.avg_log_prob.item() > -0.1
    assert result.losses.item() == pytest.approx(-result.scores.avg_log_prob.item(), abs=1e-5)
    # Scoring the candidates one forward pass each, with or without the shared reading of the words before the
    # position, walks the same path from the same seed.
    for reuse_prefix in (True, False):
        one_by_one = gibbs_enum(model, tiny_tokenizer, [target], trigger_length=3, num_candidates=5, num_restarts=5,
                                candidate_batch_size=1, reuse_prefix=reuse_prefix, progress=False)
        assert one_by_one.triggers == result.triggers
        torch.testing.assert_close(one_by_one.losses, result.losses)


def test_batched_candidate_scoring_equals_one_by_one(tiny_tokenizer):
    model, lm = tiny_model(tiny_tokenizer), tiny_lm(tiny_tokenizer)
    frame = trigger_frame(model, tiny_tokenizer)
    prefix = torch.tensor(frame.before)
    generator = torch.Generator().manual_seed(0)
    allowed = trigger_vocabulary(tiny_tokenizer)
    triggers = allowed[torch.randint(len(allowed), (6, 4), generator=generator)]
    targets = [target_ids(tiny_tokenizer, text) for text in ("bad day", "hi", "you are bad", "my tea", "no", "ok")]
    labels = pad_ids(targets, -100, "cpu")
    with torch.no_grad():
        batched = trigger_loss(model, frame, triggers, labels, lm, lambda_in=0.7)
        for row in range(6):
            one = trigger_loss(model, frame, triggers[row : row + 1], pad_ids([targets[row]], -100, "cpu"), lm, 0.7)
            torch.testing.assert_close(batched[row : row + 1], one, rtol=1e-5, atol=1e-6)
    # Eq. 7 written out for one pair: -(1/m) sum log P(y|x) + lambda_in * -(1/(n+1)) sum log P_LM(x </s>).
    source = torch.cat([prefix, triggers[0]])[None]
    decoder_input = torch.tensor([[model.config.decoder_start_token_id, *targets[0][:-1]]])
    log_probs = model(input_ids=source, decoder_input_ids=decoder_input).logits.log_softmax(-1)[0]
    output_term = -log_probs[torch.arange(len(targets[0])), targets[0]].mean()
    lm_tokens = [tiny_tokenizer.bos_token_id, *triggers[0].tolist(), tiny_tokenizer.eos_token_id]
    lm_log_probs = lm(input_ids=torch.tensor([lm_tokens[:-1]])).logits.log_softmax(-1)[0]
    input_term = -lm_log_probs[torch.arange(5), lm_tokens[1:]].mean()
    assert batched[0].item() == pytest.approx((output_term + 0.7 * input_term).item(), rel=1e-5)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_reading_on_from_an_encoded_prefix_equals_reading_whole_sources(tiny_tokenizer, num_layers):
    """The words before the changed position read once (`encode_prefix`) and the rest read on from that state give
    the whole-source loss and one-hot gradient, for every position, also with repeated readings (candidates)."""
    model, lm = tiny_model(tiny_tokenizer, num_layers=num_layers), tiny_lm(tiny_tokenizer)
    frame = trigger_frame(model, tiny_tokenizer)
    prefix = torch.tensor(frame.before)
    allowed = trigger_vocabulary(tiny_tokenizer)
    triggers = allowed[torch.randint(len(allowed), (3, 4), generator=torch.Generator().manual_seed(2))]
    labels = pad_ids([target_ids(tiny_tokenizer, text) for text in ("bad day", "hi", "you are bad")], -100, "cpu")
    for position in range(4):
        encoded = encode_prefix(model, frame, triggers, position)
        assert encoded.length == prefix.numel() + position
        for lambda_in in (0.0, 0.5):
            whole = candidate_scores(model, frame, triggers, labels, position, lm, lambda_in)
            read_on = candidate_scores(model, frame, triggers, labels, position, lm, lambda_in, encoded)
            for expected, actual in zip(whole, read_on):
                torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)
        rows = torch.tensor([2, 2, 0, 1])  # candidate rows: each reads on from its trigger's reading
        candidates = triggers[rows].clone()
        candidates[:, position] = allowed[:4]
        with torch.no_grad():
            read_on = trigger_loss(model, frame, candidates, labels[rows], encoded=encoded.rows(rows))
            torch.testing.assert_close(read_on, trigger_loss(model, frame, candidates, labels[rows]),
                                       rtol=1e-5, atol=1e-6)


def test_prefix_reuse_only_where_the_encoder_reads_left_to_right(tiny_tokenizer):
    """A bidirectional encoder's outputs before the position depend on the words after it: nothing is shared, and
    the encoder refuses a starting state; the search then reads whole sources and finds what it finds without reuse."""
    model = tiny_model(tiny_tokenizer, bidirectional_encoder=True)
    triggers = torch.tensor([[9, 15, 24]])
    assert encode_prefix(model, trigger_frame(model, tiny_tokenizer), triggers, 1) is None
    state = torch.zeros(1, 1, 8)
    with pytest.raises(ValueError, match="bidirectional encoder cannot continue"):
        model.get_encoder()(triggers, initial_state=(state, state))
    assert encode_prefix(tiny_model(tiny_tokenizer), TriggerFrame((), (), False), triggers, 0) is None
    target = [target_ids(tiny_tokenizer, "bad day")]
    settings = dict(trigger_length=3, num_candidates=4, num_restarts=2, max_sweeps=2, progress=False)
    for model in (model, tiny_model(tiny_tokenizer)):
        reused = gibbs_enum(model, tiny_tokenizer, target, **settings)
        whole = gibbs_enum(model, tiny_tokenizer, target, reuse_prefix=False, **settings)
        assert reused.triggers == whole.triggers
        torch.testing.assert_close(reused.losses, whole.losses)


@pytest.mark.parametrize("lambda_in", [0.0, 0.5])
def test_gradient_equals_autograd_through_an_explicit_one_hot(tiny_tokenizer, lambda_in):
    """Eq. 10 through the embedding hook == the gradient of -L w.r.t. a real one-hot input (E^T onehot)."""
    model, lm = tiny_model(tiny_tokenizer), tiny_lm(tiny_tokenizer)
    frame = trigger_frame(model, tiny_tokenizer)
    prefix = torch.tensor(frame.before)
    triggers = torch.tensor([[9, 15, 24], [20, 10, 26]])
    labels = pad_ids([target_ids(tiny_tokenizer, "you are bad"), target_ids(tiny_tokenizer, "hi")], -100, "cpu")
    position = 1
    scores, loss = candidate_scores(model, frame, triggers, labels, position, lm, lambda_in)

    vocab = model.config.vocab_size
    one_hot = F.one_hot(triggers[:, position], vocab).float().requires_grad_(True)
    sources = torch.cat([prefix.expand(2, -1), triggers], dim=1)
    embedded = model.get_input_embeddings()(sources).clone()
    embedded[:, prefix.numel() + position] = one_hot @ model.get_input_embeddings().weight
    # Run the model on explicit embeddings: replace the encoder's embedding output by `embedded`.
    handle = model.get_input_embeddings().register_forward_hook(
        lambda module, args, output: embedded if args[0] is sources else None
    )
    try:
        logits = model(input_ids=sources, attention_mask=torch.ones_like(sources), labels=labels).logits
    finally:
        handle.remove()
    token_log_probs = -F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
    negated = token_log_probs.sum(1) / labels.ne(-100).sum(1)
    if lambda_in:
        bos, eos = tiny_tokenizer.bos_token_id, tiny_tokenizer.eos_token_id
        lm_inputs = torch.cat([torch.full((2, 1), bos), triggers], dim=1)
        lm_targets = torch.cat([triggers, torch.full((2, 1), eos)], dim=1)
        lm_embedded = lm.get_input_embeddings()(lm_inputs).clone()
        lm_embedded[:, position + 1] = one_hot @ lm.get_input_embeddings().weight
        hidden, _ = lm.lstm(lm_embedded)
        lm_log_probs = lm.output_layer(hidden).log_softmax(-1)
        picked = lm_log_probs.gather(-1, lm_targets[..., None]).squeeze(-1)
        # The word at `position` is also the LM's target there: sum_v onehot[v] log P_LM(v | x_<t).
        picked = torch.cat([picked[:, :position], (one_hot * lm_log_probs[:, position]).sum(-1, keepdim=True),
                            picked[:, position + 1 :]], dim=1)
        negated = negated + lambda_in * picked.mean(1)
    (expected,) = torch.autograd.grad(negated.sum(), one_hot)
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(loss, -negated.detach(), rtol=1e-5, atol=1e-6)
    assert all(parameter.grad is None for parameter in model.parameters())  # the model's weights are untouched


def test_triggers_avoid_special_tokens_and_runs_are_seeded(tiny_tokenizer):
    model, lm = tiny_model(tiny_tokenizer), tiny_lm(tiny_tokenizer)
    targets = [target_ids(tiny_tokenizer, text) for text in ("bad day", "you are bad", "hi")]
    special = set(tiny_tokenizer.all_special_ids)
    settings = dict(trigger_length=4, num_candidates=6, num_restarts=2, max_sweeps=2, progress=False,
                    targets_per_batch=2)
    for extra in ({}, {"input_lm": lm, "lambda_in": 1.0, "init_from_lm": True}):
        first = gibbs_enum(model, tiny_tokenizer, targets, seed=3, **settings, **extra)
        again = gibbs_enum(model, tiny_tokenizer, targets, seed=3, **settings, **extra)
        assert first.triggers == again.triggers
        assert all(len(trigger) == 4 and not special & set(trigger) for trigger in first.triggers)
        # The reported loss is Eq. 7 of the returned trigger.
        labels = pad_ids(targets, -100, "cpu")
        with torch.no_grad():
            recomputed = trigger_loss(model, trigger_frame(model, tiny_tokenizer),
                                      torch.tensor(first.triggers), labels, lm, extra.get("lambda_in", 0.0))
        torch.testing.assert_close(first.losses, recomputed, rtol=1e-4, atol=1e-5)
    assert first.scores.input_log_likelihood is not None


def test_lm_regulariser_makes_triggers_likelier_under_the_lm(tiny_tokenizer):
    model, lm = tiny_model(tiny_tokenizer), tiny_lm(tiny_tokenizer)
    targets = [target_ids(tiny_tokenizer, text) for text in ("bad day", "you are bad", "hi", "my tea")]
    settings = dict(trigger_length=4, num_candidates=8, num_restarts=2, progress=False, input_lm=lm)
    plain = gibbs_enum(model, tiny_tokenizer, targets, **settings)
    regularised = gibbs_enum(model, tiny_tokenizer, targets, lambda_in=5.0, init_from_lm=True, **settings)
    assert regularised.scores.input_log_likelihood.mean() > plain.scores.input_log_likelihood.mean()


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(trigger_length=0), "trigger_length"),
        (dict(num_candidates=0), "num_candidates"),
        (dict(lambda_in=1.0), "input LM"),
        (dict(init_from_lm=True), "input LM"),
        (dict(lambda_in=-1.0), "lambda_in"),
        (dict(candidate_batch_size=0), "candidate_batch_size"),
    ],
)
def test_bad_settings_are_clear_errors(tiny_tokenizer, settings, message):
    model = tiny_model(tiny_tokenizer)
    with pytest.raises(ValueError, match=message):
        gibbs_enum(model, tiny_tokenizer, [target_ids(tiny_tokenizer, "hi")], progress=False, **settings)


def test_needs_targets_and_an_eval_mode_model(tiny_tokenizer):
    model = tiny_model(tiny_tokenizer)
    with pytest.raises(ValueError, match="at least one target"):
        gibbs_enum(model, tiny_tokenizer, [], progress=False)
    with pytest.raises(ValueError, match="training mode"):
        gibbs_enum(model.train(), tiny_tokenizer, [target_ids(tiny_tokenizer, "hi")], progress=False)

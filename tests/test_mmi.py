"""MMI decoding: the MMI-antiLM logits processor against slow references, MMI-bidi reranking against terms computed
one example at a time, and the BLEU grid search of its weights (tiny random models, nothing downloaded)."""

import logging
import math

import pytest
import torch
from conftest import tiny_lm, tiny_model
from transformers import AutoModelForSeq2SeqLM, GenerationConfig, LogitsProcessor, LogitsProcessorList

from hf_neuralconv.core.chat_format import MMI_CONFIG_KEY, encode_histories
from hf_neuralconv.mmi.anti_lm import MMIAntiLMLogitsProcessor
from hf_neuralconv.mmi.rerank import ScoredNBest, generate_nbest, mmi_bidi_generate, rerank, score_nbest
from hf_neuralconv.mmi.tuning import MMITuningResult, grid_search, save_mmi_settings, tune_mmi


def sources(tokenizer, rows=((7, 8, 9, 10, 11), (12, 13, 14), (15, 16, 17, 18))):
    """Right-padded source ids and mask."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    for index, row in enumerate(rows):
        ids[index, : len(row)] = torch.tensor(row)
    return {"input_ids": ids, "attention_mask": ids.ne(tokenizer.pad_token_id).long()}


class ReferenceAntiLM(LogitsProcessor):
    """Slow MMI-antiLM: at every step the LM re-reads `<s>` and the whole generated prefix from scratch."""

    def __init__(self, language_model, lam, gamma, prompt_length=1):
        self.language_model, self.lam, self.gamma, self.prompt_length = language_model, lam, gamma, prompt_length

    @torch.no_grad()
    def __call__(self, input_ids, scores):
        generated = input_ids[:, self.prompt_length :]
        if generated.shape[1] >= self.gamma:
            return scores
        start = torch.full((input_ids.shape[0], 1), self.language_model.config.bos_token_id)
        lm_logits = self.language_model(torch.cat([start, generated], dim=1), use_cache=False).logits[:, -1]
        return scores.log_softmax(-1) - self.lam * lm_logits.log_softmax(-1)


class RecordingAntiLM(MMIAntiLMLogitsProcessor):
    """Remembers the parent rows it recovered at each step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.parents = []

    def _parents(self, input_ids):
        parents = super()._parents(input_ids)
        self.parents.append(parents)
        return parents


def count_lm_steps(language_model):
    """Shapes of the inputs of every call of the LM's nn.LSTM."""
    calls = []
    language_model.lstm.register_forward_hook(lambda module, inputs, output: calls.append(tuple(inputs[0].shape)))
    return calls


def generate(model, processor, **settings):
    torch.manual_seed(5)  # sampling modes draw the same numbers for both processors
    return model.generate(**settings, logits_processor=LogitsProcessorList([processor]), output_scores=True,
                          return_dict_in_generate=True)


MODES = {
    "greedy": dict(do_sample=False),
    "sample": dict(do_sample=True, top_k=0),
    "beam": dict(num_beams=4, num_return_sequences=3),
    "beam-sample": dict(num_beams=3, do_sample=True, top_k=0),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_antilm_equals_prefix_rescoring_reference(tiny_tokenizer, mode):
    model, lm = tiny_model(tiny_tokenizer), tiny_lm(tiny_tokenizer)
    settings = dict(**sources(tiny_tokenizer), max_new_tokens=10, **MODES[mode])
    processor = RecordingAntiLM(lm, model.config, lam=1.5, gamma=6)
    fast = generate(model, processor, **settings)
    slow = generate(model, ReferenceAntiLM(lm, lam=1.5, gamma=6), **settings)
    plain = generate(model, MMIAntiLMLogitsProcessor(lm, model.config, lam=0.0, gamma=6), **settings)
    assert torch.equal(fast.sequences, slow.sequences)
    assert not torch.equal(fast.sequences, plain.sequences)  # the penalty matters on this example
    for fast_step, slow_step in zip(fast.scores, slow.scores):
        torch.testing.assert_close(fast_step, slow_step)
    if "num_beams" in settings:
        torch.testing.assert_close(fast.sequences_scores, slow.sequences_scores)
        identity = torch.arange(fast.scores[0].shape[0])
        assert any(p is not None and p.numel() and not torch.equal(p, identity) for p in processor.parents)


def test_greedy_antilm_equals_hand_written_loop(tiny_tokenizer):
    model, lm = tiny_model(tiny_tokenizer), tiny_lm(tiny_tokenizer)
    inputs = sources(tiny_tokenizer)
    lam, gamma, steps = 0.8, 3, 10
    processor = MMIAntiLMLogitsProcessor(lm, model.config, lam=lam, gamma=gamma)
    generated = model.generate(**inputs, max_new_tokens=steps, logits_processor=LogitsProcessorList([processor]))

    config = model.config
    prefix = torch.full((inputs["input_ids"].shape[0], 1), config.decoder_start_token_id)
    finished = torch.zeros(prefix.shape[0], dtype=torch.bool)
    for step in range(steps):
        log_probs = model(**inputs, decoder_input_ids=prefix, use_cache=False).logits[:, -1].log_softmax(-1)
        if step < gamma:  # log p(t|S) - lam * log p_LM(t | <s> t_1 .. t_step)
            lm_input = torch.cat([torch.full_like(prefix[:, :1], config.bos_token_id), prefix[:, 1:]], dim=1)
            log_probs = log_probs - lam * lm(lm_input).logits[:, -1].log_softmax(-1)
        token = log_probs.argmax(-1).masked_fill(finished, config.pad_token_id)
        prefix = torch.cat([prefix, token[:, None]], dim=1)
        finished |= token.eq(config.eos_token_id)
        if finished.all():
            break
    assert torch.equal(generated, prefix)


@pytest.mark.parametrize("mode", ["greedy", "sample", "beam"])
@pytest.mark.parametrize("gamma", [3, 20])
def test_one_batched_lm_step_per_generated_token(tiny_tokenizer, mode, gamma):
    model, lm = tiny_model(tiny_tokenizer), tiny_lm(tiny_tokenizer)
    calls = count_lm_steps(lm)
    inputs = sources(tiny_tokenizer)
    processor = MMIAntiLMLogitsProcessor(lm, model.config, lam=0.5, gamma=gamma)
    settings = {**MODES[mode], "num_return_sequences": 1}
    generated = model.generate(**inputs, max_new_tokens=8, min_new_tokens=8,
                               logits_processor=LogitsProcessorList([processor]), **settings)
    assert generated.shape[1] == 9
    rows = inputs["input_ids"].shape[0] * settings.get("num_beams", 1)
    # One call of one token for all rows (all beams) per generated token, for the first gamma tokens only.
    assert calls == [(rows, 1, lm.config.embedding_size)] * min(gamma, 8)


@pytest.mark.parametrize("mode", ["greedy", "beam"])
def test_lambda_zero_is_plain_decoding(tiny_tokenizer, mode):
    model, lm = tiny_model(tiny_tokenizer), tiny_lm(tiny_tokenizer)
    calls = count_lm_steps(lm)
    settings = dict(**sources(tiny_tokenizer), max_new_tokens=10, output_scores=True, return_dict_in_generate=True,
                    **MODES[mode])
    plain = model.generate(**settings)
    processor = MMIAntiLMLogitsProcessor(lm, model.config, lam=0, gamma=5)
    mmi = model.generate(**settings, logits_processor=LogitsProcessorList([processor]))
    assert torch.equal(plain.sequences, mmi.sequences)
    assert all(torch.equal(a, b) for a, b in zip(plain.scores, mmi.scores))
    if mode == "beam":
        assert torch.equal(plain.sequences_scores, mmi.sequences_scores)
    assert calls == []


def test_one_processor_serves_successive_generate_calls(tiny_tokenizer):
    """Each generate() call starts a new batch: a reused processor gives what a fresh one gives."""
    model, lm = tiny_model(tiny_tokenizer), tiny_lm(tiny_tokenizer)
    reused = MMIAntiLMLogitsProcessor(lm, model.config, lam=1.0, gamma=4)
    runs = [
        dict(**sources(tiny_tokenizer), num_beams=3, max_new_tokens=7),
        dict(**sources(tiny_tokenizer, rows=((9, 10),)), max_new_tokens=5),
        dict(**sources(tiny_tokenizer, rows=((7, 8), (20, 21, 22))), num_beams=2, max_new_tokens=9),
    ]
    for settings in runs:
        fresh = MMIAntiLMLogitsProcessor(lm, model.config, lam=1.0, gamma=4)
        expected = model.generate(**settings, logits_processor=LogitsProcessorList([fresh]))
        assert torch.equal(model.generate(**settings, logits_processor=LogitsProcessorList([reused])), expected)


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(lam=-0.1, gamma=3), "`lam` must be >= 0"),
        (dict(lam=float("nan"), gamma=3), "`lam` must be a finite number"),
        (dict(lam=0.5, gamma=0), "`gamma`.*integer >= 1"),
        (dict(lam=0.5, gamma=2.5), "`gamma`.*integer >= 1"),
        (dict(lam=0.5, gamma=True), "`gamma`.*integer >= 1"),
    ],
)
def test_antilm_bad_weights_are_clear_errors(tiny_tokenizer, settings, message):
    model, lm = tiny_model(tiny_tokenizer), tiny_lm(tiny_tokenizer)
    with pytest.raises(ValueError, match=message):
        MMIAntiLMLogitsProcessor(lm, model.config, **settings)


def test_antilm_needs_the_chatbot_vocabulary(tiny_tokenizer):
    model = tiny_model(tiny_tokenizer)
    size = len(tiny_tokenizer)
    with pytest.raises(ValueError, match=f"anti-LM has a vocabulary of {size + 4} tokens but the chatbot has {size}"):
        MMIAntiLMLogitsProcessor(tiny_lm(tiny_tokenizer, vocab_size=size + 4), model.config, lam=0.5, gamma=3)
    with pytest.raises(ValueError, match="eos_token_id=3 but the chatbot has eos_token_id=2"):
        MMIAntiLMLogitsProcessor(tiny_lm(tiny_tokenizer, eos_token_id=3), model.config, lam=0.5, gamma=3)
    with pytest.raises(ValueError, match=r"training mode.*\.eval\(\)"):
        MMIAntiLMLogitsProcessor(tiny_lm(tiny_tokenizer).train(), model.config, lam=0.5, gamma=3)


# MMI-bidi (Luan et al. 2017, Eq. 4)

HISTORIES = [["hello how are you ?", "i like tea ."], ["what is your name ?"], ["good night !"]]
CANDIDATES = [["fine thanks .", "i like coffee", "good day !", "my name is hi"], ["my name", "what ?"],
              ["good night", "bad day !", "hello", "thanks"]]


@pytest.fixture
def bidi_models(tiny_tokenizer):
    return tiny_model(tiny_tokenizer, seed=0), tiny_model(tiny_tokenizer, seed=1, attention="dot")


@torch.no_grad()
def log_prob_one_example(model, tokenizer, source: str, target: str) -> float:
    """log p(target </s> | source) from one unbatched teacher-forced forward pass."""
    source_ids = torch.tensor([tokenizer(source, add_special_tokens=False)["input_ids"]])
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    decoder_input_ids = torch.tensor([[model.config.decoder_start_token_id] + target_ids[:-1]])
    log_probs = model(input_ids=source_ids, decoder_input_ids=decoder_input_ids).logits[0].log_softmax(-1)
    return sum(log_probs[position, token].item() for position, token in enumerate(target_ids))


@pytest.mark.parametrize("lam, gamma", [(0.0, 0.0), (0.7, 0.0), (1.5, -0.8), (0.3, 2.0)])
def test_rerank_equals_hand_computed_eq4(tiny_tokenizer, bidi_models, lam, gamma):
    model, reverse_model = bidi_models
    source = "<bot> hello how are you ? <user> i like tea ."  # the message after one earlier turn, actor-marked
    expected = []
    for reply in CANDIDATES[0]:
        forward = log_prob_one_example(model, tiny_tokenizer, source, reply)
        reverse = log_prob_one_example(reverse_model, tiny_tokenizer, f"<user> {reply}", "i like tea .")
        length = len(reply.split())
        expected.append((reply, forward + lam * reverse + gamma * length))
    expected.sort(key=lambda pair: -pair[1])
    ranked = rerank(model, reverse_model, tiny_tokenizer, HISTORIES[:1], CANDIDATES[:1], lam=lam, gamma=gamma)[0]
    assert [reply for reply, _ in ranked] == [reply for reply, _ in expected]
    # Batched (padded) and single-example float32 forward passes differ in summation order: float32 tolerance.
    torch.testing.assert_close([score for _, score in ranked], [score for _, score in expected], rtol=1e-5, atol=1e-5)


def test_rerank_weights_change_the_winner(tiny_tokenizer, bidi_models):
    """On this example the forward model alone, the reverse term and the length reward pick different replies."""
    model, reverse_model = bidi_models
    winners = {
        rerank(model, reverse_model, tiny_tokenizer, HISTORIES[:1], CANDIDATES[:1], lam=lam, gamma=gamma)[0][0][0]
        for lam, gamma in [(0.0, 0.0), (5.0, 0.0), (0.0, 5.0)]
    }
    assert len(winners) > 1


@pytest.mark.parametrize("persona", [False, True])
def test_batched_scoring_equals_one_by_one(tiny_tokenizer, persona):
    overrides = dict(num_speakers=3, speaker_embedding_size=4) if persona else {}
    model, reverse_model = tiny_model(tiny_tokenizer, **overrides), tiny_model(tiny_tokenizer, seed=1)
    speaker_ids = [2, 0, 1] if persona else None
    encoded = encode_histories(model, tiny_tokenizer, HISTORIES, speaker_ids)
    together = score_nbest(model, reverse_model, tiny_tokenizer, encoded, CANDIDATES)
    chunked = score_nbest(model, reverse_model, tiny_tokenizer, encoded, CANDIDATES, batch_size=3)
    for index, history in enumerate(HISTORIES):
        speaker = None if speaker_ids is None else [speaker_ids[index]]
        alone = encode_histories(model, tiny_tokenizer, [history], speaker)
        single = score_nbest(model, reverse_model, tiny_tokenizer, alone, CANDIDATES[index : index + 1])[0]
        for batched in (together[index], chunked[index]):
            assert batched.candidates == single.candidates
            torch.testing.assert_close(batched.forward_log_probs, single.forward_log_probs)
            torch.testing.assert_close(batched.reverse_log_probs, single.reverse_log_probs)
            assert torch.equal(batched.lengths, single.lengths)


def test_a_batch_of_long_inputs_warns_once(tiny_tokenizer, caplog):
    """Decoding a test set must not print a warning per long input (a chat does: see test_cli)."""
    model = tiny_model(tiny_tokenizer)
    logging.Logger.warning_once.cache_clear()  # transformers' process-wide record of what was said once
    long_histories = [["hello how are you ?" * 4, "i like tea ." * 3]] * 5 + HISTORIES
    with caplog.at_level(logging.WARNING):
        encoded = encode_histories(model, tiny_tokenizer, long_histories, max_source_length=6)
        encode_histories(model, tiny_tokenizer, long_histories, max_source_length=6)
    assert [len(source) for source in encoded.sources[:5]] == [6] * 5  # the most recent 6 tokens of each
    truncation_warnings = [record for record in caplog.records if "only the last 6" in record.getMessage()]
    assert len(truncation_warnings) == 1, caplog.text


def test_scoring_is_one_forward_pass_per_model(tiny_tokenizer, bidi_models):
    model, reverse_model = bidi_models
    calls = {"forward": [], "reverse": []}
    model.decoder.register_forward_hook(lambda m, i, o: calls["forward"].append(i[0].shape[0]))
    reverse_model.decoder.register_forward_hook(lambda m, i, o: calls["reverse"].append(i[0].shape[0]))
    encoded = encode_histories(model, tiny_tokenizer, HISTORIES)
    score_nbest(model, reverse_model, tiny_tokenizer, encoded, CANDIDATES)
    total = sum(len(texts) for texts in CANDIDATES)
    assert calls == {"forward": [total], "reverse": [total]}


def test_mmi_bidi_generate_reranks_the_beam_nbest(tiny_tokenizer, bidi_models):
    model, reverse_model = bidi_models
    settings = dict(num_beams=5, num_return_sequences=4, max_new_tokens=6)
    answers = mmi_bidi_generate(model, reverse_model, tiny_tokenizer, HISTORIES, lam=0.5, gamma=0.3, **settings)
    encoded = encode_histories(model, tiny_tokenizer, HISTORIES)
    nbest = generate_nbest(model, tiny_tokenizer, encoded, **settings)
    assert answers == rerank(model, reverse_model, tiny_tokenizer, HISTORIES, nbest, lam=0.5, gamma=0.3)
    for answer, candidates in zip(answers, nbest):
        assert 1 <= len(answer) <= 4
        assert sorted(text for text, _ in answer) == sorted(candidates)
        scores = [score for _, score in answer]
        assert scores == sorted(scores, reverse=True)


def test_rerank_errors_are_clear(tiny_tokenizer, bidi_models):
    model, reverse_model = bidi_models
    size = len(tiny_tokenizer)
    with pytest.raises(ValueError, match="`lam` must be >= 0"):
        rerank(model, reverse_model, tiny_tokenizer, HISTORIES, CANDIDATES, lam=-1.0, gamma=0.0)
    with pytest.raises(ValueError, match="`gamma` must be a finite number"):
        rerank(model, reverse_model, tiny_tokenizer, HISTORIES, CANDIDATES, lam=1.0, gamma=math.inf)
    other = tiny_model(tiny_tokenizer, vocab_size=size + 2)
    message = f"reverse model has a vocabulary of {size + 2} tokens but the chatbot has {size}"
    with pytest.raises(ValueError, match=message):
        rerank(model, other, tiny_tokenizer, HISTORIES, CANDIDATES, lam=1.0, gamma=0.0)
    with pytest.raises(ValueError, match="3 candidate lists for 2 inputs"):
        rerank(model, reverse_model, tiny_tokenizer, HISTORIES[:2], CANDIDATES, lam=1.0, gamma=0.0)
    with pytest.raises(ValueError, match="at least one candidate"):
        rerank(model, reverse_model, tiny_tokenizer, HISTORIES, [[], ["a"], ["b"]], lam=1.0, gamma=0.0)
    with pytest.raises(ValueError, match="generation_config has no `mmi.lambda`"):
        mmi_bidi_generate(model, reverse_model, tiny_tokenizer, HISTORIES, gamma=0.0)


# Tuning lambda and gamma for BLEU


def test_grid_search_picks_the_hand_computed_point():
    """Three inputs, two candidates each, the reference being one of them. Eq. 4 picks the reference
    for input 1 iff 3*lam + 2*gamma > 3, for input 2 iff lam - gamma > 1, for input 3 iff gamma > -0.5:
    on the grid below only (lam, gamma) = (2, 0) satisfies all three (BLEU 100)."""
    terms = [  # candidates, log p(R|M), log p(M|R), |R|
        (["a b c d", "x y"], [-5.0, -2.0], [-1.0, -4.0], [4.0, 2.0]),
        (["p q r s", "u v"], [-1.0, -3.0], [-3.0, -1.0], [4.0, 2.0]),
        (["m n o", "z"], [-1.0, -2.0], [-1.0, -1.0], [3.0, 1.0]),
    ]
    nbest = [ScoredNBest(texts, *map(torch.tensor, numbers)) for texts, *numbers in terms]
    references = ["a b c d", "u v", "m n o"]
    result = grid_search(nbest, references, lambdas=[0.0, 1.0, 2.0], gammas=[-1.0, 0.0, 1.0])
    assert (result.lam, result.gamma) == (2.0, 0.0)
    assert result.bleu == pytest.approx(100.0)
    assert len(result.grid) == 9
    assert all(bleu < 100.0 for point, bleu in result.grid.items() if point != (2.0, 0.0))
    assert result.on_grid_edge  # lambda = 2 is the largest tried: the optimum may lie beyond
    wider = grid_search(nbest, references, lambdas=[0.0, 1.0, 2.0, 2.5], gammas=[-1.0, 0.0, 1.0])
    assert (wider.lam, wider.gamma) == (2.0, 0.0) and not wider.on_grid_edge
    with pytest.raises(ValueError, match="`lambda` must be >= 0"):
        grid_search(nbest, references, lambdas=[-0.5], gammas=[0.0])


def test_tuned_settings_round_trip_and_reproduce_decoding(tiny_tokenizer, bidi_models, tmp_path):
    model, reverse_model = bidi_models
    references = ["i like coffee .", "my name is good .", "good night !"]
    result = tune_mmi(model, reverse_model, tiny_tokenizer, HISTORIES, references, lambdas=[0.0, 0.5],
                      gammas=[0.0, 1.0], num_beams=4, max_new_tokens=6)
    assert isinstance(result, MMITuningResult) and len(result.grid) == 4
    assert result.bleu == max(result.grid.values())
    reverse_model.save_pretrained(tmp_path / "reverse")
    save_mmi_settings(model.generation_config, result, reverse_model=str(tmp_path / "reverse"), num_beams=4,
                      max_new_tokens=6)
    model.save_pretrained(tmp_path / "chatbot")

    saved = getattr(GenerationConfig.from_pretrained(tmp_path / "chatbot"), MMI_CONFIG_KEY)
    assert saved == {"lambda": result.lam, "gamma": result.gamma, "num_beams": 4, "num_return_sequences": 4,
                     "max_new_tokens": 6, "reverse_model": str(tmp_path / "reverse"), "dev_bleu": result.bleu}
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "chatbot").eval()
    expected = mmi_bidi_generate(model, reverse_model, tiny_tokenizer, HISTORIES, lam=result.lam, gamma=result.gamma,
                                 num_beams=4, num_return_sequences=4, max_new_tokens=6)
    assert mmi_bidi_generate(reloaded, None, tiny_tokenizer, HISTORIES) == expected
    reloaded.generate(**sources(tiny_tokenizer), max_new_tokens=3)  # plain decoding ignores the extra key

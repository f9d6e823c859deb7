"""The reverse dialogue generator (Liu et al. 2019): black-box environments count queries exactly and fail clearly
after bounded retries; the reward matches hand-computed embedding averages; the REINFORCE gradient matches a
hand-computed one; a tiny chatbot served by a real Gradio app is attacked end to end through gradio_client."""

import json
import time
from pathlib import Path

import datasets
import evaluate
import gradio as gr
import numpy as np
import pytest
import torch
from conftest import (
    SENTENCES,
    WORDS,
    RecordingPipeline,
    Victim,
    free_port,
    make_model_dir,
    random_vectors,
    reverse_generator,
    rl_config,
    tiny_model,
)
from gensim.models import KeyedVectors
from transformers import TrainerCallback, TrainingArguments

from hf_neuralconv.core.arguments import ConversationTrainingArguments, ModelArguments, parse_recipe
from hf_neuralconv.core.loading import load_model_dir
from hf_neuralconv.data.tokenization import train_word_tokenizer
from hf_neuralconv.metrics import similarity
from hf_neuralconv.metrics.embedding_similarity import EmbeddingSimilarityReward, content_words, train_word_vectors
from hf_neuralconv.negative_training.hits import read_trigger_pairs
from hf_neuralconv.pipelines.conversational import ConversationalPipeline
from hf_neuralconv.reverse_generator.attack import attack, write_found_pairs
from hf_neuralconv.reverse_generator.config import AttackSetupArguments, ReferenceCorpusArguments, ReinforceRunArguments
from hf_neuralconv.reverse_generator.environments import (
    CallableEnvironment,
    EnvironmentQueryError,
    GradioEnvironment,
    PipelineEnvironment,
    build_reference_corpus,
)
from hf_neuralconv.reverse_generator.trainer import (
    ReinforceConfig,
    ReinforceTrainer,
    pretrain_reverse_generator,
    reverse_generation_config,
)
from hf_neuralconv.reverse_generator.trainer import policy_log_probs as sequence_log_probs

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "reverse_generator"
# The Space's /chat controls after the message for a model without speakers (a persona model's come first): strategy,
# beams, temperature, top-p, max new tokens, context turns, N-best size.
SPACE_CHAT_INPUTS = ("greedy", 5, 1.0, 0.9, 8, 2, 1)


# ---- environments -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batched", [True, False])
def test_queries_are_counted_exactly(batched):
    victim = Victim()
    call = victim if batched else (lambda text: victim([text])[0])
    environment = CallableEnvironment(call, batched=batched, timeout=None)
    assert environment(["a b", "c d e", "a b"]) == ["b a", "e d c", "b a"]
    assert environment(["x"]) == ["x"] and environment([]) == []
    assert environment.num_queries == len(victim.received) == 4


def test_failures_are_retried_then_reported():
    victim, flaky = Victim(), {"b": 2}

    def sometimes_fails(text):  # "b" fails twice, then answers
        victim([text])
        if flaky.get(text):
            flaky[text] -= 1
            raise ConnectionResetError("connection reset")
        return text.upper()

    environment = CallableEnvironment(sometimes_fails, max_retries=2, retry_delay=0, timeout=None)
    assert environment(["a", "b", "c"]) == ["A", "B", "C"]
    assert victim.received == ["a", "b", "c", "b", "b"]  # only the failed input is asked again
    assert environment.num_queries == 5

    victim = Victim()
    victim.down = True
    environment = CallableEnvironment(victim, batched=True, max_retries=2, retry_delay=0)
    with pytest.raises(EnvironmentQueryError, match=r"2 of 2 inputs got no usable reply after 3 attempts.*"
                                                    r"ConnectionError: the victim is down") as caught:
        environment(["hi", "there"])
    assert caught.value.failures == {"hi": "ConnectionError: the victim is down",
                                     "there": "ConnectionError: the victim is down"}
    assert environment.num_queries == len(victim.received) == 6


def test_timeouts_and_empty_replies():
    def slow(text):
        time.sleep(2)
        return text

    environment = CallableEnvironment(slow, max_retries=0, timeout=0.2)
    started = time.monotonic()
    with pytest.raises(EnvironmentQueryError, match=r"TimeoutError: no answer within 0.2 s"):
        environment(["hello"])
    assert time.monotonic() - started < 1.5

    silent = Victim(reply=lambda text: "  " if text == "quiet" else text)
    environment = CallableEnvironment(silent, batched=True, max_retries=1, retry_delay=0)
    with pytest.raises(EnvironmentQueryError, match="'quiet': empty reply"):
        environment(["loud", "quiet"])
    assert silent.received == ["loud", "quiet", "quiet"]
    accepting = CallableEnvironment(silent, batched=True, accept_empty_replies=True)
    assert accepting(["loud", "quiet"]) == ["loud", ""]


def test_bad_environment_input():
    environment = CallableEnvironment(Victim(), batched=True)
    with pytest.raises(TypeError, match="list of input texts"):
        environment("hello")
    with pytest.raises(ValueError, match="Input 1 must be a non-empty string"):
        environment(["hello", " "])
    with pytest.raises(ValueError, match="max_retries"):
        CallableEnvironment(Victim(), max_retries=-1)
    with pytest.raises(TypeError, match="callable"):
        CallableEnvironment("not a function")


def test_pipeline_environment_and_reference_corpus(tmp_path):
    model_dir = make_model_dir(tmp_path / "victim")
    chatbot = ConversationalPipeline(*load_model_dir(model_dir))
    expected = [chatbot(text)[0]["generated_text"][-1]["content"] for text in SENTENCES]
    environment = PipelineEnvironment(model_dir, batch_size=3, accept_empty_replies=True)
    assert environment(SENTENCES) == [reply.strip() for reply in expected]
    assert environment.num_queries == len(SENTENCES)

    corpus = build_reference_corpus(environment, [*SENTENCES, SENTENCES[0], "  ", SENTENCES[1]], batch_size=5)
    kept = [(reply.strip(), message) for reply, message in zip(expected, SENTENCES, strict=True) if reply.strip()]
    assert list(zip(corpus["output"], corpus["input"], strict=True)) == kept
    assert environment.num_queries == 2 * len(SENTENCES)  # repeated and empty messages are not sent


# ---- reward -------------------------------------------------------------------------------------------------------

HAND_VECTORS = {"cat": [1.0, 0.0, 0.0], "dog": [0.0, 1.0, 0.0], "the": [0.0, 0.0, 1.0], "sat": [1.0, 1.0, 0.0]}


@pytest.fixture
def hand_vectors():
    vectors = KeyedVectors(3)
    vectors.add_vectors(list(HAND_VECTORS), np.array(list(HAND_VECTORS.values()), dtype=np.float32))
    return vectors


def test_reward_filters_stopwords_and_clamps(hand_vectors):
    reward = EmbeddingSimilarityReward(hand_vectors, stopwords={"THE"}, threshold=0.5)
    assert content_words("The cat, sat!!", {"the"}) == ["cat", "sat"]
    # target: cat + sat = (2, 1, 0); "the" and punctuation do not count, "zebra" has no vector.
    assert reward.similarity("The cat sat!", "the dog .") == pytest.approx(1 / np.sqrt(5))  # (0, 1, 0)
    assert reward.similarity("The cat sat!", "cat , cat sat zebra") == pytest.approx(7 / np.sqrt(5 * 10))  # (3, 1, 0)
    assert reward.similarity("The cat sat!", "the ... ?") == 0.0  # nothing counted in the reply
    assert reward(["The cat sat!"] * 3, ["the dog .", "cat , cat sat zebra", "cat sat"]) == pytest.approx(
        [0.0, 7 / np.sqrt(50), 1.0]  # 1/sqrt(5) = 0.447 < 0.5 -> 0
    )
    # Without stopwords "the" counts: target (2, 1, 1), reply (0, 1, 1).
    assert EmbeddingSimilarityReward(hand_vectors).similarity("the cat sat", "the dog") == pytest.approx(
        2 / np.sqrt(6 * 2)
    )
    assert EmbeddingSimilarityReward(hand_vectors, threshold=-1)(["cat"], ["dog"]) == [0.0]


def test_unscorable_targets_are_clear_errors(hand_vectors):
    reward = EmbeddingSimilarityReward(hand_vectors, stopwords={"the"})
    with pytest.raises(ValueError, match="is empty"):
        reward([" "], ["cat"])
    with pytest.raises(ValueError, match="only punctuation, symbols or stopwords"):
        reward(["The ?!"], ["cat"])
    with pytest.raises(ValueError, match="No word of the target 'zebra !' has a word vector"):
        reward.check_target("zebra !")
    with pytest.raises(ValueError, match="one target per output"):
        reward(["cat"], ["cat", "dog"])
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        EmbeddingSimilarityReward(hand_vectors, threshold=2)


def test_word_vectors_are_trained_deterministically_and_cached_without_pickle(tmp_path):
    texts = [" ".join(WORDS[i : i + 5]) + " ." for i in range(len(WORDS) - 5)] * 3
    first = train_word_vectors(texts, cache_dir=tmp_path, vector_size=8, epochs=2)
    (cached,) = tmp_path.glob("word2vec-*.bin")
    assert cached.read_bytes().startswith(f"{len(first)} 8\n".encode())  # word2vec binary header, not a pickle
    again = train_word_vectors(texts, vector_size=8, epochs=2)
    loaded = train_word_vectors(texts, cache_dir=tmp_path, vector_size=8, epochs=2)
    np.testing.assert_array_equal(first.vectors, again.vectors)
    np.testing.assert_array_equal(first["tea"], loaded["tea"])
    train_word_vectors(texts, cache_dir=tmp_path, vector_size=8, epochs=3)  # other settings: another file
    assert len(list(tmp_path.glob("word2vec-*.bin"))) == 2
    assert EmbeddingSimilarityReward(cached).similarity("i like tea", "i like tea") == pytest.approx(1.0)


def test_evaluate_module_loads_offline_and_matches_the_reward(hand_vectors, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metric = evaluate.load(similarity.__file__)
    predictions, references = ["the dog .", "cat , cat sat", "cat sat"], ["The cat sat!"] * 3
    result = metric.compute(predictions=predictions, references=references, word_vectors=hand_vectors,
                            stopwords=["the"], success_threshold=0.9)
    scorer = EmbeddingSimilarityReward(hand_vectors, {"the"})
    scores = [scorer.similarity(r, p) for p, r in zip(predictions, references, strict=True)]
    assert result == pytest.approx({"embedding_similarity": np.mean(scores), "success_rate": 2 / 3})
    with pytest.raises(ValueError, match="word_vectors"):
        metric.compute(predictions=["cat"], references=["cat"])


# ---- REINFORCE ----------------------------------------------------------------------------------------------------


def hand_log_prob(model, encoder_ids, sequence, suppressed):
    """log π(I|O*) summed token by token, one full decoder pass per prefix, and the per-step distributions."""
    log_prob, distributions, tokens = 0.0, [], []
    for step in range(1, sequence.numel()):
        logits = model(input_ids=encoder_ids[None], decoder_input_ids=sequence[None, :step]).logits[0, -1]
        logits = logits.masked_fill(suppressed, float("-inf"))
        token = int(sequence[step])
        log_prob = log_prob + logits.log_softmax(-1)[token]
        distributions.append(logits.softmax(-1).detach())
        tokens.append(token)
        if token == model.config.eos_token_id:
            break
    return log_prob, distributions, tokens


@pytest.mark.parametrize(("baseline", "kl_coef"), [("mean", 0.0), ("none", 0.0), ("mean", 0.5)])
def test_reinforce_gradient_equals_the_hand_computed_one(tiny_tokenizer, tmp_path, baseline, kl_coef):
    """Eq. 4 by hand; with `kl_coef` β, each reward minus β (log π_θ(I) - log π_ref(I)), π_ref another model."""
    tokenizer = tiny_tokenizer
    model = tiny_model(tokenizer, seed=3)
    ref_model = tiny_model(tokenizer, seed=4) if kl_coef else None
    ids = dict(zip(["hello", "how", "are", "tea"], tokenizer.convert_tokens_to_ids(["hello", "how", "are", "tea"]),
                   strict=True))
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    h, w, a, t = ids["hello"], ids["how"], ids["are"], ids["tea"]
    samples = torch.tensor([
        [bos, h, w, eos, pad],  # target 0: "hello how"
        [bos, a, eos, pad, pad],  # "are"
        [bos, h, w, eos, pad],  # "hello how" again: one query for both
        [bos, eos, pad, pad, pad],  # target 1: empty input, reward 0, not sent
        [bos, t, h, a, w],  # "tea hello are how", cut at the length limit (no </s>)
        [bos, a, eos, pad, pad],  # "are" again, for another target
    ])
    targets = ["i like tea", "good day"]
    table = {("i like tea", "hello how"): 0.9, ("i like tea", "are"): 0.6, ("good day", "tea hello are how"): 0.75,
             ("good day", "are"): 0.2}
    rewards = torch.tensor([[0.9, 0.6, 0.9], [0.0, 0.75, 0.2]])

    victim = Victim(reply=lambda text: text)
    environment = CallableEnvironment(victim, batched=True, timeout=None)
    trainer = ReinforceTrainer(
        model, rl_config(tmp_path, baseline=baseline, kl_coef=kl_coef), environment,
        lambda targets, outputs: [table[pair] for pair in zip(targets, outputs, strict=True)],
        datasets.Dataset.from_dict({"target": targets}), tokenizer, ref_model=ref_model,
    )
    trainer._sample_inputs = lambda model, inputs: samples
    batch = trainer.data_collator([{"target": target} for target in targets])
    model.zero_grad()
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    assert sorted(victim.received) == ["are", "hello how", "tea hello are how"]
    assert environment.num_queries == 3
    assert trainer._metrics["distinct_inputs"] == [pytest.approx((2 / 3 + 3 / 3) / 2)]  # "hello how" twice

    suppressed = torch.zeros(len(tokenizer), dtype=torch.bool)
    suppressed[trainer.sampling_config.suppress_tokens] = True
    if kl_coef:
        encoders = [batch["input_ids"][row // 3][batch["attention_mask"][row // 3].bool()] for row in range(6)]
        kl = torch.tensor([float(hand_log_prob(model, encoder, sequence, suppressed)[0]) -
                           float(hand_log_prob(ref_model, encoder, sequence, suppressed)[0])
                           for encoder, sequence in zip(encoders, samples, strict=True)]).view(2, 3)
        assert float(kl.std()) > 0.1  # two different models: the penalty varies between samples
        assert trainer._metrics["kl"] == [pytest.approx(float(kl.mean()), abs=1e-5)]
        rewards = rewards - kl_coef * kl
    advantages = rewards - rewards.mean(dim=1, keepdim=True) if baseline == "mean" else rewards
    bias_gradient = torch.zeros(len(tokenizer))
    objective = 0.0
    for row, sequence in enumerate(samples):
        encoder_ids = batch["input_ids"][row // 3][batch["attention_mask"][row // 3].bool()]
        log_prob, distributions, tokens = hand_log_prob(model, encoder_ids, sequence, suppressed)
        advantage = float(advantages.view(-1)[row])
        objective = objective + advantage * log_prob
        # d log softmax(z)_w / d bias = onehot(w) - softmax(z), summed over the steps (Eq. 4, by hand).
        for token, distribution in zip(tokens, distributions, strict=True):
            bias_gradient += advantage * (torch.nn.functional.one_hot(torch.tensor(token), len(tokenizer)) -
                                          distribution)
    bias_gradient = -bias_gradient / samples.size(0)  # descent on -J: minus the average
    torch.testing.assert_close(model.output_layer.lm_head.bias.grad, bias_gradient, atol=1e-6, rtol=1e-5)
    assert loss.item() == pytest.approx(-objective.item() / samples.size(0), abs=1e-6)
    parameters = [p for p in model.parameters() if p.grad is not None]
    expected = torch.autograd.grad(-objective / samples.size(0), parameters, allow_unused=True)
    for parameter, gradient in zip(parameters, expected, strict=True):
        torch.testing.assert_close(parameter.grad, torch.zeros_like(parameter) if gradient is None else gradient,
                                   atol=1e-6, rtol=1e-5)


def test_inputs_are_sampled_from_the_distribution_that_is_differentiated(tmp_path):
    """Eq. 4 holds only if the inputs are drawn from the π_θ whose log-probabilities are differentiated: no top-k
    cut (generate's default is top_k=50), suppressed tokens never drawn nor counted."""
    tokenizer = train_word_tokenizer([" ".join(f"w{index}" for index in range(58))], vocab_size=64)
    model = tiny_model(tokenizer, seed=5, init_range=0.1)
    trainer = ReinforceTrainer(model, rl_config(tmp_path, num_samples=20_000, max_input_tokens=1),
                               CallableEnvironment(Victim(), batched=True),
                               lambda targets, outputs: [0.0] * len(outputs),
                               datasets.Dataset.from_dict({"target": ["w1 w2"]}), tokenizer)
    batch = trainer.data_collator([{"target": "w1 w2"}])
    torch.manual_seed(0)
    first_tokens = trainer._sample_inputs(model, batch)[:, 1]
    frequencies = torch.bincount(first_tokens, minlength=len(tokenizer)) / first_tokens.numel()
    vocabulary = torch.arange(len(tokenizer))
    one_token_inputs = torch.stack([torch.full_like(vocabulary, tokenizer.bos_token_id), vocabulary], dim=1)
    with torch.no_grad():
        probabilities = sequence_log_probs(
            model, batch["input_ids"].expand(len(tokenizer), -1), batch["attention_mask"].expand(len(tokenizer), -1),
            one_token_inputs, trainer.sampling_config,
        ).exp()
    assert len(tokenizer) == 64 and float(probabilities.sum()) == pytest.approx(1.0, abs=1e-5)
    assert 1 - float(probabilities.topk(50).values.sum()) > 0.1  # a top-50 cut would be plain to see
    assert float(frequencies[trainer.sampling_config.suppress_tokens].sum()) == 0.0
    assert 0.5 * float((frequencies - probabilities).abs().sum()) < 0.05  # total variation, sampling noise ~0.02


def test_training_keeps_its_progress_when_the_environment_fails(tiny_tokenizer, tmp_path):
    victim = Victim()
    reward = EmbeddingSimilarityReward(random_vectors(WORDS), threshold=-1)
    targets = datasets.Dataset.from_dict({"target": ["i like tea", "good day", "what is your name", "hello"]})

    class SwitchOffAfterTwoSteps(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            victim.down = state.global_step == 2

    args = rl_config(tmp_path)
    environment = CallableEnvironment(victim, batched=True, max_retries=2, retry_delay=0)
    trainer = ReinforceTrainer(reverse_generator(tiny_tokenizer), args, environment, reward, targets, tiny_tokenizer,
                               callbacks=[SwitchOffAfterTwoSteps()])
    with pytest.raises(EnvironmentQueryError, match=r"the victim is down.*2 completed steps are saved in .*"
                                                    r"checkpoint-2.*resume_from_checkpoint=True"):
        trainer.train()
    state = json.loads((tmp_path / "rl" / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert [entry["step"] for entry in state["log_history"]] == [1, 2]

    victim.down = False
    resumed = ReinforceTrainer(reverse_generator(tiny_tokenizer, seed=9), args, environment, reward, targets,
                               tiny_tokenizer)
    queries_before = environment.num_queries
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 3
    # the query count goes on from the checkpoint's, plus what step 3 asked (the failed step's tries are lost)
    logged = [entry["env_queries"] for entry in resumed.state.log_history if "loss" in entry]
    assert logged[:2] == [entry["env_queries"] for entry in state["log_history"]]
    assert logged[2] == logged[1] + environment.num_queries - queries_before > logged[1]


def test_bad_targets_and_settings_are_clear_errors(tiny_tokenizer, tmp_path, hand_vectors):
    environment = CallableEnvironment(Victim(), batched=True)
    model = reverse_generator(tiny_tokenizer)
    reward = EmbeddingSimilarityReward(hand_vectors, stopwords={"the"})
    for targets, error in ((["the cat", " "], "Target 1 is empty"),
                           (["the ?", "cat"], "Target 0: The target 'the \\?' has only punctuation"),
                           (["zebra"], "Target 0: No word of the target 'zebra' has a word vector")):
        with pytest.raises(ValueError, match=error):
            ReinforceTrainer(model, rl_config(tmp_path), environment, reward,
                             datasets.Dataset.from_dict({"target": targets}), tiny_tokenizer)
        with pytest.raises(ValueError, match=error):
            attack(model, tiny_tokenizer, environment, reward, targets)
    with pytest.raises(ValueError, match="`target` column"):
        ReinforceTrainer(model, rl_config(tmp_path), environment, reward,
                         datasets.Dataset.from_dict({"text": ["cat"]}), tiny_tokenizer)
    with pytest.raises(ValueError, match="num_samples"):
        rl_config(tmp_path, num_samples=1)
    with pytest.raises(ValueError, match="baseline"):
        rl_config(tmp_path, baseline="greedy")
    with pytest.raises(ValueError, match="kl_coef"):
        rl_config(tmp_path, kl_coef=-0.1)
    with pytest.raises(ValueError, match="needs `ref_model`"):
        ReinforceTrainer(model, rl_config(tmp_path, kl_coef=0.1), environment, reward,
                         datasets.Dataset.from_dict({"target": ["cat"]}), tiny_tokenizer)


def test_attack_keeps_the_best_of_n_beams_and_writes_triggers(tiny_tokenizer, tmp_path):
    victim = Victim()
    environment = CallableEnvironment(victim, batched=True)
    reward = EmbeddingSimilarityReward(random_vectors(WORDS, seed=1), threshold=-1)
    model = reverse_generator(tiny_tokenizer, seed=4)
    targets = ["i like tea", "good day", "what is your name", "i like tea"]
    records = attack(model, tiny_tokenizer, environment, reward, targets, num_beams=4, max_input_tokens=5,
                     batch_size=2, results_file=tmp_path / "results.jsonl")
    assert [record["target"] for record in records] == targets[:3]  # one record per distinct target

    config = reverse_generation_config(tiny_tokenizer, 5, do_sample=False, num_beams=4, num_return_sequences=4,
                                       early_stopping=True)
    candidates = []
    for batch in (targets[:2], targets[2:3]):  # the attack's batches of 2 distinct targets
        encoded = tiny_tokenizer(batch, add_special_tokens=False, padding=True, return_tensors="pt")
        beams = model.generate(**encoded, generation_config=config)
        candidates += [text.strip() for text in tiny_tokenizer.batch_decode(beams, skip_special_tokens=True)]
    assert len(victim.received) == environment.num_queries
    assert set(victim.received) == {text for text in candidates if text}
    for row, record in enumerate(records):
        mine = candidates[4 * row : 4 * row + 4]
        scores = [reward.similarity(record["target"], victim.reply(text)) if text else 0.0 for text in mine]
        assert record["reward"] == pytest.approx(max(scores))
        assert record["trigger"] in mine and record["output"] == victim.reply(record["trigger"])

    # Resuming from the results file asks nothing again; greedy decoding sends one input per target.
    assert attack(model, tiny_tokenizer, environment, reward, targets, num_beams=4,
                  results_file=tmp_path / "results.jsonl") == records
    assert environment.num_queries == len(victim.received)
    queries = environment.num_queries
    greedy = attack(model, tiny_tokenizer, environment, reward, targets)
    assert environment.num_queries - queries <= 3 and len(greedy) == 3

    found = [record for record in records if record["trigger"] and record["reward"] >= 0.0]
    assert write_found_pairs(records, tmp_path / "triggers.jsonl", min_reward=0.0) == len(found)
    lines = [json.loads(line) for line in (tmp_path / "triggers.jsonl").read_text().splitlines()]
    assert lines == [{"trigger": r["trigger"], "target": r["target"], "reward": r["reward"]} for r in found]
    # negative training's reader
    triggers, target_ids = read_trigger_pairs(tmp_path / "triggers.jsonl", tiny_tokenizer, causal=False)
    assert tiny_tokenizer.batch_decode(triggers) == [r["trigger"] for r in found] and len(target_ids) == len(found)
    assert write_found_pairs(records, tmp_path / "none.jsonl", min_reward=1.01) == 0


def test_recipes_parse_with_the_papers_settings():
    model_args, setup, corpus_args, pretrain_args = parse_recipe(
        RECIPES / "pretrain.yaml",
        (ModelArguments, AttackSetupArguments, ReferenceCorpusArguments, ConversationTrainingArguments),
    )
    assert (model_args.num_layers, model_args.hidden_size, model_args.embedding_size) == (2, 1024, 300)
    assert (model_args.attention, model_args.dropout, corpus_args.num_reference_messages) == ("none", 0.1, 160000)
    assert (pretrain_args.learning_rate, pretrain_args.per_device_train_batch_size, pretrain_args.max_grad_norm) == (
        20.0, 16, 0.25)
    assert (setup.environment, setup.reward_threshold) == ("outputs/seq2seq-full", 0.5)
    run_args, config = parse_recipe(RECIPES / "reinforce.yaml", (ReinforceRunArguments, ReinforceConfig))
    assert run_args.generator == pretrain_args.output_dir and run_args.target_sampling == "length-balanced"
    assert (config.learning_rate, config.per_device_train_batch_size, config.max_grad_norm) == (1e-4, 16, 0.25)
    assert (config.baseline, config.success_threshold, config.remove_unused_columns) == ("mean", 0.5, False)


# ---- end to end: a chatbot served by a real Gradio app --------------------------------------------------------------


@pytest.fixture(scope="module")
def served_chatbot(tmp_path_factory, space):
    model, tokenizer = load_model_dir(make_model_dir(tmp_path_factory.mktemp("served"), seed=6))
    chatbot = RecordingPipeline(model=model, tokenizer=tokenizer)
    demo = space.build_demo(chatbot, "victim")
    demo.queue().launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    yield chatbot, demo.local_url
    demo.close()


def test_reinforce_attack_on_a_chatbot_served_by_gradio(served_chatbot, tmp_path):
    chatbot, url = served_chatbot
    environment = GradioEnvironment(url, "/chat", extra_inputs=SPACE_CHAT_INPUTS, max_retries=1, retry_delay=0,
                                    timeout=30, accept_empty_replies=True)
    answered = len(chatbot.chats)
    messages = [*SENTENCES, "hi , what do you do ?", "good night , nice to meet you ."]
    corpus = build_reference_corpus(environment, messages)
    reference = ConversationalPipeline(model=chatbot.model, tokenizer=chatbot.tokenizer)
    expected = {m: reference(m, strategy="greedy", max_new_tokens=8)[0]["generated_text"][-1]["content"].strip()
                for m in messages}
    assert dict(zip(corpus["input"], corpus["output"], strict=True)) == {m: r for m, r in expected.items() if r}
    assert environment.num_queries == len(chatbot.chats) - answered == len(messages)

    texts = list(corpus["output"]) + list(corpus["input"])
    tokenizer = train_word_tokenizer(texts, vocab_size=64)
    model = reverse_generator(tokenizer)
    pretraining = pretrain_reverse_generator(
        model, tokenizer, TrainingArguments(str(tmp_path / "pretrain"), num_train_epochs=20, learning_rate=0.01,
                                            per_device_train_batch_size=4, save_strategy="no", use_cpu=True,
                                            report_to="none", disable_tqdm=True), corpus, eval_pairs=corpus,
    )
    assert pretraining.evaluate()["eval_perplexity"] < len(tokenizer) / 2  # it learnt the pairs (uniform: vocab)
    reward = EmbeddingSimilarityReward(train_word_vectors(texts * 5, vector_size=8, epochs=3), threshold=0.5)
    targets = [output for output in dict.fromkeys(corpus["output"]) if content_words(output)][:4]
    assert len(targets) == 4
    before = environment.num_queries
    trainer = ReinforceTrainer(model, rl_config(tmp_path, num_samples=4, max_input_tokens=6), environment, reward,
                               datasets.Dataset.from_dict({"target": targets}), tokenizer)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [entry["step"] for entry in logs] == [1, 2, 3]
    assert all({"reward", "success_rate", "distinct_inputs", "env_queries"} <= set(entry) for entry in logs)
    assert all(0.0 <= entry["reward"] <= 1.0 and 0.0 <= entry["success_rate"] <= 1.0 for entry in logs)
    assert logs[-1]["env_queries"] == environment.num_queries - before == len(chatbot.chats) - answered - len(messages)
    assert 0 < logs[-1]["env_queries"] <= 3 * 2 * 4  # steps x targets x samples, minus repeats and empty inputs
    # Every query was a fresh one-turn chat: no session history leaked from one query into the next.
    assert all(len(chat) == 1 for chat in chatbot.chats)

    answered = len(chatbot.chats)
    records = attack(model, tokenizer, environment, reward, targets[:2], num_beams=3, max_input_tokens=6)
    assert len(records) == 2 and all(0.0 <= record["reward"] <= 1.0 for record in records)
    assert len(chatbot.chats) - answered == environment.num_queries - before - logs[-1]["env_queries"]
    environment.close()


def test_failing_and_unreachable_gradio_apps_are_clear_errors(served_chatbot):
    chatbot, url = served_chatbot
    environment = GradioEnvironment(url, "/chat", extra_inputs=SPACE_CHAT_INPUTS, max_retries=1, retry_delay=0,
                                    accept_empty_replies=True)
    with pytest.raises(EnvironmentQueryError, match=r"1 of 2 inputs .* after 2 attempts: 'x{57}\.\.\.': "
                                                    r"AppError: .*limit is 1,000"):
        environment(["hi , how are you ?", "x" * 2_000])
    assert environment.num_queries == 3

    nowhere = f"http://127.0.0.1:{free_port()}/"
    unreachable = GradioEnvironment(nowhere, max_retries=2, retry_delay=0.01, timeout=5)
    with pytest.raises(EnvironmentQueryError, match=rf"GradioEnvironment\({nowhere} /chat\): 2 of 2 inputs got no "
                                                    r"usable reply after 3 attempts: 'hi': \w+Error"):
        unreachable(["hi", "there"])
    assert unreachable.num_queries == 6


def test_anyones_chat_app_is_queried_one_fresh_session_at_a_time():
    def remember(message, history):  # a chatbot that keeps a per-session history
        return f"{message} after {len(history)} turns"

    demo = gr.ChatInterface(remember)
    demo.queue().launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        with GradioEnvironment(demo.local_url, "/remember", max_concurrency=2) as environment:
            texts = [f"message {index}" for index in range(6)]
            assert environment(texts) == [f"{text} after 0 turns" for text in texts]
            assert environment(texts[:2]) == [f"{text} after 0 turns" for text in texts[:2]]
            assert environment.num_queries == 8
    finally:
        demo.close()


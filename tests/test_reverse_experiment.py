"""The Liu et al. (2019) experiment commands: reference corpus -> pre-training -> REINFORCE -> Section 5.2's evaluation
and a target-list attack, end to end on a tiny chatbot and the real chitchat messages; every reported similarity is
recomputed from the chatbot's replies, every query counted."""

import json
import shutil

import pytest
from conftest import SENTENCES, make_model_dir
from transformers import AutoTokenizer

from hf_neuralconv.cli import main
from hf_neuralconv.core.arguments import ConversationTrainingArguments, ModelArguments, parse_recipe
from hf_neuralconv.core.loading import load_model_dir
from hf_neuralconv.data.dialogue import load_chitchat
from hf_neuralconv.metrics.embedding_similarity import EmbeddingSimilarityReward, train_word_vectors
from hf_neuralconv.negative_training.hits import read_trigger_pairs
from hf_neuralconv.pipelines.conversational import ConversationalPipeline
from hf_neuralconv.reverse_generator.attack import attack_targets
from hf_neuralconv.reverse_generator.config import (
    REFERENCE_CORPUS_FILE,
    AttackSetupArguments,
    ReferenceCorpusArguments,
    ReinforceRunArguments,
)
from hf_neuralconv.reverse_generator.environments import PipelineEnvironment
from hf_neuralconv.reverse_generator.experiment import (
    LENGTH_BUCKETS,
    bucket_targets,
    evaluate_attacks,
    pretrain,
    read_reference_corpus,
    reinforce,
    reinforce_targets,
    success_rates,
    word_count,
)
from hf_neuralconv.reverse_generator.trainer import ReinforceConfig
from hf_neuralconv.serving import BackgroundServer, ChatCompletionServer

QUIET = dict(use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True, seed=0)


def test_success_rates_word_counts_and_length_buckets():
    assert success_rates([0.5, 0.74, 1.0, 0.2], (0.5, 0.75, 1.0)) == [0.75, 0.25, 0.25]
    assert word_count("i ' m not sure .") == 4 and word_count("?!") == 0
    texts = ["yes", "oh yes", "no no no no", "one two three four five six seven", "a b c d e f g h i j k", "yes"]
    buckets = bucket_targets(texts, per_bucket=1, seed=0)
    assert list(buckets) == [f"{low}-{high}" for low, high in LENGTH_BUCKETS]
    assert buckets["1-3"][0] in ("yes", "oh yes") and buckets["4-6"] == ["no no no no"]
    assert buckets["7-10"] == ["one two three four five six seven"]  # 11 words fit no bucket
    assert sorted(bucket_targets(texts, 5, seed=0)["1-3"]) == ["oh yes", "yes"]  # each text once
    assert bucket_targets(texts, 1, seed=3) == bucket_targets(texts, 1, seed=3)


def test_reinforce_target_sampling():
    """Hand-counted: 'frequency' keeps duplicates (the paper's 160K outputs), 'distinct' each reply once,
    'length-balanced' repeats each length bucket's distinct replies up to the largest bucket and drops 11+ words."""
    outputs = ["yes", "yes", "i agree", "i like cats a lot", "yes", "a b c d e f g h i j k"]
    assert sorted(reinforce_targets(outputs, "frequency", seed=0)) == sorted(outputs)
    assert sorted(reinforce_targets(outputs, "distinct", seed=0)) == sorted(set(outputs))
    assert sorted(reinforce_targets(outputs, "length-balanced", seed=0)) == sorted(
        ["yes", "i agree", "i like cats a lot", "i like cats a lot"])  # 1-3: 2 replies; 4-6: 1, twice; 7-10: none
    order = reinforce_targets(outputs, "frequency", seed=1)
    assert order == reinforce_targets(outputs, "frequency", seed=1)  # seeded
    assert reinforce_targets(outputs, "frequency", seed=1, max_targets=2) == order[:2]
    with pytest.raises(ValueError, match="target_sampling.*length-balanced"):
        ReinforceRunArguments(target_sampling="balanced")
    with pytest.raises(ValueError, match="max_targets"):
        ReinforceRunArguments(max_targets=0)


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        ({"gradio_extra_inputs": "[1,"}, ValueError, "JSON list"),
        ({"gradio_extra_inputs": '{"a": 1}'}, ValueError, "JSON list"),
        ({"stopwords": "no/such/file.txt"}, ValueError, "word-list file"),
    ],
)
def test_bad_attack_setups(settings, error, message):
    with pytest.raises(error, match=message):
        AttackSetupArguments(**settings)


def test_an_environment_that_is_neither_a_model_nor_a_url():
    with pytest.raises(FileNotFoundError, match="neither a model directory nor an http"):
        AttackSetupArguments(environment="no/such/model").make_environment()


def test_recipe_overrides_keep_yaml_1_1_words_as_strings(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("output_dir: out\n")
    (training,) = parse_recipe(recipe, (ConversationTrainingArguments,), ["eval_strategy=no", "use_cpu=true"])
    assert training.eval_strategy == "no" and training.use_cpu is True


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """A tiny victim, word vectors for its words and some chitchat words, and the three stages run on them."""
    root = tmp_path_factory.mktemp("reverse")
    victim = make_model_dir(root / "victim", seed=3)
    texts = [*SENTENCES * 20, *load_chitchat()["train"]["response"][:3000]]
    vectors_path = root / "vectors.txt"
    train_word_vectors(texts, vector_size=16, epochs=2).save_word2vec_format(str(vectors_path))
    setup = AttackSetupArguments(environment=str(victim), word_vectors=str(vectors_path), stopwords="none",
                                 environment_batch_size=16)
    model_args = ModelArguments(embedding_size=16, hidden_size=32, attention="none", dropout=0.0)
    pretrain_results = pretrain(
        model_args, setup, ReferenceCorpusArguments(num_reference_messages=40, vocab_size=500),
        ConversationTrainingArguments(output_dir=str(root / "pre"), max_steps=3, eval_strategy="no", **QUIET),
    )
    rl_results = reinforce(
        ReinforceRunArguments(generator=str(root / "pre")),
        ReinforceConfig(output_dir=str(root / "rl"), num_samples=3, per_device_train_batch_size=4, max_steps=2,
                        max_input_tokens=6, logging_steps=1, **QUIET),
    )
    return root, setup, pretrain_results, rl_results


def test_reference_corpus_and_pretraining(experiment):
    root, setup, results, _ = experiment
    rows = [json.loads(line) for line in (root / "pre" / REFERENCE_CORPUS_FILE).read_text().splitlines()]
    assert results["env_queries"] == 40 and results["reference_pairs"] == len(rows) <= 40
    victim = setup.make_environment()
    assert victim([row["input"] for row in rows[:5]]) == [row["output"] for row in rows[:5]]  # D's replies
    assert all(0 < word_count(row["input"]) <= 20 for row in rows)
    assert AttackSetupArguments.load(root / "pre") == setup  # saved for the later stages
    assert results["validation_perplexity"] > 1


def test_a_reused_reference_corpus_costs_no_query(experiment):
    """With `reference_corpus`, the chatbot is never loaded (here it does not even exist) nor asked."""
    root, setup, _, _ = experiment
    offline = AttackSetupArguments(environment="no/such/chatbot", word_vectors=setup.word_vectors, stopwords="none")
    results = pretrain(
        ModelArguments(embedding_size=16, hidden_size=32, attention="none", dropout=0.0), offline,
        ReferenceCorpusArguments(reference_corpus=str(root / "pre" / REFERENCE_CORPUS_FILE), vocab_size=500),
        ConversationTrainingArguments(output_dir=str(root / "reused"), max_steps=1, eval_strategy="no", **QUIET),
    )
    assert results["env_queries"] == 0
    assert (root / "reused" / REFERENCE_CORPUS_FILE).read_text() == (root / "pre" / REFERENCE_CORPUS_FILE).read_text()


def test_reinforce_logs_rewards_and_counts_queries(experiment):
    root, _, _, results = experiment
    assert results["steps"] == 2
    assert results["target_sampling"] == "distinct" and results["distinct_targets"] == results["targets"]
    # Every step sends at most batch x N distinct inputs; the log's count is the environment's.
    assert 0 < results["env_queries"] <= 2 * 4 * 3 and results["last_logged"]["env_queries"] == results["env_queries"]
    assert (root / "rl" / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(FileExistsError, match="not empty"):
        reinforce(ReinforceRunArguments(generator=str(root / "pre")),
                  ReinforceConfig(output_dir=str(root / "rl"), max_steps=1, **QUIET))


def test_a_corpus_without_targets_of_1_to_10_words_is_a_clear_error(experiment, tmp_path):
    """length-balanced keeps 1-10-word replies only: a corpus of longer ones leaves nothing to train on."""
    root, _, _, _ = experiment
    generator = tmp_path / "generator"
    shutil.copytree(root / "pre", generator)
    long_reply = "one two three four five six seven eight nine ten eleven"
    (generator / REFERENCE_CORPUS_FILE).write_text(json.dumps({"output": long_reply, "input": "hi"}) + "\n"
                                                   + json.dumps({"output": long_reply, "input": "hey"}) + "\n")
    with pytest.raises(ValueError, match="no reference output is a target under target_sampling='length-balanced'"):
        reinforce(ReinforceRunArguments(generator=str(generator), target_sampling="length-balanced"),
                  ReinforceConfig(output_dir=str(tmp_path / "rl"), max_steps=1, **QUIET))
    assert not (tmp_path / "rl").exists() or not any((tmp_path / "rl").iterdir())  # nothing written


def test_kl_penalty_is_measured_against_the_pretrained_generator(experiment):
    """The first step's policy is the pre-trained generator itself: log π_θ - log π_ref is exactly 0 on every sample;
    after an update it is not."""
    root, _, _, _ = experiment
    results = reinforce(ReinforceRunArguments(generator=str(root / "pre")),
                        ReinforceConfig(output_dir=str(root / "rl-kl"), num_samples=3, per_device_train_batch_size=4,
                                        max_steps=2, max_input_tokens=6, logging_steps=1, kl_coef=0.1,
                                        learning_rate=0.05, **QUIET))
    assert results["first_logged"]["kl"] == 0.0
    assert results["last_logged"]["kl"] != 0.0


def test_evaluation_reports_what_the_chatbot_answered(experiment):
    root, setup, _, _ = experiment
    results = evaluate_attacks(root / "pre", root / "rl", root / "eval", targets_per_bucket=2, beam_sizes=(3,),
                               num_messages=30, pretrained_beam_sizes=(2,))
    similarity = EmbeddingSimilarityReward(setup.word_vectors, threshold=-1.0)
    victim = PipelineEnvironment(setup.environment, accept_empty_replies=True, generate_kwargs={"strategy": "greedy"})
    test = load_chitchat()["test"]
    answered = dict(zip((text.strip() for text in test["response"]), test["message"], strict=True))
    checked = 0
    for list_name, buckets in results["lists"].items():
        for bucket, methods in buckets.items():
            for method, summary in methods.items():
                if method == "targets":
                    continue
                if method == "Real Input":
                    targets = [json.loads(line)["target"] for line in
                               (root / "eval" / f"{list_name}_{bucket}_RL_Greedy.jsonl").read_text().splitlines()]
                    replies = victim([answered[target] for target in targets])
                    scores = similarity(targets, replies)
                else:
                    name = f"{list_name}_{bucket}_{method.replace(' ', '_')}.jsonl"
                    records = [json.loads(line) for line in (root / "eval" / name).read_text().splitlines()]
                    found = [record for record in records if record["trigger"]]
                    if found:  # the reported output and score are the chatbot's reply to the found input
                        replies = victim([record["trigger"] for record in found])
                        assert replies == [record["output"] for record in found]
                        assert similarity([r["target"] for r in found], replies) == pytest.approx(
                            [r["reward"] for r in found])
                    scores = [record["reward"] for record in records]
                    assert len(records) == methods["targets"]
                assert summary["mean_similarity"] == pytest.approx(sum(scores) / len(scores))
                assert summary["success_rates"] == success_rates(scores)
                checked += 1
    assert checked >= 4
    assert (root / "eval" / "figure2.png").read_bytes()[:4] == b"\x89PNG"
    tables = (root / "eval" / "tables.md").read_text()
    assert "RL BeamSearch(3)" in tables and "Pre-trained BeamSearch(2)" in tables
    with pytest.raises(FileExistsError, match="not empty"):
        evaluate_attacks(root / "pre", root / "rl", root / "eval", targets_per_bucket=1, beam_sizes=(3,))


def test_target_list_attack_writes_negative_training_pairs(experiment, capsys):
    root, setup, _, _ = experiment
    targets = root / "targets.txt"
    targets.write_text("i like music and books .\n?!\n\nnice to meet you !\n")
    with pytest.raises(ValueError, match=r"targets.txt: line 2: .*only punctuation"):
        attack_targets(root / "rl", targets, root / "found.jsonl", num_beams=3)
    main(["reverse-attack", str(root / "rl"), str(targets), "--output", str(root / "found.jsonl"), "--num-beams", "3",
          "--min-similarity", "-1", "--skip-unscorable"])
    summary = json.loads(capsys.readouterr().out)
    attempts = [json.loads(line) for line in (root / "found.attempts.jsonl").read_text().splitlines()]
    assert [attempt["target"] for attempt in attempts] == ["i like music and books .", "nice to meet you !"]
    assert summary["targets"] == 2 and summary["skipped_unscorable"] == 1
    assert summary["found"] == sum(bool(attempt["trigger"]) for attempt in attempts)  # --min-similarity -1: all
    rows = [json.loads(line) for line in (root / "found.jsonl").read_text().splitlines()]
    assert rows == [{key: attempt[key] for key in ("trigger", "target", "reward")} for attempt in attempts
                    if attempt["trigger"]]
    triggers, _ = read_trigger_pairs(root / "found.jsonl", AutoTokenizer.from_pretrained(setup.environment),
                                      causal=False)
    assert len(triggers) == len(rows)
    only_punctuation = root / "punctuation.txt"
    only_punctuation.write_text("?!\n...\n")
    with pytest.raises(ValueError, match=r"no target the reward can score .*2 skipped"):
        attack_targets(root / "rl", only_punctuation, root / "none.jsonl", num_beams=3, skip_unscorable=True)
    with pytest.raises(SystemExit):  # an existing output is not replaced without --overwrite
        main(["reverse-attack", str(root / "rl"), str(targets), "--output", str(root / "found.jsonl")])
    assert [json.loads(line) for line in (root / "found.jsonl").read_text().splitlines()] == rows



def test_reverse_attack_by_url_finds_what_it_finds_through_the_pipeline(experiment, capsys, monkeypatch):
    """The chatbot the generator was trained against, now behind `hf-neuralconv serve`'s API (with a key): the
    attack finds the same inputs, with the same replies and rewards, as against the model directory."""
    root, setup, _, _ = experiment
    targets = root / "url_targets.txt"
    targets.write_text("i like music and books .\nnice to meet you !\nwhere are you from ?\n")
    model, tokenizer = load_model_dir(setup.environment)
    monkeypatch.setenv("VICTIM_API_KEY", "k3y")
    with BackgroundServer(ChatCompletionServer(ConversationalPipeline(model=model, tokenizer=tokenizer), "victim",
                                               api_key="k3y")) as server:
        main(["reverse-attack", str(root / "rl"), str(targets), "--output", str(root / "by_url.jsonl"), "--num-beams",
              "3", "--min-similarity", "-1", "--environment", server.base_url, "--api-key-env", "VICTIM_API_KEY"])
    by_url = json.loads(capsys.readouterr().out)
    main(["reverse-attack", str(root / "rl"), str(targets), "--output", str(root / "local.jsonl"), "--num-beams", "3",
          "--min-similarity", "-1"])
    local = json.loads(capsys.readouterr().out)
    assert (root / "by_url.attempts.jsonl").read_text() == (root / "local.attempts.jsonl").read_text()
    assert (root / "by_url.jsonl").read_text() == (root / "local.jsonl").read_text()
    assert by_url["env_queries"] == local["env_queries"] > 0 and by_url["targets"] == 3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"output": "hi", "input": "hello"}\nnot json\n', "line 2 is not JSON"),
        ('{"output": "hi", "input": "hello"}\n{"output": "", "input": "x"}\n', "line 2: field 'output' must be"),
        ('{"output": "hi", "input": "hello"}\n', "at least 2 pairs"),
        ("\n", "holds no"),
    ],
)
def test_bad_reference_corpus_files(tmp_path, content, message):
    path = tmp_path / "corpus.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_reference_corpus(path)


def test_a_reused_reference_corpus_is_read_as_pairs(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"output": "hi", "input": "hello", "extra": 1}\n\n{"output": "yes", "input": "ok?"}\n')
    assert read_reference_corpus(path).to_list() == [{"output": "hi", "input": "hello"},
                                                     {"output": "yes", "input": "ok?"}]

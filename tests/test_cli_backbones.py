"""Every command that reads a model directory, run through `hf-neuralconv` on transformers chatbots: a tiny GPT-2 and
a tiny BART trained by `hf-neuralconv train` (so with data_config.json), and a bare GPT-2 directory
(`save_pretrained` of the model and its own BPE tokenizer, nothing else). Each command's output is checked against
a value computed apart from it: the pipeline's replies, the pairs written, the saved settings, the chatbot's own
answers to the inputs the reverse generator sent it."""

import json
import math

import pytest
from conftest import (
    SENTENCES,
    backbone_model,
    backbone_tokenizer,
    make_dialogues,
    write_dialogue_file,
    write_recipe,
)

import hf_neuralconv  # noqa: F401 (registers the "conversational" pipeline)
from hf_neuralconv.cli import main
from hf_neuralconv.core.arguments import DataArguments
from hf_neuralconv.core.building import load_dialogues
from hf_neuralconv.core.evaluation import reply_metrics
from hf_neuralconv.core.loading import load_model_dir
from hf_neuralconv.data.dialogue import load_chitchat
from hf_neuralconv.metrics.embedding_similarity import EmbeddingSimilarityReward, train_word_vectors
from hf_neuralconv.pipelines.conversational import ConversationalPipeline
from hf_neuralconv.pipelines.responder import Responder
from hf_neuralconv.reverse_generator.config import REFERENCE_CORPUS_FILE

BACKBONES = ["gpt2", "bart"]
SIZES = {
    "gpt2": {"n_embd": 16, "n_layer": 1, "n_head": 2, "n_positions": 64},
    "bart": {"d_model": 16, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
             "decoder_attention_heads": 2, "encoder_ffn_dim": 32, "decoder_ffn_dim": 32,
             "max_position_embeddings": 64},
}
# Two small steps, at learning rates after which both chatbots still say something (at 0.01 the tiny GPT-2 soon
# answers everything with </s>, which leaves the reverse generator no reference pair; at 0.001 BART does); short
# replies keep every decoding cheap.
CHATBOT = {model_type: dict(max_steps=2, learning_rate=rate, generation_config={"max_new_tokens": 6})
           for model_type, rate in (("gpt2", 0.001), ("bart", 0.01))}
PROMPTS = ["hello how are you ?", "what is your name ?"]
SEARCH = ["--trigger-length", "3", "--num-candidates", "4", "--max-sweeps", "2", "--num-restarts", "2"]
QUIET = dict(use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True, seed=0)


def run_command(capsys, *argv) -> str:
    """`hf-neuralconv ARGV`, returning what it printed."""
    capsys.readouterr()
    main([str(arg) for arg in argv])
    return capsys.readouterr().out


def refused(capsys, *argv) -> str:
    """`hf-neuralconv ARGV` must stop with an error: returns its message."""
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([str(arg) for arg in argv])
    return capsys.readouterr().err


def greedy_replies(model_dir, texts, **options) -> list[str]:
    """The conversational pipeline's greedy replies to one-turn chats (what a black-box query gets), one at a time."""
    chat = ConversationalPipeline(*load_model_dir(model_dir))
    return [chat(text, strategy="greedy", **options)[0]["generated_text"][-1]["content"] for text in texts]


def write_yaml(path, settings: dict):
    import yaml

    path.write_text(yaml.safe_dump(settings))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The tiny GPT-2 and BART chatbots trained through `hf-neuralconv train`, the bare GPT-2 directory, and the
    dialogue file they read."""
    root = tmp_path_factory.mktemp("cli-backbones")
    dialogue_file = write_dialogue_file(root)
    for model_type in BACKBONES:
        main(["train", str(write_recipe(root, dialogue_file, f"{model_type}.yaml", output_dir=str(root / model_type),
                                        model_type=model_type, model_config=SIZES[model_type], **CHATBOT[model_type]))])
    bare = root / "bare"
    backbone_model("gpt2").save_pretrained(bare)
    backbone_tokenizer("gpt2").save_pretrained(bare)
    return root, dialogue_file


@pytest.fixture(scope="module")
def word_vectors(runs):
    """word2vec vectors of the dialogue words and some chitchat responses (the reverse generator's reward)."""
    root, _ = runs
    texts = [*SENTENCES * 10, *(turn["text"] for row in make_dialogues(120) for turn in row["turns"]),
             *load_chitchat()["train"]["response"][:1000]]
    path = root / "vectors.txt"
    train_word_vectors(texts, vector_size=16, epochs=2).save_word2vec_format(str(path))
    return path


def companion_models(root, dialogue_file, model_type) -> tuple:
    """The MMI models of a chatbot, over its vocabulary (trained once, 1 step each): the reverse model p(M|R) of the
    same backbone, and an anti-LM ("self" for the causal chatbot, an LSTM LM for BART)."""
    chatbot = root / model_type
    reverse, anti_lm = root / f"{model_type}-reverse", root / f"{model_type}-lm"
    if not reverse.exists():
        main(["train", str(write_recipe(root, dialogue_file, f"{model_type}-reverse.yaml", output_dir=str(reverse),
                                        model_type=model_type, model_config=SIZES[model_type], direction="reverse",
                                        tokenizer_name_or_path=str(chatbot), max_steps=1))])
    if model_type == "gpt2":
        return reverse, "self"
    if not anti_lm.exists():
        main(["train", str(write_recipe(root, dialogue_file, f"{model_type}-lm.yaml", output_dir=str(anti_lm),
                                        architecture="causal-lm", tokenizer_name_or_path=str(chatbot), max_steps=1))])
    return reverse, anti_lm


@pytest.mark.parametrize("model_type", BACKBONES)
def test_chat_prints_the_pipeline_replies(runs, tmp_path, capsys, model_type):
    root, _ = runs
    model_dir = root / model_type
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"{prompt}\n" for prompt in PROMPTS))
    expected = greedy_replies(model_dir, PROMPTS)
    assert any(expected)  # the chatbot says something
    printed = run_command(capsys, "chat", model_dir, "--prompts", prompts, "--strategy", "greedy").splitlines()
    assert printed == [line for prompt, reply in zip(PROMPTS, expected) for line in (f"Human: {prompt}",
                                                                                      f"Bot: {reply}")]
    # The saved generation config (greedy, 6 new tokens) decides without --strategy.
    assert run_command(capsys, "chat", model_dir, "--prompts", prompts).splitlines() == printed
    # N-best under beam search: the pipeline's candidates and scores.
    printed = run_command(capsys, "chat", model_dir, "--prompts", prompts, "--num-beams", "3",
                          "--num-return-sequences", "2").splitlines()
    replies = Responder(model_dir).reply([PROMPTS[0]], num_beams=3, num_return_sequences=2)
    assert printed[1:3] == [f"  {rank}. {reply.text}  ({reply.score:.3f})" for rank, reply in enumerate(replies, 1)]
    antilm = ["--prompts", prompts, "--strategy", "mmi-antilm", "--anti-lm", "self", "--mmi-lambda", "0.7"]
    if model_type == "gpt2":  # the causal chatbot is its own anti-LM: its p(T) after an empty history
        chat = ConversationalPipeline(*load_model_dir(model_dir), anti_lm="self")
        expected = chat(PROMPTS[1], strategy="mmi-antilm", mmi_lambda=0.7)[0]["generated_text"][-1]["content"]
        assert run_command(capsys, "chat", model_dir, *antilm).splitlines()[-1] == f"Bot: {expected}"
    else:
        error = refused(capsys, "chat", model_dir, *antilm)
        assert "--anti-lm self needs a causal chatbot" in error and "encoder-decoder (bart)" in error
        assert "architecture: causal-lm" in error
    error = refused(capsys, "chat", model_dir, "--prompts", prompts, "--strategy", "mmi-antilm", "--anti-lm",
                    root / "bart")  # an encoder-decoder is no anti-LM
    assert f"--anti-lm {root / 'bart'}: " in error and "Give a causal LM over the chatbot's vocabulary" in error
    assert ("or 'self' for this causal chatbot" in error) == (model_type == "gpt2")


@pytest.mark.parametrize("model_type", BACKBONES)
def test_evaluate_reproduces_the_training_run(runs, tmp_path, model_type):
    root, _ = runs
    results = json.loads((root / model_type / "results.json").read_text())
    main(["evaluate", str(root / model_type), "--batch-size", "3", "--output", str(tmp_path / "eval.json")])
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["target_tokens"] == results["test_target_tokens"]
    assert evaluated["model_perplexity"] == pytest.approx(results["test_perplexity"], rel=1e-5)


@pytest.mark.parametrize("model_type", BACKBONES)
def test_attack_and_negative_training(runs, tmp_path, capsys, model_type):
    """`attack` reports the hit rates of the pairs it writes and measures T_out as the test split's average reply
    token log-likelihood; `negative-train` trains on those pairs from the same perplexity."""
    root, dialogue_file = runs
    model_dir = root / model_type
    results = json.loads((model_dir / "results.json").read_text())
    targets = tmp_path / "targets.txt"
    targets.write_text("you are bad\nwhat is your name\n")
    pairs = tmp_path / "pairs.jsonl"
    report = json.loads(run_command(capsys, "attack", model_dir, targets, "--hit-type", "o-sample-avg-hit",
                                    "--output-threshold", "-100", "--output", pairs, *SEARCH))
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    assert report["targets"] == len(rows) == 2 and report["output_threshold"] == -100.0
    assert all(row["avg_log_prob"] > -100 for row in rows) and report["hit_rate"] == 1.0  # T_out -100: all hit
    assert report["hits"] == sum(row["hit"] for row in rows)
    assert report["hit_rates"]["o-greedy-hit"] == sum(row["greedy"] for row in rows) / len(rows)
    assert report["hit_rates"]["o-sample-min-hit"] == sum(row["min_log_prob"] > -100 for row in rows) / len(rows)
    # Without thresholds T_out is measured on the test split: -log(test perplexity) of the same reply tokens.
    measured = json.loads(run_command(capsys, "attack", model_dir, targets, *SEARCH))
    assert measured["output_threshold"] == pytest.approx(-math.log(results["test_perplexity"]), rel=1e-4)

    output_dir = tmp_path / "negative"
    recipe = write_recipe(tmp_path, dialogue_file, "negative.yaml", output_dir=str(output_dir),
                          model_name_or_path=str(model_dir), mode="malicious", trigger_pairs_file=str(pairs),
                          hit_type="o-sample-avg-hit", output_threshold=-100.0, max_steps=3)
    main(["negative-train", str(recipe)])
    negative = json.loads((output_dir / "results.json").read_text())
    assert negative["steps"] == 3 and negative["output_threshold"] == -100.0
    assert negative["test_perplexity_before"] == pytest.approx(results["test_perplexity"], rel=1e-5)
    assert negative["test_perplexity_after"] != negative["test_perplexity_before"]
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in history if "malicious/negative_pairs" in entry] == [2]
    model, _ = load_model_dir(output_dir)
    assert model.config.model_type == model_type
    assert (output_dir / "data_config.json").is_file()  # `attack` reads it again without options
    again = json.loads(run_command(capsys, "attack", output_dir, targets, *SEARCH))
    assert again["output_threshold"] == pytest.approx(-math.log(negative["test_perplexity_after"]), rel=1e-4)


@pytest.mark.parametrize("model_type", BACKBONES)
def test_mmi_tune_and_diversity_report(runs, tmp_path, capsys, model_type):
    root, dialogue_file = runs
    chatbot = root / model_type
    reverse, anti_lm = companion_models(root, dialogue_file, model_type)
    tuned = tmp_path / "tuned"
    main(["mmi-tune", str(chatbot), "--reverse-model", str(reverse), "--output-dir", str(tuned), "--max-inputs", "5",
          "--num-beams", "3", "--max-new-tokens", "4"])
    tuning = json.loads((tuned / "mmi_tuning.json").read_text())
    assert tuning["inputs"] == 5 and tuning["dev_bleu"] == max(point["bleu"] for point in tuning["grid"])
    saved = json.loads((tuned / "generation_config.json").read_text())["mmi"]
    assert (saved["lambda"], saved["gamma"], saved["num_beams"]) == (tuning["lambda"], tuning["gamma"], 3)
    assert saved["reverse_model"] == str(reverse.resolve())
    assert load_model_dir(tuned)[0].config.model_type == model_type

    output = tmp_path / "report.json"
    main(["diversity-report", str(tuned), "--anti-lm", str(anti_lm), "--max-inputs", "4", "--num-beams", "3",
          "--max-new-tokens", "4", "--batch-size", "2", "--output", str(output)])
    report = json.loads(output.read_text())
    assert list(report["rows"]) == ["human", "greedy", "beam", "sample", "mmi-antilm", "mmi-bidi"]
    assert report["inputs"] == 4 and len(report["samples"]) == 4 and report["antilm"]["model"] == str(anti_lm)
    # The greedy row is the chatbot's greedy replies to the test histories, measured against the human replies.
    chat = ConversationalPipeline(*load_model_dir(tuned))
    histories = [sample["history"] for sample in report["samples"]]
    greedy = [chat(Responder.as_chat(turns), strategy="greedy", max_new_tokens=4)[0]["generated_text"][-1]["content"]
              for turns in histories]
    assert [sample["greedy"] for sample in report["samples"]] == greedy
    _, tokenizer = load_model_dir(tuned)
    humans = [sample["human"] for sample in report["samples"]]
    for name, value in reply_metrics(tokenizer, greedy, humans).items():
        assert report["rows"]["greedy"][name] == pytest.approx(value)
    test = load_dialogues(DataArguments(**json.loads((chatbot / "data_config.json").read_text())))["test"]
    assert all(turns in [[*example["context"], example["message"]] for example in test] for turns in histories)
    if model_type == "bart":
        error = refused(capsys, "diversity-report", tuned, "--anti-lm", "self")
        assert "--anti-lm self needs a causal chatbot" in error


@pytest.mark.parametrize("model_type", BACKBONES)
def test_reverse_generator_commands_attack_the_transformer_chatbot(runs, word_vectors, tmp_path, capsys, model_type):
    """reverse-pretrain / -train / -evaluate / -attack with the chatbot as the black box: every reply in their outputs
    is the chatbot's greedy reply to the input sent."""
    root, _ = runs
    chatbot = root / model_type
    pretrained, reinforced = tmp_path / "pre", tmp_path / "rl"
    main(["reverse-pretrain", str(write_yaml(tmp_path / "pretrain.yaml", dict(
        output_dir=str(pretrained), environment=str(chatbot), word_vectors=str(word_vectors), stopwords="none",
        environment_batch_size=8, num_reference_messages=12, vocab_size=300, embedding_size=16, hidden_size=16,
        attention="none", dropout=0.0, max_steps=2, eval_strategy="no", **QUIET)))])
    results = json.loads((pretrained / "results.json").read_text())
    corpus = [json.loads(line) for line in (pretrained / REFERENCE_CORPUS_FILE).read_text().splitlines()]
    assert results["env_queries"] == 12 and results["reference_pairs"] == len(corpus) >= 2
    inputs = [row["input"] for row in corpus]
    assert greedy_replies(chatbot, inputs) == [row["output"] for row in corpus]
    assert json.loads((pretrained / "attack_setup.json").read_text())["environment"] == str(chatbot)

    main(["reverse-train", str(write_yaml(tmp_path / "reinforce.yaml", dict(
        generator=str(pretrained), output_dir=str(reinforced), num_samples=2, per_device_train_batch_size=2,
        max_steps=2, max_input_tokens=5, logging_steps=1, **QUIET)))])
    trained = json.loads((reinforced / "results.json").read_text())
    reward = EmbeddingSimilarityReward(str(word_vectors), frozenset())
    scorable = []
    for output in dict.fromkeys(row["output"] for row in corpus):
        try:
            reward.check_target(output)
            scorable.append(output)
        except ValueError:
            pass
    assert trained["steps"] == 2 and trained["targets"] == trained["distinct_targets"] == len(scorable)
    assert 0 < trained["env_queries"] == trained["last_logged"]["env_queries"] <= 2 * 2 * 2

    evaluation = tmp_path / "evaluation"
    run_command(capsys, "reverse-evaluate", pretrained, reinforced, "--output-dir", evaluation,
                "--targets-per-bucket", "1", "--beam-sizes", "2", "--num-messages", "8")
    evaluated = json.loads((evaluation / "results.json").read_text())
    records = []
    for list_name, buckets in evaluated["lists"].items():
        for bucket, methods in buckets.items():
            for method in (name for name in methods if name not in ("targets", "Real Input")):
                path = evaluation / f"{list_name}_{bucket}_{method.replace(' ', '_')}.jsonl"
                rows = [json.loads(line) for line in path.read_text().splitlines()]
                assert len(rows) == methods["targets"]
                records += rows
    assert records and "RL BeamSearch(2)" in (evaluation / "tables.md").read_text()
    found = [record for record in records if record["trigger"]]
    assert greedy_replies(chatbot, [record["trigger"] for record in found]) == [record["output"] for record in found]

    targets = tmp_path / "targets.txt"
    targets.write_text(f"{scorable[0]}\ni like tea .\n")  # one of the chatbot's replies, one of the dialogues'
    summary = json.loads(run_command(capsys, "reverse-attack", reinforced, targets, "--output",
                                     tmp_path / "found.jsonl", "--num-beams", "2", "--min-similarity", "-1"))
    attempts = [json.loads(line) for line in (tmp_path / "found.attempts.jsonl").read_text().splitlines()]
    assert summary["targets"] == len(attempts) == len({scorable[0], "i like tea ."})
    found = [json.loads(line) for line in (tmp_path / "found.jsonl").read_text().splitlines()]
    assert summary["found"] == len(found) == sum(bool(attempt["trigger"]) for attempt in attempts)
    answered = [attempt for attempt in attempts if attempt["trigger"]]
    assert greedy_replies(chatbot, [a["trigger"] for a in answered]) == [a["output"] for a in answered]


def test_a_chatbot_that_answers_nothing_is_a_clear_reverse_pretrain_error(runs, word_vectors, tmp_path, capsys):
    """A chatbot whose every reply is empty leaves no reference pair: the error says so before anything is written."""
    _, dialogue_file = runs
    silent = tmp_path / "silent"
    main(["train", str(write_recipe(tmp_path, dialogue_file, output_dir=str(silent), model_type="gpt2",
                                    model_config=SIZES["gpt2"], max_steps=4))])  # learns to answer </s> at once
    assert not any(greedy_replies(silent, load_chitchat()["train"]["message"][:5]))
    error = refused(capsys, "reverse-pretrain", write_yaml(tmp_path / "pretrain.yaml", dict(
        output_dir=str(tmp_path / "pre"), environment=str(silent), word_vectors=str(word_vectors),
        num_reference_messages=5, max_steps=1, **QUIET)))
    assert "a non-empty reply to 0 of the 5 messages" in error and "num_reference_messages" in error
    assert not (tmp_path / "pre").exists() or not any((tmp_path / "pre").iterdir())


def test_a_bare_transformers_directory(runs, tmp_path, capsys):
    """A GPT-2 saved with `save_pretrained` and its BPE tokenizer, no data_config.json: chat and attack work as they
    are; the commands that need dialogues read --dataset, and without it say so."""
    root, dialogue_file = runs
    bare = root / "bare"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"{prompt}\n" for prompt in PROMPTS))
    # Its replies are random bytes: the printed text is compared whole (a reply may hold a line break).
    expected = greedy_replies(bare, PROMPTS, max_new_tokens=5)
    assert all(expected)
    printed = run_command(capsys, "chat", bare, "--prompts", prompts, "--strategy", "greedy", "--max-new-tokens", "5")
    assert printed == "".join(f"Human: {prompt}\nBot: {reply}\n" for prompt, reply in zip(PROMPTS, expected))
    chat = ConversationalPipeline(*load_model_dir(bare), anti_lm="self")
    antilm = [chat(prompt, strategy="mmi-antilm", max_new_tokens=5)[0]["generated_text"][-1]["content"]
              for prompt in PROMPTS]
    printed = run_command(capsys, "chat", bare, "--prompts", prompts, "--strategy", "mmi-antilm", "--anti-lm", "self",
                          "--max-new-tokens", "5")
    assert printed == "".join(f"Human: {prompt}\nBot: {reply}\n" for prompt, reply in zip(PROMPTS, antilm))

    targets = tmp_path / "targets.txt"
    targets.write_text("you are bad\nwhat is your name\n")
    pairs = tmp_path / "pairs.jsonl"
    report = json.loads(run_command(capsys, "attack", bare, targets, "--output-threshold", "-100", "--output", pairs,
                                    *SEARCH))
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    tokenizer = backbone_tokenizer("gpt2")
    assert [row["target_ids"] for row in rows] == [
        [*tokenizer(text)["input_ids"], tokenizer.eos_token_id] for text in ("you are bad", "what is your name")]
    assert report["hits"] == sum(row["hit"] for row in rows) == 2  # min log-prob > -100
    error = refused(capsys, "attack", bare, targets, *SEARCH)
    assert "data_config.json is missing" in error and "--dataset" in error and "--output-threshold" in error
    assert not (bare / "data_config.json").exists()

    # --dataset: the default split of the given dialogues.
    data_args = DataArguments(dataset=str(dialogue_file))
    test = load_dialogues(data_args)["test"]
    evaluated = tmp_path / "eval.json"
    main(["evaluate", str(bare), "--dataset", str(dialogue_file), "--batch-size", "4", "--output", str(evaluated)])
    results = json.loads(evaluated.read_text())
    reply_tokens = sum(len(tokenizer(text)["input_ids"]) + 1 for text in test["response"])  # eos-joined: BPE + eos
    assert results["examples"] == len(test) and results["target_tokens"] == reply_tokens
    measured = json.loads(run_command(capsys, "attack", bare, targets, "--dataset", dialogue_file, *SEARCH))
    assert measured["output_threshold"] == pytest.approx(-math.log(results["model_perplexity"]), rel=1e-4)
    for command in (["evaluate", bare], ["diversity-report", bare],
                    ["mmi-tune", bare, "--reverse-model", bare, "--output-dir", tmp_path / "tuned"]):
        error = refused(capsys, *command)
        assert "data_config.json is missing" in error and "Give --dataset" in error, command
    assert not (tmp_path / "tuned").exists()
    output = tmp_path / "report.json"
    main(["diversity-report", str(bare), "--dataset", str(dialogue_file), "--anti-lm", "self", "--strategies",
          "greedy", "mmi-antilm", "--max-inputs", "3", "--num-beams", "2", "--max-new-tokens", "3", "--output",
          str(output)])
    report = json.loads(output.read_text())
    assert report["inputs"] == 3 and list(report["rows"]) == ["human", "greedy", "mmi-antilm"]
    assert all(sample["history"] in [[*row["context"], row["message"]] for row in test] for sample in report["samples"])
    main(["mmi-tune", str(bare), "--reverse-model", str(bare), "--dataset", str(dialogue_file), "--output-dir",
          str(tmp_path / "tuned"), "--max-inputs", "3", "--num-beams", "2", "--max-new-tokens", "3"])
    tuning = json.loads((tmp_path / "tuned" / "mmi_tuning.json").read_text())
    assert tuning["inputs"] == 3 and tuning["dev_bleu"] == max(point["bleu"] for point in tuning["grid"])

    # negative-train reads its dialogues from the recipe, and saves them with the model: `attack` needs no option.
    output_dir = tmp_path / "negative"
    main(["negative-train", str(write_recipe(tmp_path, dialogue_file, "negative.yaml", output_dir=str(output_dir),
                                             model_name_or_path=str(bare), mode="malicious",
                                             trigger_pairs_file=str(pairs), output_threshold=-100.0, max_steps=2))])
    negative = json.loads((output_dir / "results.json").read_text())
    assert negative["steps"] == 2
    assert json.loads((output_dir / "data_config.json").read_text())["dataset"] == str(dialogue_file)
    again = json.loads(run_command(capsys, "attack", output_dir, targets, *SEARCH))
    assert again["output_threshold"] == pytest.approx(-math.log(negative["test_perplexity_after"]), rel=1e-4)


def test_persona_report_names_what_a_chatbot_directory_is_not(runs, capsys):
    """persona-report reads persona-train runs, not a chatbot directory: it says so."""
    root, _ = runs
    error = refused(capsys, "persona-report", root / "gpt2")
    assert "is not the result of a persona-train run" in error



def test_a_gpt2_reverse_generator_is_pretrained_and_reinforced(runs, word_vectors, tmp_path):
    """reverse-pretrain with `model_type: gpt2` builds a causal generator (Liu et al.'s G_theta on another backbone);
    reverse-train reinforces it against the BART chatbot."""
    root, _ = runs
    pretrained, reinforced = tmp_path / "pre", tmp_path / "rl"
    main(["reverse-pretrain", str(write_yaml(tmp_path / "pretrain.yaml", dict(
        output_dir=str(pretrained), environment=str(root / "bart"), word_vectors=str(word_vectors),
        stopwords="none", environment_batch_size=8, num_reference_messages=12, vocab_size=300, model_type="gpt2",
        model_config=SIZES["gpt2"], max_steps=2, eval_strategy="no", **QUIET)))])
    generator, _ = load_model_dir(pretrained)
    assert generator.config.model_type == "gpt2"
    main(["reverse-train", str(write_yaml(tmp_path / "reinforce.yaml", dict(
        generator=str(pretrained), output_dir=str(reinforced), num_samples=2, per_device_train_batch_size=2,
        max_steps=2, max_input_tokens=5, logging_steps=1, **QUIET)))])
    trained = json.loads((reinforced / "results.json").read_text())
    assert trained["steps"] == 2 and 0 < trained["env_queries"] <= 2 * 2 * 2

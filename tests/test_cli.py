"""End to end through `hf-neuralconv`: train a tiny model on a tiny file, evaluate, chat; bad input."""

import json
import logging
import math
import shutil

import pytest
import torch
from conftest import write_recipe
from transformers import AutoTokenizer

from hf_neuralconv.cli import main
from hf_neuralconv.core.arguments import DataArguments
from hf_neuralconv.core.building import tokenize_dataset
from hf_neuralconv.core.loading import load_model_dir
from hf_neuralconv.data.dialogue import build_dataset_dict, load_dialogue_file
from hf_neuralconv.pipelines.responder import Responder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny model trained through the CLI, shared by the tests of this module."""
    from conftest import write_dialogue_file

    tmp_path = tmp_path_factory.mktemp("cli")
    dialogue_file = write_dialogue_file(tmp_path)
    main(["train", str(write_recipe(tmp_path, dialogue_file))])
    return tmp_path, dialogue_file


def reference_perplexity(model_dir, dialogue_file, split):
    """exp(total NLL / target tokens) with one example at a time: no batching, no padding."""
    model, tokenizer = load_model_dir(model_dir)
    data_args = DataArguments(**json.loads((model_dir / "data_config.json").read_text()))
    dialogues = build_dataset_dict(load_dialogue_file(dialogue_file), data_args.max_context_turns,
                                   data_args.split_fractions, data_args.split_seed)
    examples = tokenize_dataset(dialogues[split], tokenizer, data_args, truncate_target=False)
    total, tokens = 0.0, 0
    for example in examples:
        labels = torch.tensor([example["labels"]])
        logits = model(input_ids=torch.tensor([example["input_ids"]]), labels=labels).logits
        total += torch.nn.functional.cross_entropy(logits[0], labels[0], reduction="sum").item()
        tokens += labels.numel()
    return math.exp(total / tokens), tokens


def test_train_writes_a_complete_model_directory(trained):
    tmp_path, dialogue_file = trained
    model_dir = tmp_path / "model"
    for name in ("config.json", "model.safetensors", "modeling_lstm.py", "configuration_lstm.py",
                 "generation_config.json", "tokenizer.json", "data_config.json", "results.json"):
        assert (model_dir / name).is_file(), name
    assert not list(model_dir.glob("*.bin")) or list(model_dir.glob("*.bin")) == [model_dir / "training_args.bin"]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert len(tokenizer) <= 40 and tokenizer.convert_ids_to_tokens(4) == "<user>"
    results = json.loads((model_dir / "results.json").read_text())
    expected, tokens = reference_perplexity(model_dir, dialogue_file, "test")
    assert results["test_target_tokens"] == tokens
    assert results["test_perplexity"] == pytest.approx(expected, rel=1e-5)


def test_evaluate_matches_reference_loop(trained):
    """Batched (batch 3, padded) evaluation equals the one-example-at-a-time reference."""
    tmp_path, dialogue_file = trained
    output = tmp_path / "eval.json"
    main(["evaluate", str(tmp_path / "model"), "--split", "validation", "--batch-size", "3", "--output",
          str(output)])
    results = json.loads(output.read_text())
    expected, tokens = reference_perplexity(tmp_path / "model", dialogue_file, "validation")
    assert results["target_tokens"] == tokens
    assert results["model_perplexity"] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(SystemExit, match="exists"):
        main(["evaluate", str(tmp_path / "model"), "--output", str(output)])


def test_evaluate_against_kenlm(trained):
    from hf_neuralconv.seq2seq.ngram import find_lmplz

    try:
        find_lmplz()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    tmp_path, _ = trained
    output = tmp_path / "ngram.json"
    main(["evaluate", str(tmp_path / "model"), "--ngram-orders", "2", "3", "--output", str(output)])
    results = json.loads(output.read_text())
    for order in (2, 3):
        perplexity = results[f"kenlm_{order}gram_perplexity"]
        assert 1 < perplexity < 40  # a 40-word vocabulary bounds a sane LM
        assert results[f"ratio_to_kenlm_{order}gram"] == pytest.approx(results["model_perplexity"] / perplexity)


def test_existing_output_directory_is_not_overwritten(trained, capsys):
    tmp_path, dialogue_file = trained
    weights = tmp_path / "model" / "model.safetensors"
    before = weights.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(write_recipe(tmp_path, dialogue_file, name="again.yaml"))])
    assert exit_info.value.code == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert weights.read_bytes() == before


def test_chat_answers_a_file_of_prompts_like_generate(trained, capsys):
    tmp_path, _ = trained
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hello how are you ?\n\nwhat is your name ?\n")
    main(["chat", str(tmp_path / "model"), "--prompts", str(prompts), "--num-beams", "3",
          "--num-return-sequences", "2"])
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "Human: hello how are you ?" and printed[3] == "Human: what is your name ?"
    responder = Responder(tmp_path / "model")
    replies = responder.reply(["hello how are you ?"], num_beams=3, num_return_sequences=2)
    assert printed[1] == f"  1. {replies[0].text}  ({replies[0].score:.3f})"
    assert printed[2].startswith(f"  2. {replies[1].text}")


@pytest.mark.parametrize("command_fails", [False, True])
def test_commands_leave_the_process_group(trained, tmp_path, command_fails):
    """A torchrun rank that exits with its gloo group alive can abort in the backend's teardown (SIGABRT after
    its work is done): every command leaves the group when it ends, on error too."""
    model_dir, prompts = trained[0] / "model", tmp_path / "prompts.txt"
    prompts.write_text("hello how are you ?\n")
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0,
                                         world_size=1)
    try:
        if command_fails:
            with pytest.raises(SystemExit):
                main(["evaluate", str(tmp_path / "no-such-model")])
        else:
            main(["chat", str(model_dir), "--prompts", str(prompts)])
        assert not torch.distributed.is_initialized()
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def test_interactive_chat_keeps_history_and_resets(trained, capsys, monkeypatch):
    tmp_path, _ = trained
    typed = iter(["hi there", "   ", "/reset", "how are you ?", "/quit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(typed))
    main(["chat", str(tmp_path / "model")])
    out = capsys.readouterr().out
    assert "(!) The message is empty" in out and "(conversation reset)" in out
    assert out.count("Bot:") == 2


def test_long_and_empty_messages(trained, caplog):
    tmp_path, _ = trained
    responder = Responder(tmp_path / "model")
    with pytest.raises(ValueError, match="empty"):
        responder.reply([" \t\n"])
    with pytest.raises(ValueError, match="empty"):
        responder.reply([])
    with caplog.at_level(logging.WARNING):
        ids = responder.encode(["hello " * 2000 + "bye"])
    assert ids.shape == (1, 12)  # the recipe's max_source_length: the most recent tokens are kept
    assert "only the last 12" in caplog.text
    assert responder.reply(["\x00\x07hello\x1b"], max_new_tokens=3)  # control characters are dropped


def test_missing_and_corrupt_weights(trained, tmp_path, capsys):
    source, _ = trained
    broken = tmp_path / "broken"
    shutil.copytree(source / "model", broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(SystemExit):
        main(["chat", str(broken), "--prompts", str(broken / "config.json")])
    assert "model.safetensors is missing" in capsys.readouterr().err
    (broken / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(OSError, match="truncated or corrupt"):
        load_model_dir(broken)
    with pytest.raises(FileNotFoundError, match="no such model directory"):
        load_model_dir(tmp_path / "nowhere")


def test_impossible_recipe_is_a_clear_error(tmp_path, dialogue_file, capsys):
    with pytest.raises(SystemExit):
        main(["train", str(write_recipe(tmp_path, dialogue_file, hidden_size=0))])
    assert "`hidden_size` must be a positive integer" in capsys.readouterr().err
    for setting, message in (({"architecture": "gru"}, "`architecture` must be one of seq2seq, causal-lm"),
                             ({"direction": "sideways"}, "`direction` must be one of forward, reverse")):
        with pytest.raises(SystemExit):
            main(["train", str(write_recipe(tmp_path, dialogue_file, **setting))])
        assert message in capsys.readouterr().err
    assert not (tmp_path / "model").exists()  # refused before anything was written
    with pytest.raises(SystemExit):
        main(["train", str(tmp_path / "missing.yaml")])
    assert "no such recipe file" in capsys.readouterr().err


def test_recipe_overrides_replace_and_add_settings(tmp_path, dialogue_file):
    from hf_neuralconv.core.arguments import parse_config
    from hf_neuralconv.negative_training.trainer import NegativeTrainingConfig

    recipe = write_recipe(tmp_path, dialogue_file)
    model_args, data_args, training_args = parse_config(
        recipe, NegativeTrainingConfig, ["hidden_size=24", "max_steps=7", "mode=frequent", "fwa_words=[a, b]"]
    )
    assert (model_args.hidden_size, training_args.max_steps, training_args.mode) == (24, 7, "frequent")
    assert training_args.fwa_words == ["a", "b"]  # values are read as YAML
    assert data_args.dataset == str(dialogue_file)  # the rest of the recipe is kept
    with pytest.raises(ValueError, match="is not key=value"):
        parse_config(recipe, overrides=["max_steps"])
    with pytest.raises(ValueError, match="not_a_setting"):
        parse_config(recipe, overrides=["not_a_setting=1"])


def test_recipe_decoding_defaults_are_saved_and_chat_decodes_with_them(tmp_path, dialogue_file, capsys):
    settings = {"num_beams": 3, "no_repeat_ngram_size": 2, "max_new_tokens": 6}
    main(["train", str(write_recipe(tmp_path, dialogue_file, generation_config=settings))])
    model, tokenizer = load_model_dir(tmp_path / "model")
    assert {key: getattr(model.generation_config, key) for key in settings} == settings
    assert model.generation_config.suppress_tokens  # the defaults it was merged over are kept
    prompt = "hello how are you ?"
    capsys.readouterr()
    main(["chat", str(tmp_path / "model"), "--prompts", str(write_prompts(tmp_path, prompt)),
          "--max-new-tokens", "6"])
    inputs = Responder(tmp_path / "model").encode([prompt])
    expected = model.generate(input_ids=inputs, attention_mask=torch.ones_like(inputs), num_beams=3,
                              no_repeat_ngram_size=2, max_new_tokens=6, do_sample=False)
    reply = tokenizer.decode(expected[0], skip_special_tokens=True)
    greedy = model.generate(input_ids=inputs, attention_mask=torch.ones_like(inputs), num_beams=1,
                            no_repeat_ngram_size=0, max_new_tokens=6)
    assert tokenizer.decode(greedy[0], skip_special_tokens=True) != reply  # the saved settings make the difference
    assert capsys.readouterr().out.splitlines() == [f"Human: {prompt}", f"Bot: {reply}"]


def write_prompts(tmp_path, *prompts):
    path = tmp_path / "prompts.txt"
    path.write_text("".join(f"{prompt}\n" for prompt in prompts))
    return path


def test_model_card_carries_metadata_and_measured_metrics(trained):
    from huggingface_hub import ModelCard

    tmp_path, _ = trained
    model_dir = tmp_path / "model"
    results = json.loads((model_dir / "results.json").read_text())
    card = ModelCard.load(model_dir / "README.md")
    assert card.data.library_name == "transformers"
    assert "vinyals-le-2015" in card.data.tags and card.data.datasets == ["dialogues.jsonl"]
    values = {(r.metric_type, r.dataset_split): r.metric_value for r in card.data.eval_results}
    assert values[("perplexity", "test")] == round(results["test_perplexity"], 4)
    assert values[("perplexity", "validation")] == round(results["validation_perplexity"], 4)
    assert f"| Perplexity (test) | {results['test_perplexity']:.4g} |" in card.text
    assert 'pipeline("conversational"' in card.text
    # The training run also measured its greedy replies to the test inputs (all of them: fewer than 1,000 here).
    from hf_neuralconv.core.building import load_dialogues
    from hf_neuralconv.core.evaluation import reply_metrics

    model, tokenizer = load_model_dir(model_dir)
    test = load_dialogues(DataArguments(**json.loads((model_dir / "data_config.json").read_text())))["test"]
    chat = Responder(model_dir)
    replies = [chat.reply([*example["context"], example["message"]], max_new_tokens=20)[0].text for example in test]
    expected = reply_metrics(tokenizer, replies, list(test["response"]))
    assert results["test_greedy_distinct_2"] == pytest.approx(expected["distinct_2"])
    assert results["test_greedy_max_ratio"] == pytest.approx(expected["max_ratio"])
    assert results["test_greedy_bleu"] == pytest.approx(expected["bleu"])
    assert values[("max-ratio", "test")] == round(results["test_greedy_max_ratio"], 4)


def test_negative_training_and_attack_commands(trained, tmp_path, capsys):
    """`attack` measures a hit rate and writes the pairs; `negative-train` (Algorithm 1 on those pairs) saves a
    model that `attack` reads again, with thresholds measured on its test split."""
    model_tmp, dialogue_file = trained
    targets = tmp_path / "targets.txt"
    targets.write_text("you are bad\ni do n't like you\nzorgblarg\n")
    search = ["--trigger-length", "3", "--num-candidates", "4", "--max-sweeps", "2", "--num-restarts", "2"]
    pairs = tmp_path / "pairs.jsonl"
    capsys.readouterr()
    main(["attack", str(model_tmp / "model"), str(targets), "--hit-type", "o-sample-avg-hit",
          "--output-threshold", "-100", "--output", str(pairs), *search])
    report = json.loads(capsys.readouterr().out)
    assert report["targets"] == 2 and report["skipped_targets"] == 1 and report["hit_rate"] == 1.0
    assert report["hit_rates"]["o-sample-avg-hit"] == 1.0 and report["hit_rates"]["o-sample-min-hit"] == 1.0
    assert "io-sample-min-hit" not in report["hit_rates"]  # no input LM given
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    assert report["hit_rates"]["o-greedy-hit"] == sum(row["greedy"] for row in rows) / 2
    assert [json.loads(line)["hit"] for line in pairs.read_text().splitlines()] == [True, True]
    with pytest.raises(SystemExit, match="--overwrite"):
        main(["attack", str(model_tmp / "model"), str(targets), "--output", str(pairs)])

    recipe = write_recipe(tmp_path, dialogue_file, "negative.yaml", output_dir=str(tmp_path / "negative"),
                          model_name_or_path=str(model_tmp / "model"), mode="malicious",
                          trigger_pairs_file=str(pairs), hit_type="o-sample-avg-hit", output_threshold=-100.0,
                          max_steps=3)
    main(["negative-train", str(recipe)])
    results = json.loads((tmp_path / "negative" / "results.json").read_text())
    assert results["steps"] == 3 and results["output_threshold"] == -100.0  # the recipe's threshold is kept
    assert results["test_perplexity_after"] != results["test_perplexity_before"]
    history = json.loads((tmp_path / "negative" / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in history if "malicious/negative_pairs" in entry] == [2]
    assert (tmp_path / "negative" / "training_curves.png").read_bytes().startswith(b"\x89PNG")
    card = (tmp_path / "negative" / "README.md").read_text()
    assert "negative training" in card
    assert f"| max-ratio (greedy replies) | {results['test_greedy_max_ratio']:.4g} |" in card
    capsys.readouterr()
    main(["attack", str(tmp_path / "negative"), str(targets), *search])
    report = json.loads(capsys.readouterr().out)
    assert report["output_threshold"] == pytest.approx(-math.log(results["test_perplexity_after"]), rel=1e-4)


def test_mmi_models_tuning_and_diversity_report(trained, tmp_path, capsys):
    """recipes/mmi in miniature: an anti-LM and a reverse model trained on the chatbot's vocabulary, MMI-bidi tuned
    into a saved chatbot, and the diversity report over every strategy."""
    from transformers import AutoModelForCausalLM

    from hf_neuralconv.core.building import load_dialogues
    from hf_neuralconv.core.evaluation import reply_metrics
    from hf_neuralconv.data.tokenization import metric_words
    from hf_neuralconv.metrics.diversity import distinct_n, max_ratio
    from hf_neuralconv.metrics.entropy import entropy_n

    model_tmp, dialogue_file = trained
    chatbot = model_tmp / "model"
    shared = {"tokenizer_name_or_path": str(chatbot)}  # the vocabulary is the chatbot's, not trained again
    main(["train", str(write_recipe(tmp_path, dialogue_file, "lm.yaml", output_dir=str(tmp_path / "lm"),
                                    architecture="causal-lm", **shared))])
    main(["train", str(write_recipe(tmp_path, dialogue_file, "reverse.yaml", output_dir=str(tmp_path / "reverse"),
                                    direction="reverse", **shared))])
    tokenizer = AutoTokenizer.from_pretrained(chatbot)
    for name in ("lm", "reverse"):
        assert AutoTokenizer.from_pretrained(tmp_path / name).get_vocab() == tokenizer.get_vocab()
    assert "language model" in (tmp_path / "lm" / "README.md").read_text()
    assert "reverse model" in (tmp_path / "reverse" / "README.md").read_text()

    # The LM's test perplexity: every reply read after <s>, every token and </s> predicted, one example at a time.
    lm = AutoModelForCausalLM.from_pretrained(tmp_path / "lm").eval()
    data_args = DataArguments(**json.loads((tmp_path / "lm" / "data_config.json").read_text()))
    total, tokens = 0.0, 0
    for reply in load_dialogues(data_args)["test"]["response"]:
        ids = [tokenizer.bos_token_id, *tokenizer(reply, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
        logits = lm(torch.tensor([ids[:-1]])).logits[0]
        total += torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum").item()
        tokens += len(ids) - 1
    results = json.loads((tmp_path / "lm" / "results.json").read_text())
    assert results["test_target_tokens"] == tokens
    assert results["test_perplexity"] == pytest.approx(math.exp(total / tokens), rel=1e-5)

    # The reverse model reads a reply and predicts the message it answered.
    reverse_data = load_dialogues(DataArguments(**json.loads((tmp_path / "reverse" / "data_config.json").read_text())))
    forward_data = load_dialogues(data_args)
    assert reverse_data["train"][3]["message"] == forward_data["train"][3]["response"]
    assert reverse_data["train"][3]["response"] == forward_data["train"][3]["message"]
    assert reverse_data["train"][3]["context"] == []

    tuned = tmp_path / "tuned"
    main(["mmi-tune", str(chatbot), "--reverse-model", str(tmp_path / "reverse"), "--output-dir", str(tuned),
          "--max-inputs", "6", "--num-beams", "3", "--max-new-tokens", "5"])
    tuning = json.loads((tuned / "mmi_tuning.json").read_text())
    assert tuning["inputs"] == 6 and tuning["dev_bleu"] == max(point["bleu"] for point in tuning["grid"])
    saved = json.loads((tuned / "generation_config.json").read_text())["mmi"]
    assert (saved["lambda"], saved["gamma"], saved["num_beams"]) == (tuning["lambda"], tuning["gamma"], 3)
    with pytest.raises(SystemExit):  # a non-empty output directory is not written over
        main(["mmi-tune", str(chatbot), "--reverse-model", str(tmp_path / "reverse"), "--output-dir", str(tuned)])

    report_file = tmp_path / "report.json"
    capsys.readouterr()
    main(["diversity-report", str(tuned), "--anti-lm", str(tmp_path / "lm"), "--max-inputs", "5", "--num-beams",
          "3", "--max-new-tokens", "5", "--batch-size", "2", "--output", str(report_file)])
    report = json.loads(report_file.read_text())
    assert list(report["rows"]) == ["human", "greedy", "beam", "sample", "mmi-antilm", "mmi-bidi"]
    assert report["inputs"] == 5 and len(report["samples"]) == 5
    # Each row's figures are the metrics of its replies (hand-checked against the plain metric functions).
    greedy = [sample["greedy"] for sample in report["samples"]]
    words = [metric_words(tokenizer, reply) for reply in greedy]
    row = report["rows"]["greedy"]
    assert row["distinct_2"] == pytest.approx(distinct_n(words, 2))
    assert row["max_ratio"] == pytest.approx(max_ratio(words))
    assert row["ent_3"] == pytest.approx(entropy_n(words, 3))
    humans = [sample["human"] for sample in report["samples"]]
    assert report["rows"]["human"]["bleu"] == pytest.approx(100.0)
    assert reply_metrics(tokenizer, greedy, humans)["bleu"] == pytest.approx(row["bleu"])

    # The terminal chat decodes with both MMI forms, as the pipeline does.
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hi , how are you ?\n")
    chat = Responder(tuned, anti_lm=tmp_path / "lm").pipeline
    for options, expected in (
        (["--strategy", "mmi-bidi"], chat("hi , how are you ?", strategy="mmi-bidi", max_new_tokens=5)),
        (["--strategy", "mmi-antilm", "--anti-lm", str(tmp_path / "lm"), "--mmi-lambda", "0.7", "--mmi-gamma", "2"],
         chat("hi , how are you ?", strategy="mmi-antilm", mmi_lambda=0.7, mmi_gamma=2, max_new_tokens=5)),
    ):
        capsys.readouterr()
        main(["chat", str(tuned), "--prompts", str(prompts), "--max-new-tokens", "5", *options])
        assert capsys.readouterr().out.splitlines()[-1] == f"Bot: {expected[0]['generated_text'][-1]['content']}"


def test_train_chat_and_evaluate_run_quietly(tmp_path, dialogue_file):
    """No deprecation line and no pin_memory warning in a normal run (each prints once a process: a fresh one)."""
    import subprocess
    import sys

    def run(*argv):
        result = subprocess.run([sys.executable, "-m", "hf_neuralconv.cli", *map(str, argv)], capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        return result.stderr

    printed = run("train", write_recipe(tmp_path, dialogue_file))
    printed += run("chat", tmp_path / "model", "--prompts", write_prompts(tmp_path, "hello how are you ?"),
                   "--num-beams", "3")
    printed += run("evaluate", tmp_path / "model")
    for noise in ("deprecated", "pin_memory", "Traceback"):
        assert noise not in printed, printed


def test_chat_seed_repeats_sampled_replies(trained, capsys):
    tmp_path, _ = trained
    prompts = write_prompts(tmp_path, "hello how are you ?", "what is your name ?")
    runs = []
    for seed in (5, 5, 6):
        capsys.readouterr()
        main(["chat", str(tmp_path / "model"), "--prompts", str(prompts), "--do-sample", "--top-k", "0",
              "--num-return-sequences", "3", "--seed", str(seed)])
        runs.append(capsys.readouterr().out)
    assert runs[0] == runs[1] and runs[0] != runs[2]

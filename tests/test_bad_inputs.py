"""Bad input on every surface: a clear error that names the problem and the fix, raised before anything is written
(the output directory is left byte for byte as it was). One table per surface: recipe / train CLI, chat CLI,
evaluate CLI, data files, model loading, pipeline."""

import json
import shutil

import pytest
from conftest import make_dialogues, tiny_model, write_dialogue_file, write_recipe
from transformers import AutoModelForSeq2SeqLM

from hf_neuralconv.cli import main
from hf_neuralconv.core.arguments import DataArguments, parse_config
from hf_neuralconv.core.building import load_dialogues
from hf_neuralconv.core.loading import load_model_dir
from hf_neuralconv.models.lstm.configuration_lstm import LSTMLMConfig
from hf_neuralconv.models.lstm.modeling_lstm import LSTMForCausalLM, LSTMSeq2SeqForConditionalGeneration
from hf_neuralconv.pipelines.conversational import ConversationalPipeline

NOT_UTF8 = b"hello there\ncaf\xe9 au lait\n"  # latin-1: byte 15, on line 2


def snapshot(directory) -> dict[str, bytes]:
    """Every file under `directory` (relative path -> bytes): equal snapshots mean nothing was added, removed or
    changed."""
    return {str(path.relative_to(directory)): path.read_bytes() for path in sorted(directory.rglob("*"))
            if path.is_file()}


def refused(argv, capsys) -> str:
    """Run the CLI, expect the clean error exit (status 2) and return what it wrote to stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained through the CLI with a checkpoint (checkpoint-6) beside it."""
    tmp_path = tmp_path_factory.mktemp("bad-inputs")
    dialogue_file = write_dialogue_file(tmp_path)
    recipe = write_recipe(tmp_path, dialogue_file, save_strategy="steps", save_steps=6)
    main(["train", str(recipe)])
    assert (tmp_path / "model" / "checkpoint-6").is_dir()
    return tmp_path / "model", recipe


@pytest.fixture
def trained_copy(trained, tmp_path):
    """A copy of the trained model directory that a test may try to train over."""
    model_dir, recipe = trained
    shutil.copytree(model_dir, tmp_path / "model")
    return tmp_path / "model", recipe


# ---------------------------------------------------------------------------------------------- recipe / train CLI

@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["overwrite_output_dir=no"], "already exists and is not empty"),
        (["overwrite_output_dir=off", "bf16=no", "use_cpu=off"], "already exists and is not empty"),
        (["overwrite_output_dir=maybe"],
         "overwrite_output_dir=maybe: expected true/false (yes/no, on/off also read as YAML booleans)"),
        (["overwrite_output_dir=yes", "learning_rate=abc"], "learning_rate=abc: expected a number (e.g. 0.001)"),
        (["overwrite_output_dir=yes", "max_steps=1.5"], "max_steps=1.5: expected a whole number"),
        (["overwrite_output_dir=yes", "use_cpu=maybe"], "use_cpu=maybe: expected true/false"),
        (["overwrite_output_dir=yes", "load_best_model_at_end=sometimes"],
         "load_best_model_at_end=sometimes: expected true/false"),
        (["overwrite_output_dir=yes", "split_fractions=0.9"], "split_fractions=0.9: expected a list"),
        (["overwrite_output_dir=yes", "max_steps=[1"], "override 'max_steps=[1', line 1, column 3: not valid YAML"),
        (["overwrite_output_dir=yes", "dataset=chitchatt"],
         "dataset 'chitchatt' is neither a built-in corpus (chitchat) nor an existing file"),
        (["overwrite_output_dir=yes", "generation_config={num_beam: 5}"],
         "generation_config: num_beam is not a GenerationConfig setting"),
        (["overwrite_output_dir=yes", "generation_config={num_beams: 2, num_return_sequences: 3}"],
         "`num_return_sequences` (3) has to be smaller or equal to `num_beams` (2)"),
        (["overwrite_output_dir=yes", "generation_config={pad_token_id: 3}"],
         "generation_config: pad_token_id come from the tokenizer; remove them"),
        (["overwrite_output_dir=yes", "generation_config={num_beams: five}"],
         "generation_config: num_beams='five': expected a whole number"),
        (["resume_from_checkpoint=true", "hidden_size=24"],
         "does not fit this recipe's model: attention.output_transform.weight is (16, 32) there, (24, 48) here"),
        (["resume_from_checkpoint=nowhere/checkpoint-3"],
         "resume_from_checkpoint=nowhere/checkpoint-3: no such checkpoint directory"),
    ],
)
def test_train_refuses_before_touching_a_trained_model(trained_copy, capsys, overrides, message):
    model_dir, recipe = trained_copy
    before = snapshot(model_dir)
    assert message in refused(["train", str(recipe), f"output_dir={model_dir}", *overrides], capsys)
    assert snapshot(model_dir) == before  # weights, tokenizer, data_config.json and checkpoint-6 untouched


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty (no settings); start from a copy of recipes/seq2seq/quickstart.yaml"),
        ("# only a comment\n", "is empty (no settings)"),
        ("output_dir: x\nsplit_fractions: [0.8, 0.1\nseed: 1\n",
         "line 3, column 5: not valid YAML (expected ',' or ']', but got ':', while parsing a flow sequence from "
         "line 2)"),
        ("- output_dir\n- x\n", "a recipe is a YAML mapping of settings (key: value), got list"),
        (NOT_UTF8, "line 2 (byte 15) is not valid UTF-8"),
    ],
)
def test_bad_recipe_file_is_named_and_nothing_is_trained(tmp_path, monkeypatch, capsys, content, message):
    monkeypatch.chdir(tmp_path)  # an empty recipe used to train into ./trainer_output
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes(content.encode() if isinstance(content, str) else content)
    error = refused(["train", str(recipe)], capsys)
    assert str(recipe) in error and message in error
    assert [path.name for path in tmp_path.iterdir()] == ["recipe.yaml"]


@pytest.mark.parametrize(
    ("override", "setting", "expected"),
    [
        ("overwrite_output_dir=no", "overwrite_output_dir", False),
        ("overwrite_output_dir=yes", "overwrite_output_dir", True),
        ("overwrite_output_dir=On", "overwrite_output_dir", True),
        ("bf16=no", "bf16", False),
        ("use_cpu=off", "use_cpu", False),
        ("load_best_model_at_end=no", "load_best_model_at_end", False),
        ("eval_strategy=no", "eval_strategy", "no"),  # a word where the setting is not a boolean
        ("include_num_input_tokens_seen=no", "include_num_input_tokens_seen", "no"),
        ("learning_rate=1e-3", "learning_rate", 0.001),  # YAML 1.1 reads 1e-3 as text
        ("resume_from_checkpoint=true", "resume_from_checkpoint", True),
    ],
)
def test_overrides_are_read_like_the_recipe_file(tmp_path, dialogue_file, override, setting, expected):
    key, _, value = override.partition("=")
    from_override = getattr(parse_config(write_recipe(tmp_path, dialogue_file), overrides=[override])[2], setting)
    in_file = tmp_path / "in_file.yaml"
    in_file.write_text(write_recipe(tmp_path, dialogue_file).read_text() + f"{key}: {value}\n")
    from_file = getattr(parse_config(in_file)[2], setting)
    assert from_override == from_file == expected


@pytest.mark.parametrize("native", [True, False])
def test_bf16_trains_in_fp32_on_a_cpu_without_native_bf16(tmp_path, dialogue_file, monkeypatch, caplog, native):
    from hf_neuralconv.core import arguments

    monkeypatch.setattr(arguments, "cpu_has_bf16", lambda: native)
    with caplog.at_level("WARNING", logger=arguments.__name__):
        training = parse_config(write_recipe(tmp_path, dialogue_file), overrides=["bf16=true", "use_cpu=true"])[2]
    assert training.bf16 is native
    assert ("no native bf16" in caplog.text) is not native


def test_the_bf16_check_agrees_with_what_an_lstm_can_do():
    """Where the check allows bf16, an LSTM runs under bf16 autocast (on CPUs with AVX2 alone oneDNN refuses)."""
    import torch

    from hf_neuralconv.core.arguments import cpu_has_bf16

    lstm = torch.nn.LSTM(4, 4, batch_first=True)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lstm(torch.randn(1, 2, 4))
        runs = True
    except RuntimeError:
        runs = False
    assert runs or not cpu_has_bf16()


def test_overwrite_starts_a_new_run_and_its_resume_finds_no_old_checkpoint(trained_copy, capsys):
    """overwrite_output_dir=yes clears the old run's checkpoint-*: a later resume would load weights of another
    architecture (a size-mismatch traceback) into the new run."""
    model_dir, recipe = trained_copy
    main(["train", str(recipe), f"output_dir={model_dir}", "overwrite_output_dir=yes", "hidden_size=24",
          "save_strategy=no"])
    assert not list(model_dir.glob("checkpoint-*"))
    assert json.loads((model_dir / "config.json").read_text())["hidden_size"] == 24
    before = snapshot(model_dir)
    error = refused(["train", str(recipe), f"output_dir={model_dir}", "resume_from_checkpoint=true",
                     "hidden_size=24"], capsys)
    assert f"resume_from_checkpoint: true, but {model_dir} holds no checkpoint-* directory to resume from" in error
    assert snapshot(model_dir) == before


# ------------------------------------------------------------------------------------------------------- chat CLI

@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--num-return-sequences", "0", "--num-beams", "3"], "argument --num-return-sequences: must be >= 1, got 0"),
        (["--num-beams", "0"], "argument --num-beams: must be >= 1, got 0"),
        (["--num-beams", "two"], "argument --num-beams: expected a whole number >= 1, got 'two'"),
        (["--do-sample", "--top-p", "2"], "argument --top-p: must be in (0, 1], got 2"),
        (["--do-sample", "--top-p", "0"], "argument --top-p: must be in (0, 1], got 0"),
        (["--do-sample", "--temperature", "0"], "argument --temperature: must be > 0, got 0"),
        (["--do-sample", "--temperature", "-1"], "argument --temperature: must be > 0, got -1"),
        (["--do-sample", "--top-k", "-1"], "argument --top-k: must be >= 0, got -1"),
        (["--max-new-tokens", "0"], "argument --max-new-tokens: must be >= 1, got 0"),
        (["--context-turns", "-1"], "argument --context-turns: must be >= 0, got -1"),
        (["--num-beams", "2", "--num-return-sequences", "3"],
         "--num-return-sequences 3 cannot exceed --num-beams 2 for greedy/beam search: give more beams"),
    ],
)
def test_chat_options_are_checked_before_the_model_loads(tmp_path, capsys, options, message):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hello how are you ?\n")
    # No model there: the options are refused before it would be looked for.
    error = refused(["chat", str(tmp_path / "no-model"), "--prompts", str(prompts), *options], capsys)
    assert message in error and "no such model directory" not in error


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "no prompts (the file is empty or blank); write one message a line"),
        (b"\n  \n\t\n", "no prompts (the file is empty or blank)"),
        (NOT_UTF8, "line 2 (byte 15) is not valid UTF-8; re-encode the file as UTF-8"),
    ],
)
def test_bad_prompt_files(tmp_path, capsys, content, message):
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(content)
    error = refused(["chat", str(tmp_path / "no-model"), "--prompts", str(prompts)], capsys)
    assert f"{prompts}: " in error and message in error


def test_attack_names_the_line_of_a_target_file_that_is_not_utf8(trained, tmp_path, capsys):
    targets = tmp_path / "targets.txt"
    targets.write_bytes(NOT_UTF8)
    error = refused(["attack", str(trained[0]), str(targets), "--output-threshold", "-10"], capsys)
    assert f"{targets}: line 2 (byte 15) is not valid UTF-8" in error


def test_prompt_lines_are_echoed_without_terminal_control_sequences(trained, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hi \x1b[2J\x1b]0;owned\x07 there\n")
    capsys.readouterr()
    main(["chat", str(trained[0]), "--prompts", str(prompts), "--max-new-tokens", "3"])
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "Human: hi \\x1b[2J\\x1b]0;owned\\x07 there"
    assert "\x1b" not in out and "\x07" not in out


# --------------------------------------------------------------------------------------------------- evaluate CLI

@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
        (["--batch-size", "-4"], "argument --batch-size: must be >= 1, got -4"),
        (["--ngram-orders", "3", "0"], "argument --ngram-orders: must be >= 1, got 0"),
    ],
)
def test_evaluate_arguments_are_checked_first(tmp_path, capsys, options, message):
    error = refused(["evaluate", str(tmp_path / "no-model"), *options], capsys)
    assert message in error and "no such model directory" not in error


# ----------------------------------------------------------------------------------------------------- data files

def _rows_file(tmp_path, rows, name="dialogues.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _malformed_line_7(tmp_path):
    lines = [json.dumps(row) for row in make_dialogues(10)]
    lines[6] = lines[6][:-3]  # a cut-off line
    path = tmp_path / "dialogues.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _shared_ids(tmp_path):
    rows = make_dialogues(300)
    for index, row in enumerate(rows):
        row["conversation_id"] = f"c{index // 2}"  # two rows each: 300 rows used to become 150 conversations
    return _rows_file(tmp_path, rows)


def _zero_bytes(tmp_path):
    path = tmp_path / "dialogues.jsonl"
    path.write_bytes(b"")
    return path


def _not_utf8(tmp_path):
    path = tmp_path / "dialogues.jsonl"
    path.write_bytes(json.dumps(make_dialogues(1)[0]).encode() + b"\n" + NOT_UTF8)
    return path


@pytest.mark.parametrize(
    ("make_file", "message"),
    [
        (_malformed_line_7, "dialogues.jsonl: line 7, column 129: not valid JSON (Expecting ',' delimiter); each line "
                            "must be one JSON object"),
        (_zero_bytes, "dialogues.jsonl: the file is empty; it needs at least one dialogue"),
        (_not_utf8, "dialogues.jsonl: line 3 (byte"),
        (lambda tmp_path: "chitchatt", "dataset 'chitchatt' is neither a built-in corpus (chitchat) nor an existing "
                                       "file; fix the name or the path"),
        (lambda tmp_path: _rows_file(tmp_path, make_dialogues(3)),
         "3 conversations are too few to split into train/validation/test with split_fractions [0.8, 0.1, 0.1]: the "
         "validation split would be empty; give at least 8 conversations"),
        (_shared_ids, "dialogues.jsonl: rows 1 and 2 share conversation_id 'c0'; a row is one whole dialogue"),
    ],
)
def test_bad_data_files(tmp_path, make_file, message):
    dataset = make_file(tmp_path)
    with pytest.raises((ValueError, FileNotFoundError)) as error_info:
        load_dialogues(DataArguments(dataset=str(dataset), split_fractions=[0.8, 0.1, 0.1]))
    assert message in str(error_info.value)


def test_enough_conversations_are_enough(tmp_path):
    splits = load_dialogues(DataArguments(dataset=str(_rows_file(tmp_path, make_dialogues(8))),
                                          split_fractions=[0.8, 0.1, 0.1]))
    assert [len(set(splits[name]["conversation_id"])) for name in splits] == [6, 1, 1]


def test_bad_dataset_is_refused_before_the_output_directory_exists(tmp_path, capsys):
    recipe = write_recipe(tmp_path, _rows_file(tmp_path, make_dialogues(3)))
    assert "give at least 8 conversations" in refused(["train", str(recipe)], capsys)
    assert not (tmp_path / "model").exists()


# -------------------------------------------------------------------------------------------------- model loading

@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, tiny_tokenizer):
    path = tmp_path_factory.mktemp("saved") / "model"
    tiny_model(tiny_tokenizer).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def _negative_size(model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "hidden_size": -4}))


def _config_not_json(model_dir):
    (model_dir / "config.json").write_text('{"model_type": "lstm-seq2seq",')


def _a_language_model(model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    LSTMForCausalLM(LSTMLMConfig(vocab_size=config["vocab_size"], embedding_size=4, hidden_size=4)).save_pretrained(
        model_dir)


def _truncated_weights(model_dir):
    weights = (model_dir / "model.safetensors").read_bytes()
    (model_dir / "model.safetensors").write_bytes(weights[: len(weights) // 2])


@pytest.mark.parametrize(
    ("damage", "load", "message"),
    [
        (_negative_size, load_model_dir,
         "config.json: LSTMSeq2SeqConfig: `hidden_size` must be a positive integer, got -4. Fix that file"),
        (_config_not_json, load_model_dir, "config.json"),
        (_a_language_model, load_model_dir, "a LSTMLMConfig model ('lstm_lm') is not a chatbot this command can "
                                            "answer with"),
        (_truncated_weights, load_model_dir, "the weights file model.safetensors cannot be read"),
        (_truncated_weights, LSTMSeq2SeqForConditionalGeneration.from_pretrained,
         "the weights file model.safetensors cannot be read"),
        (_truncated_weights, AutoModelForSeq2SeqLM.from_pretrained,
         "the weights file model.safetensors cannot be read"),
    ],
)
def test_damaged_model_directory_names_the_broken_file(saved_model, tmp_path, damage, load, message):
    model_dir = tmp_path / "model"
    shutil.copytree(saved_model, model_dir)
    damage(model_dir)
    with pytest.raises((OSError, ValueError)) as error_info:
        load(model_dir)
    error = str(error_info.value)
    assert str(model_dir) in error and message in error
    if damage is _truncated_weights:
        assert "truncated or corrupt" in error
    else:  # a config problem is not blamed on the weights
        assert "model.safetensors" not in error


def test_chat_reports_only_the_config_problem(saved_model, tmp_path, capsys):
    model_dir = tmp_path / "model"
    shutil.copytree(saved_model, model_dir)
    _negative_size(model_dir)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hi\n")
    error = refused(["chat", str(model_dir), "--prompts", str(prompts)], capsys)
    assert "`hidden_size` must be a positive integer, got -4" in error and "model.safetensors" not in error


# ------------------------------------------------------------------------------------------------------- pipeline

@pytest.fixture(scope="module")
def chat(tiny_tokenizer):
    return ConversationalPipeline(model=tiny_model(tiny_tokenizer), tokenizer=tiny_tokenizer, max_new_tokens=3)


USER_HI = {"role": "user", "content": "hi"}


@pytest.mark.parametrize(
    ("chat_input", "error", "message"),
    [
        ([{"speaker": "a", "text": "hi"}], ValueError,
         "Message 0 has no 'role' and no 'content' key (its keys: ['speaker', 'text']); write each message as "
         "{'role': 'user' or 'assistant', 'content': text}"),
        ([USER_HI, {"role": "assistant", "text": "yo"}, USER_HI], ValueError,
         "Message 1 has no 'content' key (its keys: ['role', 'text'])"),
        ([[USER_HI], []], ValueError, "Chat 1 of the batch: The conversation is empty"),
        ([[USER_HI], [USER_HI], [{"speaker": "a", "text": "hi"}]], ValueError,
         "Chat 2 of the batch: Message 0 has no 'role' and no 'content' key"),
        (["hi", [USER_HI], 7], TypeError, "Chat 2 of the batch: A chat is a string or a list of role/content "
                                          "messages, got int"),
    ],
)
def test_pipeline_names_the_bad_message_and_chat(chat, chat_input, error, message):
    with pytest.raises(error) as error_info:
        chat(chat_input)
    assert message in str(error_info.value)
    assert chat([[USER_HI], "hello"])[1][0]["generated_text"][-1]["role"] == "assistant"  # still answering


def test_generation_config_is_read_as_its_settings_types_and_only_where_it_is_saved(trained):
    from hf_neuralconv.negative_training.trainer import NegativeTrainingConfig

    _, recipe = trained
    model_args, _, _ = parse_config(recipe, overrides=["generation_config={do_sample: yes, temperature: 7e-1}"])
    assert model_args.generation_config == {"do_sample": True, "temperature": 0.7}  # YAML 1.1 reads 7e-1 as text
    with pytest.raises(ValueError, match="only `hf-neuralconv train` saves decoding defaults"):
        parse_config(recipe, NegativeTrainingConfig, ["generation_config={num_beams: 2}"])

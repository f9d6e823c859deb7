"""Luan et al. (2017) end to end (`hf-neuralconv persona-train` / `persona-report`) on tiny models and data: a trained
model gains speaker vectors without changing its outputs; the three runs write complete directories whose perplexity,
BLEU and distinct-n are the values computed by hand; the report's relative changes; bad input fails clearly."""

import itertools
import json
import math
from pathlib import Path

import pytest
import sacrebleu
import torch
import torch.nn.functional as F
import yaml
from conftest import ARCHITECTURES, tiny_model, write_dialogue_file
from datasets import Dataset
from safetensors.torch import load_file
from transformers import pipeline

from hf_neuralconv.cli import main
from hf_neuralconv.core.loading import load_model_dir
from hf_neuralconv.data.dialogue import DataFormatError, load_dialogue_file
from hf_neuralconv.data.tokenization import encode_source, encode_target, metric_words, source_text
from hf_neuralconv.mmi.rerank import mmi_bidi_generate
from hf_neuralconv.persona.config import (
    PROTOCOL_FILE,
    REPLIES_FILE,
    SPEAKERS_PER_SAMPLE,
    parse_speaker_adaptation_recipe,
)
from hf_neuralconv.persona.evaluation import SpeakerModel, decode_test_inputs
from hf_neuralconv.persona.experiment import train_speaker_adaptation
from hf_neuralconv.persona.report import format_table, persona_report
from hf_neuralconv.persona.speakers import (
    GENERIC_SPEAKER,
    SpeakerVocabulary,
    add_speaker_embeddings,
    speaker_adaptation_data,
)

MODES = ("baseline", "mtask-m", "mtask-s")
PROTOCOL = dict(min_utterances=30, num_target_speakers=2, heldout_fraction=0.3, max_context_turns=2, seed=0)
# A tiny version of recipes/persona_mtask/*.yaml: the same keys, sizes for a test.
TINY_RECIPE = dict(
    max_source_length=12, max_target_length=8, vocab_size=60, embedding_size=12, hidden_size=16,
    attention="general", dropout=0.0, init_range=0.3, min_utterances=30, num_target_speakers=2, protocol_seed=0,
    speaker_min_count=20, speaker_embedding_size=4, lora_rank=2, num_beams=3, max_new_tokens=5, max_eval_inputs=10,
    generation_batch_size=4, per_device_train_batch_size=8, per_device_eval_batch_size=5, learning_rate=0.01,
    max_steps=6, eval_steps=3, save_steps=3, logging_steps=3, report_to="none", use_cpu=True, seed=1,
    disable_tqdm=True,
)


def write_recipe(directory, dialogue_file, mode, name=None, **overrides):
    recipe = {**TINY_RECIPE, "dataset": str(dialogue_file), "mode": mode, "output_dir": str(directory / mode)}
    if mode != "baseline":
        recipe["base_model"] = str(directory / "baseline")
    recipe.update(overrides)
    path = directory / f"{name or mode}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The three runs through the CLI, on 120 made-up dialogues between 8 speakers (2 of them targets)."""
    directory = tmp_path_factory.mktemp("persona")
    dialogue_file = write_dialogue_file(directory)
    for mode in MODES:
        main(["persona-train", str(write_recipe(directory, dialogue_file, mode))])
    protocol = speaker_adaptation_data(load_dialogue_file(dialogue_file), **PROTOCOL)
    return directory, dialogue_file, protocol


def results_of(run_dir):
    return json.loads((run_dir / "results.json").read_text())


def replies_of(run_dir):
    return [json.loads(line) for line in (run_dir / REPLIES_FILE).read_text().splitlines()]


RECIPES = Path(__file__).parents[1] / "recipes" / "persona_mtask"


def header_commands(path):
    """The `hf-neuralconv persona-train` command lines of a recipe's header comment: [recipe, KEY=VALUE, ...]."""
    words = " ".join(line.lstrip("#") for line in path.read_text().splitlines() if line.startswith("#")).split()
    commands = []
    for index, word in enumerate(words):
        if word == "persona-train":
            recipe, *rest = words[index + 1 :]
            arguments = itertools.takewhile(lambda argument: "=" in argument or argument == "\\", rest)
            commands.append([recipe, *(argument for argument in arguments if argument != "\\")])
    return commands


def test_recipes_share_one_protocol_and_their_cpu_commands_parse():
    """The three recipes read the same data protocol, the MTASK ones adapt the baseline's output_dir, and the command
    lines of their headers parse (the paper-scale one on a GPU machine)."""
    parsed = {name: parse_speaker_adaptation_recipe(RECIPES / f"{name}.yaml") for name in ("baseline", "mtask_m",
                                                                                           "mtask_s")}
    protocol = {name: (data_args.dataset, data_args.max_context_turns, data_args.max_source_length,
                       data_args.max_target_length, args.min_utterances, args.num_target_speakers,
                       args.heldout_fraction, args.protocol_seed) for name, (_, data_args, _, args) in parsed.items()}
    assert len(set(protocol.values())) == 1
    baseline_dir = parsed["baseline"][2].output_dir
    assert [parsed[name][3].base_model for name in ("mtask_m", "mtask_s")] == [baseline_dir, baseline_dir]
    assert [args.mode for _, _, _, args in parsed.values()] == ["baseline", "mtask-m", "mtask-s"]
    for name in parsed:
        commands = header_commands(RECIPES / f"{name}.yaml")
        assert len(commands) == 2
        for recipe, *overrides in commands:
            assert recipe == f"recipes/persona_mtask/{name}.yaml"
            if overrides == ["use_cpu=false"] and not torch.cuda.is_available():
                continue  # the paper-scale command: bf16 without use_cpu needs a GPU
            parse_speaker_adaptation_recipe(RECIPES / f"{name}.yaml", overrides)


# --- a trained model becomes a persona model (MTASK-M, Eq. 1) ---

PLAIN_ARCHITECTURES = {name: settings for name, settings in ARCHITECTURES.items() if "num_speakers" not in settings}


@pytest.mark.parametrize("settings", PLAIN_ARCHITECTURES.values(), ids=PLAIN_ARCHITECTURES.keys())
def test_speaker_embeddings_added_to_a_trained_model_keep_its_outputs(tiny_tokenizer, tmp_path, settings):
    model = tiny_model(tiny_tokenizer, **settings)
    inputs = dict(input_ids=torch.tensor([[7, 8, 9, 10], [11, 12, 0, 0]]),
                  attention_mask=torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]),
                  decoder_input_ids=torch.tensor([[1, 20, 21], [1, 22, 23]]))
    before = model(**inputs).logits
    greedy = model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], max_new_tokens=6)
    trained_weight = model.decoder.weight_ih_l0.detach().clone()
    add_speaker_embeddings(model, num_speakers=5, speaker_embedding_size=3)

    for speakers in ([0, 0], [1, 4], [3, 2]):
        speaker_ids = torch.tensor(speakers)
        torch.testing.assert_close(model(**inputs, speaker_ids=speaker_ids).logits, before)
        assert torch.equal(model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                          speaker_ids=speaker_ids, max_new_tokens=6), greedy)
    weight = model.decoder.weight_ih_l0
    assert torch.equal(weight[:, :-3], trained_weight) and not weight[:, -3:].any()
    vectors = model.speaker_embeddings.weight
    assert vectors.shape == (5, 3) and vectors.abs().max() <= model.config.init_range and vectors.std() > 0
    model.save_pretrained(tmp_path)
    reloaded = type(model).from_pretrained(tmp_path).eval()
    torch.testing.assert_close(reloaded(**inputs, speaker_ids=torch.tensor([1, 4])).logits, before)

    # The new columns learn (their gradient does not vanish): after one update the speakers' outputs differ.
    model(**inputs, speaker_ids=torch.tensor([1, 4]), labels=torch.tensor([[20, 21, 2], [22, 23, 2]])).loss.backward()
    torch.optim.SGD(model.parameters(), lr=1.0).step()
    assert weight[:, -3:].abs().min() > 0
    as_speaker = {speaker: model(**inputs, speaker_ids=torch.tensor([speaker, speaker])).logits for speaker in (1, 4)}
    assert (as_speaker[1] - as_speaker[4]).abs().max() > 1e-4


def test_speaker_embeddings_are_added_once(tiny_tokenizer):
    with pytest.raises(ValueError, match="already has speaker embeddings"):
        add_speaker_embeddings(tiny_model(tiny_tokenizer, num_speakers=2, speaker_embedding_size=3), 3, 3)
    with pytest.raises(ValueError, match="must be >= 1"):
        add_speaker_embeddings(tiny_model(tiny_tokenizer), 0, 3)


def test_perplexity_reads_long_targets_in_small_batches(tiny_tokenizer, monkeypatch):
    """A batch holds at most MAX_EVALUATION_POSITIONS padded target positions (one longer example alone), and the
    perplexity is the same as one example at a time."""
    from hf_neuralconv.core import evaluation

    model = tiny_model(tiny_tokenizer)
    rows = [{"input_ids": [7 + length % 5, 8, 9], "labels": [10 + (step % 30) for step in range(length)] + [2]}
            for length in (1, 9, 2, 14, 3, 5, 1, 7)]
    total, tokens = 0.0, 0
    for row in rows:
        labels = torch.tensor([row["labels"]])
        logits = model(input_ids=torch.tensor([row["input_ids"]]), labels=labels).logits
        total += F.cross_entropy(logits[0], labels[0], reduction="sum").item()
        tokens += labels.numel()
    batches = []
    model.register_forward_hook(lambda module, args, kwargs, output: batches.append(tuple(kwargs["labels"].shape)),
                                with_kwargs=True)
    monkeypatch.setattr(evaluation, "MAX_EVALUATION_POSITIONS", 12)
    value, counted = evaluation.perplexity(model, tiny_tokenizer, Dataset.from_list(rows), batch_size=3, use_cpu=True)
    assert counted == tokens and value == pytest.approx(math.exp(total / tokens), rel=1e-5)
    assert sum(size for size, _ in batches) == len(rows)
    assert all(size * width <= 12 or size == 1 for size, width in batches) and max(width for _, width in batches) == 15


# --- the three runs (Tables 1-2) ---

@pytest.mark.parametrize("mode", MODES)
def test_run_directories_are_complete(runs, mode):
    directory, _, (_, summary) = runs
    run_dir = directory / mode
    for name in ("config.json", "model.safetensors", "tokenizer.json", "data_config.json", PROTOCOL_FILE,
                 "results.json", REPLIES_FILE):
        assert (run_dir / name).is_file(), name
    protocol = json.loads((run_dir / PROTOCOL_FILE).read_text())
    assert protocol == {"dataset": str(directory / "dialogues.jsonl"), **summary}
    results = results_of(run_dir)
    assert results["mode"] == mode and results["target_speakers"] == summary["target_speakers"]
    assert results["decoding"]["strategy"] == "beam" and results["decoding"]["num_beams"] == 3
    assert results["machine"] and results["wall_time_s"] > 0
    targets = summary["target_speakers"]
    if mode == "baseline":
        assert not (run_dir / "speakers.json").exists() and results["base_model"] is None
    if mode == "mtask-m":  # a persona model: general speakers with >= 20 responses, then the targets
        general = json.loads((directory / "baseline" / PROTOCOL_FILE).read_text())
        assert general == protocol
        vocabulary = SpeakerVocabulary.load(run_dir)
        assert vocabulary.names[-2:] == targets and GENERIC_SPEAKER == vocabulary.names[0]
        config = json.loads((run_dir / "config.json").read_text())
        assert config["num_speakers"] == len(vocabulary) and not config["autoencoder_encoder"]
        assert not any(name.startswith("autoencoder") for name in load_file(run_dir / "model.safetensors"))
        chat = pipeline("conversational", model=str(run_dir))
        reply = chat("hi , how are you ?", speaker=targets[0], max_new_tokens=4)[0]["generated_text"][-1]["content"]
        assert isinstance(reply, str)
    if mode == "mtask-s":  # the baseline's weights, unchanged, and one adapter per target speaker
        base, own = (load_file(path / "model.safetensors") for path in (directory / "baseline", run_dir))
        assert base.keys() == own.keys() and all(torch.equal(base[name], own[name]) for name in base)
        assert SpeakerVocabulary.load(run_dir).names == [GENERIC_SPEAKER, *targets]
        for index in (1, 2):
            assert (run_dir / f"speaker_{index}" / "adapter_model.safetensors").is_file()
        assert set(results["training"]["per_speaker"]) == set(targets)


def test_baseline_stops_when_the_dev_perplexity_converges(runs, tmp_path):
    """Figure 3, step 2: with patience 1 and a 90 % improvement threshold the second evaluation ends training, and the
    better of the two checkpoints is the saved model."""
    directory, dialogue_file, _ = runs
    path = write_recipe(tmp_path, dialogue_file, "baseline", max_steps=50, eval_steps=1, save_steps=1,
                        convergence_patience=1, convergence_threshold=0.9)
    results = train_speaker_adaptation(*parse_speaker_adaptation_recipe(path))
    state = json.loads((tmp_path / "baseline" / "checkpoint-2" / "trainer_state.json").read_text())
    perplexities = [entry["eval_perplexity"] for entry in state["log_history"] if "eval_perplexity" in entry]
    assert results["training"]["steps"] == 2 and len(perplexities) == 2
    assert results["training"]["best_dev_perplexity"] == min(perplexities)
    best = load_file(f"{state['best_model_checkpoint']}/model.safetensors")
    saved = load_file(tmp_path / "baseline" / "model.safetensors")
    assert all(torch.equal(best[name], saved[name]) for name in saved)


def reference_perplexity(run_dir, examples):
    """exp(summed NLL / target tokens) of the examples, one at a time, each read as its responder by the saved model."""
    speaker_model = SpeakerModel.load(run_dir, device="cpu")
    tokenizer, total, tokens = speaker_model.tokenizer, 0.0, 0
    for example in examples:
        speaker_id = speaker_model.as_speaker(example["speaker"])
        source = encode_source(tokenizer, [source_text(example["context"], example["message"])], 12)[0]
        labels = torch.tensor(encode_target(tokenizer, [example["response"]], None))
        extra = {} if speaker_id is None else {"speaker_ids": torch.tensor([speaker_id])}
        with torch.no_grad():
            logits = speaker_model.model(input_ids=torch.tensor([source]), labels=labels, **extra).logits
        total += F.cross_entropy(logits[0], labels[0], reduction="sum").item()
        tokens += labels.numel()
    return math.exp(total / tokens), tokens


@pytest.mark.parametrize("mode", MODES)
def test_perplexity_is_that_of_the_target_speakers_test_responses(runs, mode):
    """Table 1: token-level perplexity over every target-speaker example, each read as its speaker (MTASK-M: the
    speaker's vector; MTASK-S: the speaker's adapter), pooled and per speaker (Figure 4)."""
    directory, _, (data, summary) = runs
    results = results_of(directory / mode)
    for split in ("validation", "test"):
        expected, tokens = reference_perplexity(directory / mode, data[split])
        assert results[f"{split}_target_tokens"] == tokens
        assert results[f"{split}_perplexity"] == pytest.approx(expected, rel=1e-5)
    for speaker in summary["target_speakers"]:
        own = data["test"].filter(lambda example, speaker=speaker: example["speaker"] == speaker)
        expected, tokens = reference_perplexity(directory / mode, own)
        assert results["per_speaker"][speaker]["test_perplexity"] == pytest.approx(expected, rel=1e-5)
        assert results["per_speaker"][speaker]["test_target_tokens"] == tokens


@pytest.mark.parametrize("mode", MODES)
def test_reply_scores_are_those_of_the_saved_replies(runs, mode):
    """Table 2: a seeded sample of test inputs (the same in every run), each answered as its responder; BLEU and
    distinct-n recomputed from replies.jsonl by hand; the saved model gives the same replies again."""
    directory, _, (data, _) = runs
    results, rows = results_of(directory / mode), replies_of(directory / mode)
    sample = data["test"].shuffle(seed=0).select(range(10))
    assert [(row["conversation_id"], row["message"], row["reference"], row["speaker"]) for row in rows] == [
        (example["conversation_id"], example["message"], example["response"], example["speaker"]) for example in sample]
    speaker_model = SpeakerModel.load(directory / mode, device="cpu")
    decoding = results["decoding"]
    assert decode_test_inputs(speaker_model, data["test"], 10, 0, decoding, batch_size=4) == rows

    replies = [metric_words(speaker_model.tokenizer, row["reply"]) for row in rows]
    references = [" ".join(metric_words(speaker_model.tokenizer, row["reference"])) for row in rows]
    generated = sum(len(words) for words in replies)
    for n in (1, 2):
        ngrams = [tuple(words[i : i + n]) for words in replies for i in range(len(words) - n + 1)]
        assert results[f"test_distinct_{n}_corpus"] == pytest.approx(len(set(ngrams)) / generated)
        ratios = [len({tuple(words[i : i + n]) for i in range(len(words) - n + 1)}) / len(words)
                  for words in replies if words]
        assert results[f"test_distinct_{n}_per_utterance"] == pytest.approx(sum(ratios) / len(ratios))
    bleu = sacrebleu.corpus_bleu([" ".join(words) for words in replies], [references]).score
    assert results["test_bleu"] == pytest.approx(bleu)
    assert results["test_replies"] == len(rows) == 10


def test_mtask_s_adapters_answer_as_their_speakers(runs):
    """The MTASK-S run reloads with every speaker's adapter; switching speakers switches adapters."""
    directory, _, (_, summary) = runs
    speaker_model = SpeakerModel.load(directory / "mtask-s", device="cpu")
    inputs = dict(input_ids=torch.tensor([[7, 8, 9]]), decoder_input_ids=torch.tensor([[1, 20, 21]]))
    logits = {}
    for speaker in summary["target_speakers"]:
        speaker_model.as_speaker(speaker)
        with torch.no_grad():
            logits[speaker] = speaker_model.model(**inputs).logits
    first, second = summary["target_speakers"]
    assert not torch.equal(logits[first], logits[second])


# --- persona-report: Tables 1-2 and Figure 7 ---

HAND_MADE = {  # mode: (PPL dev, PPL test, BLEU, distinct-1, distinct-2, per-utterance distinct-1, -2)
    "baseline": (50.0, 60.0, 1.0, 0.02, 0.05, 0.9, 0.8),
    "mtask-s": (40.0, 45.0, 1.5, 0.03, 0.06, 0.9, 0.88),
    "mtask-m": (45.0, 48.0, 2.0, 0.025, 0.04, 0.81, 0.8),
}
KEYS = ("validation_perplexity", "test_perplexity", "test_bleu", "test_distinct_1_corpus", "test_distinct_2_corpus",
        "test_distinct_1_per_utterance", "test_distinct_2_per_utterance")


def hand_made_runs(tmp_path, modes=tuple(HAND_MADE)):
    directories = []
    for mode in modes:
        run_dir = tmp_path / mode
        run_dir.mkdir()
        decoding = {"strategy": "beam", "num_beams": 10, "max_new_tokens": 20}
        (run_dir / "results.json").write_text(json.dumps({"mode": mode, "test_replies": 100, "decoding": decoding,
                                                          **dict(zip(KEYS, HAND_MADE[mode]))}))
        (run_dir / PROTOCOL_FILE).write_text(json.dumps({"target_speakers": ["a", "b"]}))
        directories.append(run_dir)
    return directories


def test_report_table_gives_relative_changes_against_the_baseline(tmp_path):
    report = persona_report(reversed(hand_made_runs(tmp_path)), samples=0)
    rows = {row["model"]: row for row in report["table"]}
    assert [row["model"] for row in report["table"]] == ["Baseline", "MTASK-S", "MTASK-M"]
    assert all(cell["relative_change"] is None for key, cell in rows["Baseline"].items() if key in KEYS)
    for model, mode in (("MTASK-S", "mtask-s"), ("MTASK-M", "mtask-m")):
        for key, value, base in zip(KEYS, HAND_MADE[mode], HAND_MADE["baseline"]):
            assert rows[model][key]["value"] == value
            assert rows[model][key]["relative_change"] == pytest.approx((value - base) / base)
    lines = report["markdown"].splitlines()
    assert lines[2] == "| Baseline | 50.00 | 60.00 | 1.00 | 2.00% | 5.00% | 90.00% | 80.00% | 100 |"
    assert lines[3] == ("| MTASK-S | 40.00 (-20.0%) | 45.00 (-25.0%) | 1.50 (+50.0%) | 3.00% (+50.0%) | "
                        "6.00% (+20.0%) | 90.00% (+0.0%) | 88.00% (+10.0%) | 100 |")
    assert lines[4] == ("| MTASK-M | 45.00 (-10.0%) | 48.00 (-20.0%) | 2.00 (+100.0%) | 2.50% (+25.0%) | "
                        "4.00% (-20.0%) | 81.00% (-10.0%) | 80.00% (+0.0%) | 100 |")
    assert lines[-1] == "Replies: beam search with 10 beams, at most 20 tokens."
    assert report["markdown"] == format_table(report["table"])


def test_report_samples_answer_as_several_target_speakers(runs, capsys):
    """Figure 7: a test input, the baseline's reply and each MTASK run's reply as the responder and the next target
    speakers, through `hf-neuralconv persona-report`."""
    directory, _, (_, summary) = runs
    output = directory / "report.json"
    main(["persona-report", *(str(directory / mode) for mode in MODES), "--samples", "2", "--output", str(output)])
    printed = capsys.readouterr().out
    report = json.loads(output.read_text())
    assert report["markdown"] in printed and "MTASK-M as" in printed
    baseline_rows = {(row["conversation_id"], row["message"]): row for row in replies_of(directory / "baseline")}
    targets = summary["target_speakers"]
    assert len(report["samples"]) == 2
    for sample in report["samples"]:
        assert sample["baseline"] == baseline_rows[(sample["conversation_id"], sample["message"])]["reply"]
        history = [*sample["context"], sample["message"]]
        for mode in ("mtask-s", "mtask-m"):
            speakers = list(sample[mode])
            assert speakers[0] == sample["responder"] and set(speakers) == set(targets)
            assert len(speakers) == min(SPEAKERS_PER_SAMPLE, len(targets))
            speaker_model = SpeakerModel.load(directory / mode, device="cpu")
            for speaker, reply in sample[mode].items():
                assert reply == speaker_model.reply([history], speaker, num_beams=3, max_new_tokens=5)[0]
    with pytest.raises(SystemExit):
        main(["persona-report", str(directory / "baseline"), "--output", str(output)])


@pytest.mark.parametrize(
    "modes, message",
    [(("mtask-s", "mtask-m"), "No baseline run"), (("baseline", "baseline"), "Two baseline runs")],
)
def test_report_errors(tmp_path, modes, message):
    directories = hand_made_runs(tmp_path, tuple(dict.fromkeys(modes)))
    with pytest.raises(ValueError, match=message):
        persona_report([directories[modes.index(mode)] for mode in modes], samples=0)


def test_report_refuses_runs_of_different_protocols(tmp_path):
    directories = hand_made_runs(tmp_path)
    (directories[1] / PROTOCOL_FILE).write_text(json.dumps({"target_speakers": ["a", "c"]}))
    with pytest.raises(ValueError, match="another data protocol"):
        persona_report(directories, samples=0)


# --- bad input ---

@pytest.mark.parametrize(
    "mode, overrides, error, message",
    [
        ("mtask_m", {}, ValueError, "`mode` must be one of baseline, mtask-s, mtask-m, got 'mtask_m'"),
        ("mtask-m", {"base_model": None}, ValueError, "set `base_model` to the baseline run's output_dir"),
        ("baseline", {"base_model": "outputs/persona/baseline"}, ValueError, "trained from scratch"),
        ("baseline", {"reverse_model": "outputs/mmi-reverse"}, ValueError, "`reverse_model`, `mmi_lambda` and"),
        ("baseline", {"num_beams": 0}, ValueError, "`num_beams` must be >= 1"),
        ("baseline", {"split_seed": 3}, ValueError, "split_seed do not apply"),
        ("baseline", {"model_name_or_path": "outputs/x"}, ValueError, "remove `model_name_or_path`"),
        ("baseline", {"num_target_speakers_": 3}, ValueError, "num_target_speakers_"),
    ],
)
def test_recipe_errors(tmp_path, mode, overrides, error, message):
    path = write_recipe(tmp_path, tmp_path / "dialogues.jsonl", mode, **overrides)
    with pytest.raises(error, match=message):
        train_speaker_adaptation(*parse_speaker_adaptation_recipe(path))


def write_texts(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.parametrize(
    "base, overrides, error, message",
    [
        ("empty", {}, FileNotFoundError, "not a finished persona-train run"),
        ("mtask-m", {}, ValueError, "is a mtask-m run: `base_model` must be the baseline"),
        ("baseline", {"protocol_seed": 3}, ValueError, "another data protocol .*target_speakers"),
        ("baseline", {"speaker_texts": "empty.jsonl"}, DataFormatError, "empty"),
        ("baseline", {"speaker_texts": "unknown.jsonl"}, ValueError, "who are not target speakers.*spk0"),
        ("baseline", {"speaker_texts": "one_speaker.jsonl"}, ValueError, r"No non-conversational text for speaker"),
    ],
)
def test_mtask_run_errors(runs, tmp_path, base, overrides, error, message):
    directory, dialogue_file, (_, summary) = runs
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty.jsonl").write_text("")
    first = summary["target_speakers"][0]
    write_texts(tmp_path / "unknown.jsonl", [{"text": "hi there", "speaker": first}, {"text": "yo", "speaker": "spk0"}])
    write_texts(tmp_path / "one_speaker.jsonl", [{"text": "hi there", "speaker": first}])
    if "speaker_texts" in overrides:
        overrides = {"speaker_texts": str(tmp_path / overrides["speaker_texts"])}
    base_dir = tmp_path / "empty" if base == "empty" else directory / base
    path = write_recipe(tmp_path, dialogue_file, "mtask-m", base_model=str(base_dir),
                        output_dir=str(tmp_path / "out"), **overrides)
    with pytest.raises(error, match=message):
        train_speaker_adaptation(*parse_speaker_adaptation_recipe(path))


def test_unknown_target_speaker(runs):
    directory, _, _ = runs
    for mode in MODES:
        with pytest.raises(ValueError, match="Unknown target speaker 'nobody'"):
            SpeakerModel.load(directory / mode, device="cpu").reply([["hi"]], "nobody", num_beams=2, max_new_tokens=3)


def test_existing_outputs_are_kept_without_overwrite(runs, capsys):
    directory, dialogue_file, _ = runs
    before = (directory / "baseline" / "results.json").read_text()
    with pytest.raises(SystemExit):
        main(["persona-train", str(write_recipe(directory, dialogue_file, "baseline", name="again"))])
    assert "already exists and is not empty" in capsys.readouterr().err
    assert (directory / "baseline" / "results.json").read_text() == before


@pytest.mark.parametrize("mode", ["mtask-m", "mtask-s"])
def test_mmi_bidi_reranks_the_replies_of_each_target_speaker(runs, tmp_path, mode):
    """With a reverse model (trained on the baseline's vocabulary), the test replies are the MMI-bidi 1-best (Section
    6.3, Eq. 4) as each input's responder: its vector (MTASK-M) or adapter (MTASK-S) scores log p(R|M, v)."""
    directory, dialogue_file, _ = runs
    reverse = {"output_dir": str(tmp_path / "reverse"), "dataset": str(dialogue_file), "direction": "reverse",
               "tokenizer_name_or_path": str(directory / "baseline"), "embedding_size": 12, "hidden_size": 16,
               "max_source_length": 12, "max_target_length": 8, "max_steps": 3, "per_device_train_batch_size": 8,
               "eval_strategy": "no", "save_strategy": "no", "report_to": "none", "use_cpu": True}
    (tmp_path / "reverse.yaml").write_text(yaml.safe_dump(reverse))
    main(["train", str(tmp_path / "reverse.yaml")])
    main(["persona-train", str(write_recipe(
        tmp_path, dialogue_file, mode, base_model=str(directory / "baseline"), reverse_model=str(tmp_path / "reverse"),
        mmi_lambda=0.5, mmi_gamma=0.3, max_eval_inputs=4, generation_batch_size=1))])

    results = results_of(tmp_path / mode)
    assert results["decoding"]["strategy"] == "mmi-bidi"
    speaker_model = SpeakerModel.load(tmp_path / mode, device="cpu")
    reverse_model, _ = load_model_dir(tmp_path / "reverse")
    for row in replies_of(tmp_path / mode):
        speaker_id = speaker_model.as_speaker(row["speaker"])
        ranked = mmi_bidi_generate(speaker_model.model, reverse_model, speaker_model.tokenizer,
                                   [[*row["context"], row["message"]]], lam=0.5, gamma=0.3, num_beams=3,
                                   max_new_tokens=5, speaker_ids=None if speaker_id is None else [speaker_id],
                                   context_turns=2, max_source_length=12)
        assert row["reply"] == ranked[0][0][0]

"""`pipeline("conversational")`: replies equal `generate()` on the training-format source, for chats, batches,
N-best lists and personas; bad input fails clearly; a saved model answers in a process without this package."""

import json
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import CHAT, CONTEXT_TURNS, MAX_SOURCE_LENGTH, SENTENCES, SPEAKERS, make_model_dir, tiny_lm
from transformers import AutoModelForSeq2SeqLM, LogitsProcessorList, pipeline

import hf_neuralconv  # noqa: F401  (registers the "conversational" task)
from hf_neuralconv.core.chat_format import EXPORTED_TASK
from hf_neuralconv.core.run_dir import export_pipeline_code as export_pipeline_code
from hf_neuralconv.data.tokenization import source_text
from hf_neuralconv.pipelines.conversational import ConversationalPipeline
from hf_neuralconv.pipelines.responder import Responder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def persona_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("persona"), num_speakers=2, seed=1)


@pytest.fixture(scope="module")
def chat(model_dir):
    return pipeline("conversational", model=str(model_dir))


@pytest.fixture(scope="module")
def persona_chat(persona_dir):
    return pipeline("conversational", model=str(persona_dir))


def reference(pipe, turns, context_turns=CONTEXT_TURNS, **generate_kwargs):
    """Replies and outputs of `model.generate` on the source built by hand: the message after its last
    `context_turns` turns in the training format, cut to its last MAX_SOURCE_LENGTH tokens."""
    context = turns[:-1][len(turns) - 1 - context_turns:] if context_turns else []
    ids = pipe.tokenizer(source_text(context, turns[-1]), add_special_tokens=False)["input_ids"][-MAX_SOURCE_LENGTH:]
    input_ids = torch.tensor([ids])
    with torch.no_grad():
        output = pipe.model.generate(
            input_ids=input_ids, attention_mask=torch.ones_like(input_ids), return_dict_in_generate=True,
            output_scores=True, **generate_kwargs,
        )
    return pipe.tokenizer.batch_decode(output.sequences, skip_special_tokens=True), output, input_ids


def replies(outputs):
    return [output["generated_text"][-1]["content"] for output in outputs]


def test_registered_task_reads_the_model_settings(chat):
    assert isinstance(chat, ConversationalPipeline)
    assert (chat.max_source_length, chat.context_turns, chat.speakers) == (MAX_SOURCE_LENGTH, CONTEXT_TURNS, {})


def test_reply_is_generate_on_the_training_format_and_appended_to_the_chat(chat):
    outputs = chat(CHAT)
    expected, output, input_ids = reference(chat, [message["content"] for message in CHAT])
    assert len(outputs) == 1
    assert outputs[0]["generated_text"] == [*CHAT, {"role": "assistant", "content": expected[0]}]
    assert expected[0]  # a non-empty reply, so the comparison means something

    # The score is the sum of the reply's token log-probabilities under the decoding distribution: the model's
    # logits with the suppressed tokens removed, up to and including </s>.
    sequence = output.sequences[0]
    with torch.no_grad():
        logits = chat.model(input_ids=input_ids, decoder_input_ids=sequence[None, :-1]).logits[0]
    logits[:, chat.model.generation_config.suppress_tokens] = float("-inf")
    log_probs = logits.log_softmax(-1).gather(-1, sequence[1:, None]).squeeze(-1)
    eos = (sequence[1:] == chat.tokenizer.eos_token_id).nonzero()
    length = int(eos[0]) + 1 if len(eos) else len(log_probs)
    assert outputs[0]["score"] == pytest.approx(float(log_probs[:length].sum()), abs=1e-4)


def test_string_is_a_one_message_chat(chat):
    outputs = chat("where are you from ?")
    assert outputs[0]["generated_text"][0] == {"role": "user", "content": "where are you from ?"}
    assert replies(outputs) == replies(chat([{"role": "user", "content": "where are you from ?"}]))


def test_context_turns_and_long_histories_are_cut_to_the_configured_context(chat):
    turns = [message["content"] for message in CHAT]
    assert replies(chat(CHAT, context_turns=0)) == reference(chat, turns, context_turns=0)[0]
    assert replies(chat(CHAT, context_turns=4)) == reference(chat, turns, context_turns=4)[0]
    # 1,000 turns: only the message and its CONTEXT_TURNS predecessors are read.
    long_chat = [{"role": ("user", "assistant")[i % 2], "content": SENTENCES[i % len(SENTENCES)]} for i in range(999)]
    long_chat.append({"role": "user", "content": "nice to meet you !"})
    assert replies(chat(long_chat)) == reference(chat, [m["content"] for m in long_chat])[0]
    assert replies(chat(long_chat)) == replies(chat(long_chat[-CONTEXT_TURNS - 1:]))


def test_consecutive_messages_of_one_role_are_one_turn(chat):
    split = [*CHAT[:-1], {"role": "user", "content": "where are"}, {"role": "user", "content": "you from ?"}]
    assert replies(chat(split)) == replies(chat(CHAT))


def test_batch_equals_one_by_one(chat):
    chats = [CHAT, "hi , how are you ?", CHAT[:3], [{"role": "user", "content": "good night ."}], "do you like tea ?"]
    one_by_one = [chat(c) for c in chats]
    for batch_size in (2, 5):
        batched = chat(chats, batch_size=batch_size)
        assert [replies(outputs) for outputs in batched] == [replies(outputs) for outputs in one_by_one]
        for got, want in zip(batched, one_by_one, strict=True):
            assert got[0]["score"] == pytest.approx(want[0]["score"], abs=1e-4)
            assert got[0]["generated_text"] == want[0]["generated_text"]


def test_beam_search_n_best_with_scores(chat):
    outputs = chat(CHAT, strategy="beam", num_beams=4, num_return_sequences=3)
    expected, output, _ = reference(chat, [m["content"] for m in CHAT], num_beams=4, num_return_sequences=3)
    assert replies(outputs) == expected
    assert [o["score"] for o in outputs] == pytest.approx(output.sequences_scores.tolist())
    assert [o["score"] for o in outputs] == sorted((o["score"] for o in outputs), reverse=True)
    # Batched beams give the same lists.
    batched = chat([CHAT, "hi , how are you ?"], strategy="beam", num_beams=4, num_return_sequences=3, batch_size=2)
    assert replies(batched[0]) == expected


def test_sampling_n_best_is_sorted_by_score(chat):
    torch.manual_seed(0)
    outputs = chat("hi , how are you ?", strategy="sample", num_return_sequences=4, top_k=0)
    torch.manual_seed(0)
    expected, _, _ = reference(chat, ["hi , how are you ?"], do_sample=True, num_return_sequences=4, top_k=0)
    assert sorted(replies(outputs)) == sorted(expected)
    scores = [o["score"] for o in outputs]
    assert scores == sorted(scores, reverse=True)


def test_max_new_tokens_and_greedy_strategy(chat):
    outputs = chat(CHAT, strategy="greedy", max_new_tokens=3)
    assert replies(outputs) == reference(chat, [m["content"] for m in CHAT], max_new_tokens=3)[0]
    assert len(replies(outputs)[0].split()) <= 3


def test_the_models_decoding_defaults_apply_unless_a_strategy_is_named(model_dir, tmp_path):
    shutil.copytree(model_dir, tmp_path / "model")
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "model")
    model.generation_config.update(do_sample=True, top_k=0, top_p=0.5, no_repeat_ngram_size=2, max_new_tokens=6)
    model.generation_config.save_pretrained(tmp_path / "model")
    sampling = pipeline("conversational", model=str(tmp_path / "model"))
    plain = pipeline("conversational", model=str(model_dir))
    for strategy in ("greedy", "beam"):  # as named: the saved sampling and n-gram block are not used
        assert replies(sampling(CHAT, strategy=strategy)) == replies(plain(CHAT, strategy=strategy, max_new_tokens=6))
    inputs = sampling.preprocess(CHAT)
    torch.manual_seed(4)
    saved = sampling.model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    torch.manual_seed(4)
    assert replies(sampling(CHAT)) == sampling.tokenizer.batch_decode(saved, skip_special_tokens=True)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"strategy": "nucleus"}, "Unknown decoding strategy"),
        ({"strategy": "greedy", "num_beams": 3}, "contradicts"),
        ({"strategy": "beam", "num_beams": 1}, "contradicts"),
        ({"strategy": "sample", "do_sample": False}, "contradicts"),
    ],
)
def test_contradictory_decoding_options_are_refused(chat, options, message):
    with pytest.raises(ValueError, match=message):
        chat("hi", **options)


def test_persona_answers_as_the_named_speaker(persona_chat):
    turns = [m["content"] for m in CHAT]
    for name, speaker_id in SPEAKERS.items():
        expected = reference(persona_chat, turns, speaker_ids=torch.tensor([speaker_id]))[0]
        assert replies(persona_chat(CHAT, speaker=name)) == expected
        assert replies(persona_chat(CHAT, speaker=speaker_id)) == expected
    # The speaker vector changes the reply (otherwise this test would prove nothing).
    assert replies(persona_chat(CHAT, speaker="alice")) != replies(persona_chat(CHAT, speaker="bob"))
    beams = persona_chat(CHAT, speaker="bob", strategy="beam", num_beams=3, num_return_sequences=2)
    assert replies(beams) == reference(
        persona_chat, turns, speaker_ids=torch.tensor([1]), num_beams=3, num_return_sequences=2
    )[0]
    batched = persona_chat([CHAT, CHAT[:1]], speaker="bob", batch_size=2)
    assert [replies(o) for o in batched] == [replies(persona_chat(c, speaker="bob")) for c in (CHAT, CHAT[:1])]


@pytest.mark.parametrize(
    ("speaker", "message"),
    [(None, "pass `speaker=`"), ("carol", "Unknown speaker 'carol'.*'alice'"), (2, r"outside \[0, 2\)")],
)
def test_persona_errors(persona_chat, speaker, message):
    with pytest.raises(ValueError, match=message):
        persona_chat("hi", speaker=speaker)


def test_speaker_for_a_model_without_speakers(chat):
    with pytest.raises(ValueError, match="no speakers"):
        chat("hi", speaker="alice")


@pytest.mark.parametrize(
    ("chat_input", "error", "message"),
    [
        ("", ValueError, "empty"),
        (" \x00\x07\u200b\t ", ValueError, "empty"),
        ([], ValueError, "empty"),
        (b"hi", TypeError, "decode bytes"),
        ([{"role": "user", "content": b"hi \xff"}], TypeError, "decode bytes"),
        ([{"role": "user", "content": None}], TypeError, "must be a string"),
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], ValueError, "last message"),
        ([{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"}], ValueError, "system"),
        ([{"role": "user", "content": "hi"}, {"role": "user"}], ValueError, "role"),
    ],
)
def test_bad_input_raises_a_clear_error(chat, chat_input, error, message):
    with pytest.raises(error, match=message):
        chat(chat_input)
    assert replies(chat("hi")), "the pipeline keeps answering after an error"


def test_control_characters_invalid_utf8_and_long_messages(chat):
    clean = replies(chat("how are you ?"))
    assert replies(chat("how\x00 are\x1b you\u202e ?")) == clean
    undecodable = b"how are \xff\xfe you ?".decode("utf-8", errors="surrogateescape")  # lone surrogates
    assert replies(chat(undecodable)) == clean
    long_message = ("what do you do ? " * 700)[:10_000]
    assert replies(chat(long_message)) == reference(chat, [long_message.strip()])[0]


def test_cli_responder_shares_the_pipeline(model_dir, chat):
    responder = Responder(model_dir)
    history = [m["content"] for m in CHAT]
    got = responder.reply(history, num_beams=3, num_return_sequences=2)
    want = chat(CHAT, num_beams=3, num_return_sequences=2)
    assert [(r.text, r.score) for r in got] == [(o["generated_text"][-1]["content"], o["score"]) for o in want]


def test_pipeline_save_pretrained_round_trip(chat, persona_chat, tmp_path):
    persona_chat.save_pretrained(tmp_path)
    reloaded = pipeline("conversational", model=str(tmp_path))
    assert reloaded.speakers == SPEAKERS and reloaded.max_source_length == MAX_SOURCE_LENGTH
    assert replies(reloaded(CHAT, speaker="bob")) == replies(persona_chat(CHAT, speaker="bob"))
    assert json.loads((tmp_path / "config.json").read_text())["custom_pipelines"][EXPORTED_TASK]["impl"] == (
        "pipelines.ConversationalPipeline"
    )


def test_add_custom_pipeline_needs_a_saved_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        export_pipeline_code(tmp_path)


FRESH_PROCESS = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class RefuseThePackage(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] == "hf_neuralconv":
                raise ImportError("this process must not import hf_neuralconv")

    sys.meta_path.insert(0, RefuseThePackage())
    from transformers import pipeline

    model_dir, persona_dir, chat = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    results = {
        "chat": pipeline(model=model_dir, trust_remote_code=True)(chat),
        "batch": pipeline(model=model_dir, trust_remote_code=True)([chat, chat[:1]], batch_size=2),
        "persona": pipeline(model=persona_dir, trust_remote_code=True)(chat, speaker="bob"),
        "class": type(pipeline(model=model_dir, trust_remote_code=True)).__module__,
        "imported": sorted(name for name in sys.modules if name.startswith("hf_neuralconv")),
    }
    print(json.dumps(results))
    """
)


def test_trust_remote_code_route_works_without_the_package(model_dir, persona_dir, chat, persona_chat, tmp_path):
    env = {"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    completed = subprocess.run(
        [sys.executable, "-I", "-c", FRESH_PROCESS, str(model_dir), str(persona_dir), json.dumps(CHAT)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    results = json.loads(completed.stdout.strip().splitlines()[-1])
    assert results["imported"] == []
    assert results["class"].startswith("transformers_modules.")
    assert_same_outputs(results["chat"], chat(CHAT))
    for got, want in zip(results["batch"], [chat(CHAT), chat(CHAT[:1])], strict=True):
        assert_same_outputs(got, want)
    assert_same_outputs(results["persona"], persona_chat(CHAT, speaker="bob"))


def assert_same_outputs(got, want):
    assert [o["generated_text"] for o in got] == [o["generated_text"] for o in want]
    assert [o["score"] for o in got] == pytest.approx([o["score"] for o in want], abs=1e-4)


# MMI strategies (Li et al. 2016 MMI-antiLM; Luan et al. 2017 MMI-bidi): the pipeline runs the package's decoders.


@pytest.fixture(scope="module")
def reverse_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("reverse"), seed=3)


@pytest.fixture(scope="module")
def mmi_chat(model_dir, chat, reverse_dir):
    return pipeline("conversational", model=str(model_dir), anti_lm=tiny_lm(chat.tokenizer),
                    reverse_model=str(reverse_dir))


def test_mmi_antilm_is_generate_with_the_antilm_processor(mmi_chat):
    from hf_neuralconv.mmi.anti_lm import MMIAntiLMLogitsProcessor

    turns = [m["content"] for m in CHAT]
    for lam, gamma in ((1.0, 2), (0.5, 3)):
        outputs = mmi_chat(CHAT, strategy="mmi-antilm", mmi_lambda=lam, mmi_gamma=gamma, num_beams=4,
                           num_return_sequences=3)
        processor = MMIAntiLMLogitsProcessor(mmi_chat.anti_lm, mmi_chat.model.config, lam=lam, gamma=gamma)
        expected, output, _ = reference(mmi_chat, turns, num_beams=4, num_return_sequences=3,
                                        logits_processor=LogitsProcessorList([processor]))
        assert replies(outputs) == expected
        assert [o["score"] for o in outputs] == pytest.approx(output.sequences_scores.tolist())
    plain = replies(mmi_chat(CHAT, strategy="beam", num_beams=4, num_return_sequences=3))
    assert replies(mmi_chat(CHAT, strategy="mmi-antilm", mmi_lambda=1.0, mmi_gamma=2, num_beams=4,
                            num_return_sequences=3)) != plain, "the anti-LM changes the N-best here"
    # Defaults: 5 beams, lambda 0.5, gamma 3; batches give the same replies.
    processor = MMIAntiLMLogitsProcessor(mmi_chat.anti_lm, mmi_chat.model.config, lam=0.5, gamma=3)
    default = replies(mmi_chat(CHAT, strategy="mmi-antilm"))
    assert default == reference(mmi_chat, turns, num_beams=5, logits_processor=LogitsProcessorList([processor]))[0]
    chats = [CHAT, "hi , how are you ?", CHAT[:3]]
    batched = mmi_chat(chats, strategy="mmi-antilm", batch_size=3)
    assert [replies(o) for o in batched] == [replies(mmi_chat(c, strategy="mmi-antilm")) for c in chats]
    # Weights given when building the pipeline are the defaults of its calls; other strategies ignore them.
    weighted = pipeline("conversational", model=mmi_chat.model, tokenizer=mmi_chat.tokenizer,
                        anti_lm=mmi_chat.anti_lm, mmi_lambda=1.0, mmi_gamma=2)
    assert replies(weighted(CHAT, strategy="mmi-antilm", num_beams=4)) == replies(
        mmi_chat(CHAT, strategy="mmi-antilm", mmi_lambda=1.0, mmi_gamma=2, num_beams=4))
    assert replies(weighted(CHAT, strategy="greedy")) == replies(mmi_chat(CHAT, strategy="greedy"))


def test_mmi_bidi_is_mmi_bidi_generate(mmi_chat):
    from hf_neuralconv.mmi.rerank import mmi_bidi_generate

    settings = dict(num_beams=4, max_new_tokens=6)
    outputs = mmi_chat(CHAT, strategy="mmi-bidi", mmi_lambda=0.5, mmi_gamma=0.2, num_return_sequences=3, **settings)
    turns = [m["content"] for m in CHAT]
    expected = mmi_bidi_generate(mmi_chat.model, mmi_chat.reverse_model, mmi_chat.tokenizer, [turns], lam=0.5,
                                 gamma=0.2, **settings)[0]
    assert [(o["generated_text"][-1]["content"], o["score"]) for o in outputs] == expected[:3]
    assert outputs[0]["generated_text"][:-1] == CHAT
    # A batch of chats: one call of mmi_bidi_generate, the same answers as one chat at a time.
    chats = [CHAT, "hi , how are you ?", CHAT[:3]]
    batched = mmi_chat(chats, strategy="mmi-bidi", mmi_lambda=0.5, mmi_gamma=0.2, batch_size=3, **settings)
    one_by_one = [mmi_chat(c, strategy="mmi-bidi", mmi_lambda=0.5, mmi_gamma=0.2, **settings) for c in chats]
    assert [replies(o) for o in batched] == [replies(o) for o in one_by_one]
    for got, want in zip(batched, one_by_one, strict=True):
        assert got[0]["score"] == pytest.approx(want[0]["score"], abs=1e-4)


def test_mmi_bidi_reads_the_tuned_settings(model_dir, reverse_dir, tmp_path):
    from hf_neuralconv.mmi.rerank import mmi_bidi_generate
    from hf_neuralconv.mmi.tuning import MMITuningResult, save_mmi_settings

    tuned = tmp_path / "tuned"
    shutil.copytree(model_dir, tuned)
    plain = pipeline("conversational", model=str(tuned))
    assert "mmi-bidi" not in plain.available_strategies()
    save_mmi_settings(plain.model.generation_config, MMITuningResult(lam=0.3, gamma=0.5, bleu=1.0),
                      str(reverse_dir), num_beams=3, max_new_tokens=5)
    plain.model.generation_config.save_pretrained(tuned)
    reloaded = pipeline("conversational", model=str(tuned))
    assert reloaded.available_strategies() == ["greedy", "beam", "sample", "mmi-bidi"]
    outputs = reloaded(CHAT, strategy="mmi-bidi", num_return_sequences=2)
    expected = mmi_bidi_generate(reloaded.model, None, reloaded.tokenizer, [[m["content"] for m in CHAT]])[0]
    assert [(o["generated_text"][-1]["content"], o["score"]) for o in outputs] == expected[:2]


def test_mmi_strategies_need_their_model_with_the_same_vocabulary(chat, mmi_chat, model_dir, tmp_path):
    assert chat.available_strategies() == ["greedy", "beam", "sample"]
    with pytest.raises(ValueError, match="needs an anti-LM: build the pipeline with `anti_lm=`"):
        chat("hi", strategy="mmi-antilm")
    with pytest.raises(ValueError, match="needs a reverse model"):
        chat("hi", strategy="mmi-bidi")
    with pytest.raises(ValueError, match="anti-LM has a vocabulary of 7 tokens"):
        pipeline("conversational", model=str(model_dir), anti_lm=tiny_lm(chat.tokenizer, vocab_size=7))
    other = make_model_dir(tmp_path / "other", extra_sentences=["completely new words here"])
    with pytest.raises(ValueError, match="reverse model has a vocabulary of"):
        pipeline("conversational", model=str(model_dir), reverse_model=str(other))
    with pytest.raises(FileNotFoundError, match="no anti-LM directory"):
        pipeline("conversational", model=str(model_dir), anti_lm=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="contradicts"):
        mmi_chat("hi", strategy="mmi-antilm", do_sample=True)
    assert replies(chat("hi")), "the pipeline keeps answering after an error"

"""The Gradio Space (spaces/app.py): replies equal the pipeline's, sessions keep their own history under
concurrent use, bad input gets a readable error while the server keeps serving, and a real browser can chat."""

import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import gradio as gr
import pytest
import torch
from conftest import CHAT, SPACE_APP, RecordingPipeline, free_port, load_space, make_model_dir, tiny_lm
from gradio_client import Client
from gradio_client.exceptions import AppError

from hf_neuralconv.metrics.diversity import distinct_n, max_ratio
from hf_neuralconv.pipelines.conversational import ConversationalPipeline
from hf_neuralconv.serving.batcher import ChatBatcher

# Chat controls in the order of the /chat endpoint: persona, strategy, beams, temperature, top-p, max new tokens,
# context turns, N-best size.
GREEDY = ("greedy", 5, 1.0, 0.9, 8, 2, 1)
SESSION_WORDS = [f"session {i} turn {j}" for i in range(50) for j in range(3)]
space = load_space()


@pytest.fixture(scope="module")
def persona_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("space_persona"), num_speakers=2, seed=1,
                          extra_sentences=SESSION_WORDS)


@pytest.fixture(scope="module")
def pipe(persona_dir):
    return space.load_pipeline(str(persona_dir))


def launch(pipe):
    demo = space.build_demo(pipe, "test model")
    demo.queue().launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    return demo


@pytest.fixture(scope="module")
def server(pipe):
    demo = launch(pipe)
    yield demo.local_url
    demo.close()


def expected_reply(pipe, chat, speaker="alice", **options):
    options = {"strategy": "greedy", "max_new_tokens": 8, "context_turns": 2, **options}
    return pipe(chat, speaker=speaker, **options)[0]["generated_text"][-1]["content"]


BATCHERS = {}


def batcher_of(pipe):
    """One ChatBatcher per pipeline, as build_demo makes."""
    if id(pipe) not in BATCHERS:
        BATCHERS[id(pipe)] = (pipe, ChatBatcher(pipe))
    return BATCHERS[id(pipe)][1]


def say(pipe, message, history, persona="alice", controls=GREEDY):
    return space.answer(batcher_of(pipe), message, history, persona, *controls)


def test_missing_default_model_names_the_command_that_trains_it(monkeypatch, tmp_path):
    missing = tmp_path / "seq2seq-quickstart"
    monkeypatch.setattr(space, "DEFAULT_MODEL", missing)
    with pytest.raises(FileNotFoundError, match=re.escape(space.TRAIN_COMMAND)):
        space.load_pipeline(str(missing))
    monkeypatch.setenv(space.MODEL_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(SystemExit, match="no model directory"):
        space.main()


@pytest.mark.parametrize("value", ["0", "many", "-3"])
def test_a_bad_batch_size_setting_is_refused(monkeypatch, persona_dir, value):
    monkeypatch.setenv(space.MODEL_ENV, str(persona_dir))
    monkeypatch.setenv(space.MAX_BATCH_SIZE_ENV, value)
    with pytest.raises(SystemExit, match=f"HF_NEURALCONV_MAX_BATCH_SIZE must be a whole number >= 1, got '{value}'"):
        space.main()


def test_chat_replies_are_the_pipelines(pipe):
    history = []
    for message, persona in (("hi , how are you ?", "alice"), ("what do you do ?", "bob")):
        reply, candidates = say(pipe, message, history, persona)
        chat = [*history, {"role": "user", "content": message}]
        want = pipe(chat, speaker=persona, strategy="greedy", max_new_tokens=8, context_turns=2)[0]
        assert reply == want["generated_text"][-1]["content"]
        assert candidates == [[reply, pytest.approx(want["score"], abs=1e-3)]]
        history = [*chat, {"role": "assistant", "content": reply}]
    reply, candidates = say(pipe, "where are you from ?", history, "bob", ("beam", 4, 1.0, 0.9, 8, 2, 3))
    want = pipe([*history, {"role": "user", "content": "where are you from ?"}], speaker="bob", strategy="beam",
                num_beams=4, num_return_sequences=3, max_new_tokens=8, context_turns=2)
    assert [row[0] for row in candidates] == [o["generated_text"][-1]["content"] for o in want]
    assert reply == candidates[0][0]


@pytest.mark.parametrize(
    ("message", "persona", "error"),
    [
        ("", "alice", "empty"),
        (" \x00\x07\u200b ", "alice", "empty"),
        ("x" * 10_000, "alice", "10,000 characters; the limit is 1,000"),
        ("hi", "carol", "Unknown speaker 'carol'"),
    ],
)
def test_bad_input_is_a_readable_error(pipe, message, persona, error):
    with pytest.raises(gr.Error, match=error):
        say(pipe, message, [], persona)


def test_odd_but_valid_input(pipe):
    clean, _ = say(pipe, "how are you ?", [])
    assert say(pipe, "how\x00 are\x1b you ?", [])[0] == clean
    assert say(pipe, b"how are \xff you ?".decode("utf-8", errors="surrogateescape"), [])[0] == clean
    # 1,000 turns of history: only the configured context (2 turns) is read.
    history = [{"role": ("user", "assistant")[i % 2], "content": CHAT[i % 4]["content"]} for i in range(1000)]
    reply, _ = say(pipe, "where are you from ?", history)
    assert reply == expected_reply(pipe, [*history[-2:], {"role": "user", "content": "where are you from ?"}])
    # Greedy decoding has no N-best list: the table holds the one reply.
    assert len(say(pipe, "hi", [], controls=("greedy", 5, 1.0, 0.9, 8, 2, 3))[1]) == 1


def test_diversity_tab_values_and_progress(pipe):
    prompts = [sentence for sentence in SESSION_WORDS[:20]]
    progress_calls = []
    table, metrics, chart = space.compare_strategies(
        pipe, threading.Lock(), "\n".join(prompts) + "\n \n\x00\n", "greedy", "beam", 8, "bob",
        progress=lambda fraction, desc: progress_calls.append(fraction),
    )
    greedy = [expected_reply(pipe, prompt, speaker="bob") for prompt in prompts]
    beam = [expected_reply(pipe, prompt, speaker="bob", strategy="beam", context_turns=None) for prompt in prompts]
    assert table == [[prompt, a, b] for prompt, a, b in zip(prompts, greedy, beam, strict=True)]
    for row, replies in zip(metrics, (greedy, beam), strict=True):
        assert row[1:] == pytest.approx([distinct_n(replies, 1), distinct_n(replies, 2), max_ratio(replies)], abs=1e-4)
    assert list(chart["strategy"]) == ["A: greedy"] * 3 + ["B: beam"] * 3
    assert progress_calls == [(0, 4), (1, 4), (2, 4), (3, 4)]  # 20 prompts = 2 batches of at most 16, twice
    with pytest.raises(gr.Error, match="at least one prompt"):
        space.compare_strategies(pipe, threading.Lock(), " \n\x00", "greedy", "beam", 8, "bob")


def chat_session(url, session, turns=2):
    """One client = one Gradio session: `turns` messages; returns what was said and answered."""
    client = Client(url, verbose=False)
    said = []
    for turn in range(turns):
        message = f"session {session} turn {turn}"
        reply, _ = client.predict(message, "alice", *GREEDY, api_name="/chat")
        said.append((message, reply))
    return said


@pytest.mark.parametrize("batch_size", [1, 32])
def test_concurrent_sessions_get_the_pipelines_replies_in_shared_calls(pipe, batch_size):
    recording = RecordingPipeline(model=pipe.model, tokenizer=pipe.tokenizer)
    demo = space.build_demo(recording, "test model", chat_batch_size=batch_size)
    demo.queue().launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        with ThreadPoolExecutor(16) as pool:
            sessions = list(pool.map(lambda s: chat_session(demo.local_url, s), range(16)))
    finally:
        demo.close()
    assert sum(recording.calls) == 32
    if batch_size == 1:
        assert set(recording.calls) == {1}
    else:
        assert max(recording.calls) > 1  # concurrent sessions' turns shared calls
    for said in sessions:
        history = []
        for message, reply in said:
            history.append({"role": "user", "content": message})
            assert reply == expected_reply(pipe, history)
            history.append({"role": "assistant", "content": reply})


class EchoPipeline(ConversationalPipeline):
    """Replies with the words of the source it was given: what the server sent for this session, made visible."""

    def _forward(self, model_inputs, **generate_kwargs):
        input_ids = model_inputs["input_ids"]
        rows = input_ids.size(0)
        return {"sequences": input_ids[:, None, :], "scores": torch.zeros(rows, 1),
                "lengths": torch.full((rows, 1), input_ids.size(1)), "finished": torch.ones(rows, 1, dtype=torch.bool),
                "messages": model_inputs["messages"]}


def test_one_sessions_history_never_appears_in_another(pipe):
    echo = EchoPipeline(model=pipe.model, tokenizer=pipe.tokenizer, max_source_length=1000)
    demo = launch(echo)
    try:
        with ThreadPoolExecutor(12) as pool:
            sessions = list(pool.map(lambda s: chat_session(demo.local_url, s, turns=3), range(12)))
    finally:
        demo.close()
    for session, said in enumerate(sessions):
        history = []
        for message, reply in said:
            history.append({"role": "user", "content": message})
            # The source of this turn: exactly this session's last 2 turns and the message, nothing else.
            assert reply == " ".join(turn["content"] for turn in history[-3:])
            assert set(re.findall(r"session (\d+)", reply)) == {str(session)}
            history.append({"role": "assistant", "content": reply})


def test_errors_keep_the_server_serving(server, pipe):
    client = Client(server, verbose=False)
    for message, persona, error in (("", "alice", "empty"), ("x" * 10_000, "alice", "limit"),
                                    ("hi", "carol", "carol")):
        with pytest.raises(AppError, match=error):
            client.predict(message, persona, *GREEDY, api_name="/chat")
    reply, _ = client.predict("hi , how are you ?", "alice", *GREEDY, api_name="/chat")
    assert reply == expected_reply(pipe, "hi , how are you ?")


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def start_app(model_dir, port, log_path):
    """`python spaces/app.py`, the documented start command, on a loopback port; waits until it answers."""
    env = {**os.environ, space.MODEL_ENV: str(model_dir), "GRADIO_SERVER_PORT": str(port), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, str(SPACE_APP)], env=env, stdout=log_path.open("w"),
                               stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited ({process.returncode}):\n{log_path.read_text()}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return process, url
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise TimeoutError(f"the app did not answer at {url}:\n{log_path.read_text()}")


def browser_api():
    """Playwright's sync API, with Debian's chromium present; in CI a missing piece fails the test, not skips it."""
    try:
        import playwright.sync_api as sync_api
    except ImportError:
        sync_api = None
    missing = [what for what, absent in (("pip install playwright", sync_api is None),
                                         ("apt-get install chromium", not shutil.which(CHROMIUM))) if absent]
    if missing:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"the browser test needs: {'; '.join(missing)}")
    return sync_api


def test_browser_chat_with_persona_switch(persona_dir, pipe, tmp_path):
    sync_api = browser_api()
    process, url = start_app(persona_dir, free_port(), tmp_path / "app.log")
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url)
            textbox = page.locator("textarea[data-testid='textbox']")
            bot_messages = page.locator("[data-testid='bot']")

            textbox.fill("hi , how are you ?")
            textbox.press("Enter")
            sync_api.expect(bot_messages).to_have_count(1, timeout=60_000)
            first = expected_reply(pipe, "hi , how are you ?", speaker="alice")
            sync_api.expect(bot_messages.nth(0)).to_have_text(first)

            page.get_by_label("Persona").click()
            page.get_by_role("option", name="bob").click()
            textbox.fill("what do you do ?")
            textbox.press("Enter")
            sync_api.expect(bot_messages).to_have_count(2, timeout=60_000)
            history = [{"role": "user", "content": "hi , how are you ?"}, {"role": "assistant", "content": first},
                       {"role": "user", "content": "what do you do ?"}]
            sync_api.expect(bot_messages.nth(1)).to_have_text(expected_reply(pipe, history, speaker="bob"))
            user_messages = page.locator("[data-testid='user']")
            sync_api.expect(user_messages).to_have_text(["hi , how are you ?", "what do you do ?"])

            # The Red team tab answers a persona model with a readable message in the page, and the chat goes on.
            page.get_by_role("tab", name="Red team").click()
            page.get_by_label("Target sentence").fill("i like music .")
            page.get_by_role("button", name="Find triggers").click()
            sync_api.expect(page.get_by_text("attacks models without speakers").first).to_be_visible(timeout=30_000)

            screenshot = tmp_path / "space_chat.png"
            page.screenshot(path=str(screenshot), full_page=True)
            browser.close()
        assert screenshot.stat().st_size > 10_000
        assert process.poll() is None, "the app is still serving"
    finally:
        process.terminate()
        process.wait(timeout=30)


# MMI strategies in the decoding controls; the Red team tab.


def strategy_choices(demo) -> dict[str, list[str]]:
    """The choices of every strategy control of a built demo, by label."""
    return {block.label: [value for _, value in block.choices] for block in demo.blocks.values()
            if isinstance(block, (gr.Radio, gr.Dropdown)) and "trategy" in (block.label or "")}


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("space_plain"), seed=2)


@pytest.fixture(scope="module")
def plain_pipe(plain_dir):
    return space.load_pipeline(str(plain_dir))


def test_mmi_strategies_are_offered_only_when_configured(plain_dir, plain_pipe, tmp_path, monkeypatch):
    from hf_neuralconv.mmi.tuning import MMITuningResult, save_mmi_settings

    basic = ["greedy", "beam", "sample"]
    assert set(map(tuple, strategy_choices(space.build_demo(plain_pipe)).values())) == {tuple(basic)}
    anti_lm_dir = tmp_path / "anti_lm"
    tiny_lm(plain_pipe.tokenizer).save_pretrained(anti_lm_dir)
    reverse_dir = make_model_dir(tmp_path / "reverse", seed=4)
    mmi = space.load_pipeline(str(plain_dir), str(anti_lm_dir), str(reverse_dir))
    # A reverse model without tuned weights: mmi-bidi would have no lambda/gamma to use, so it stays hidden.
    assert set(map(tuple, strategy_choices(space.build_demo(mmi)).values())) == {(*basic, "mmi-antilm")}
    save_mmi_settings(mmi.model.generation_config, MMITuningResult(lam=0.4, gamma=0.1, bleu=0.0), str(reverse_dir),
                      num_beams=4, max_new_tokens=6)
    choices = strategy_choices(space.build_demo(mmi))
    assert set(choices) == {"Decoding strategy", "Strategy A", "Strategy B"}
    assert all(values == [*basic, "mmi-antilm", "mmi-bidi"] for values in choices.values())
    for strategy in ("mmi-antilm", "mmi-bidi"):
        reply, candidates = space.answer(batcher_of(mmi), "hi , how are you ?", [], None, strategy, 4, 1.0, 0.9, 6,
                                         2, 2)
        want = mmi("hi , how are you ?", strategy=strategy, num_beams=4, num_return_sequences=2, max_new_tokens=6,
                   context_turns=2)
        assert candidates == [[o["generated_text"][-1]["content"], pytest.approx(o["score"], abs=1e-3)] for o in want]
        assert reply == candidates[0][0]
    # The environment variables reach the pipeline.
    monkeypatch.setenv(space.MODEL_ENV, str(plain_dir))
    monkeypatch.setenv(space.ANTI_LM_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(SystemExit, match="no anti-LM directory"):
        space.main()


@pytest.fixture(scope="module")
def reverse_generator(tmp_path_factory):
    return space.load_reverse_generator(str(make_model_dir(tmp_path_factory.mktemp("generator"), seed=5)))


def test_red_team_replies_and_hits_are_the_pipelines(plain_pipe, reverse_generator):
    from hf_neuralconv.core.chat_format import encode_history
    from hf_neuralconv.data.tokenization import encode_target
    from hf_neuralconv.metrics.hit_criteria import HitCriterion
    from hf_neuralconv.negative_training.hits import TriggerFrame, score_pairs

    target, threshold = "i like music and books .", -3.0
    progress_calls = []
    rows, summary = space.red_team(plain_pipe, threading.Lock(), target, 3, 10, 1, 2, threshold, 3, reverse_generator,
                                   progress=lambda fraction, desc: progress_calls.append(fraction))
    assert [row[0].split(" (")[0] for row in rows] == ["gibbs-enum", "reverse generator, greedy",
                                                       "reverse generator, beam 3"]
    assert progress_calls == [(0, 5), (1, 5), (2, 5), (3, 5), (4, 5)]
    tokenizer = plain_pipe.tokenizer
    target_ids = encode_target(tokenizer, [target], 20)[0]
    criterion = HitCriterion("o-sample-avg-hit", output_threshold=threshold)
    for method, trigger, reply, avg_log_prob, hit in rows:
        assert trigger, method
        assert reply == plain_pipe(trigger, strategy="greedy")[0]["generated_text"][-1]["content"]
        # What the model reads when it replies: `<user>` and the trigger, cut to its last max_source_length tokens.
        source_ids = encode_history(tokenizer, [trigger], 0, plain_pipe.max_source_length)
        assert len(source_ids) <= plain_pipe.max_source_length
        scores = score_pairs(plain_pipe.model, TriggerFrame((), (), False), [source_ids], [target_ids])
        assert avg_log_prob == pytest.approx(float(scores.avg_log_prob[0]), abs=1e-4)
        assert hit == bool(criterion.hits(scores)[0])
    assert f"{sum(row[4] for row in rows)} of 3 triggers hit" in summary
    # Without a reverse generator: gibbs-enum only, and the message says how to add one.
    rows, summary = space.red_team(plain_pipe, threading.Lock(), target, 2, 5, 1, 1, threshold)
    assert len(rows) == 1 and space.REVERSE_GENERATOR_ENV in summary


def test_red_team_threshold_is_minus_log_test_perplexity(plain_dir, plain_pipe, tmp_path):
    threshold, source = space.output_threshold(plain_pipe)
    assert threshold == space.PAPER_OUTPUT_THRESHOLD and "paper" in source
    trained = tmp_path / "trained"
    shutil.copytree(plain_dir, trained)
    (trained / "results.json").write_text('{"test_perplexity": 59.0}')
    threshold, source = space.output_threshold(space.load_pipeline(str(trained)))
    assert threshold == pytest.approx(-math.log(59.0)) and "results.json" in source


@pytest.mark.parametrize(
    ("target", "error"),
    [("", "Give a target sentence"), (" \x00\x07 ", "Give a target sentence"),
     ("zzzqx qqqv", "knows none of the words"), ("x" * 2_000, "the limit is 1,000")],
)
def test_red_team_bad_input_is_a_readable_error(plain_pipe, target, error):
    with pytest.raises(gr.Error, match=error):
        space.red_team(plain_pipe, threading.Lock(), target, 2, 5, 1, 1, -3.0)


def test_red_team_endpoint_keeps_the_server_serving(plain_pipe, pipe):
    with pytest.raises(gr.Error, match="without speakers"):
        space.red_team(pipe, threading.Lock(), "hi", 2, 5, 1, 1, -3.0)
    demo = launch(plain_pipe)
    try:
        client = Client(demo.local_url, verbose=False)
        with pytest.raises(AppError, match="knows none of the words"):
            client.predict("zzzqx", 2, 5, 1, 1, -3.0, 5, api_name="/red_team")
        rows, summary = client.predict("good night .", 2, 5, 1, 1, -3.0, 5, api_name="/red_team")
        assert len(rows["data"]) == 1 and "triggers hit" in summary
    finally:
        demo.close()


def test_a_model_without_speakers_chats_without_a_persona_under_its_name(plain_dir, plain_pipe):
    name = space.model_display_name(str(plain_dir))
    assert name == plain_dir.name
    demo = space.build_demo(plain_pipe, name)
    headers = [block.value for block in demo.blocks.values() if isinstance(block, gr.Markdown)]
    assert f"`{plain_dir.name}`" in headers[0] and str(plain_dir.parent) not in headers[0]
    demo.queue().launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        parameters = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/chat"]["parameters"]
        assert "Persona" not in [parameter["label"] for parameter in parameters]
        reply, _ = client.predict("hi , how are you ?", *GREEDY, api_name="/chat")
        want = plain_pipe("hi , how are you ?", strategy="greedy", max_new_tokens=8, context_turns=2)
        assert reply == want[0]["generated_text"][-1]["content"]
        table, _, _ = client.predict("hi , how are you ?", "greedy", "beam", 8, api_name="/diversity")
        assert table["data"][0][:2] == ["hi , how are you ?", reply]
    finally:
        demo.close()

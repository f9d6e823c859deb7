"""The OpenAI-compatible server (`hf-neuralconv serve`) and the batcher under it: replies equal the pipeline's answer
to each client's own history while concurrent requests share pipeline calls, the official `openai` client works
against it, malformed requests get a 4xx in the API's error shape while the server keeps answering, and the reverse
generator attacks a chatbot behind it (`OpenAIChatEnvironment`) as it attacks the pipeline itself."""

import http.client
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import (
    SENTENCES,
    WORDS,
    RecordingPipeline,
    backbone_model,
    backbone_tokenizer,
    free_port,
    make_model_dir,
    planted_model,
    random_vectors,
    reverse_generator,
    tiny_lm,
)
from openai import AuthenticationError, BadRequestError, NotFoundError, OpenAI

from hf_neuralconv.cli import main
from hf_neuralconv.core.loading import load_model_dir
from hf_neuralconv.metrics.embedding_similarity import EmbeddingSimilarityReward
from hf_neuralconv.pipelines.conversational import ConversationalPipeline
from hf_neuralconv.reverse_generator.attack import attack
from hf_neuralconv.reverse_generator.config import AttackSetupArguments
from hf_neuralconv.reverse_generator.environments import (
    EnvironmentQueryError,
    GradioEnvironment,
    OpenAIChatEnvironment,
    PipelineEnvironment,
)
from hf_neuralconv.serving import BackgroundServer, ChatBatcher, ChatCompletionServer

GREEDY = {"strategy": "greedy", "max_new_tokens": 8}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("served") / "tiny-chatbot", seed=3)


@pytest.fixture(scope="module")
def pipe(model_dir):
    model, tokenizer = load_model_dir(model_dir)
    return ConversationalPipeline(model=model, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def running(pipe):
    server = ChatCompletionServer(pipe, "tiny-chatbot", max_batch_size=16, max_wait_s=0.02, max_tokens_limit=64)
    with BackgroundServer(server) as background:
        background.server = server
        yield background


@pytest.fixture(scope="module")
def client(running):
    return OpenAI(base_url=running.base_url, api_key="unused", max_retries=0)


def reply_of(pipe, chat, **options):
    return pipe(chat, **{**GREEDY, **options})[0]["generated_text"][-1]["content"]


def histories(count: int) -> list[list[dict]]:
    """`count` different chats of 1-3 turns, the last the user's."""
    chats = []
    for index in range(count):
        turns = [SENTENCES[(index + shift) % len(SENTENCES)] for shift in range(1 + 2 * (index % 2))]
        chats.append([{"role": "user" if position % 2 == 0 else "assistant", "content": text}
                      for position, text in enumerate(turns)])
    return chats


# --- the batcher ---


@pytest.mark.parametrize("backbone", ["lstm", "gpt2", "bart"])
def test_concurrent_chats_share_calls_and_get_their_own_replies(backbone, pipe):
    if backbone != "lstm":
        pipe = ConversationalPipeline(model=backbone_model(backbone), tokenizer=backbone_tokenizer(backbone))
    batcher = ChatBatcher(pipe, max_batch_size=8, max_wait_s=0.05)
    chats = histories(20)
    gate = threading.Barrier(len(chats))

    def ask(chat):
        gate.wait()
        return batcher.answer(chat, **GREEDY)[0]["generated_text"][-1]["content"]

    with ThreadPoolExecutor(len(chats)) as pool:
        replies = list(pool.map(ask, chats))
    batcher.close()
    assert replies == [reply_of(pipe, chat) for chat in chats]
    assert sum(batcher.batch_sizes) == len(chats) and max(batcher.batch_sizes) > 1
    assert max(batcher.batch_sizes) <= 8


def test_requests_with_other_options_never_share_a_batch(pipe):
    batcher = ChatBatcher(pipe, max_batch_size=32, max_wait_s=0.2)
    chats = histories(6)
    lengths = [3, 5, 3, 5, 3, 5]
    futures = [batcher.submit(chat, strategy="greedy", max_new_tokens=length) for chat, length in
               zip(chats, lengths, strict=True)]
    outputs = [future.result(30)[0]["generated_text"][-1]["content"] for future in futures]
    batcher.close()
    assert outputs == [reply_of(pipe, chat, max_new_tokens=length) for chat, length in
                       zip(chats, lengths, strict=True)]
    assert sorted(batcher.batch_sizes) == [3, 3]


class RefusingPipeline:
    """A stand-in for the pipeline that refuses any batch holding the word 'boom' (as the real one refuses, say, a
    persona it does not know), and records its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, chats, batch_size, **options):
        self.calls.append(len(chats))
        if any("boom" in chat[-1]["content"] for chat in chats):
            raise ValueError("boom is refused")
        return [[{"generated_text": [*chat, {"role": "assistant", "content": chat[-1]["content"].upper()}]}]
                for chat in chats]


def test_a_refused_chat_fails_alone():
    fake = RefusingPipeline()
    batcher = ChatBatcher(fake, max_batch_size=8, max_wait_s=0.2)
    futures = [batcher.submit([{"role": "user", "content": text}]) for text in ("a b", "boom", "c d")]
    assert futures[0].result(10)[0]["generated_text"][-1]["content"] == "A B"
    with pytest.raises(ValueError, match="boom is refused"):
        futures[1].result(10)
    assert futures[2].result(10)[0]["generated_text"][-1]["content"] == "C D"
    batcher.close()
    assert fake.calls == [3, 1, 1, 1]  # the batch, then each chat alone
    with pytest.raises(ValueError, match="last message must be the user's"):  # refused before it is queued
        batcher.submit([{"role": "assistant", "content": "x"}])


def test_a_cancelled_request_leaves_the_queue_and_the_worker_serves_on():
    fake = RefusingPipeline()
    batcher = ChatBatcher(fake, max_batch_size=8, max_wait_s=0.3)
    cancelled = batcher.submit([{"role": "user", "content": "never mind"}])
    kept = batcher.submit([{"role": "user", "content": "a b"}])
    assert cancelled.cancel()
    assert kept.result(10)[0]["generated_text"][-1]["content"] == "A B"
    with pytest.raises(TimeoutError):  # a caller that stops waiting takes its chat out of the queue
        batcher.answer([{"role": "user", "content": "too late"}], timeout=0.05)
    assert batcher.answer([{"role": "user", "content": "c d"}], timeout=10)[0]["generated_text"][-1]["content"] == "C D"
    batcher.close()
    assert fake.calls == [1, 1]  # neither the cancelled nor the timed-out chat was decoded
    with pytest.raises(ValueError, match="finite"):
        ChatBatcher(fake, max_wait_s=float("inf"))


class FailingPipeline(RefusingPipeline):
    def __call__(self, chats, batch_size, **options):
        self.calls.append(len(chats))
        raise RuntimeError("out of memory")


def test_a_pipeline_failure_reaches_every_caller_and_the_worker_survives():
    fake = FailingPipeline()
    batcher = ChatBatcher(fake, max_batch_size=8, max_wait_s=0.2)
    futures = [batcher.submit([{"role": "user", "content": text}]) for text in ("a", "b")]
    for future in futures:
        with pytest.raises(RuntimeError, match="out of memory"):
            future.result(10)
    assert fake.calls == [2, 1, 1] and batcher._worker.is_alive()
    batcher.close()


def test_closing_answers_what_was_submitted(pipe):
    batcher = ChatBatcher(pipe, max_batch_size=4, max_wait_s=5.0)  # a long window: close must not wait for it
    future = batcher.submit(histories(1)[0], **GREEDY)
    started = time.monotonic()
    batcher.close()
    assert time.monotonic() - started < 4
    assert future.result(0)[0]["generated_text"][-1]["content"] == reply_of(pipe, histories(1)[0])
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit("hi")


# --- the server, through the official openai client ---


def test_models_and_a_greedy_completion(client, pipe):
    assert [model.id for model in client.models.list().data] == ["tiny-chatbot"]
    assert client.models.retrieve("tiny-chatbot").owned_by == "hf-neuralconv"
    chat = histories(2)[1]
    completion = client.chat.completions.create(model="tiny-chatbot", messages=chat, temperature=0, max_tokens=8)
    [choice] = completion.choices
    assert choice.message.role == "assistant" and choice.message.content == reply_of(pipe, chat)
    reply_tokens = len(pipe.tokenizer(choice.message.content, add_special_tokens=False)["input_ids"])
    prompt_tokens = pipe.preprocess(chat)["input_ids"].shape[1]
    assert completion.usage.completion_tokens == reply_tokens and completion.usage.prompt_tokens == prompt_tokens
    assert completion.usage.total_tokens == reply_tokens + prompt_tokens
    assert choice.finish_reason == ("length" if reply_tokens >= 8 else "stop")
    assert completion.model == "tiny-chatbot" and completion.id.startswith("chatcmpl-")


def test_n_best_beams_sampling_and_the_packages_options(client, pipe):
    chat = histories(1)[0]
    beams = client.chat.completions.create(model="tiny-chatbot", messages=chat, n=3, max_tokens=6,
                                           extra_body={"strategy": "beam", "num_beams": 4})
    expected = pipe(chat, strategy="beam", num_beams=4, num_return_sequences=3, max_new_tokens=6)
    assert [choice.message.content for choice in beams.choices] == [
        output["generated_text"][-1]["content"] for output in expected]
    assert [choice.index for choice in beams.choices] == [0, 1, 2]
    # num_beams alone means beam search; n above the beams widens them; n without beams under the model's greedy
    # default is refused
    by_beams = client.chat.completions.create(model="tiny-chatbot", messages=chat, n=2, max_tokens=6,
                                              extra_body={"num_beams": 4})
    assert [choice.message.content for choice in by_beams.choices] == [
        output["generated_text"][-1]["content"] for output in expected[:2]]
    wide = client.chat.completions.create(model="tiny-chatbot", messages=chat, n=7, max_tokens=6,
                                          extra_body={"strategy": "beam"})
    assert [choice.message.content for choice in wide.choices] == [output["generated_text"][-1]["content"] for output in
                                                                   pipe(chat, strategy="beam", num_beams=7,
                                                                        num_return_sequences=7, max_new_tokens=6)]
    with pytest.raises(BadRequestError, match="greedy decoding gives one"):
        client.chat.completions.create(model="tiny-chatbot", messages=chat, n=2)
    samples = client.chat.completions.create(model="tiny-chatbot", messages=chat, n=4, temperature=1.5, top_p=0.9,
                                             max_tokens=6)
    assert len(samples.choices) == 4 and all(choice.message.content is not None for choice in samples.choices)
    # context_turns 0: the reply to the last message alone
    long_chat = histories(2)[1]
    answer = client.chat.completions.create(model="tiny-chatbot", messages=long_chat, temperature=0, max_tokens=8,
                                            extra_body={"context_turns": 0})
    assert answer.choices[0].message.content == reply_of(pipe, long_chat[-1:])


def test_streaming_sends_the_same_reply(client, pipe):
    chat = histories(3)[2]
    stream = client.chat.completions.create(model="tiny-chatbot", messages=chat, temperature=0, max_tokens=8,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == reply_of(pipe, chat)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] in ("stop", "length")
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(
        pipe.tokenizer(text, add_special_tokens=False)["input_ids"])


def test_stop_strings_cut_the_reply(client, pipe):
    chat = histories(1)[0]
    full = reply_of(pipe, chat)
    word = full.split()[1]
    completion = client.chat.completions.create(model="tiny-chatbot", messages=chat, temperature=0, max_tokens=8,
                                                stop=[word])
    assert completion.choices[0].message.content == full[: full.find(word)]
    assert completion.choices[0].finish_reason == "stop"


def test_fifty_concurrent_clients_get_their_own_histories_replies(running, pipe):
    """Each client chats three turns; every reply is the pipeline's answer to that client's own history."""

    def session(number: int) -> list[tuple[str, str]]:
        own = OpenAI(base_url=running.base_url, api_key="unused", max_retries=0)
        history, said = [], []
        for turn in range(3):
            message = f"{SENTENCES[(number + turn) % len(SENTENCES)]} {SENTENCES[number % 3]}"
            history.append({"role": "user", "content": message})
            reply = own.chat.completions.create(model="tiny-chatbot", messages=history, temperature=0,
                                                max_tokens=8).choices[0].message.content
            history.append({"role": "assistant", "content": reply})
            said.append(reply)
        return history

    calls = len(running.server.batcher.batch_sizes)
    with ThreadPoolExecutor(50) as pool:
        sessions = list(pool.map(session, range(50)))
    for history in sessions:
        for end in range(1, len(history), 2):
            assert history[end]["content"] == reply_of(pipe, history[:end])
    sizes = list(running.server.batcher.batch_sizes)[calls:]
    assert sum(sizes) == 150 and max(sizes) > 1


def _post(url: str, body: bytes, content_type: str | None = "application/json", method: str = "POST",
          headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body if method == "POST" else None, method=method,
                                     headers={**({"Content-Type": content_type} if content_type else {}),
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _chat(**fields) -> bytes:
    return json.dumps({"model": "tiny-chatbot", "messages": [{"role": "user", "content": "hi , how are you ?"}],
                       **fields}).encode()


MALFORMED = [  # (what, body, content type, method, path, status, words of the message)
    ("missing messages", b'{"model": "tiny-chatbot"}', "application/json", "POST", "/chat/completions", 400,
     "messages: this parameter is required"),
    ("empty messages", _chat(messages=[]), "application/json", "POST", "/chat/completions", 400, "messages"),
    ("system role", _chat(messages=[{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"}]),
     "application/json", "POST", "/chat/completions", 400, "role 'system'"),
    ("unknown role", _chat(messages=[{"role": "robot", "content": "hi"}]), "application/json", "POST",
     "/chat/completions", 400, "role 'robot'"),
    ("last turn not the user's", _chat(messages=[{"role": "user", "content": "hi"},
                                                 {"role": "assistant", "content": "hello"}]),
     "application/json", "POST", "/chat/completions", 400, "last message must be the user's"),
    ("empty content", _chat(messages=[{"role": "user", "content": "   "}]), "application/json", "POST",
     "/chat/completions", 400, "messages.0.content is empty"),
    ("content not text", _chat(messages=[{"role": "user", "content": 42}]), "application/json", "POST",
     "/chat/completions", 400, "messages.0.content"),
    ("image content", _chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
     "application/json", "POST", "/chat/completions", 400, "messages.0.content"),
    ("a 1 MB body", _chat(messages=[{"role": "user", "content": "a " * 500_000}]), "application/json", "POST",
     "/chat/completions", 413, "limit"),
    ("negative max_tokens", _chat(max_tokens=-5), "application/json", "POST", "/chat/completions", 400,
     "max_tokens"),
    ("max_tokens over the limit", _chat(max_tokens=10_000), "application/json", "POST", "/chat/completions", 400,
     "above this server's limit of 64"),
    ("n = 1000", _chat(n=1000), "application/json", "POST", "/chat/completions", 400, "n: "),
    ("n > 1 with greedy decoding", _chat(n=3, temperature=0), "application/json", "POST", "/chat/completions", 400,
     "greedy decoding gives one"),
    ("temperature out of range", _chat(temperature=7), "application/json", "POST", "/chat/completions", 400,
     "temperature"),
    ("bad JSON", b'{"model": "tiny-chatbot", "messages": [', "application/json", "POST", "/chat/completions", 400,
     "not valid JSON"),
    ("a JSON list", b"[1, 2]", "application/json", "POST", "/chat/completions", 400, "JSON object"),
    ("unknown model", _chat(model="gpt-4"), "application/json", "POST", "/chat/completions", 404,
     "'gpt-4' does not exist"),
    ("wrong content type", _chat(), "text/plain", "POST", "/chat/completions", 415, "Content-Type"),
    ("unknown field", _chat(functions=[{"name": "f"}]), "application/json", "POST", "/chat/completions", 400,
     "functions: this server does not know"),
    ("tools", _chat(tools=[{"type": "function"}]), "application/json", "POST", "/chat/completions", 400,
     "tools: this server implements no tools"),
    ("a JSON format", _chat(response_format={"type": "json_object"}), "application/json", "POST",
     "/chat/completions", 400, "response_format.type"),
    ("JSON nested too deep", b"[" * 50_000, "application/json", "POST", "/chat/completions", 400, "not valid JSON"),
    ("NaN", _chat(temperature=float("nan")), "application/json", "POST", "/chat/completions", 400, "temperature"),
    ("a seed for sampled replies", _chat(temperature=0.8, seed=3), "application/json", "POST", "/chat/completions",
     400, "seed is not supported for sampled replies"),
    ("stream_options without stream", _chat(stream_options={"include_usage": True}), "application/json", "POST",
     "/chat/completions", 400, "set stream true"),
    ("unknown strategy", _chat(strategy="telepathy"), "application/json", "POST", "/chat/completions", 400,
     "strategy"),
    ("strategy without its model", _chat(strategy="mmi-antilm"), "application/json", "POST", "/chat/completions",
     400, "needs a second model"),
    ("sampling settings under beam search", _chat(strategy="beam", temperature=0.7), "application/json", "POST",
     "/chat/completions", 400, "temperature applies to sampling"),
    ("a speaker for a model without speakers", _chat(speaker="alice"), "application/json", "POST",
     "/chat/completions", 400, "no speakers"),
    ("an unsupported penalty", _chat(presence_penalty=1.0), "application/json", "POST", "/chat/completions", 400,
     "not supported"),
    ("logprobs", _chat(logprobs=True), "application/json", "POST", "/chat/completions", 400,
     "logprobs are not supported"),
    ("GET on the completions endpoint", b"", None, "GET", "/chat/completions", 405, "not allowed"),
    ("unknown endpoint", b"{}", "application/json", "POST", "/completions", 404, "No such endpoint"),
]


@pytest.mark.parametrize("what, body, content_type, method, path, status, words", MALFORMED,
                         ids=[case[0] for case in MALFORMED])
def test_malformed_requests_get_a_4xx_in_the_apis_error_shape(running, pipe, what, body, content_type, method, path,
                                                              status, words):
    code, answer = _post(running.base_url + path, body, content_type, method)
    assert code == status
    assert set(answer) == {"error"} and set(answer["error"]) == {"message", "type", "param", "code"}
    assert words in answer["error"]["message"]
    # ... and the server still answers a well-formed request.
    code, answer = _post(running.base_url + "/chat/completions", _chat(temperature=0, max_tokens=8))
    assert code == 200 and answer["choices"][0]["message"]["content"] == reply_of(pipe, "hi , how are you ?")


def test_a_body_sent_without_a_length_is_cut_off_at_the_limit(running):
    connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=30)
    chunks = (b"x" * 65_536 for _ in range(8))  # 512 KiB, chunked: no Content-Length to refuse it by
    connection.request("POST", "/v1/chat/completions", body=chunks, encode_chunked=True,
                       headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    response = connection.getresponse()
    assert response.status == 413 and "limit is 262,144" in json.loads(response.read())["error"]["message"]
    connection.close()


def test_mmi_antilm_through_the_api_is_the_pipelines(model_dir, pipe):
    mmi = ConversationalPipeline(model=pipe.model, tokenizer=pipe.tokenizer, anti_lm=tiny_lm(pipe.tokenizer))
    chat = histories(1)[0]
    with BackgroundServer(ChatCompletionServer(mmi, "tiny-chatbot")) as background:
        client = OpenAI(base_url=background.base_url, api_key="unused", max_retries=0)
        answer = client.chat.completions.create(
            model="tiny-chatbot", messages=chat, n=2, max_tokens=6,
            extra_body={"strategy": "mmi-antilm", "num_beams": 4, "mmi_lambda": 0.4, "mmi_gamma": 2})
    expected = mmi(chat, strategy="mmi-antilm", num_beams=4, num_return_sequences=2, max_new_tokens=6, mmi_lambda=0.4,
                   mmi_gamma=2)
    assert [choice.message.content for choice in answer.choices] == [
        output["generated_text"][-1]["content"] for output in expected]


def test_what_client_libraries_send_at_neutral_values_is_accepted(running, pipe):
    """Clients send fields at their defaults (garak: top_p 1 with temperature 0; the openai client: nulls) and send
    back earlier replies, which may be empty."""
    chat = [{"role": "user", "content": "hi , how are you ?"}, {"role": "assistant", "content": "", "refusal": None,
                                                                "tool_calls": None},
            {"role": "user", "content": [{"type": "text", "text": "what do"}, {"type": "text", "text": "you do ?"}]}]
    code, answer = _post(running.base_url + "/chat/completions", _chat(
        messages=chat, temperature=0, top_p=1.0, n=None, stream=None, seed=7, presence_penalty=0,
        frequency_penalty=None, logprobs=False, response_format={"type": "text"}, tool_choice="none", tools=[],
        logit_bias={}, user="u1", max_tokens=8))
    assert code == 200, answer
    expected = reply_of(pipe, [*chat[:2], {"role": "user", "content": "what do you do ?"}])
    assert answer["choices"][0]["message"]["content"] == expected


def test_the_api_counts_generated_tokens_and_says_why_a_reply_ended(tiny_tokenizer):
    """usage and finish_reason come from the generated ids (generate() as the reference): a reply cut by
    max_tokens is "length", one that ended with </s> is "stop" and counts it. The model says "fine thanks </s>"."""
    pipe = ConversationalPipeline(model=planted_model(tiny_tokenizer), tokenizer=tiny_tokenizer)
    chat = [{"role": "user", "content": "tea coffee night"}]
    with BackgroundServer(ChatCompletionServer(pipe, "planted")) as background:
        client = OpenAI(base_url=background.base_url, api_key="unused", max_retries=0)
        answers = [client.chat.completions.create(model="planted", messages=chat, temperature=0,
                                                  max_tokens=max_tokens) for max_tokens in (1, 2, 3, 8)]
    assert [answer.choices[0].message.content for answer in answers] == ["fine", "fine thanks", "fine thanks",
                                                                         "fine thanks"]
    assert [(answer.usage.completion_tokens, answer.choices[0].finish_reason) for answer in answers] == [
        (1, "length"), (2, "length"), (3, "stop"), (3, "stop")]


def test_malformed_requests_through_the_client_raise_its_errors(client):
    with pytest.raises(NotFoundError, match="does not exist"):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(BadRequestError, match="max_tokens"):
        client.chat.completions.create(model="tiny-chatbot", messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=0)


def test_an_api_key_is_required_when_set(pipe):
    server = ChatCompletionServer(pipe, "tiny-chatbot", api_key="s3cret")
    with BackgroundServer(server) as background:
        with pytest.raises(AuthenticationError, match="API key"):
            OpenAI(base_url=background.base_url, api_key="wrong", max_retries=0).models.list()
        allowed = OpenAI(base_url=background.base_url, api_key="s3cret", max_retries=0)
        assert allowed.chat.completions.create(model="tiny-chatbot", messages=[{"role": "user", "content": "hi"}],
                                               temperature=0, max_tokens=8).choices[0].message.content == \
            reply_of(pipe, "hi")


def test_a_transformers_chatbot_is_served_too():
    pipe = ConversationalPipeline(model=backbone_model("gpt2"), tokenizer=backbone_tokenizer("gpt2"))
    server = ChatCompletionServer(pipe, "tiny-gpt2")
    chat = [{"role": "user", "content": "hi , how are you ?"}]
    with BackgroundServer(server) as background:
        client = OpenAI(base_url=background.base_url, api_key="unused", max_retries=0)
        completion = client.chat.completions.create(model="tiny-gpt2", messages=chat, temperature=0, max_tokens=8)
    assert completion.choices[0].message.content == reply_of(pipe, chat)


# --- the command ---


def refused(argv, capsys) -> str:
    """Run the CLI in this process, expect the clean error exit (status 2) and return what it wrote to stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_bad_serve_arguments_are_refused_before_loading(tmp_path, model_dir, capsys, monkeypatch):
    assert "no such model directory" in refused(["serve", str(tmp_path / "none")], capsys)
    assert "--port" in refused(["serve", str(model_dir), "--port", "0"], capsys)
    assert "--batch-wait-ms must be a finite number" in refused(["serve", str(model_dir), "--batch-wait-ms", "inf"],
                                                                capsys)
    monkeypatch.delenv("HF_NEURALCONV_UNSET_KEY", raising=False)
    assert "HF_NEURALCONV_UNSET_KEY" in refused(["serve", str(model_dir), "--api-key-env", "HF_NEURALCONV_UNSET_KEY"],
                                                capsys)


def test_serve_command_answers_with_its_key(model_dir, pipe):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "hf_neuralconv.cli", "serve", str(model_dir), "--port",
                                str(port), "--api-key-env", "HF_NEURALCONV_TEST_KEY", "--log-level", "warning"],
                               env={**os.environ, "HF_NEURALCONV_TEST_KEY": "k3y"}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except (urllib.error.URLError, ConnectionError):
                assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
                time.sleep(0.5)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k3y", max_retries=0)
        completion = client.chat.completions.create(model="tiny-chatbot", messages=histories(2)[1], temperature=0,
                                                    max_tokens=8)
        assert completion.choices[0].message.content == reply_of(pipe, histories(2)[1])
        with pytest.raises(AuthenticationError):
            OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="nope", max_retries=0).models.list()
    finally:
        process.terminate()
        process.wait(30)


# --- attacks on a chatbot behind the API (Liu et al.'s reverse generator) ---


@pytest.fixture(scope="module")
def served_by_api(tmp_path_factory):
    """A tiny chatbot behind `hf-neuralconv serve`'s server, recording every chat it answers."""
    model, tokenizer = load_model_dir(make_model_dir(tmp_path_factory.mktemp("api") / "victim", seed=6))
    chatbot = RecordingPipeline(model=model, tokenizer=tokenizer)
    with BackgroundServer(ChatCompletionServer(chatbot, "victim", api_key="k3y")) as background:
        yield chatbot, background.base_url


def test_the_attack_finds_the_same_inputs_over_an_openai_compatible_api(served_by_api, tiny_tokenizer, monkeypatch):
    chatbot, url = served_by_api
    monkeypatch.setenv("VICTIM_KEY", "k3y")
    setup = AttackSetupArguments(environment=url, environment_api_key_env="VICTIM_KEY",
                                 environment_request='{"temperature": 0, "max_tokens": 8}')
    environment = setup.make_environment()
    assert isinstance(environment, OpenAIChatEnvironment) and environment.resolved_model() == "victim"
    local = PipelineEnvironment(ConversationalPipeline(model=chatbot.model, tokenizer=chatbot.tokenizer),
                                generate_kwargs={"strategy": "greedy", "max_new_tokens": 8}, accept_empty_replies=True)
    answered = len(chatbot.chats)
    assert environment(SENTENCES) == local(SENTENCES)
    assert environment.num_queries == len(chatbot.chats) - answered == len(SENTENCES)
    assert all(len(chat) == 1 for chat in chatbot.chats)  # one-message chats: no history between queries

    reward = EmbeddingSimilarityReward(random_vectors(WORDS, seed=1), threshold=-1)
    model = reverse_generator(tiny_tokenizer, seed=4)
    targets = ["i like tea", "good day", "what is your name"]
    by_url = attack(model, tiny_tokenizer, environment, reward, targets, num_beams=4, max_input_tokens=5)
    by_pipeline = attack(model, tiny_tokenizer, local, reward, targets, num_beams=4, max_input_tokens=5)
    assert by_url == by_pipeline and any(record["trigger"] for record in by_url)


def test_openai_compatible_endpoints_fail_clearly(served_by_api, monkeypatch):
    chatbot, url = served_by_api
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    with pytest.raises(ValueError, match="NO_SUCH_KEY is not set"):
        OpenAIChatEnvironment(url, api_key_env="NO_SUCH_KEY")
    with pytest.raises(ValueError, match=r"may not set \['messages'\]"):
        OpenAIChatEnvironment(url, request_fields={"messages": []})
    with pytest.raises(ValueError, match="http"):
        OpenAIChatEnvironment("127.0.0.1:8000/v1")
    with pytest.raises(ValueError, match="JSON object"):
        AttackSetupArguments(environment=url, environment_request="[1]")
    keyless = OpenAIChatEnvironment(url, model="victim", max_retries=1, retry_delay=0)
    with pytest.raises(EnvironmentQueryError, match="after 2 attempts: 'hi': RuntimeError: HTTP 401: Incorrect"):
        keyless(["hi"])
    assert keyless.num_queries == 2
    unreachable = OpenAIChatEnvironment(f"http://127.0.0.1:{free_port()}/v1", model="victim", max_retries=1,
                                        retry_delay=0, timeout=5)
    with pytest.raises(EnvironmentQueryError, match="2 of 2 inputs got no usable reply after 2 attempts"):
        unreachable(["hi", "hello"])
    assert unreachable.num_queries == 4
    # A URL not ending in /v1 is taken for a Gradio app, unless told otherwise.
    assert isinstance(AttackSetupArguments(environment="http://127.0.0.1:7860").make_environment(), GradioEnvironment)
    assert isinstance(AttackSetupArguments(environment="http://host/api", environment_api="openai").make_environment(),
                      OpenAIChatEnvironment)

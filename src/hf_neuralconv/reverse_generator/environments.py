"""Black-box dialogue environments for the reverse dialogue generator (Liu et al. 2019, "Say What I Want",
Sections 3.1 and 4.2.1).

The attacked dialogue model D is only ever *called*: a batch of input texts goes in, one reply per input comes out,
O = D(I). No adapter hands the attacker weights, logits or gradients. Adapters:

* `CallableEnvironment`: any Python function (one text -> one reply, or a list of texts -> a list of replies).
* `PipelineEnvironment`: a local model directory or a `ConversationalPipeline` (our chatbot, used as a black box).
* `GradioEnvironment`: a running Gradio app reached over HTTP with `gradio_client`: a chatbot served by our Space
  (`spaces/app.py`, endpoint `/chat`) or anyone's (`gr.ChatInterface(fn)` serves `/<fn's name>`).
* `OpenAIChatEnvironment`: any OpenAI-compatible chat-completions endpoint (`hf-neuralconv serve`, vLLM, TGI,
  llama.cpp, a hosted API), by its base URL and an optional API key read from an environment variable.

Every environment counts its queries exactly (`num_queries`: each input text sent to D, or attempted, retries
included: the attacker's cost). A failure (an error, a timeout, an empty reply) is retried `max_retries` times with
exponential back-off, for the failed inputs only; what still fails raises `EnvironmentQueryError`, which names each
input and why. Replies are returned stripped of surrounding white space.

`build_reference_corpus` feeds real messages to an environment and keeps the (output -> input) pairs on which the
reverse generator is pre-trained (Section 5.1.2).
"""

import json
import os
import queue
import threading
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import datasets
from tqdm.auto import tqdm

from ..core.evaluation import quiet_truncation
from ..core.loading import load_model_dir
from ..pipelines.conversational import ConversationalPipeline

try:  # some hosted APIs refuse urllib's own user agent
    USER_AGENT = f"hf-neuralconv/{version('hf-neuralconv')}"
except PackageNotFoundError:  # run from a source tree that was not installed
    USER_AGENT = "hf-neuralconv"
# How many failed inputs an EnvironmentQueryError spells out (the count covers all of them).
SHOWN_FAILURES = 3


class EnvironmentQueryError(RuntimeError):
    """The black-box environment gave no usable reply to some inputs, even after the retries.

    `failures` maps each such input text to the reason of its last failure (an exception or "empty reply").
    """

    def __init__(self, message: str, failures: dict[str, str]):
        super().__init__(message)
        self.failures = failures


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _call_with_timeout(function: Callable, argument, timeout: float | None):
    """`function(argument)`, or TimeoutError after `timeout` seconds (the call is then abandoned in a daemon
    thread: Python cannot interrupt it, but the attack no longer waits for it)."""
    if timeout is None:
        return function(argument)
    outcome = {}

    def run() -> None:
        try:
            outcome["reply"] = function(argument)
        except Exception as error:  # handed to the caller, whatever the victim raised
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {timeout:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["reply"]


class DialogueEnvironment(ABC):
    """The black-box dialogue model D of Liu et al. (2019, Section 4.2.1): `environment(inputs) -> replies`.

    Subclasses implement `_query` (one attempt for a batch of inputs). This class validates the inputs, counts the
    queries, retries failures and raises `EnvironmentQueryError` for what still fails.

    Args:
        max_retries: attempts after the first one for inputs whose attempt failed.
        timeout: seconds to wait for one attempt (None: wait forever).
        retry_delay: seconds before the first retry; doubled before each further one.
        accept_empty_replies: an empty reply is a valid answer (a deterministic local model that ends its reply at
            once) rather than a failure to retry (a remote service that dropped the request).
    """

    def __init__(self, max_retries: int = 2, timeout: float | None = 60.0, retry_delay: float = 1.0,
                 accept_empty_replies: bool = False):
        if max_retries < 0:
            raise ValueError(f"`max_retries` must be >= 0, got {max_retries}.")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"`timeout` must be positive (or None for no limit), got {timeout}.")
        if retry_delay < 0:
            raise ValueError(f"`retry_delay` must be >= 0, got {retry_delay}.")
        self.max_retries = max_retries
        self.timeout = timeout
        self.retry_delay = retry_delay
        self.accept_empty_replies = accept_empty_replies
        self.num_queries = 0

    def __repr__(self) -> str:
        return type(self).__name__

    @abstractmethod
    def _query(self, inputs: list[str]) -> list[str | Exception]:
        """One attempt: a reply, or the exception that prevented it, per input (or raise for the whole batch)."""

    def __call__(self, inputs: Sequence[str]) -> list[str]:
        """The replies of D to `inputs` (non-empty strings), in order; see the class docstring for failures."""
        if isinstance(inputs, str) or not isinstance(inputs, Sequence):
            raise TypeError(f"Give a list of input texts, got {type(inputs).__name__}.")
        for index, text in enumerate(inputs):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"Input {index} must be a non-empty string, got {text!r}.")
        inputs = list(inputs)
        if not inputs:
            return []
        replies: list[str | None] = [None] * len(inputs)
        failures: dict[int, str] = {}
        pending = list(range(len(inputs)))
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.retry_delay * 2 ** (attempt - 1))
            self.num_queries += len(pending)
            try:
                results = self._query([inputs[index] for index in pending])
                if len(results) != len(pending):
                    raise RuntimeError(f"got {len(results)} replies for {len(pending)} inputs")
            except Exception as error:  # the whole attempt failed: every input in it is retried
                results = [error] * len(pending)
            for index, result in zip(pending, results, strict=True):
                if isinstance(result, Exception):
                    failures[index] = f"{type(result).__name__}: {result}"
                elif not isinstance(result, str):
                    failures[index] = f"the reply is a {type(result).__name__}, not text"
                elif not result.strip() and not self.accept_empty_replies:
                    failures[index] = "empty reply"
                else:
                    replies[index] = result.strip()
                    failures.pop(index, None)
            pending = sorted(failures)
            if not pending:
                return replies
        shown = "; ".join(f"{_shorten(inputs[index])!r}: {failures[index]}" for index in pending[:SHOWN_FAILURES])
        more = f" (and {len(pending) - SHOWN_FAILURES} more)" if len(pending) > SHOWN_FAILURES else ""
        raise EnvironmentQueryError(
            f"{self!r}: {len(pending)} of {len(inputs)} inputs got no usable reply after {self.max_retries + 1} "
            f"attempts: {shown}{more}.",
            {inputs[index]: failures[index] for index in pending},
        )

    def close(self) -> None:
        """Release connections (nothing to release for in-process environments)."""

    def __enter__(self) -> "DialogueEnvironment":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class CallableEnvironment(DialogueEnvironment):
    """Any Python function as the environment: `function(text) -> reply`, or with `batched=True`
    `function(texts) -> replies` (one call per attempt). Extra keyword arguments: see `DialogueEnvironment`."""

    def __init__(self, function: Callable, batched: bool = False, **settings):
        if not callable(function):
            raise TypeError(f"`function` must be callable, got {type(function).__name__}.")
        super().__init__(**settings)
        self.function = function
        self.batched = batched

    def __repr__(self) -> str:
        return f"{type(self).__name__}({getattr(self.function, '__name__', type(self.function).__name__)})"

    def _query(self, inputs: list[str]) -> list[str | Exception]:
        if self.batched:
            return list(_call_with_timeout(self.function, inputs, self.timeout))
        results = []
        for text in inputs:
            try:
                results.append(_call_with_timeout(self.function, text, self.timeout))
            except Exception as error:  # this input failed; the others are still asked
                results.append(error)
        return results


class PipelineEnvironment(CallableEnvironment):
    """Our chatbot as a black box: a `ConversationalPipeline` or a saved model directory answers each input as a
    one-turn chat. `generate_kwargs` (e.g. `strategy="greedy"`, `max_new_tokens=32`) default to the model's
    generation config; inputs are decoded `batch_size` at a time. Extra keyword arguments: see
    `DialogueEnvironment`."""

    def __init__(self, pipeline_or_model_dir: ConversationalPipeline | str | Path, batch_size: int = 32,
                 generate_kwargs: dict | None = None, **settings):
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
        if isinstance(pipeline_or_model_dir, ConversationalPipeline):
            chatbot = pipeline_or_model_dir
        else:
            model, tokenizer = load_model_dir(pipeline_or_model_dir)
            chatbot = ConversationalPipeline(model=model, tokenizer=tokenizer)
        generate_kwargs = dict(generate_kwargs or {})

        def reply(texts: list[str]) -> list[str]:
            # A black box cuts a long input silently, as the chatbot's training did: no warning per query.
            with quiet_truncation():
                outputs = chatbot(texts, batch_size=min(batch_size, len(texts)), **generate_kwargs)
            return [candidates[0]["generated_text"][-1]["content"] for candidates in outputs]

        super().__init__(reply, batched=True, **settings)
        self.name = chatbot.model.name_or_path or type(chatbot.model).__name__

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


class GradioEnvironment(DialogueEnvironment):
    """A chatbot served by a Gradio app, queried over HTTP with `gradio_client` (no access to anything but replies).

    Each input is sent as `client.submit(text, *extra_inputs, api_name=api_name)` in a fresh session, so that a
    chat app's per-session history never carries one query into the next. Up to `max_concurrency` queries are in
    flight at once (one client, and connection, per concurrent query). The reply is the endpoint's output, or
    output number `reply_index` when it has several (our Space's `/chat` returns the reply and an N-best table).

    Our Space: `GradioEnvironment(url, "/chat", extra_inputs=("greedy", 5, 1.0, 0.9, 32, 2, 1))` (strategy, beams,
    temperature, top-p, max new tokens, context turns, N-best size; a persona model's persona comes first).
    Extra keyword arguments: see `DialogueEnvironment`.
    """

    def __init__(self, src: str, api_name: str = "/chat", extra_inputs: Sequence = (), reply_index: int = 0,
                 max_concurrency: int = 4, **settings):
        super().__init__(**settings)
        if max_concurrency < 1:
            raise ValueError(f"`max_concurrency` must be >= 1, got {max_concurrency}.")
        self.src = src
        self.api_name = api_name
        self.extra_inputs = tuple(extra_inputs)
        self.reply_index = reply_index
        self.max_concurrency = max_concurrency
        self._idle_clients: queue.SimpleQueue = queue.SimpleQueue()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.src} {self.api_name})"

    def _new_client(self):
        from gradio_client import Client

        # gradio_client reports usage to Hugging Face unless told otherwise; an attack run stays on its machine.
        os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
        return Client(self.src, verbose=False, analytics_enabled=False)

    def _reply_text(self, output) -> str | Exception:
        if isinstance(output, (tuple, list)):
            if not -len(output) <= self.reply_index < len(output):
                return IndexError(f"the endpoint returned {len(output)} outputs; `reply_index` is {self.reply_index}")
            output = output[self.reply_index]
        if isinstance(output, dict) and isinstance(output.get("content"), str):  # a chat message
            output = output["content"]
        return output

    def _ask(self, text: str) -> str | Exception:
        try:
            client = self._idle_clients.get_nowait()
        except queue.Empty:
            try:
                client = self._new_client()
            except Exception as error:  # unreachable, not a Gradio app, ...: this attempt failed
                return error
        job = None
        try:
            client.reset_session()
            job = client.submit(text, *self.extra_inputs, api_name=self.api_name)
            output = job.result(timeout=self.timeout)
        except Exception as error:
            if isinstance(error, TimeoutError) and job is not None:
                job.cancel()
                error = TimeoutError(f"no answer within {self.timeout:g} s")
            client.close()  # its connection may be broken: the next query opens a new one
            return error
        self._idle_clients.put(client)
        return self._reply_text(output)

    def _query(self, inputs: list[str]) -> list[str | Exception]:
        with ThreadPoolExecutor(min(self.max_concurrency, len(inputs))) as pool:
            return list(pool.map(self._ask, inputs))

    def close(self) -> None:
        while True:
            try:
                self._idle_clients.get_nowait().close()
            except queue.Empty:
                return


class OpenAIChatEnvironment(DialogueEnvironment):
    """A chatbot behind an OpenAI-compatible `/chat/completions` endpoint, queried over HTTP: each input is sent as
    a one-message chat (no history carries one query into the next), and the reply is the first choice's content.

    Args:
        base_url: the API's base URL, e.g. `http://127.0.0.1:8000/v1` (`hf-neuralconv serve`).
        model: the model id to ask for; None: the only one `GET /models` lists.
        api_key_env: the environment variable holding the API key (sent as `Authorization: Bearer <key>`); the key
            itself never goes into a recipe or a saved set-up.
        request_fields: more fields of every request; by default `{"temperature": 0}` (greedy decoding: the same
            input gets the same reply, as the attack assumes). Our server also takes `max_tokens`, `strategy`, ...
        max_concurrency: requests in flight at once (the server batches concurrent requests).
    Extra keyword arguments: see `DialogueEnvironment`; `accept_empty_replies` defaults to True here, since a failed
    request is an HTTP error, so an empty reply is the chatbot's answer.
    """

    RESERVED_FIELDS = ("model", "messages", "stream", "n")

    def __init__(self, base_url: str, model: str | None = None, api_key_env: str | None = None,
                 request_fields: dict | None = None, max_concurrency: int = 8, **settings):
        super().__init__(**{"accept_empty_replies": True, **settings})
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"`base_url` must be an http(s) URL such as http://127.0.0.1:8000/v1, got {base_url!r}.")
        if max_concurrency < 1:
            raise ValueError(f"`max_concurrency` must be >= 1, got {max_concurrency}.")
        self.api_key = None
        if api_key_env:
            self.api_key = os.environ.get(api_key_env)
            if not self.api_key:
                raise ValueError(f"The API key variable {api_key_env} is not set (or empty): export it, or give no "
                                 "key variable for an endpoint without keys.")
        self.request_fields = {"temperature": 0} if request_fields is None else dict(request_fields)
        reserved = [name for name in self.RESERVED_FIELDS if name in self.request_fields]
        if reserved:
            raise ValueError(f"`request_fields` may not set {reserved}: the environment sends one message and reads "
                             "one reply (give the model as `model`).")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.max_concurrency = max_concurrency

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url} {self.model or ''})".replace(" )", ")")

    def _http(self, path: str, payload: dict | None = None) -> dict:
        """The JSON answer of a GET (no payload) or POST to the API; HTTP errors carry the API's own message."""
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None
        if payload is not None:
            data = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base_url + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            try:
                message = json.loads(error.read())["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = error.reason
            raise RuntimeError(f"HTTP {error.code}: {message}") from None

    def resolved_model(self) -> str:
        """The model id the requests name: the given one, or the only one the endpoint serves."""
        if self.model is None:
            served = [entry["id"] for entry in self._http("/models").get("data", [])]
            if len(served) != 1:
                raise ValueError(f"{self.base_url} serves {len(served)} models ({served[:5]}): name one as `model`.")
            self.model = served[0]
        return self.model

    def _ask(self, model: str, text: str) -> str | Exception:
        payload = {**self.request_fields, "model": model, "messages": [{"role": "user", "content": text}]}
        try:
            choice = self._http("/chat/completions", payload)["choices"][0]
            content = choice["message"]["content"]
            if content is None:  # no text at all (a content filter, a tool call): not an answer to score
                return RuntimeError(f"no reply text (finish_reason {choice.get('finish_reason')!r})")
            return content
        except Exception as error:  # this input failed; the others are still asked
            return error

    def _query(self, inputs: list[str]) -> list[str | Exception]:
        model = self.resolved_model()
        with ThreadPoolExecutor(min(self.max_concurrency, len(inputs))) as pool:
            return list(pool.map(lambda text: self._ask(model, text), inputs))


def build_reference_corpus(environment: DialogueEnvironment, messages: Sequence[str],
                           batch_size: int = 64, progress: bool = True) -> datasets.Dataset:
    """The reference corpus of Liu et al. (2019, Section 5.1.2): real messages (e.g. the training split's
    `message` column) fed to the environment, kept as (output -> input) pairs.

    Returns a `Dataset` with columns `output` (D's reply: the reverse generator's source) and `input` (the message:
    its target). Messages are stripped, empty and repeated ones are sent once; a pair whose reply is empty (with
    `accept_empty_replies=True`) is dropped, since it cannot be a target. `progress` shows a tqdm bar over the
    messages (tens of thousands of queries take minutes).
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
    unique = list(dict.fromkeys(text.strip() for text in messages if isinstance(text, str) and text.strip()))
    if not unique:
        raise ValueError("No messages to build a reference corpus from (all are empty or not text).")
    outputs = []
    with tqdm(total=len(unique), desc="Querying the chatbot", unit="message", disable=not progress) as bar:
        for start in range(0, len(unique), batch_size):
            batch = unique[start : start + batch_size]
            outputs += environment(batch)
            bar.update(len(batch))
    kept = [(output, message) for output, message in zip(outputs, unique, strict=True) if output]
    return datasets.Dataset.from_dict({"output": [pair[0] for pair in kept], "input": [pair[1] for pair in kept]})

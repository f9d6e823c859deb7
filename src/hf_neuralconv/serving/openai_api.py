"""An OpenAI-compatible chat-completions server for a trained chatbot (`hf-neuralconv serve MODEL_DIR`).

Chat clients, evaluation harnesses and red-teaming tools (the `openai` client, garak, PyRIT) speak the
`/v1/chat/completions` interface that vLLM, TGI and llama.cpp serve. This module serves any chatbot the package
loads through it, with FastAPI:

* `GET /v1/models`, `GET /v1/models/{id}`: the one served model.
* `POST /v1/chat/completions`: `model`, `messages` (user and assistant turns, text content), `max_tokens` (or
  `max_completion_tokens`), `temperature`, `top_p`, `n`, `stop`, `stream` (server-sent events; `stream_options:
  {"include_usage": true}`), and the package's own decoding as extra fields: `strategy` (greedy, beam, sample,
  mmi-antilm, mmi-bidi), `num_beams`, `top_k`, `mmi_lambda`, `mmi_gamma`, `context_turns`, `speaker`. Fields
  client libraries send at their defaults (`presence_penalty` 0, `tools` [], `response_format` text, ...) are
  accepted at those values only. Which decoding: `ChatCompletionServer.decoding_options`.
* `GET /health`.

Concurrent requests are decoded together (`serving.batcher.ChatBatcher`). A bad request gets a 4xx in the API's
error shape, `{"error": {"message", "type", "param", "code"}}`, before it joins a batch; a request body over
`max_body_bytes` is refused (413) without being kept. A streamed reply is sent once it is decoded (in a batch), a
word a chunk.
"""

import asyncio
import copy
import hmac
import json
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, field_validator
from starlette.exceptions import HTTPException

from ..core.chat_format import CHAT_ROLES, clean_text, conversation_turns, encode_history
from ..core.evaluation import quiet_truncation
from ..mmi.rerank import DEFAULT_NUM_BEAMS
from ..pipelines.conversational import DECODING_STRATEGIES, ConversationalPipeline
from .batcher import ChatBatcher

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024  # a chat of a few hundred turns; the model reads its last few dozen tokens anyway
# A body over the limit is still read (and dropped) up to this size: a client that is still sending when the
# server answers would otherwise see its connection reset instead of the 413.
DRAIN_BYTES = 16 * 1024 * 1024
MAX_MESSAGES = 256
MAX_CHOICES = 16
MAX_BEAMS = 32
MAX_STOP_STRINGS = 4
DEFAULT_MAX_TOKENS_LIMIT = 256
# A temperature below this decodes greedily: dividing the logits by it overflows, and its samples are the argmax.
GREEDY_TEMPERATURE = 1e-5
# pydantic's names of the union members it tried, which an error location lists after the field's name
UNION_MEMBER = re.compile(r"str|int|float|bool|list\[.*\]|dict\[.*\]|[A-Z]\w*|literal\[.*\]|function-.*")


class ApiError(Exception):
    """A request the server refuses: the HTTP status and the OpenAI error fields."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 error_type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.error_type = status, message, param, code, error_type

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.param, self.code, self.error_type)


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   error_type: str = "invalid_request_error") -> JSONResponse:
    """The OpenAI API's error body."""
    return JSONResponse({"error": {"message": message, "type": error_type, "param": param, "code": code}},
                        status_code=status)


STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)


def _nothing(value):
    """A field of tool calling or token biasing: accepted empty only."""
    if value:
        raise ValueError("this server implements no tools or token biases: leave it empty")
    return value


class TextPart(BaseModel):
    """A part of a message's content; only text can be read by a chatbot."""

    model_config = STRICT
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One message of the chat: a user or assistant turn (the fields of tool calling may be present, empty)."""

    model_config = STRICT
    role: str
    content: str | list[TextPart] | None
    name: str | None = None
    refusal: str | None = None
    tool_calls: list[Any] | None = None

    @field_validator("tool_calls")
    @classmethod
    def _no_tool_calls(cls, value):
        return _nothing(value)

    @field_validator("role")
    @classmethod
    def _known_role(cls, role: str) -> str:
        if role not in CHAT_ROLES:
            raise ValueError(f"role {role!r} is not one of {list(CHAT_ROLES)}: the chatbot was trained on user and "
                             "assistant turns, without a system prompt (choose a persona with `speaker`)")
        return role

    def text(self) -> str:
        """The message's text; parts are joined by a space, as `core.chat_format` joins them."""
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else " ".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = STRICT
    include_usage: bool | None = False


class TextFormat(BaseModel):
    model_config = STRICT
    type: Literal["text"]


class ChatCompletionRequest(BaseModel):
    """The body of `POST /v1/chat/completions`: the OpenAI fields this server implements, those it accepts at their
    neutral values only (a client library may send them), and the package's own decoding fields."""

    model_config = STRICT
    model: str
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int | None = Field(default=None, ge=1, le=MAX_CHOICES)
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    seed: int | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    # accepted at their neutral values only
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    logit_bias: dict[str, Any] | None = None
    response_format: TextFormat | None = None
    tools: list[Any] | None = None
    tool_choice: Literal["none"] | None = None
    parallel_tool_calls: bool | None = None
    # the package's decoding
    strategy: Literal[tuple(DECODING_STRATEGIES)] | None = None
    num_beams: int | None = Field(default=None, ge=1, le=MAX_BEAMS)
    top_k: int | None = Field(default=None, ge=0)
    mmi_lambda: float | None = None
    mmi_gamma: float | None = None
    context_turns: int | None = Field(default=None, ge=0)
    speaker: StrictStr | StrictInt | None = None

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, stop):
        stops = [stop] if isinstance(stop, str) else stop or []
        if len(stops) > MAX_STOP_STRINGS or any(not text for text in stops):
            raise ValueError(f"give at most {MAX_STOP_STRINGS} non-empty stop strings")
        return stops

    @field_validator("tools", "logit_bias")
    @classmethod
    def _no_tools(cls, value):
        return _nothing(value)

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, value):
        if value:
            raise ValueError("penalties are not supported: leave them at 0")
        return value

    @field_validator("logprobs", "top_logprobs")
    @classmethod
    def _no_logprobs(cls, value):
        if value:
            raise ValueError("logprobs are not supported: leave them out (each choice's score is not a logprob)")
        return value


def _validation_message(error: ValidationError) -> tuple[str, str | None]:
    """The first validation error, as the API reports it: a sentence and the parameter's dotted path (without
    pydantic's names of the union members it tried)."""
    first = error.errors()[0]
    location = [str(part) for part in first.get("loc", ()) if not UNION_MEMBER.fullmatch(str(part))]
    param = ".".join(location) or None
    message = first.get("msg", "invalid value").removeprefix("Value error, ")
    if first.get("type") == "extra_forbidden":
        message = "this server does not know this parameter"
    elif first.get("type") == "missing":
        message = "this parameter is required"
    return (f"{param}: {message}" if param else message), param


class ChatCompletionServer:
    """The server's request handling around one chatbot (see the module docstring).

    Args:
        pipe: the chatbot.
        model_name: the id clients name in `model` (and `/v1/models` lists).
        max_batch_size, max_wait_s: the batching (`ChatBatcher`).
        max_tokens_limit: the longest reply a request may ask for.
        api_key: when set, every request must carry `Authorization: Bearer <api_key>`.
        max_body_bytes: the largest request body read.
    """

    def __init__(self, pipe: ConversationalPipeline, model_name: str, max_batch_size: int = 32,
                 max_wait_s: float = 0.01, max_tokens_limit: int = DEFAULT_MAX_TOKENS_LIMIT,
                 api_key: str | None = None, max_body_bytes: int = MAX_BODY_BYTES):
        self.pipe = pipe
        self.model_name = model_name
        self.max_tokens_limit = max_tokens_limit
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.created = int(time.time())
        self.batcher = ChatBatcher(pipe, max_batch_size=max_batch_size, max_wait_s=max_wait_s)
        # Token counts for `usage` are taken in the event loop while the batcher's thread encodes with the
        # pipeline's tokenizer: a fast tokenizer must not be used from two threads at once ("Already borrowed").
        self.counting_tokenizer = copy.deepcopy(pipe.tokenizer)

    def close(self) -> None:
        self.batcher.close()

    def decoding_options(self, request: ChatCompletionRequest) -> dict:
        """The pipeline options of a request, or an ApiError naming the field that cannot be honoured.

        `strategy` when given; else `temperature` 0 (or below `GREEDY_TEMPERATURE`) is greedy search, another
        temperature, a `top_p` below 1 or a `top_k` above 0 sampling, `num_beams` > 1 beam search; with none of
        them the model's generation config decides.
        """
        generation = self.pipe.model.generation_config
        temperature = request.temperature
        if temperature is not None and temperature < GREEDY_TEMPERATURE:
            temperature = 0.0
        sampling_fields = [name for name, value, neutral in (("temperature", temperature, 0.0),
                                                              ("top_p", request.top_p, 1.0),
                                                              ("top_k", request.top_k, 0))
                           if value is not None and value != neutral]
        strategy = request.strategy
        if strategy is None:
            if temperature == 0:
                strategy, sampling_fields = "greedy", []  # temperature 0 is greedy, whatever top_p says
            elif sampling_fields:
                strategy = "sample"
            elif (request.num_beams or 1) > 1:
                strategy = "beam"
        if strategy is not None and strategy not in self.pipe.available_strategies():
            raise ApiError(400, f"strategy {strategy!r} needs a second model this server was not started with; it "
                           f"serves {self.pipe.available_strategies()} (`hf-neuralconv serve --anti-lm / "
                           "--reverse-model`).", "strategy")
        if strategy not in (None, "sample") and sampling_fields:
            raise ApiError(400, f"{sampling_fields[0]} applies to sampling, and strategy is {strategy!r}: drop it or "
                           "use strategy 'sample'.", sampling_fields[0])
        if strategy == "sample" and temperature == 0:
            raise ApiError(400, "temperature 0 means greedy decoding: use a positive temperature to sample.",
                           "temperature")
        samples = strategy == "sample" or (strategy is None and generation.do_sample)
        if request.seed is not None and samples:
            raise ApiError(400, "seed is not supported for sampled replies: requests are sampled together in "
                           "batches, from one random stream.", "seed")
        if request.speaker is not None and not self.pipe.num_speakers:
            raise ApiError(400, "this model has no speakers: drop `speaker`.", "speaker")
        max_tokens = request.max_completion_tokens or request.max_tokens
        if max_tokens is not None and max_tokens > self.max_tokens_limit:
            field = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
            raise ApiError(400, f"{field} {max_tokens} is above this server's limit of {self.max_tokens_limit}.",
                           field)
        gamma = request.mmi_gamma
        if strategy == "mmi-antilm" and gamma is not None:
            if gamma != int(gamma) or gamma < 0:
                raise ApiError(400, f"mmi_gamma counts the reply tokens mmi-antilm penalises: a whole number >= 0, "
                               f"got {gamma}.", "mmi_gamma")
            gamma = int(gamma)
        options = {"strategy": strategy, "max_new_tokens": max_tokens, "context_turns": request.context_turns,
                   "speaker": request.speaker, "mmi_lambda": request.mmi_lambda, "mmi_gamma": gamma}
        if strategy == "sample":
            options.update(temperature=temperature, top_p=request.top_p, top_k=request.top_k)
        options["num_beams"] = self._beams(request, strategy, samples)
        if (request.n or 1) > 1:
            options["num_return_sequences"] = request.n
        return {name: value for name, value in options.items() if value is not None}

    def _beams(self, request: ChatCompletionRequest, strategy: str | None, samples: bool) -> int | None:
        """The beams a request decodes with: enough for its `n` candidates under beam search; an ApiError when
        `num_beams` or `n` do not go with the decoding."""
        beams, n = request.num_beams, request.n or 1
        if beams is not None and (samples or strategy == "greedy" and beams > 1):
            raise ApiError(400, f"num_beams {beams} does not go with {'sampling' if samples else 'greedy decoding'}.",
                           "num_beams")
        if samples:
            return None
        default = {"beam": DECODING_STRATEGIES["beam"]["num_beams"],
                   "mmi-antilm": DECODING_STRATEGIES["mmi-antilm"]["num_beams"],
                   "mmi-bidi": self.pipe.mmi_settings.get("num_beams") or DEFAULT_NUM_BEAMS,
                   None: self.pipe.model.generation_config.num_beams or 1}.get(strategy, 1)
        greedy = strategy == "greedy" or (strategy is None and (beams or default) == 1)
        if n > 1 and greedy:
            raise ApiError(400, f"n={n} needs several candidates, and greedy decoding gives one: use strategy 'beam' "
                           "(or a temperature, to sample).", "n")
        return n if n > (beams or default) else beams

    def reply_tokens(self, text: str) -> int:
        """The tokens of a reply, as the chatbot's tokenizer encodes its text."""
        return len(self.counting_tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_tokens(self, chat: list[dict], context_turns: int | None) -> int:
        """The tokens the chatbot read of the chat (what `ConversationalPipeline.preprocess` encodes)."""
        keep = self.pipe.context_turns if context_turns is None else context_turns
        with quiet_truncation():  # the pipeline warned already when it cut the chat
            return len(encode_history(self.counting_tokenizer, conversation_turns(chat), keep,
                                      self.pipe.max_source_length, causal=self.pipe.causal))

    def choices(self, output: list[dict], options: dict, stops: list[str]) -> tuple[list[dict], int]:
        """The choices of a completion from the pipeline's N-best output, and the reply tokens generated for them
        (counted by the pipeline; mmi-bidi's reranked candidates are re-encoded, and end by the length limit)."""
        choices, tokens = [], 0
        for index, candidate in enumerate(output):
            text = candidate["generated_text"][-1]["content"]
            count = candidate.get("num_tokens")
            finish = candidate.get("finish_reason")
            if count is None:
                count = self.reply_tokens(text) + 1
                limit = options.get("max_new_tokens", self.pipe.model.generation_config.max_new_tokens)
                finish = "length" if limit is not None and count > limit else "stop"
            cut = min((text.find(stop) for stop in stops if stop in text), default=-1)
            if cut >= 0:
                text, finish = text[:cut], "stop"
            tokens += count
            choices.append({"index": index, "message": {"role": "assistant", "content": text},
                            "finish_reason": finish, "logprobs": None})
        return choices, tokens

    async def complete(self, request: ChatCompletionRequest) -> tuple[dict, list[dict], dict]:
        """Answer one validated request: (completion metadata, choices, usage)."""
        if request.model != self.model_name:
            raise ApiError(404, f"The model {request.model!r} does not exist: this server serves "
                           f"{self.model_name!r}.", "model", "model_not_found")
        if request.stream_options is not None and not request.stream:
            raise ApiError(400, "stream_options apply to a streamed answer: set stream true, or drop them.",
                           "stream_options")
        chat = [{"role": message.role, "content": message.text()} for message in request.messages]
        last = len(chat) - 1
        if not clean_text(chat[last]["content"]):  # caught here, it cannot make a batch be re-run chat by chat
            raise ApiError(400, f"messages.{last}.content is empty: the message to answer needs text.",
                           f"messages.{last}.content")
        options = self.decoding_options(request)
        try:
            future = self.batcher.submit(chat, **options)  # a malformed chat is refused here, before any batch
            output = await asyncio.wrap_future(future)
        except (ValueError, TypeError) as error:  # the pipeline refused the chat or its options
            raise ApiError(400, str(error), None) from None
        choices, completion_tokens = self.choices(output, options, request.stop or [])
        prompt_tokens = self.prompt_tokens(chat, request.context_turns)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        meta = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": self.model_name}
        return meta, choices, usage

    def check_key(self, http_request: Request) -> None:
        """An ApiError (401) unless the request carries the server's key, when it has one."""
        if self.api_key is None:
            return
        scheme, _, key = http_request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), self.api_key.encode()):
            raise ApiError(401, "Incorrect or missing API key: send `Authorization: Bearer <key>`.", None,
                           "invalid_api_key")

    async def read_request(self, http_request: Request) -> ChatCompletionRequest:
        """The request body, checked: JSON of the right type and size, with valid fields."""
        content_type = http_request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise ApiError(415, f"The body must be JSON (Content-Type: application/json), got "
                           f"{content_type or 'no content type'!r}.")
        body, received = bytearray(), 0
        async for chunk in http_request.stream():
            received += len(chunk)
            if received <= self.max_body_bytes:
                body += chunk
            elif received > DRAIN_BYTES:
                break  # stop reading: the connection closes after the answer
            # else: read on without keeping it, so that the client, still sending, gets the answer
        if received > self.max_body_bytes:
            raise ApiError(413, f"The request body has {'over ' * (received > DRAIN_BYTES)}{received:,} bytes; the "
                           f"limit is {self.max_body_bytes:,}.")
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as error:  # not UTF-8, not JSON, or nested too deep to read
            raise ApiError(400, f"The body is not valid JSON: {str(error)[:200]}.") from None
        if not isinstance(payload, dict):
            raise ApiError(400, f"The body must be a JSON object, got {type(payload).__name__}.")
        try:
            return ChatCompletionRequest.model_validate(payload)
        except ValidationError as error:
            message, param = _validation_message(error)
            raise ApiError(400, message, param) from None

    def model_card(self) -> dict:
        return {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "hf-neuralconv"}


def _stream(meta: dict, choices: list[dict], usage: dict, include_usage: bool) -> AsyncIterator[str]:
    """The completion as server-sent `chat.completion.chunk` events: the role, the reply a word at a time, the
    finish reason, the usage when asked, then `[DONE]`."""

    def event(choice_deltas: list[dict], usage_value=None) -> str:
        chunk = {**meta, "object": "chat.completion.chunk", "choices": choice_deltas}
        if include_usage:
            chunk["usage"] = usage_value
        return f"data: {json.dumps(chunk)}\n\n"

    async def events() -> AsyncIterator[str]:
        for choice in choices:
            index = choice["index"]
            yield event([{"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
            words = choice["message"]["content"].split(" ")
            for position, word in enumerate(words):
                piece = word if position == 0 else f" {word}"
                if piece:
                    yield event([{"index": index, "delta": {"content": piece}, "finish_reason": None}])
            yield event([{"index": index, "delta": {}, "finish_reason": choice["finish_reason"]}])
        if include_usage:
            yield event([], usage)
        yield "data: [DONE]\n\n"

    return events()


def create_app(server: ChatCompletionServer) -> FastAPI:
    """The FastAPI application of `server`; `server.close()` runs when the application shuts down."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        server.close()

    app = FastAPI(title="hf-neuralconv", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return error.response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code)
        detail = {404: f"No such endpoint: {request.method} {request.url.path}.",
                  405: f"{request.method} is not allowed on {request.url.path}."}.get(error.status_code, error.detail)
        return error_response(error.status_code, detail, None, code)

    @app.exception_handler(Exception)
    async def server_error(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "The server failed to answer this request; see its log.", None, None,
                              "server_error")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": server.model_name}

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict:
        server.check_key(request)
        return {"object": "list", "data": [server.model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def retrieve_model(model_id: str, request: Request) -> dict:
        server.check_key(request)
        if model_id != server.model_name:
            raise ApiError(404, f"The model {model_id!r} does not exist: this server serves {server.model_name!r}.",
                           "model", "model_not_found")
        return server.model_card()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        server.check_key(request)
        completion_request = await server.read_request(request)
        meta, choices, usage = await server.complete(completion_request)
        if completion_request.stream:
            include_usage = bool(completion_request.stream_options and completion_request.stream_options.include_usage)
            return StreamingResponse(_stream(meta, choices, usage, include_usage), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        return {**meta, "object": "chat.completion", "choices": choices, "usage": usage}

    return app


def served_model_name(model_dir: str | Path) -> str:
    """The id a served model directory goes by: its folder's name."""
    return Path(model_dir).resolve().name


class BackgroundServer:
    """`server` answering on http://host:port from a thread of this process (tests, benchmarks, notebooks).

    `with BackgroundServer(server) as running: OpenAI(base_url=running.base_url, api_key="-")`; leaving the block
    stops it, and closes `server` (its batcher) with it. `port=0` picks a free port.
    """

    def __init__(self, server: ChatCompletionServer, host: str = "127.0.0.1", port: int = 0):
        if port == 0:
            with socket.socket() as probe:
                probe.bind((host, 0))
                port = probe.getsockname()[1]
        self.host, self.port = host, port
        self._server = server
        config = uvicorn.Config(create_app(server), host=host, port=port, log_level="warning", lifespan="on")
        self._uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._uvicorn.run, name="chat-server", daemon=True)

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ending in /v1."""
        return f"http://{self.host}:{self.port}/v1"

    def __enter__(self) -> "BackgroundServer":
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._uvicorn.should_exit = True
                self._server.close()
                raise RuntimeError(f"The server did not start on {self.host}:{self.port}.")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info) -> None:
        self._uvicorn.should_exit = True
        self._thread.join()

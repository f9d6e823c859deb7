"""Micro-batching of concurrent chats: many callers, one pipeline call per batch.

A chatbot served to many users at once spends most of its time in matrix products that are cheaper per chat when
chats are decoded together (`benchmarks/pipeline_batching.py`: 8 x the chats/s at batch 32 on 2 CPU cores). The
server (`serving.openai_api`) and the Space (`spaces/app.py`) hand each request to a `ChatBatcher`; one worker
thread collects the requests that arrive within `max_wait_s` of the oldest waiting one, up to `max_batch_size` of
them with the same decoding options, and answers them in one `ConversationalPipeline` call. Each request keeps its
own history: a batch is a list of chats, and replies go back to their own callers.
"""

import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from ..core.chat_format import conversation_turns
from ..pipelines.conversational import ConversationalPipeline

RECENT_CALLS = 1024  # how many of the latest batch sizes `batch_sizes` keeps


def options_key(options: dict) -> tuple:
    """A hashable form of decoding options: requests batch together only when their keys are equal."""
    return tuple(sorted((name, tuple(value) if isinstance(value, list) else value) for name, value in options.items()))


@dataclass
class _Request:
    chat: list[dict] | str
    options: dict
    key: tuple
    arrived: float
    future: Future = field(default_factory=Future)


class ChatBatcher:
    """Answers chats submitted from any thread in shared `ConversationalPipeline` calls.

    Args:
        pipe: the chatbot.
        max_batch_size: the most chats decoded in one call.
        max_wait_s: how long the oldest waiting request waits for others to join its batch. Under load batches fill
            while the previous one decodes, so they start as soon as the pipeline is free.
        lock: held around every pipeline call, shared with other users of the same pipeline (the Space's other
            tabs), so that one call runs at a time.

    `submit(chat, **options)` returns a `concurrent.futures.Future` of the pipeline's output for that chat (its
    N-best list); `answer(chat, **options)` waits for it. A malformed chat is refused by `submit` itself. When the
    pipeline raises for a batch, each chat of it is answered again alone, so that a chat it refuses (a message
    that is empty once cleaned, say) fails alone. A cancelled future is dropped from the queue.
    """

    def __init__(self, pipe: ConversationalPipeline, max_batch_size: int = 32, max_wait_s: float = 0.01,
                 lock: "threading.Lock | None" = None):
        if max_batch_size < 1:
            raise ValueError(f"`max_batch_size` must be >= 1, got {max_batch_size}.")
        if not (math.isfinite(max_wait_s) and max_wait_s >= 0):
            raise ValueError(f"`max_wait_s` must be a finite number of seconds >= 0, got {max_wait_s}.")
        self.pipe = pipe
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.lock = lock or threading.Lock()
        self.batch_sizes: deque[int] = deque(maxlen=RECENT_CALLS)  # chats per pipeline call, the latest calls
        self._pending: list[_Request] = []
        self._changed = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="chat-batcher", daemon=True)
        self._worker.start()

    def submit(self, chat: str | Sequence[dict], **options) -> Future:
        """Queue one chat; the future holds the pipeline's output for it (or the exception that refused it)."""
        conversation_turns(chat)  # a malformed chat fails here, in the caller's thread, before it joins a batch
        request = _Request(chat if isinstance(chat, str) else list(chat), options, options_key(options),
                           time.monotonic())
        with self._changed:
            if self._closed:
                raise RuntimeError("The batcher is closed: it answers no more chats.")
            self._pending.append(request)
            self._changed.notify()
        return request.future

    def answer(self, chat: str | Sequence[dict], timeout: float | None = None, **options) -> list[dict]:
        """The pipeline's output for `chat` (its N-best list), decoded in a batch with concurrent chats; after
        `timeout` seconds a TimeoutError, and the chat leaves the queue if it is still waiting."""
        future = self.submit(chat, **options)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def close(self) -> None:
        """Stop the worker after the chats already submitted are answered."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._worker.join()

    def _next_batch(self) -> list[_Request] | None:
        """Wait for a batch: the oldest request and the later ones with its options, once the batch is full or the
        oldest has waited `max_wait_s`; cancelled requests are dropped. None when closed and nothing is left."""
        with self._changed:
            while True:
                self._pending = [request for request in self._pending if not request.future.cancelled()]
                if not self._pending:
                    if self._closed:
                        return None
                    self._changed.wait()
                    continue
                oldest = self._pending[0]
                batch = [request for request in self._pending if request.key == oldest.key][: self.max_batch_size]
                waited = time.monotonic() - oldest.arrived
                if len(batch) == self.max_batch_size or waited >= self.max_wait_s or self._closed:
                    taken = set(map(id, batch))
                    self._pending = [request for request in self._pending if id(request) not in taken]
                    # From here a caller can no longer cancel: the chat is being answered.
                    return [request for request in batch if request.future.set_running_or_notify_cancel()]
                self._changed.wait(self.max_wait_s - waited)

    def _run(self) -> None:
        try:
            while (batch := self._next_batch()) is not None:
                if batch:
                    self._answer(batch)
        except BaseException as error:  # never leave callers waiting on a dead worker
            with self._changed:
                self._closed = True
                pending, self._pending = self._pending, []
            for request in pending:
                if request.future.set_running_or_notify_cancel():
                    request.future.set_exception(RuntimeError(f"The batcher stopped: {error!r}"))
            raise

    def _answer(self, batch: list[_Request]) -> None:
        try:
            with self.lock:
                outputs = self.pipe([request.chat for request in batch], batch_size=len(batch), **batch[0].options)
        except Exception as error:  # handed to the callers
            if len(batch) == 1:
                batch[0].future.set_exception(error)
                return
            for request in batch:  # which chat was refused? each is answered (or refused) alone
                self._answer([request])
            return
        self.batch_sizes.append(len(batch))
        for request, output in zip(batch, outputs, strict=True):
            request.future.set_result(output)

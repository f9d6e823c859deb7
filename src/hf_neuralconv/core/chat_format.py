"""How a chat becomes a model's input: the one place that knows the training format of a conversation.

Vinyals & Le (2015) train on (history, reply) pairs; this package writes a history as its turns, each marked with
its actor token (`data.tokenization.source_text`), and a saved model directory says how much of it the model reads
(`data_config.json`: context turns, source length). Everything that answers a chat (the pipeline, MMI reranking,
the reports, the attacks) goes through `conversation_turns` -> `encode_history`, so all of them read a chat alike.

This module is copied next to saved models with the pipeline (`core.run_dir.export_pipeline_code`): it imports only
torch, transformers, the standard library and `..data.tokenization`.
"""

import json
import logging
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import cached_file

from ..data.tokenization import encode_source, source_text

logger = logging.getLogger(__name__)

# The task name under `custom_pipelines` in a saved config.json. It differs from TASK on purpose: transformers
# refuses `pipeline(TASK, model=dir)` without `trust_remote_code=True` when the config declares TASK itself, even
# with this package imported. `pipeline(model=dir, trust_remote_code=True)` infers the task from the config.
EXPORTED_TASK = "hf-neuralconv-conversational"
# Model-directory files read by the pipeline: the training data settings (written by `hf-neuralconv train`) and the
# persona vocabulary of speaker models, a JSON object {speaker name: speaker id}.
DATA_CONFIG_FILE = "data_config.json"
SPEAKERS_FILE = "speakers.json"
DEFAULT_MAX_SOURCE_LENGTH = 64
DEFAULT_CONTEXT_TURNS = 2
# `model.generation_config.mmi`: the tuned MMI-bidi settings (written by `hf_neuralconv.mmi.save_mmi_settings`).
MMI_CONFIG_KEY = "mmi"
CHAT_ROLES = ("user", "assistant")


def _require_text(value, what: str) -> str:
    if isinstance(value, str):
        return value
    hint = " (decode bytes first, e.g. `data.decode('utf-8', errors='replace')`)" if isinstance(value, bytes) else ""
    raise TypeError(f"{what} must be a string, got {type(value).__name__}{hint}.")


def clean_text(text: str) -> str:
    """`text` with control characters turned into spaces and surrounding white space dropped.

    Unicode category C covers control and format characters and the lone surrogates that undecodable bytes become
    (`bytes.decode("utf-8", "surrogateescape")`), so none of them reaches the tokenizer.
    """
    _require_text(text, "A message")
    return "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text).strip()


def _message_text(message: dict, index: int) -> str:
    content = message["content"]
    if isinstance(content, (list, tuple)):
        # transformers' multimodal form: [{"type": "text", "text": "..."}, ...]; only text parts can be read.
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise ValueError(f"Message {index} has a content part this text-only model cannot read: {part!r}.")
        return " ".join(part["text"] for part in content)
    return _require_text(content, f"The content of message {index}")


def conversation_turns(chat: str | Sequence[dict]) -> list[str]:
    """The turns of a chat, oldest first; the last one is the user's message to answer.

    `chat` is one message (a string) or a list of `{"role": "user" | "assistant", "content": str}` messages.
    Consecutive messages of one role are joined into one turn, as a turn of the training data is all consecutive
    messages of one sender.
    """
    if isinstance(chat, (str, bytes)):
        return [_require_text(chat, "A message")]
    if isinstance(chat, dict) or not isinstance(chat, Sequence):
        raise TypeError(f"A chat is a string or a list of role/content messages, got {type(chat).__name__}.")
    if not chat:
        raise ValueError("The conversation is empty: give at least one message to answer.")
    turns, roles = [], []
    for index, message in enumerate(chat):
        if not isinstance(message, dict):
            raise ValueError(f"Message {index} is not a {{'role': ..., 'content': ...}} dict: {message!r}.")
        missing = [key for key in ("role", "content") if key not in message]
        if missing:
            raise ValueError(
                f"Message {index} has no {' and no '.join(map(repr, missing))} key (its keys: {list(message)}); "
                "write each message as {'role': 'user' or 'assistant', 'content': text}."
            )
        role, text = message["role"], _message_text(message, index)
        if role not in CHAT_ROLES:
            raise ValueError(
                f"Message {index} has role {role!r}; this model knows only {CHAT_ROLES} (it has no system prompt: "
                "choose a persona with `speaker=` if the model has speakers)."
            )
        if roles and roles[-1] == role:
            turns[-1] = f"{turns[-1]} {text}"
        else:
            turns.append(text)
            roles.append(role)
    if roles[-1] != "user":
        raise ValueError("The last message must be the user's: the model answers the user.")
    return turns


def encode_history(tokenizer, turns: Sequence[str], context_turns: int, max_source_length: int,
                   warn_once: bool = False) -> list[int]:
    """Token ids of the model's input for answering `turns[-1]`: the message after at most `context_turns` earlier
    turns, in the training format (`source_text`), keeping the most recent `max_source_length` tokens. A longer
    input is cut with a warning: for each one, or with `warn_once` (batches of test inputs) once a process."""
    if not turns:
        raise ValueError("The conversation is empty: give at least one message to answer.")
    if context_turns < 0:
        raise ValueError(f"`context_turns` must be >= 0, got {context_turns}.")
    kept = [clean_text(turn) for turn in turns[max(0, len(turns) - 1 - context_turns):]]
    if not kept[-1]:
        raise ValueError("The message is empty (or only white space / control characters): type something to say.")
    text = source_text(kept[:-1], kept[-1])
    ids = encode_source(tokenizer, [text], max_source_length)[0]
    full_length = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    if full_length > len(ids):
        if warn_once:
            logger.warning_once("Some inputs have more than %d tokens; only the last %d of each are read by the "
                                "model.", len(ids), len(ids))
        else:
            logger.warning("The input has %d tokens; only the last %d are read by the model.", full_length, len(ids))
    return ids


def read_model_json(name_or_path: str, filename: str) -> dict | None:
    """A JSON file saved beside a model (local directory or Hub repository), or None when there is none."""
    if not name_or_path:
        return None
    path = cached_file(
        name_or_path,
        filename,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
    )
    return None if path is None else json.loads(Path(path).read_text(encoding="utf-8"))


@dataclass
class EncodedHistories:
    """Histories in the chatbot's input format: source token ids, the message each one answers, speaker ids."""

    sources: list[list[int]]
    messages: list[str]
    speaker_ids: list[int] | None = None


def reading_settings(model: PreTrainedModel, context_turns: int | None, max_source_length: int | None):
    """How a model reads its input: explicit values, else its directory's `data_config.json`, else the defaults."""
    data_config = read_model_json(model.name_or_path, DATA_CONFIG_FILE) or {}
    if context_turns is None:
        context_turns = data_config.get("max_context_turns", DEFAULT_CONTEXT_TURNS)
    if max_source_length is None:
        max_source_length = data_config.get("max_source_length", DEFAULT_MAX_SOURCE_LENGTH)
    return context_turns, max_source_length


def encode_histories(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    histories: Sequence[str | Sequence[str]],
    speaker_ids: Sequence[int] | None = None,
    context_turns: int | None = None,
    max_source_length: int | None = None,
) -> EncodedHistories:
    """Encode conversations (each a message or a list of turns, oldest first, the last one to answer)."""
    if not histories:
        raise ValueError("No histories given: pass a list of conversations to answer.")
    if speaker_ids is not None and len(speaker_ids) != len(histories):
        raise ValueError(f"Got {len(speaker_ids)} speaker ids for {len(histories)} histories.")
    context_turns, max_source_length = reading_settings(model, context_turns, max_source_length)
    turn_lists = [[history] if isinstance(history, str) else list(history) for history in histories]
    return EncodedHistories(
        sources=[encode_history(tokenizer, turns, context_turns, max_source_length, warn_once=True)
                 for turns in turn_lists],
        messages=[clean_text(turns[-1]) for turns in turn_lists],
        speaker_ids=None if speaker_ids is None else list(speaker_ids),
    )

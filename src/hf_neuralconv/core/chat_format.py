"""How a chat becomes a model's input: the one place that knows each backbone's format of a conversation.

Vinyals & Le (2015) train on (history, reply) pairs. How the history is written depends on the tokenizer and on
the backbone (`chat_style`):

* `"actor"`: a tokenizer with this package's actor tokens (`data.tokenization`, our LSTM and any model trained with
  that tokenizer) reads the turns each marked with its actor token (`source_text`); a causal model then reads
  `<bot>`, after which comes the reply.
* `"template"`: a causal model whose tokenizer has a chat template reads the chat through it, with the generation
  prompt (Llama-family and other chat-tuned models).
* `"eos-joined"`: any other causal model reads the turns each followed by the end-of-sequence token, then the reply
  (DialoGPT's convention).
* `"source"`: any other encoder-decoder (BART, T5, BlenderBot) reads the turns joined by the tokenizer's separator
  (its end-of-sequence token when it has none) as its source, with its own special tokens.

An encoder-decoder gets the history as its source and predicts the reply; a causal model reads the history and the
reply as one sequence and predicts the reply's tokens only (`core.scoring.pair_batch` and
`core.building.encode_chat_examples` mask the rest). A saved model
directory says how much of a history the model reads (`data_config.json`: context turns, source length).
Everything that answers a chat (the pipeline, MMI reranking, the reports, the attacks) goes through
`conversation_turns` -> `encode_history`, so all of them read a chat alike.

This module is copied next to saved models with the pipeline (`core.run_dir.export_pipeline_code`): it imports only
torch, transformers, the standard library and `..data.tokenization`.
"""

import json
import logging
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import cached_file

from ..data.tokenization import BOT, USER, padding_id, source_text
from .scoring import is_causal

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
CHAT_STYLES = ("actor", "template", "eos-joined", "source")


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


def chat_style(tokenizer: PreTrainedTokenizerBase, causal: bool) -> str:
    """How a model with this tokenizer reads a chat: one of `CHAT_STYLES` (see the module docstring)."""
    actor_ids = tokenizer.convert_tokens_to_ids([USER, BOT])  # a lookup: get_vocab() would copy the vocabulary
    if all(index is not None and index != tokenizer.unk_token_id for index in actor_ids):
        return "actor"
    if causal:
        return "template" if getattr(tokenizer, "chat_template", None) else "eos-joined"
    return "source"


def _chat_messages(turns: Sequence[str]) -> list[dict]:
    """The turns as chat-template messages: the last is the user's, the roles alternate going back, and the first
    is the user's too (strict templates, Llama-2's or Mistral's, refuse a chat opened by the assistant: an even
    number of turns loses its oldest)."""
    turns = turns[len(turns) % 2 == 0 :]
    return [{"role": CHAT_ROLES[index % 2], "content": turn} for index, turn in enumerate(turns)]


def _template_ids(tokenizer, turns: Sequence[str]) -> list[int]:
    return list(tokenizer.apply_chat_template(_chat_messages(turns), add_generation_prompt=True,
                                              tokenize=True)["input_ids"])


def _source_ids(tokenizer, text: str, max_length: int) -> tuple[list[int], int]:
    """An encoder-decoder's source: `text` inside the tokenizer's own special tokens (BART's `<s>` ... `</s>`, T5's
    ... `</s>`), the text cut from the left to fit `max_length`; and the length before the cut."""
    specials = tokenizer.num_special_tokens_to_add()
    room = max(0, max_length - specials)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # a Python tokenizer (BlenderBot-small, Marian)
        body = tokenizer(text, add_special_tokens=False)["input_ids"]
        kept = body[len(body) - min(room, len(body)):]
        return list(tokenizer.build_inputs_with_special_tokens(kept)), len(body) + specials
    body = backend.encode(text, add_special_tokens=False)
    length = len(body.ids) + specials
    body.truncate(room, direction="left")
    return list(backend.post_process(body).ids), length


def format_history(tokenizer, turns: Sequence[str], causal: bool, max_length: int) -> tuple[list[int], int]:
    """The input ids of `turns` (cleaned, the last one answered) in the tokenizer's chat style, at most
    `max_length` of them, and the length before that cut. A long history loses its oldest tokens; a chat template's
    loses its oldest turns first and then the start of the message, so that its header and generation prompt stay,
    and an encoder-decoder's keeps its special tokens. No checks: `encode_history` is the user-facing one."""
    style = chat_style(tokenizer, causal)
    if style == "template":
        ids = _template_ids(tokenizer, turns)
        length = len(ids)
        while len(ids) > max_length and len(turns) > 1:
            turns = turns[2:] if len(turns) % 2 else turns[1:]  # whole exchanges: the first turn stays the user's
            ids = _template_ids(tokenizer, turns)
        if len(ids) > max_length:
            before, after = message_frame(tokenizer, causal)
            room = max_length - len(before) - len(after)
            if room > 0:  # (a frame longer than max_length itself is cut like any input, below)
                message = ids[len(before) : len(ids) - len(after)]
                ids = [*before, *message[len(message) - room :], *after]
        return ids[-max_length:], length
    if style == "source":
        return _source_ids(tokenizer, (tokenizer.sep_token or tokenizer.eos_token).join(turns), max_length)
    if style == "actor":
        text = source_text(turns[:-1], turns[-1]) + (f" {BOT}" if causal else "")
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:  # "eos-joined"
        ids = [token for turn in turns
               for token in [*tokenizer(turn, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]]
    return ids[-max_length:], len(ids)


def encode_history(tokenizer, turns: Sequence[str], context_turns: int, max_source_length: int,
                   warn_once: bool = False, causal: bool = False) -> list[int]:
    """Token ids of the model's input for answering `turns[-1]`: the message after at most `context_turns` earlier
    turns, in the tokenizer's chat style for an encoder-decoder or (`causal`) a causal model (`chat_style`),
    keeping the most recent `max_source_length` tokens. For a causal model the reply follows these ids. A longer
    input is cut with a warning: for each one, or with `warn_once` (batches of test inputs) once a process."""
    if not turns:
        raise ValueError("The conversation is empty: give at least one message to answer.")
    if context_turns < 0:
        raise ValueError(f"`context_turns` must be >= 0, got {context_turns}.")
    kept = [clean_text(turn) for turn in turns[max(0, len(turns) - 1 - context_turns):]]
    if not kept[-1]:
        raise ValueError("The message is empty (or only white space / control characters): type something to say.")
    ids, full_length = format_history(tokenizer, kept, causal, max_source_length)
    if full_length > len(ids):
        if warn_once:
            logger.warning_once("Some inputs have more than %d tokens; only the last %d of each are read by the "
                                "model.", len(ids), len(ids))
        else:
            logger.warning("The input has %d tokens; only the last %d are read by the model.", full_length, len(ids))
    return ids


def encode_replies(tokenizer, texts: Sequence[str], causal: bool, max_length: int | None = None) -> list[list[int]]:
    """Token ids of replies as the model predicts them, each ending with the end-of-sequence token and cut to
    `max_length` tokens in all (None: no limit). An encoder-decoder's reply carries its tokenizer's own special
    tokens (BART's `<s>`), as `tokenizer(text_target=...)` makes its training labels; a causal model's reply
    follows the history in the same sequence, so it has no leading special token."""
    eos = tokenizer.eos_token_id
    rows = tokenizer(list(texts), add_special_tokens=not causal)["input_ids"]
    rows = [row[:-1] if row and row[-1] == eos else row for row in rows]
    if max_length is not None:
        rows = [row[: max_length - 1] for row in rows]
    return [[*row, eos] for row in rows]


def message_frame(tokenizer, causal: bool) -> tuple[list[int], list[int]]:
    """The ids a model reads before and after a one-message history's message tokens: a chat of one user message
    `m` is read as `before + ids(m) + after` (for a causal model the reply follows). Gradient trigger search edits
    the message tokens in this frame (He & Glass 2020), so that a found trigger is a message a user can type."""
    style = chat_style(tokenizer, causal)
    if style == "actor":
        return (tokenizer(USER, add_special_tokens=False)["input_ids"],
                tokenizer(BOT, add_special_tokens=False)["input_ids"] if causal else [])
    if style == "eos-joined":
        return [], [tokenizer.eos_token_id]
    if style == "template":
        # Two one-letter messages in the template: what they share at both ends is the frame. (Splitting the text
        # at the message would not do: "user: " alone tokenizes differently from "user: " before a word.)
        first, second = (format_history(tokenizer, [text], causal, 10**9)[0] for text in ("a", "b"))
        start = next(index for index, (one, two) in enumerate(zip(first, second)) if one != two)
        end = next(index for index, (one, two) in enumerate(zip(reversed(first), reversed(second))) if one != two)
        # A space token both share belongs to the message: a SentencePiece tokenizer merges it into the
        # message's first word ("▁" + "a", but "▁hello").
        special = set(tokenizer.all_special_ids)
        while start and first[start - 1] not in special and not tokenizer.decode(first[start - 1 : start]).strip():
            start -= 1
        return first[:start], first[len(first) - end:]
    framed = _source_ids(tokenizer, "", 10**9)[0]  # the special tokens alone, e.g. BART's <s> </s>
    # Where the message goes: before the last special token when there is one (T5's </s>, BART's </s>).
    split = len(framed) - 1 if framed and framed[-1] == tokenizer.eos_token_id else len(framed)
    return list(framed[:split]), list(framed[split:])


def generation_inputs(model, tokenizer, sources: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
    """Encoded histories as one `generate()` batch on the model's device: right-padded for an encoder-decoder,
    left-padded for a causal model, whose reply continues the last column."""
    causal = is_causal(model)
    pad = padding_id(tokenizer)
    width = max(len(row) for row in sources)
    input_ids = torch.full((len(sources), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(sources), width), dtype=torch.long)
    for index, row in enumerate(sources):
        columns = slice(width - len(row), width) if causal else slice(0, len(row))
        input_ids[index, columns] = torch.as_tensor(row, dtype=torch.long)
        attention_mask[index, columns] = 1
    return {"input_ids": input_ids.to(model.device), "attention_mask": attention_mask.to(model.device)}


def generated_replies(model, sequences: torch.LongTensor, input_length: int) -> torch.LongTensor:
    """The reply tokens of `generate()`'s output: a causal model's output repeats its input first."""
    return sequences[:, input_length:] if is_causal(model) else sequences


def empty_history_prompt(tokenizer) -> list[int]:
    """What a causal chatbot reads before a reply to an empty history: with the chatbot as its own anti-LM
    (MMI-antiLM), the reply's log-probability after this prompt is its p(T) (Li et al. 2016)."""
    style = chat_style(tokenizer, causal=True)
    if style == "actor":
        return tokenizer(f"{USER} {BOT}", add_special_tokens=False)["input_ids"]
    if style == "template":
        return list(tokenizer.apply_chat_template(_chat_messages([""]), add_generation_prompt=True,
                                                  tokenize=True)["input_ids"])
    return [tokenizer.eos_token_id]


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
    """Encode conversations (each a message or a list of turns, oldest first, the last one to answer) in the chat
    style of `model` and `tokenizer`."""
    if not histories:
        raise ValueError("No histories given: pass a list of conversations to answer.")
    if speaker_ids is not None and len(speaker_ids) != len(histories):
        raise ValueError(f"Got {len(speaker_ids)} speaker ids for {len(histories)} histories.")
    context_turns, max_source_length = reading_settings(model, context_turns, max_source_length)
    turn_lists = [[history] if isinstance(history, str) else list(history) for history in histories]
    causal = is_causal(model)
    return EncodedHistories(
        sources=[encode_history(tokenizer, turns, context_turns, max_source_length, warn_once=True, causal=causal)
                 for turns in turn_lists],
        messages=[clean_text(turns[-1]) for turns in turn_lists],
        speaker_ids=None if speaker_ids is None else list(speaker_ids),
    )

"""Answering a conversation with a trained model: history -> source text -> `generate()` -> replies.

Used by `hf-neuralconv chat` (interactive or over a file of prompts).
"""

import json
import logging
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, PreTrainedModel

from .data import encode_source, source_text

logger = logging.getLogger(__name__)

DEFAULT_MAX_SOURCE_LENGTH = 64
DEFAULT_CONTEXT_TURNS = 2


def load_model_dir(model_dir: str | Path) -> tuple[PreTrainedModel, "AutoTokenizer"]:
    """Load a saved model and its tokenizer, with errors that say which file is missing or broken."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: no such model directory (train one with `hf-neuralconv train`).")
    for required in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (model_dir / required).is_file():
            raise FileNotFoundError(
                f"{model_dir}: {required} is missing; this is not a complete model directory saved by "
                "`hf-neuralconv train` (or `save_pretrained` + tokenizer.save_pretrained)."
            )
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(model_dir)
    except Exception as error:  # safetensors/transformers raise several types for a damaged file
        raise OSError(
            f"{model_dir}: could not load the weights ({type(error).__name__}: {error}). The file "
            "model.safetensors may be truncated or corrupt: copy it again or retrain."
        ) from error
    return model.eval(), AutoTokenizer.from_pretrained(model_dir)


def clean_text(text: str) -> str:
    """Drop control characters and surrounding white space; raise on an empty result."""
    if not isinstance(text, str):
        raise TypeError(f"A message must be a string, got {type(text).__name__}.")
    cleaned = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text).strip()
    if not cleaned:
        raise ValueError("The message is empty (or only white space / control characters): type something to say.")
    return cleaned


@dataclass
class Reply:
    """One candidate reply and its score (sum of token log-probabilities, length-normalised by beam search)."""

    text: str
    score: float | None = None


class Responder:
    """Answers the last turn of a history with a saved seq2seq model (Vinyals & Le 2015, Section 4)."""

    def __init__(self, model_dir: str | Path):
        self.model, self.tokenizer = load_model_dir(model_dir)
        data_config_path = Path(model_dir) / "data_config.json"
        data_config = json.loads(data_config_path.read_text()) if data_config_path.is_file() else {}
        self.max_source_length = data_config.get("max_source_length", DEFAULT_MAX_SOURCE_LENGTH)
        self.context_turns = data_config.get("max_context_turns", DEFAULT_CONTEXT_TURNS)

    def encode(self, history: list[str], context_turns: int | None = None) -> torch.LongTensor:
        """Token ids of the source for answering `history[-1]`, warning when old tokens are cut."""
        if not history:
            raise ValueError("The conversation is empty: give at least one message to answer.")
        turns = [clean_text(turn) for turn in history]
        keep = self.context_turns if context_turns is None else context_turns
        text = source_text(turns[:-1][-keep:] if keep else [], turns[-1])
        full_length = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if full_length > self.max_source_length:
            logger.warning(
                "The input has %d tokens; only the last %d are read by the model.", full_length,
                self.max_source_length,
            )
        return torch.tensor(encode_source(self.tokenizer, [text], self.max_source_length))

    @torch.no_grad()
    def reply(self, history: list[str], context_turns: int | None = None, **generate_kwargs) -> list[Reply]:
        """Candidate replies to the last turn of `history` (N-best with `num_return_sequences`)."""
        input_ids = self.encode(history, context_turns)
        output = self.model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            return_dict_in_generate=True,
            output_scores=True,
            **generate_kwargs,
        )
        texts = self.tokenizer.batch_decode(output.sequences, skip_special_tokens=True)
        scores = getattr(output, "sequences_scores", None)
        return [Reply(text, None if scores is None else float(score)) for text, score in
                zip(texts, scores if scores is not None else [None] * len(texts))]

"""Answering a conversation with a trained model: `hf-neuralconv chat` (interactive or over a file of prompts).

History -> source text -> `generate()` -> replies is the work of `ConversationalPipeline` (`pipelines.py`), shared
with `pipeline("conversational")` and the Space; this module loads a model directory with clear errors and keeps
the CLI's view of a conversation: a list of turns, alternating, the last one the user's.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer, PreTrainedModel

from .pipelines import ConversationalPipeline


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
        config = AutoConfig.from_pretrained(model_dir)
    except Exception as error:  # invalid JSON, or a value the config class refuses: not a weights problem
        raise ValueError(f"{model_dir / 'config.json'}: {str(error).rstrip('.')}. Fix that file, or save the model "
                         "again.") from error
    if type(config) not in AutoModelForSeq2SeqLM._model_mapping:
        raise ValueError(f"{model_dir}: a {type(config).__name__} model ({config.model_type!r}) is not a chatbot this "
                         "command can answer with; give an encoder-decoder model directory (`hf-neuralconv train` "
                         "with the default `architecture: seq2seq`).")
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(model_dir, config=config)
    except OSError:
        raise  # it names the file already (our models' `from_pretrained`)
    except Exception as error:  # safetensors/transformers raise several types for a damaged file
        raise OSError(
            f"{model_dir}: could not load the weights ({type(error).__name__}: {error}). The file "
            "model.safetensors may be truncated or corrupt: copy it again or retrain."
        ) from error
    return model.eval(), AutoTokenizer.from_pretrained(model_dir)


@dataclass
class Reply:
    """One candidate reply and its score (beam search: its length-normalised score; else the sum of the token
    log-probabilities)."""

    text: str
    score: float


class Responder:
    """Answers the last turn of a history with a saved seq2seq model (Vinyals & Le 2015, Section 4)."""

    def __init__(self, model_dir: str | Path, anti_lm: str | Path | None = None,
                 reverse_model: str | Path | None = None):
        """`anti_lm` / `reverse_model` (directories) enable the mmi-antilm / mmi-bidi strategies."""
        model, tokenizer = load_model_dir(model_dir)
        self.pipeline = ConversationalPipeline(model=model, tokenizer=tokenizer, anti_lm=anti_lm,
                                               reverse_model=reverse_model)

    @staticmethod
    def as_chat(history: list[str]) -> list[dict]:
        """The history as role/content messages: the last turn is the user's, the turns alternate before it."""
        return [
            {"role": "user" if (len(history) - index) % 2 else "assistant", "content": turn}
            for index, turn in enumerate(history)
        ]

    def encode(self, history: list[str], context_turns: int | None = None) -> torch.LongTensor:
        """Token ids of the source for answering `history[-1]`, warning when old tokens are cut."""
        return self.pipeline.preprocess(self.as_chat(history), context_turns=context_turns)["input_ids"]

    def reply(self, history: list[str], context_turns: int | None = None, **generate_kwargs) -> list[Reply]:
        """Candidate replies to the last turn of `history`, best first (N-best with `num_return_sequences`)."""
        outputs = self.pipeline(self.as_chat(history), context_turns=context_turns, **generate_kwargs)
        return [Reply(output["generated_text"][-1]["content"], output["score"]) for output in outputs]

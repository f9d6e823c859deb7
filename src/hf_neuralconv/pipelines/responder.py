"""`hf-neuralconv chat`'s view of a conversation: a list of turns, alternating, the last one the user's, answered
through `ConversationalPipeline` (Vinyals & Le 2015, Section 4)."""
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.loading import load_model_dir
from ..core.scoring import is_causal
from .conversational import ConversationalPipeline

ANTI_LM_HOW = ("a causal LM over the chatbot's vocabulary, e.g. `hf-neuralconv train` with `architecture: causal-lm` "
               "and `tokenizer_name_or_path:` the chatbot (recipes/mmi/anti_lm.yaml)")


def chat_pipeline(model, tokenizer, anti_lm: str | Path | None = None,
                  reverse_model: str | Path | None = None) -> ConversationalPipeline:
    """The conversational pipeline of a loaded chatbot, its `--anti-lm` checked first: `"self"` (the chatbot's own
    p(T) after an empty history) needs a causal chatbot, and a directory a causal LM; errors name the fix."""
    if isinstance(anti_lm, str) and anti_lm == "self" and not is_causal(model):
        raise ValueError(
            f"--anti-lm self needs a causal chatbot (its p(T) is its reply after an empty history), and this one is "
            f"an encoder-decoder ({model.config.model_type}). Give an anti-LM directory instead: {ANTI_LM_HOW}."
        )
    try:
        return ConversationalPipeline(model=model, tokenizer=tokenizer, anti_lm=anti_lm, reverse_model=reverse_model)
    except TypeError as error:  # the anti-LM directory holds an encoder-decoder
        if anti_lm is None:
            raise
        self_too = ", or 'self' for this causal chatbot" if is_causal(model) else ""
        raise ValueError(f"--anti-lm {anti_lm}: {error} Give {ANTI_LM_HOW}{self_too}.") from None


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
        """`anti_lm` / `reverse_model` (directories; `anti_lm="self"` for a causal chatbot) enable the mmi-antilm /
        mmi-bidi strategies."""
        model, tokenizer = load_model_dir(model_dir)
        self.pipeline = chat_pipeline(model, tokenizer, anti_lm, reverse_model)

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

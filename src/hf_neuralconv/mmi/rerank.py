"""MMI-bidi N-best reranking (Luan et al. 2017, Section 6.3, Eq. 4; the LSTM-MMI of Li et al. 2016).

Beam search proposes an N-best list of replies R to a message M; each is rescored with

    score(R) = log p(R|M, v) + lambda * log p(M|R) + gamma * |R|                    (Luan et al. 2017, Eq. 4)

where p(R|M, v) is the chatbot (v: the responder's speaker vector, persona models only), p(M|R) a reverse model
trained on swapped (response -> message) pairs without speakers, and |R| the reply length in tokens. Either model
may be an encoder-decoder or a causal LM (each reads its input in its own chat format, `core.chat_format`), as long
as both share the tokenizer.
The best-scoring candidate is the answer. Weights are tuned for BLEU on a development set (`tuning.py`).

    >>> mmi_bidi_generate(model, reverse_model, tokenizer, [["hi", "how are you ?"]], lam=0.5, gamma=0.2)
    [[("i ' m fine", -7.1), ...]]

Conventions (all scoring is batched: one padded forward pass per model over all candidates of all inputs):

* log p(R|M, v) is recomputed with the chatbot as the un-normalised sum of the token log-probabilities of R
  followed by `</s>`, the way the model was trained (`encode_replies`). Beam scores are not reused: `generate()`
  divides them by length**length_penalty, and they would double-count the length that gamma * |R| weighs.
* The chatbot reads the history as in training (`encode_history` over the message and up to `context_turns`
  earlier turns, the last `max_source_length` tokens; defaults from the model directory's `data_config.json`).
* The reverse model reads the reply as a one-turn history and predicts the message M then `</s>`: the examples
  this package builds from (source=response, target=message) pairs.
* |R| counts the reply's tokens, special tokens excluded.
* A candidate is the reply text as shown to the user; it is scored as the tokenizer encodes that text.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..core.chat_format import (
    MMI_CONFIG_KEY,
    EncodedHistories,
    clean_text,
    encode_histories,
    encode_replies,
    format_history,
    generated_replies,
    generation_inputs,
    reading_settings,
)
from ..core.checks import check_eval_mode, check_same_vocabulary, check_weight
from ..core.loading import load_model
from ..core.scoring import DEFAULT_SCORE_BATCH_SIZE, is_causal, sequence_log_probs

# Luan et al. (2017), Section 6.4, use B = 50 beams and at most 20 tokens; 10 beams keep CPU decoding quick.
DEFAULT_NUM_BEAMS = 10
DEFAULT_MAX_NEW_TOKENS = 20


@dataclass
class ScoredNBest:
    """The candidates for one input and the terms of Luan et al. (2017) Eq. 4, one entry per candidate."""

    candidates: list[str]
    forward_log_probs: torch.Tensor  # log p(R|M, v), summed over the tokens of R and `</s>`
    reverse_log_probs: torch.Tensor  # log p(M|R)
    lengths: torch.Tensor  # |R|

    def scores(self, lam: float, gamma: float) -> torch.Tensor:
        """log p(R|M, v) + lam * log p(M|R) + gamma * |R| for every candidate."""
        return self.forward_log_probs + lam * self.reverse_log_probs + gamma * self.lengths

    def ranked(self, lam: float, gamma: float) -> list[tuple[str, float]]:
        """(candidate, score) pairs, best first; equal scores keep the beam order."""
        scores = self.scores(lam, gamma)
        order = torch.sort(scores, descending=True, stable=True).indices.tolist()
        return [(self.candidates[index], scores[index].item()) for index in order]


def _check_models(model: PreTrainedModel, reverse_model: PreTrainedModel) -> None:
    check_same_vocabulary(model.config, reverse_model.config, "chatbot", "reverse model")
    check_eval_mode(model, "chatbot")
    check_eval_mode(reverse_model, "reverse model")


def score_nbest(
    model: PreTrainedModel,
    reverse_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    encoded: EncodedHistories,
    candidates: Sequence[Sequence[str]],
    batch_size: int | None = DEFAULT_SCORE_BATCH_SIZE,
) -> list[ScoredNBest]:
    """The terms of Luan et al. (2017) Eq. 4 for every candidate reply of every input (see the module docstring).

    Each model scores the candidates of all inputs together, in length-sorted batches of `batch_size` rows."""
    _check_models(model, reverse_model)
    if len(candidates) != len(encoded.sources):
        raise ValueError(f"Got {len(candidates)} candidate lists for {len(encoded.sources)} inputs.")
    if any(len(texts) == 0 for texts in candidates):
        raise ValueError("Every input needs at least one candidate reply.")
    owners = [index for index, texts in enumerate(candidates) for _ in texts]
    replies = [text for texts in candidates for text in texts]
    reply_ids = encode_replies(tokenizer, replies, is_causal(model))
    _, reverse_max_length = reading_settings(reverse_model, None, None)
    reverse_causal = is_causal(reverse_model)
    forward = sequence_log_probs(
        model,
        tokenizer,
        [encoded.sources[owner] for owner in owners],
        reply_ids,
        None if encoded.speaker_ids is None else [encoded.speaker_ids[owner] for owner in owners],
        batch_size,
    )
    reverse = sequence_log_probs(
        reverse_model,
        tokenizer,
        [format_history(tokenizer, [clean_text(reply)], reverse_causal, reverse_max_length)[0] for reply in replies],
        encode_replies(tokenizer, [encoded.messages[owner] for owner in owners], reverse_causal),
        batch_size=batch_size,
    )
    words = tokenizer(replies, add_special_tokens=False)["input_ids"]
    lengths = torch.tensor([len(ids) for ids in words], dtype=forward.dtype)
    result, start = [], 0
    for texts in candidates:
        rows = slice(start, start + len(texts))
        result.append(ScoredNBest(list(texts), forward[rows], reverse[rows], lengths[rows]))
        start += len(texts)
    return result


def rerank(
    model: PreTrainedModel,
    reverse_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    histories: Sequence[str | Sequence[str]],
    candidates: Sequence[Sequence[str]],
    lam: float,
    gamma: float,
    speaker_ids: Sequence[int] | None = None,
    context_turns: int | None = None,
    max_source_length: int | None = None,
    batch_size: int | None = DEFAULT_SCORE_BATCH_SIZE,
) -> list[list[tuple[str, float]]]:
    """Rerank candidate replies by Luan et al. (2017) Eq. 4: per input, (reply, score) pairs best first.

    `lam` >= 0 weighs log p(M|R); `gamma` (any sign) rewards (or penalises) each token of the reply."""
    lam = check_weight("lam", lam)
    gamma = check_weight("gamma", gamma, allow_negative=True)
    encoded = encode_histories(model, tokenizer, histories, speaker_ids, context_turns, max_source_length)
    scored = score_nbest(model, reverse_model, tokenizer, encoded, candidates, batch_size)
    return [nbest.ranked(lam, gamma) for nbest in scored]


@torch.no_grad()
def generate_nbest(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    encoded: EncodedHistories,
    num_beams: int = DEFAULT_NUM_BEAMS,
    num_return_sequences: int | None = None,
    max_new_tokens: int | None = None,
    **generate_kwargs,
) -> list[list[str]]:
    """The beam-search N-best list of each input (all inputs in one `generate()` call), as distinct reply texts in
    beam order. `num_return_sequences` defaults to `num_beams`."""
    batch = generation_inputs(model, tokenizer, encoded.sources)
    if encoded.speaker_ids is not None:
        generate_kwargs["speaker_ids"] = torch.tensor(encoded.speaker_ids, device=model.device)
    count = num_return_sequences or num_beams
    output = model.generate(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        num_beams=num_beams,
        num_return_sequences=count,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        **generate_kwargs,
    )
    texts = tokenizer.batch_decode(generated_replies(model, output, batch["input_ids"].shape[1]),
                                   skip_special_tokens=True)
    return [list(dict.fromkeys(texts[start : start + count])) for start in range(0, len(texts), count)]


def mmi_bidi_generate(
    model: PreTrainedModel,
    reverse_model: PreTrainedModel | None,
    tokenizer: PreTrainedTokenizerBase,
    histories: Sequence[str | Sequence[str]],
    lam: float | None = None,
    gamma: float | None = None,
    num_beams: int | None = None,
    num_return_sequences: int | None = None,
    max_new_tokens: int | None = None,
    speaker_ids: Sequence[int] | None = None,
    context_turns: int | None = None,
    max_source_length: int | None = None,
    batch_size: int | None = DEFAULT_SCORE_BATCH_SIZE,
    **generate_kwargs,
) -> list[list[tuple[str, float]]]:
    """Answer each history with MMI-bidi decoding (Luan et al. 2017, Section 6.3): beam search N-best, reranked
    by Eq. 4. Returns, per history, the (reply, score) pairs best first.

    Arguments left out come from `model.generation_config.mmi` (written by `tuning.save_mmi_settings`), so a saved
    tuned model decodes the same way after loading; `reverse_model=None` loads the reverse model saved there.
    `num_beams` then defaults to 10, `num_return_sequences` to `num_beams` and `max_new_tokens` to the
    generation config's (else 20). Further keyword arguments go to
    `generate()`.
    """
    settings = getattr(model.generation_config, MMI_CONFIG_KEY, None) or {}

    def setting(value, key: str, default=None):
        if value is not None:
            return value
        if key in settings:
            return settings[key]
        if default is not None:
            return default
        raise ValueError(
            f"No `{key}` given and the model's generation_config has no `{MMI_CONFIG_KEY}.{key}`: pass it, or tune "
            "the MMI weights with `hf_neuralconv.mmi.tune_mmi` and save them with `save_mmi_settings`."
        )

    lam = check_weight("lam", setting(lam, "lambda"))
    gamma = check_weight("gamma", setting(gamma, "gamma"), allow_negative=True)
    num_beams = setting(num_beams, "num_beams", DEFAULT_NUM_BEAMS)
    num_return_sequences = setting(num_return_sequences, "num_return_sequences", num_beams)
    default_length = model.generation_config.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
    max_new_tokens = setting(max_new_tokens, "max_new_tokens", default_length)
    if reverse_model is None:
        reverse_model = load_model(setting(None, "reverse_model")).to(model.device)
    _check_models(model, reverse_model)
    encoded = encode_histories(model, tokenizer, histories, speaker_ids, context_turns, max_source_length)
    candidates = generate_nbest(
        model, tokenizer, encoded, num_beams, num_return_sequences, max_new_tokens, **generate_kwargs
    )
    scored = score_nbest(model, reverse_model, tokenizer, encoded, candidates, batch_size)
    return [nbest.ranked(lam, gamma) for nbest in scored]

"""MMI-antiLM decoding as a transformers `LogitsProcessor` (Li et al. 2016, "A Diversity-Promoting Objective
Function for Neural Conversation Models"; the baseline of He & Glass 2020, Section 4.3).

Li et al. choose the reply T that maximises

    log p(T|S) - lambda * log U(T),    U(T) = prod_k p_LM(t_k | t_<k) * g(k),    g(k) = 1 if k <= gamma else 0,

i.e. a language model's log-probability is subtracted for the first `gamma` tokens only: the penalty discourages
the generic openings an unconditional LM finds likely ("i don't know"), while later tokens, where an anti-LM
would reward ungrammatical continuations, are scored by the seq2seq model alone.

    >>> processor = MMIAntiLMLogitsProcessor(language_model, model.config, lam=0.5, gamma=3)
    >>> model.generate(**inputs, num_beams=5, logits_processor=LogitsProcessorList([processor]))

The processor works with the stock `generate()` under greedy decoding, sampling and beam search, for any chatbot
(encoder-decoder or causal) and any causal anti-LM over the same tokenizer: our `LSTMForCausalLM`, a GPT-2 or Llama
trained on replies, or a causal chatbot itself reading the reply after an empty history
(`prompt_ids=core.chat_format.empty_history_prompt(tokenizer)`), which gives p(T) without a second model.
"""

import numbers
from collections.abc import Sequence

import torch
from transformers import LogitsProcessor, PretrainedConfig, PreTrainedModel

from ..core.checks import check_eval_mode, check_same_vocabulary, check_weight
from ..core.scoring import is_causal
from ..data.tokenization import start_id
from ..models.lstm.modeling_lstm import CACHE_NAME


class MMIAntiLMLogitsProcessor(LogitsProcessor):
    r"""Subtracts `lam * log p_LM(token | <s>, generated tokens)` from the scores of the first `gamma` generated
    tokens (MMI-antiLM with the g(k) threshold of Li et al. 2016; He & Glass 2020, Section 4.3).

    Returns, for the first `gamma` generated tokens, `log_softmax(scores) - lam * log p_LM`: under greedy decoding
    and sampling `scores` are the model's raw logits, under beam search they are already log-probabilities (which
    `log_softmax` leaves unchanged, up to rounding), so the result is `log p(t|S) - lam * log p_LM(t)` in every mode
    and `lam` means the same thing everywhere. From token `gamma + 1` on, and whenever `lam == 0`, `scores` are
    returned untouched and the language model is not run.

    The language model reads `prompt_ids` (default: its `<s>`) and then the generated tokens, keeping its own cache
    (an `LSTMState`, a transformer's `DynamicCache`), never the chatbot's: exactly one LM step (one batched call over
    all rows) per generated token, for the first `gamma` tokens. `generate()` does not tell
    processors how beam search reordered its rows, so each call finds every row's parent among the previous call's
    rows by matching the generated part of `input_ids[:, :-1]` and reorders the LM state accordingly; rows with equal
    generated prefixes have equal LM states, so any match is the right one.

    A call starts a new batch (fresh LM state) when there is no previous call, when `input_ids` is not exactly one
    token longer than at the previous call, when its rows do not start with the previous call's prompts, or when a
    row's prefix is not among the previous rows; the tokens present at that first call are the prompt (for an
    encoder-decoder, the decoder start token; for a causal chatbot, the history). One processor can
    therefore serve successive `generate()` calls; `reset()` forgets the state explicitly.

    Args:
        language_model: the anti-LM p_LM(T), a causal LM over the chatbot's vocabulary, in eval mode.
        model_config: the chatbot's config, to check that both models share the vocabulary and special tokens.
        lam: weight lambda >= 0 of the LM penalty (0: plain decoding).
        gamma: number of leading generated tokens penalised (>= 1).
        prompt_ids: what the LM reads before the reply (default: its `bos_token_id`, else its `eos_token_id`).
    """

    def __init__(self, language_model: PreTrainedModel, model_config: PretrainedConfig, lam: float, gamma: int,
                 prompt_ids: Sequence[int] | None = None):
        self.lam = check_weight("lam", lam)
        if isinstance(gamma, bool) or not isinstance(gamma, numbers.Integral) or gamma < 1:
            raise ValueError(f"`gamma` (how many leading tokens are penalised) must be an integer >= 1, got {gamma!r}.")
        self.gamma = int(gamma)
        if not is_causal(language_model):
            raise TypeError(f"The anti-LM must be a causal language model, got a {type(language_model).__name__}.")
        check_same_vocabulary(model_config, language_model.config, "chatbot", "anti-LM")
        check_eval_mode(language_model, "anti-LM")
        self.language_model = language_model
        if prompt_ids is None:
            prompt_ids = [start_id(language_model.config)]
        if not prompt_ids:
            raise ValueError("`prompt_ids` is empty: the anti-LM needs at least one token to predict the first from.")
        self.prompt_ids = torch.tensor(list(prompt_ids), dtype=torch.long)
        self.reset()

    def reset(self) -> None:
        """Forget the current batch: the next call starts a new one."""
        self._prompts: torch.LongTensor | None = None  # the rows' tokens at the batch's first call
        self._last_length: int | None = None
        self._generated: torch.LongTensor | None = None  # generated tokens of the previous call's rows
        self._state = None  # the LM's cache after reading the prompt and those tokens

    def _parents(self, input_ids: torch.LongTensor) -> torch.LongTensor | None:
        """Index of each row's parent among the previous call's rows, or None if this call starts a new batch."""
        if self._last_length is None or input_ids.shape[1] != self._last_length + 1:
            return None
        prompts = input_ids[:, : self._prompts.shape[1]].to(self._prompts.device)
        if not bool((prompts[:, None, :] == self._prompts[None, :, :]).all(dim=-1).any(dim=1).all()):
            return None  # another generate() call whose prompt is one token longer than this one's last input
        if self._generated is None:  # the LM already stopped (past gamma): nothing to follow
            return torch.empty(0, dtype=torch.long)
        prefixes = input_ids[:, self._prompts.shape[1] : -1].to(self._generated.device)
        matches = (prefixes[:, None, :] == self._generated[None, :, :]).all(dim=-1)
        if not bool(matches.any(dim=1).all()):
            return None
        return matches.int().argmax(dim=1)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[-1] != self.language_model.config.vocab_size:
            raise ValueError(
                f"The chatbot scores {scores.shape[-1]} tokens but the anti-LM has a vocabulary of "
                f"{self.language_model.config.vocab_size}."
            )
        parents = self._parents(input_ids)
        if parents is None:
            self.reset()
            self._prompts = input_ids.clone()
        self._last_length = input_ids.shape[1]
        position = input_ids.shape[1] - self._prompts.shape[1]  # tokens generated before this one
        if self.lam == 0 or position >= self.gamma:
            self._generated = self._state = None
            return scores
        lm_log_probs = self._advance(input_ids, parents, position)
        return scores.log_softmax(dim=-1) - self.lam * lm_log_probs.to(scores.device, scores.dtype)

    @torch.no_grad()
    def _advance(self, input_ids: torch.LongTensor, parents: torch.LongTensor | None, position: int) -> torch.Tensor:
        """One LM step for every row: read the prompt (first token) or the newest generated token."""
        device = self.language_model.device
        if position == 0:
            tokens = self.prompt_ids.to(device).expand(input_ids.shape[0], -1)
        else:
            self._state.reorder_cache(parents)
            tokens = input_ids[:, -1:].to(device)
        output = self.language_model(input_ids=tokens, use_cache=True, **{CACHE_NAME: self._state})
        self._state = output[CACHE_NAME]
        self._generated = input_ids[:, self._prompts.shape[1] :].to(device)
        return output.logits[:, -1].float().log_softmax(dim=-1)

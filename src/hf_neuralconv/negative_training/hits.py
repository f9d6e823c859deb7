"""The scores the hit criteria of He & Glass (2020, "Negative Training for Neural Dialogue Response Generation",
Section 3.2; He & Glass 2019) are decided on, their thresholds, and the target lists and (trigger, target) pair files.
The criteria themselves (`HitCriterion`, `HIT_TYPES`) are in `metrics.hit_criteria`, shared with the `hit_rate`
evaluate module.

A (trigger, target) pair *hits* when the trigger input makes the model likely to say the target:

* o-greedy-hit: greedy decoding of the trigger yields exactly the target (its `</s>` included);
* o-sample-min-hit / o-sample-avg-hit: the minimum / average word log-probability of the target given the
  trigger, log P(y_t | y_<t, x) over the target's words and `</s>`, is larger than T_out;
* io-sample-min-hit / io-sample-avg-hit: as above, and the input LM's average word log-likelihood of the trigger
  is larger than T_in (the trigger is something a real user could type).

T_out is the model's average word log-likelihood on test data (minus the log of its test perplexity) and T_in the
LSTM LM's on test inputs (paper, Appendix C: on Ubuntu T_out = -4.08, T_in = -4.19).

Conventions:

* A trigger is one user message, tokens of the model's tokenizer: the model reads it in its chat format,
  `before + trigger + after` (`TriggerFrame`, from `core.chat_format.message_frame`: our `<user>` actor token, a
  chat template's header, BART's `<s>` ... `</s>`); a causal model then reads the target in the same sequence.
* The input LM (any causal LM over the same tokenizer, e.g. an `LSTMForCausalLM` trained on single sentences)
  reads `<s> x_1 .. x_n` (its `bos_token_id`, else its `eos_token_id`, first) and the trigger's log-likelihood
  averages log P_LM(x_t | x_<t) over its n tokens and the closing `</s>`, the same way T_in averages over test
  sentences (Eq. 8 of the paper writes the n word terms; a trigger is a complete message).
* Every function scores many pairs in one padded forward pass (or in chunks of `batch_size` rows).

Malicious target lists are read with `load_targets`; (trigger, target) pairs are exchanged as JSONL rows
`{"trigger": ..., "target": ...}` (`read_trigger_pairs`, `write_trigger_pairs`).
"""

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..core.chat_format import encode_replies, message_frame
from ..core.scoring import is_causal, pad_ids, pair_batch, target_log_probs
from ..data.dialogue import read_utf8_text
from ..data.jsonl import read_jsonl, read_text_pairs, write_jsonl
from ..data.resources import resolve_data_path, shipped_files
from ..data.tokenization import padding_id, start_id
from ..metrics.hit_criteria import PairScores

logger = logging.getLogger(__name__)

# The target lists are tokenised the PTB way ("do n't", "i 'm"); the package's tokenizer splits the written forms
# ("don't" -> don ' t), so contractions are rejoined before tokenising, as a user would type them.
_CONTRACTION = re.compile(r" (n't|'(?:m|s|re|ll|ve|d))\b")


@dataclass(frozen=True)
class TriggerFrame:
    """What a model reads around a one-message trigger (`core.chat_format.message_frame`), and whether the target
    follows in the same sequence (a causal model) or is the decoder's (an encoder-decoder)."""

    before: tuple[int, ...]
    after: tuple[int, ...]
    causal: bool

    def source(self, trigger: Sequence[int]) -> list[int]:
        """The model's input ids for `trigger`."""
        return [*self.before, *trigger, *self.after]


def trigger_frame(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> TriggerFrame:
    """The `TriggerFrame` of `model` with `tokenizer`."""
    causal = is_causal(model)
    before, after = message_frame(tokenizer, causal)
    return TriggerFrame(tuple(before), tuple(after), causal)


def trigger_vocabulary(tokenizer: PreTrainedTokenizerBase) -> torch.LongTensor:
    """Ids a trigger may use: tokens a user can type. Special tokens (`<pad>`, `</s>`, `<unk>`, actor tokens, a
    chat template's markers) never are; nor is a token that does not decode to printable text encoding back to
    itself (a byte-level BPE's lone byte of a multi-byte character, a piece that only exists inside a word)."""
    special = set(tokenizer.all_special_ids)
    candidates = [index for index in range(len(tokenizer)) if index not in special]
    texts = tokenizer.batch_decode([[index] for index in candidates], clean_up_tokenization_spaces=False)
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return torch.tensor([index for index, text, ids in zip(candidates, texts, encoded, strict=True)
                         if text.strip() and text.isprintable() and ids == [index]])


def input_log_probs(language_model: PreTrainedModel, trigger_ids: torch.LongTensor, lengths: torch.LongTensor):
    """log P_LM(z_t | z_<t) for z = x_1 .. x_n `</s>` read after `<s>`, per right-padded trigger row (0 past each
    row's `</s>`), and the LM's log-distributions at every position. Differentiable."""
    config = language_model.config
    rows = trigger_ids.size(0)
    positions = torch.arange(trigger_ids.size(1) + 1, device=trigger_ids.device)
    targets = torch.cat([trigger_ids, trigger_ids.new_full((rows, 1), config.eos_token_id)], dim=1)
    targets = targets.scatter(1, lengths[:, None], config.eos_token_id)
    inputs = torch.cat([trigger_ids.new_full((rows, 1), start_id(config)), targets[:, :-1]], dim=1)
    log_distributions = language_model(input_ids=inputs).logits.float().log_softmax(dim=-1)
    log_probs = log_distributions.gather(-1, targets[..., None]).squeeze(-1)
    return log_probs.masked_fill(positions[None, :] > lengths[:, None], 0.0), log_distributions


@torch.no_grad()
def score_pairs(
    model: PreTrainedModel,
    frame: TriggerFrame,
    triggers: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    input_lm: PreTrainedModel | None = None,
    batch_size: int | None = None,
) -> PairScores:
    """Scores of (trigger, target) pairs: triggers are token ids (the model reads them in `frame`), targets end
    with `</s>` (`encode_replies`). All pairs in one padded forward pass per model, or chunks of `batch_size`."""
    if len(triggers) != len(targets):
        raise ValueError(f"Got {len(triggers)} triggers for {len(targets)} targets.")
    if any(len(trigger) == 0 for trigger in triggers):
        raise ValueError("A trigger is empty: every trigger needs at least one word.")
    if not triggers:
        raise ValueError("No (trigger, target) pairs to score.")
    size = batch_size or len(triggers)
    parts = []
    for start in range(0, len(triggers), size):
        chunk = slice(start, start + size)
        batch = pair_batch([frame.source(trigger) for trigger in triggers[chunk]], targets[chunk],
                           padding_id(model.config), frame.causal, model.device)
        log_probs, logits = target_log_probs(model, **batch)
        part = output_scores(log_probs, logits, batch["labels"])
        if input_lm is not None:
            part.append(trigger_log_likelihoods(input_lm, triggers[chunk]))
        parts.append([value.cpu() for value in part])
    columns = [torch.cat(column) for column in zip(*parts)]
    return PairScores(*columns) if input_lm is not None else PairScores(*columns[:3])


def output_scores(log_probs: torch.Tensor, logits: torch.Tensor, labels: torch.LongTensor) -> list[torch.Tensor]:
    """The first three `PairScores` fields (min and average log-probability, greedy) of right-padded pairs, from the
    teacher-forced `log_probs` and `logits` of `target_log_probs`; detached."""
    log_probs, mask = log_probs.detach(), labels.ne(-100)
    return [
        log_probs.masked_fill(~mask, math.inf).min(dim=1).values,
        log_probs.sum(dim=1) / mask.sum(dim=1),
        (logits.detach().argmax(dim=-1).eq(labels) | ~mask).all(dim=1),
    ]


@torch.no_grad()
def trigger_log_likelihoods(language_model: PreTrainedModel, triggers: Sequence[Sequence[int]]) -> torch.Tensor:
    """The input LM's average word log-likelihood of each trigger (word ids), `</s>` included: what io hits compare
    with T_in. One padded forward pass."""
    lengths = torch.tensor([len(row) for row in triggers], device=language_model.device)
    ids = pad_ids(triggers, padding_id(language_model.config), language_model.device)
    log_probs, _ = input_log_probs(language_model, ids, lengths)
    return log_probs.sum(dim=1) / (lengths + 1)



@torch.no_grad()
def output_threshold(
    model: PreTrainedModel,
    input_ids: Sequence[Sequence[int]],
    labels: Sequence[Sequence[int]],
    batch_size: int = 64,
) -> float:
    """T_out: the model's average word log-likelihood on tokenized test rows (`input_ids`, `labels` as
    `core.building.tokenize_dataset` lays them out for the model: an encoder-decoder's source and reply, a causal
    model's history + reply with labels -100 over the history), i.e. total log-likelihood / number of labelled
    tokens = -log(test perplexity)."""
    if not input_ids or len(input_ids) != len(labels):
        raise ValueError(f"Need as many input rows as label rows, at least one; got {len(input_ids)} and "
                         f"{len(labels)}.")
    total, tokens = 0.0, 0
    for start in range(0, len(input_ids), batch_size):
        chunk = slice(start, start + batch_size)
        rows = pad_ids(input_ids[chunk], padding_id(model.config), model.device)
        attention_mask = pad_ids([[1] * len(row) for row in input_ids[chunk]], 0, model.device)
        label_rows = pad_ids(labels[chunk], -100, model.device)
        log_probs, _ = target_log_probs(model, rows, attention_mask, label_rows)
        total += log_probs.double().sum().item()
        tokens += int(label_rows.ne(-100).sum())
    return total / tokens


@torch.no_grad()
def input_threshold(language_model: PreTrainedModel, sentences: Sequence[Sequence[int]], batch_size: int = 64) -> float:
    """T_in: the input LM's average word log-likelihood on test inputs (word ids without special tokens), each
    read after `<s>` and closed by `</s>`: total log-likelihood / (words + one `</s>` per sentence)."""
    sentences = [sentence for sentence in sentences if len(sentence)]
    if not sentences:
        raise ValueError("No non-empty sentence to measure T_in on.")
    total, tokens = 0.0, 0
    for start in range(0, len(sentences), batch_size):
        rows = sentences[start : start + batch_size]
        lengths = torch.tensor([len(row) for row in rows], device=language_model.device)
        ids = pad_ids(rows, padding_id(language_model.config), language_model.device)
        log_probs, _ = input_log_probs(language_model, ids, lengths)
        total += log_probs.double().sum().item()
        tokens += int(lengths.sum()) + len(rows)
    return total / tokens


@dataclass
class TargetList:
    """A malicious target list: the targets kept (text and ids ending with `</s>`) and those skipped."""

    texts: list[str]
    ids: list[list[int]]
    skipped: list[str]


def load_targets(path: str | Path, tokenizer: PreTrainedTokenizerBase, *, causal: bool,
                 max_length: int | None = 20) -> TargetList:
    """Read a target list (one lowercased, space-tokenised target a line, as the paper's lists shipped as
    `package:malicious_targets/*.txt`).

    Blank lines are ignored; targets made only of words the tokenizer does not know are skipped, counted and
    reported (a target of `<unk>`s says nothing). `max_length` caps the ids, `</s>` included (paper: 20); the ids
    are the replies of an encoder-decoder or (`causal`) a causal model (`encode_replies`).
    """
    path = resolve_data_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such target list (the paper's lists ship with the package: "
                                f"{', '.join(shipped_files('malicious_targets'))}).")
    lines = [line.strip() for line in read_utf8_text(path).splitlines()]
    texts = [_CONTRACTION.sub(r"\1", line) for line in lines if line]
    if not texts:
        raise ValueError(f"{path}: the target list is empty (one target sentence a line).")
    kept, ids, skipped = [], [], []
    special = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}
    for text, row in zip(texts, encode_replies(tokenizer, texts, causal, max_length)):
        if all(token == tokenizer.unk_token_id for token in row if token not in special):
            skipped.append(text)
        else:
            kept.append(text)
            ids.append(row)
    if skipped:
        logger.warning("%s: skipped %d of %d targets made only of unknown words, e.g. %r.", path, len(skipped),
                       len(texts), skipped[:3])
    if not kept:
        raise ValueError(f"{path}: all {len(texts)} targets are made of words the tokenizer does not know.")
    return TargetList(kept, ids, skipped)


def read_trigger_pairs(path: str | Path, tokenizer: PreTrainedTokenizerBase, *,
                       causal: bool) -> tuple[list[list[int]], list[list[int]]]:
    """(trigger ids, target ids ending with `</s>`) from a JSONL file of `{"trigger": str, "target": str}` rows;
    the targets as replies of an encoder-decoder or (`causal`) a causal model. Rows that carry `trigger_ids` /
    `target_ids` (written by `write_trigger_pairs`) give those ids exactly: the decoded text of a token sequence
    may encode into other tokens ("do n ' t" decodes to "don't")."""
    rows = read_text_pairs(path, ("trigger", "target"))
    saved = read_jsonl(path)
    triggers = [_saved_ids(row, "trigger_ids") or tokenizer(pair["trigger"], add_special_tokens=False)["input_ids"]
                for pair, row in zip(rows, saved, strict=True)]
    targets = [_saved_ids(row, "target_ids") or encode_replies(tokenizer, [pair["target"]], causal)[0]
               for pair, row in zip(rows, saved, strict=True)]
    return triggers, targets


def _saved_ids(row: dict, key: str) -> list[int] | None:
    ids = row.get(key)
    return ids if isinstance(ids, list) and ids and all(isinstance(index, int) for index in ids) else None


def write_trigger_pairs(
    path: str | Path,
    tokenizer: PreTrainedTokenizerBase,
    triggers: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    extra: Sequence[dict] | None = None,
) -> None:
    """Write pairs as JSONL rows `{"trigger", "target", "trigger_ids", "target_ids", **extra}`: the texts decoded
    without special tokens (what a user would type) and the ids, which `read_trigger_pairs` reads back exactly."""
    write_jsonl(path, (
        {
            "trigger": tokenizer.decode(list(trigger), skip_special_tokens=True),
            "target": tokenizer.decode(list(target), skip_special_tokens=True),
            "trigger_ids": list(trigger),
            "target_ids": list(target),
            **(extra[index] if extra else {}),
        }
        for index, (trigger, target) in enumerate(zip(triggers, targets))
    ))

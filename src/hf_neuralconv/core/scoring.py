"""The one scorer of replies given inputs: teacher-forced token and sequence log-probabilities.

Every method that asks "how likely is this reply to this input" uses these functions: perplexity-style
thresholds and hit criteria (He & Glass 2020), MMI-bidi's forward and reverse terms (Luan et al. 2017, Eq. 4),
negative training's loss, the reverse generator's policy (Liu et al. 2019, Eq. 1), the pipeline's candidate scores.
Rows are right-padded; label -100 marks padding, whose log-probability is 0. An encoder-decoder reads the source
and predicts the labels; a causal model reads source and reply as one sequence whose labels are -100 over the
source (`pair_batch`), and its log-probabilities are returned aligned with those labels, so every caller reads both
kinds alike.

This module is copied next to saved models with the pipeline: it imports only torch, transformers and
`..data.tokenization`.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..data.tokenization import padding_id

# Candidate rows scored per forward pass by `sequence_log_probs`: a 64 x 50-best list in one batch would need tens
# of GiB of logits, and 128 rows scored fastest in benchmarks/mmi_rerank.py (2-core CPU, two runs: 256 and 512 were
# 4-8 % and 10-23 % slower).
DEFAULT_SCORE_BATCH_SIZE = 128

def sequence_scores(
    generated: torch.LongTensor, step_scores: tuple[torch.Tensor, ...], eos_token_id: int
) -> torch.Tensor:
    """Sum of the log-probabilities of each generated reply's tokens, `</s>` included (greedy decoding, sampling).

    `generated` holds the tokens chosen at each step and `step_scores` the scores `generate()` chose them from
    (after its logits processors), so this is the log-probability under the decoding distribution. Steps after a
    reply's `</s>` are padding and are left out.
    """
    log_probs = torch.stack(step_scores, dim=1).float().log_softmax(dim=-1)
    token_log_probs = log_probs.gather(-1, generated[..., None]).squeeze(-1)
    is_eos = generated.eq(eos_token_id).long()
    in_reply = (is_eos.cumsum(dim=1) - is_eos).eq(0)
    return token_log_probs.masked_fill(~in_reply, 0.0).sum(dim=1)


def pad_ids(rows: Sequence[Sequence[int]], value: int, device) -> torch.LongTensor:
    """Id rows of different lengths as one right-padded tensor on `device`."""
    return torch.nn.utils.rnn.pad_sequence(
        [torch.as_tensor(row, dtype=torch.long) for row in rows], batch_first=True, padding_value=value
    ).to(device)


def is_causal(model) -> bool:
    """Whether `model` (or the model a DDP / Accelerate wrapper holds) reads history and reply as one sequence."""
    config = getattr(model, "config", None) or model.module.config
    return not getattr(config, "is_encoder_decoder", False)


def pair_rows(
    sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], causal: bool
) -> tuple[list[list[int]], list[list[int]]]:
    """(source, reply) id pairs as a model's rows, `input_ids` and `labels`: an encoder-decoder's are the sources and
    the replies; a causal model's are source + reply and -100 over the source, so that it learns and is scored on the
    reply only."""
    if not causal:
        return [list(source) for source in sources], [list(target) for target in targets]
    pairs = list(zip(sources, targets, strict=True))
    return ([[*source, *target] for source, target in pairs],
            [[-100] * len(source) + list(target) for source, target in pairs])


def pair_batch(
    sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], pad_token_id: int, causal: bool, device
) -> dict[str, torch.Tensor]:
    """(source, reply) id pairs (`pair_rows`) as one right-padded batch: `input_ids`, `attention_mask` and `labels`
    (-100 on padding)."""
    rows, labels = pair_rows(sources, targets, causal)
    input_ids = pad_ids(rows, pad_token_id, device)
    attention_mask = pad_ids([[1] * len(row) for row in rows], 0, device)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": pad_ids(labels, -100, device)}


def token_log_probs(logits: torch.Tensor, labels: torch.LongTensor) -> torch.Tensor:
    """log P(y_t | ...) of every label from its logits, 0 where the label is -100. The vocabulary stays the
    contiguous last dimension (a cross-entropy over `logits.transpose(1, 2)` costs as much as the output layer)."""
    log_probs = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100, reduction="none")
    return -log_probs.view_as(labels)


def target_log_probs(
    model: PreTrainedModel,
    input_ids: torch.LongTensor | None,
    attention_mask: torch.Tensor,
    labels: torch.LongTensor,
    decoder_input_ids: torch.LongTensor | None = None,
    encoder_outputs=None,
    **model_kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """log P(y_t | y_<t, x) of every label by teacher forcing, and the logits that predict each label. `labels` are
    right-padded with -100, where the log-probability is 0. Differentiable: callers choose `torch.no_grad()` or not.
    The model gets no labels, so it does not spend a second softmax on a loss nobody reads.

    Encoder-decoder: `input_ids` is the source; pass `decoder_input_ids` when `model` is wrapped (DDP) and cannot
    make them from the labels itself, and `encoder_outputs` (with `input_ids=None`; `attention_mask` then covers
    them) when the source is already read. Causal model: `input_ids` is the whole sequence (`pair_batch`) and both
    results have the labels' shape, position t scored by the logits of position t - 1 (position 0 has no
    prediction: its label must be -100). `model_kwargs` go to the model as they are (a persona model's
    `speaker_ids`, `inputs_embeds` with `input_ids=None`, a cache of the tokens before `input_ids`)."""
    if is_causal(model):
        logits = model(input_ids=input_ids, attention_mask=attention_mask, **model_kwargs).logits
        if logits.shape[1] != labels.shape[1]:  # read after a cached prefix: the cache predicts the first label
            raise ValueError(f"Got logits for {logits.shape[1]} positions and {labels.shape[1]} labels.")
        logits = F.pad(logits[:, :-1], (0, 0, 1, 0))
        return token_log_probs(logits, labels), logits
    if decoder_input_ids is None:
        decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels=labels)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                   encoder_outputs=encoder_outputs, **model_kwargs).logits
    return token_log_probs(logits, labels), logits


@torch.no_grad()
def sequence_log_probs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sources: Sequence[list[int]],
    targets: Sequence[list[int]],
    speaker_ids: Sequence[int] | None = None,
    batch_size: int | None = DEFAULT_SCORE_BATCH_SIZE,
) -> torch.Tensor:
    """log p(target | source) = sum_t log p(y_t | y_<t, source) for each pair, by teacher forcing in padded batches
    of `batch_size` pairs (None: all pairs in one batch), returned in the order of the pairs.

    The pairs are batched in order of target length (then source length), so that a batch pads little: a 50-best
    list of replies to messages of very different lengths would otherwise spend most of the vocabulary softmax on
    padding. Sums are taken in float64. Sources and targets are in `model`'s chat format (`encode_history`,
    `encode_replies`); a causal model reads each pair as one sequence."""
    causal, pad = is_causal(model), padding_id(tokenizer)
    order = sorted(range(len(sources)), key=lambda row: (len(targets[row]), len(sources[row])))
    size = batch_size or len(sources)
    totals = torch.empty(len(sources), dtype=torch.float64)
    for start in range(0, len(order), size):
        rows = order[start : start + size]
        batch = pair_batch([sources[row] for row in rows], [targets[row] for row in rows], pad, causal, model.device)
        extra = {}
        if speaker_ids is not None:
            extra["speaker_ids"] = torch.tensor([speaker_ids[row] for row in rows], device=model.device)
        log_probs, _ = target_log_probs(model, batch["input_ids"], batch["attention_mask"], batch["labels"], **extra)
        totals[rows] = log_probs.double().sum(dim=1).cpu()
    return totals.float()

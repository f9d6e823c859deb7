"""Negative training (He & Glass 2020, "Negative Training for Neural Dialogue Response Generation").

A trained seq2seq model is fine-tuned to lower the likelihood of "bad" (input, response) pairs it produces while
MLE on the training data keeps its original behaviour: L_NEG+POS = L_NEG + lambda_POS * L_MLE (Eq. 4). Per
mini-batch `NegativeTrainer.compute_loss` returns

    L = (1/N_neg) sum_{negative tokens} w(y_t) log P(y_t | y_<t, x)
        + lambda_POS * (1/N_pos) sum_{data tokens} -log P(y_t | y_<t, x)

so a gradient step is the negative update of Algorithms 1-2 plus the positive update on the mini-batch of
training data. w is frequent-word avoiding (FWA, Sections 4.2-4.3): w = `fwa_scale` for the `fwa_words`, 1 for
the others. Two ways to find the negative pairs (`mode`):

* "malicious" (Algorithm 1, mini-batch form): the target list is taken `negative_batch_size` targets at a time;
  gibbs-enum (Appendix A) searches a trigger for each and the pairs that hit (Section 3.2) are the negative
  examples of every step while they still hit; then the next targets are attacked, triggers searched anew on each
  pass over the list (paper: 20 passes, FWA words {<EOS>, you, i, me, are, to, do} with w = 0). Pairs found
  elsewhere can be given instead (`trigger_pairs_file`, JSONL `{"trigger", "target"}`). Training stops after
  `max_target_passes` passes, or when nothing hits any more.
* "frequent" (Algorithm 2): the model's greedy responses to each training mini-batch are counted over the last
  `frequency_window` mini-batches (the current one included); responses whose share exceeds
  `frequency_threshold` (r_thres) are the negative examples, for the inputs that produced them (paper: FWA only
  scales the `</s>` gradient, w = 0.1).

Metrics (`malicious/hit_rate`, `malicious/negative_pairs`, `frequent/max_ratio`, `frequent/negative_examples`,
`loss_neg`, `loss_mle`) are averaged over each logging window and logged with the training loss.
The search and frequency state lives in the trainer: resuming from a checkpoint restarts it.
"""

import logging
from collections import Counter, defaultdict, deque
from collections.abc import Hashable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, PreTrainedTokenizerBase, TrainingArguments

from ..attacks.gibbs_enum import gibbs_enum
from ..attacks.hits import HitCriterion, load_targets, pad_ids, read_trigger_pairs, score_pairs, trigger_prefix
from ..metrics.diversity import max_ratio
from .conversation import ConversationTrainer

logger = logging.getLogger(__name__)

MODES = ("malicious", "frequent")
# He & Glass (2020): footnote 9 (malicious targets) and Section 4.3 (frequent responses: only <EOS>, scaled by 0.1).
DEFAULT_FWA_WORDS = {"malicious": ["</s>", "you", "i", "me", "are", "to", "do"], "frequent": ["</s>"]}
DEFAULT_FWA_SCALE = {"malicious": 0.0, "frequent": 0.1}


@dataclass
class NegativeTrainingConfig(TrainingArguments):
    """`TrainingArguments` plus the settings of negative training (He & Glass 2020); see the module docstring.

    Paper settings: malicious: SGD, learning rate 0.01, mini-batches of 100, lambda_POS 0.1 (Ubuntu) or 1,
    20 passes over the targets; frequent: learning rate 0.001, mini-batches of 64, lambda_POS 1, r_thres 1%.
    """

    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow training into a non-empty output_dir (its files may be replaced)."}
    )
    mode: str = field(default="malicious", metadata={"help": "malicious (Algorithm 1) | frequent (Algorithm 2)."})
    lambda_pos: float = field(default=0.1, metadata={"help": "Weight of the MLE term, Eq. 4."})
    fwa_words: list[str] | None = field(
        default=None, metadata={"help": "Frequent-word avoiding words (default: the mode's, from the paper)."}
    )
    fwa_scale: float | None = field(
        default=None, metadata={"help": "Negative-gradient weight of FWA words (default 0 malicious, 0.1 frequent)."}
    )
    # malicious
    targets_file: str | None = field(default=None, metadata={"help": "Malicious target list, one a line."})
    trigger_pairs_file: str | None = field(
        default=None, metadata={"help": "JSONL (trigger, target) pairs to train on instead of searching triggers."}
    )
    hit_type: str = field(default="o-sample-min-hit", metadata={"help": "Hit criterion c(x, y), Section 3.2."})
    output_threshold: float | None = field(default=None, metadata={"help": "T_out (sample hits)."})
    input_threshold: float | None = field(default=None, metadata={"help": "T_in (io hits)."})
    input_lm_path: str | None = field(default=None, metadata={"help": "Saved LSTM LM for io hits."})
    trigger_length: int = field(default=15, metadata={"help": "Words of a searched trigger."})
    num_candidates: int = field(default=100, metadata={"help": "gibbs-enum G."})
    max_sweeps: int = field(default=5, metadata={"help": "gibbs-enum T."})
    num_restarts: int = field(default=5, metadata={"help": "gibbs-enum random restarts."})
    lambda_in: float | None = field(default=None, metadata={"help": "LM regulariser (default 1 for io hits, else 0)."})
    negative_batch_size: int = field(default=100, metadata={"help": "Targets attacked and trained on together."})
    search_batch_size: int = field(default=8, metadata={"help": "Targets per gibbs-enum forward pass (memory)."})
    max_target_passes: int = field(default=20, metadata={"help": "Passes over the target list."})
    # frequent
    frequency_threshold: float = field(default=0.01, metadata={"help": "r_thres."})
    frequency_window: int = field(default=200, metadata={"help": "Mini-batches counted, the current one included."})
    max_response_length: int = field(default=20, metadata={"help": "Greedy response length cap."})

    def __post_init__(self):
        super().__post_init__()
        if self.mode not in MODES:
            raise ValueError(f"`mode` must be one of {MODES}, got {self.mode!r}.")
        if self.lambda_pos < 0:
            raise ValueError(f"`lambda_pos` must be >= 0, got {self.lambda_pos}.")
        if self.fwa_words is None:
            self.fwa_words = list(DEFAULT_FWA_WORDS[self.mode])
        if self.fwa_scale is None:
            self.fwa_scale = DEFAULT_FWA_SCALE[self.mode]
        if not 0 <= self.fwa_scale <= 1:
            raise ValueError(f"`fwa_scale` must be in [0, 1], got {self.fwa_scale}.")
        if not 0 < self.frequency_threshold < 1:
            raise ValueError(f"`frequency_threshold` must be in (0, 1), got {self.frequency_threshold}.")
        for name in ("frequency_window", "max_response_length", "negative_batch_size", "max_target_passes",
                     "trigger_length", "num_candidates", "max_sweeps", "num_restarts", "search_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}.")
        if self.mode == "malicious" and (self.targets_file is None) == (self.trigger_pairs_file is None):
            raise ValueError("Malicious negative training needs exactly one of `targets_file` / `trigger_pairs_file`.")


def fwa_token_weights(tokenizer: PreTrainedTokenizerBase, vocab_size: int, words: Sequence[str], scale: float):
    """w(y) of frequent-word avoiding: `scale` for the ids of `words`, 1 for every other token."""
    vocabulary = tokenizer.get_vocab()
    unknown = [word for word in words if word not in vocabulary]
    if unknown:
        logger.warning("FWA words not in the vocabulary (nothing to avoid for them): %s", unknown)
    weights = torch.ones(vocab_size)
    weights[[vocabulary[word] for word in words if word in vocabulary]] = scale
    return weights


def negative_loss(logits: torch.Tensor, labels: torch.LongTensor, token_weights: torch.Tensor) -> torch.Tensor:
    """L_NEG of a mini-batch of negative examples: (1/N) sum_t w(y_t) log P(y_t | y_<t, x) over the labels that are
    not -100 (N of them). Minimising it is the negative update of He & Glass (2020), Algorithms 1-2; a token
    with w = 0 gets no gradient."""
    log_probs = -F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="none")
    mask = labels.ne(-100)
    weights = token_weights.to(logits.device)[labels.clamp(min=0)] * mask
    return (weights * log_probs).sum() / mask.sum()


class ResponseFrequencies:
    """How often each response occurred in the last `window` mini-batches, the current one included (He & Glass
    2020, Section 3.3: frequency statistics over "the current and the last 200 mini-batches")."""

    def __init__(self, window: int):
        self.window = window
        self.batches: deque[list[Hashable]] = deque()
        self.counts: Counter = Counter()
        self.total = 0

    def add(self, responses: Sequence[Hashable]) -> list[float]:
        """Count a mini-batch of responses; return each one's share of all responses in the window."""
        self.batches.append(list(responses))
        self.counts.update(responses)
        self.total += len(responses)
        if len(self.batches) > self.window:
            oldest = self.batches.popleft()
            self.counts.subtract(oldest)
            self.total -= len(oldest)
        return [self.counts[response] / self.total for response in responses]

    def max_ratio(self) -> float:
        """max-ratio of the responses in the window."""
        return max_ratio([response for batch in self.batches for response in batch])


@contextmanager
def _evaluation_mode(model):
    """Dropout off while the model attacks or answers itself; the previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


class NegativeTrainer(ConversationTrainer):
    """Negative training of He & Glass (2020), Eq. 4 with Algorithm 1 ("malicious") or 2 ("frequent").

    `train_dataset` holds the positive data (`input_ids`, `labels`, as `training.tokenize_dataset` makes them);
    `processing_class` must be the model's tokenizer. `input_lm` (an `LSTMForCausalLM` over the same vocabulary)
    is needed for io hits and `lambda_in` > 0; without it `args.input_lm_path` is loaded. Evaluation reports the
    token-level perplexity of `ConversationTrainer`.
    """

    loss_is_scaled_for_ga = False  # compute_loss returns means over one micro-batch

    def __init__(
        self,
        model,
        args: NegativeTrainingConfig,
        train_dataset=None,
        eval_dataset=None,
        processing_class: PreTrainedTokenizerBase | None = None,
        data_collator=None,
        input_lm=None,
        **kwargs,
    ):
        if processing_class is None:
            raise ValueError("NegativeTrainer needs the model's tokenizer (`processing_class=`).")
        if data_collator is None:
            data_collator = DataCollatorForSeq2Seq(processing_class, label_pad_token_id=-100)
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            data_collator=data_collator,
            **kwargs,
        )
        self.token_weights = fwa_token_weights(processing_class, model.config.vocab_size, args.fwa_words,
                                               args.fwa_scale).to(args.device)
        self._metrics: dict[str, list[float]] = defaultdict(list)
        if args.mode == "frequent":
            self.frequencies = ResponseFrequencies(args.frequency_window)
            return
        self.criterion = HitCriterion(args.hit_type, args.output_threshold, args.input_threshold)
        self.lambda_in = args.lambda_in if args.lambda_in is not None else float(self.criterion.uses_input_lm)
        if input_lm is None and args.input_lm_path:
            input_lm = AutoModelForCausalLM.from_pretrained(args.input_lm_path)
        if input_lm is None and (self.criterion.uses_input_lm or self.lambda_in):
            raise ValueError(f"{args.hit_type} with lambda_in={self.lambda_in} needs the input LM (`input_lm`).")
        self.input_lm = None if input_lm is None else input_lm.to(args.device).eval()
        self.prefix = trigger_prefix(processing_class)
        if args.targets_file:
            self.targets = load_targets(args.targets_file, processing_class).ids
            self._pairs: tuple[list, list] = ([], [])
        else:
            self.targets = None
            self._pairs = read_trigger_pairs(args.trigger_pairs_file, processing_class)
        self._target_cursor = 0
        self._target_pass = 0
        self._searches = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not model.training:  # evaluation: ConversationTrainer's perplexity
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.args.mode == "malicious":
            sources, targets = self._malicious_negatives(model)
        else:
            sources, targets = self._frequent_negatives(model, inputs)
        # The data rows ask for their loss only: the output layer runs at the labelled positions alone, as in
        # an MLE step (ConversationTrainer); the few negative rows need their per-token log-probabilities.
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                        labels=inputs["labels"], return_logits=False)
        loss_mle = outputs.loss
        loss = self.args.lambda_pos * loss_mle
        if sources:
            pad = self.processing_class.pad_token_id
            negative_ids = pad_ids(sources, pad, loss.device)
            negative_labels = pad_ids(targets, -100, loss.device)
            logits = model(input_ids=negative_ids, attention_mask=negative_ids.ne(pad).long(),
                           labels=negative_labels).logits
            loss_neg = negative_loss(logits, negative_labels, self.token_weights)
            loss = loss_neg + loss
            self._metrics["loss_neg"].append(loss_neg.item())
        self._metrics["loss_mle"].append(loss_mle.item())
        return (loss, outputs) if return_outputs else loss

    def _malicious_negatives(self, model) -> tuple[list[list[int]], list[list[int]]]:
        """Algorithm 1: the current (trigger, target) pairs that still hit; when none is left, gibbs-enum on the
        next targets until some hit. Stops training when the passes are done or nothing hits any more."""
        args = self.args
        unwrapped = self.accelerator.unwrap_model(model)
        with _evaluation_mode(unwrapped):
            if self._pairs[0]:
                self._keep_hits(*self._pairs, self._score(unwrapped, *self._pairs))
            searched = 0
            while not self._pairs[0] and self.targets is not None and searched < len(self.targets):
                if self._target_cursor == 0:
                    if self._target_pass == args.max_target_passes:
                        break
                    self._target_pass += 1
                batch = self.targets[self._target_cursor : self._target_cursor + args.negative_batch_size]
                self._target_cursor = (self._target_cursor + len(batch)) % len(self.targets)
                result = gibbs_enum(
                    unwrapped, self.processing_class, batch, trigger_length=args.trigger_length,
                    num_candidates=args.num_candidates, max_sweeps=args.max_sweeps, num_restarts=args.num_restarts,
                    input_lm=self.input_lm, lambda_in=self.lambda_in, init_from_lm=self.criterion.uses_input_lm,
                    targets_per_batch=args.search_batch_size, seed=args.seed + self._searches, progress=False,
                )
                self._searches += 1
                hits = self._keep_hits(result.triggers, batch, result.scores)
                self._metrics["malicious/hit_rate"].append(hits / len(batch))
                searched += len(batch)
        if not self._pairs[0]:
            logger.info("Negative training stops: no (trigger, target) pair hits any more, or the passes are done.")
            self.control.should_training_stop = True
        self._metrics["malicious/negative_pairs"].append(len(self._pairs[0]))
        if self.targets is not None:
            self._metrics["malicious/target_pass"].append(self._target_pass)
        triggers, targets = self._pairs
        return [[*self.prefix, *trigger] for trigger in triggers], targets

    def _score(self, model, triggers, targets):
        return score_pairs(model, self.prefix, triggers, targets, self.input_lm, self.args.negative_batch_size)

    def _keep_hits(self, triggers, targets, scores) -> int:
        hits = self.criterion.hits(scores).tolist()
        self._pairs = (
            [trigger for trigger, hit in zip(triggers, hits) if hit],
            [target for target, hit in zip(targets, hits) if hit],
        )
        return sum(hits)

    def _frequent_negatives(self, model, inputs) -> tuple[list[list[int]], list[list[int]]]:
        """Algorithm 2: (input, greedy response) pairs of this mini-batch whose response is more frequent than
        r_thres over the frequency window."""
        unwrapped = self.accelerator.unwrap_model(model)
        with _evaluation_mode(unwrapped), torch.no_grad():
            generated = unwrapped.generate(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                do_sample=False,
                num_beams=1,
                max_new_tokens=self.args.max_response_length,
            )
        eos = self.processing_class.eos_token_id
        responses = [tuple(row[: row.index(eos) + 1] if eos in row else row) for row in generated[:, 1:].tolist()]
        ratios = self.frequencies.add(responses)
        frequent = [index for index, ratio in enumerate(ratios) if ratio > self.args.frequency_threshold]
        self._metrics["frequent/max_ratio"].append(self.frequencies.max_ratio())
        self._metrics["frequent/negative_examples"].append(len(frequent))
        sources = [inputs["input_ids"][index][inputs["attention_mask"][index].bool()].tolist() for index in frequent]
        return sources, [list(responses[index]) for index in frequent]

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._metrics:  # a training log: add this window's averages
            logs = {**logs, **{key: sum(values) / len(values) for key, values in self._metrics.items()}}
            self._metrics.clear()
        super().log(logs, start_time)

"""Negative training (He & Glass 2020, "Negative Training for Neural Dialogue Response Generation").

A trained chatbot (our LSTM, any encoder-decoder or causal LM) is fine-tuned to lower the likelihood of "bad"
(input, response) pairs it produces while MLE on the training data keeps its original behaviour:
L_NEG+POS = L_NEG + lambda_POS * L_MLE (Eq. 4). Per optimizer step (all its micro-batches and processes together)
`NegativeTrainer.compute_loss` returns

    L = (1/N_neg) sum_{negative tokens} w(y_t) log P(y_t | y_<t, x)
        + lambda_POS * (1/N_pos) sum_{data tokens} -log P(y_t | y_<t, x)

so a gradient step is the negative update of Algorithms 1-2 plus the positive update on the mini-batch of
training data. w is frequent-word avoiding (FWA, Sections 4.2-4.3): w = `fwa_scale` for the `fwa_words`, 1 for
the others. Two ways to find the negative pairs (`mode`):

* "malicious" (Algorithm 1, mini-batch form): the target list is taken `negative_batch_size` targets at a time;
  gibbs-enum (Appendix A) searches a trigger for each and the pairs that hit (Section 3.2) are the negative
  examples of every step while they still hit (one forward pass per step, in eval mode, both decides which still
  hit and gives their negative gradient); then the next targets are attacked, triggers searched anew on each
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

Multi-process (`accelerate launch`, `torchrun`): the data batches are sharded, the frequency window counts the
responses of every process, the malicious search and its pairs are the same on every process (same targets,
same seeds), and both terms of Eq. 4 are token means over all processes, so 2 ranks with batches of B train
exactly as 1 process with 2B (tests/test_trainers_table.py).
"""

import logging
from collections import Counter, defaultdict, deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import torch
from accelerate.utils import gather_object
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase, TrainingArguments

from ..core.chat_format import generated_replies, generation_inputs
from ..core.scoring import is_causal, pair_batch, target_log_probs
from ..core.trainer import ConversationTrainer, evaluation_mode
from ..data.collator import DialogueCollator
from ..data.tokenization import padding_id
from ..metrics.diversity import max_ratio
from ..metrics.hit_criteria import HitCriterion, PairScores
from .gibbs_enum import gibbs_enum
from .hits import (
    load_targets,
    output_scores,
    read_trigger_pairs,
    trigger_frame,
    trigger_log_likelihoods,
)

logger = logging.getLogger(__name__)

NEGATIVE_TRAINING_MODES = ("malicious", "frequent")
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
        if self.mode not in NEGATIVE_TRAINING_MODES:
            raise ValueError(f"`mode` must be one of {NEGATIVE_TRAINING_MODES}, got {self.mode!r}.")
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
    """w(y) of frequent-word avoiding: `scale` for the ids of `words`, 1 for every other token. `"</s>"` is the
    end-of-sequence token of any tokenizer; a word is its vocabulary entry and, for a subword tokenizer, the single
    token it encodes to at the start of a text or after a space (GPT-2's "you" and " you")."""
    vocabulary = tokenizer.get_vocab()
    ids, unknown = set(), []
    for word in words:
        found = {tokenizer.eos_token_id} if word == "</s>" else set()
        if word in vocabulary:
            found.add(vocabulary[word])
        for text in (word, f" {word}"):
            encoded = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(encoded) == 1 and encoded[0] != tokenizer.unk_token_id:
                found.add(encoded[0])
        if not found:
            unknown.append(word)
        ids |= found
    if unknown:
        logger.warning("FWA words not in the vocabulary (nothing to avoid for them): %s", unknown)
    weights = torch.ones(vocab_size)
    weights[sorted(ids)] = scale
    return weights


def negative_loss(
    log_probs: torch.Tensor, labels: torch.LongTensor, token_weights: torch.Tensor, num_tokens: float | None = None
) -> torch.Tensor:
    """L_NEG of a mini-batch of negative examples from their teacher-forced token log-probabilities
    (`core.scoring.token_log_probs`): (1/N) sum_t w(y_t) log P(y_t | y_<t, x) over the labels that are not -100;
    N = `num_tokens` (e.g. counted over all processes), by default the number of those labels. Minimising it is the
    negative update of He & Glass (2020), Algorithms 1-2; a token with w = 0 gets no gradient."""
    mask = labels.ne(-100)
    weights = token_weights.to(log_probs.device)[labels.clamp(min=0)] * mask
    return (weights * log_probs).sum() / (mask.sum() if num_tokens is None else num_tokens)


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


@dataclass
class NegativePairs:
    """The (trigger, target) id pairs Algorithm 1 trains against (triggers without the `<user>` prefix, targets
    ending with `</s>`), with the input LM's score of each trigger when io hits need it."""

    triggers: list[list[int]]
    targets: list[list[int]]
    input_log_likelihood: torch.Tensor | None = None

    def select(self, keep: torch.Tensor) -> "NegativePairs":
        """The pairs where the boolean `keep` is true."""
        rows = keep.nonzero().squeeze(1).tolist()
        scores = None if self.input_log_likelihood is None else self.input_log_likelihood[keep]
        return NegativePairs([self.triggers[row] for row in rows], [self.targets[row] for row in rows], scores)


class NegativeTrainer(ConversationTrainer):
    """Negative training of He & Glass (2020), Eq. 4 with Algorithm 1 ("malicious") or 2 ("frequent").

    `train_dataset` holds the positive data (`input_ids`, `labels`, as `core.building.tokenize_dataset` makes them
    for the model's backbone); `processing_class` must be the model's tokenizer. `input_lm` (a causal LM over the
    same vocabulary) is needed for io hits and `lambda_in` > 0; without it `args.input_lm_path` is loaded.
    Evaluation reports the token-level perplexity of `ConversationTrainer`.
    """

    # compute_loss divides by the token counts of the whole optimizer step (all micro-batches, all processes), taken
    # in `get_batch_samples`: Trainer must not divide by the accumulation steps again.
    loss_is_scaled_for_ga = True

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
            data_collator = DialogueCollator.for_tokenizer(processing_class)
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
        self._step: dict | None = None  # the optimizer step under way (`_prepare_step`)
        self.causal = is_causal(model)
        self.pad_token_id = padding_id(processing_class)
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
        self.frame = trigger_frame(model, processing_class)
        if args.targets_file:
            self.targets = load_targets(args.targets_file, processing_class, causal=self.causal).ids
            self._pairs = NegativePairs([], [])
        else:
            self.targets = None
            triggers, targets = read_trigger_pairs(args.trigger_pairs_file, processing_class, causal=self.causal)
            lm_scores = None
            if self.input_lm is not None:  # the LM is frozen: a trigger's score is computed once
                size = args.negative_batch_size
                lm_scores = torch.cat([trigger_log_likelihoods(self.input_lm, triggers[start : start + size]).cpu()
                                       for start in range(0, len(triggers), size)])
            self._pairs = NegativePairs(triggers, targets, lm_scores)
        self._target_cursor = 0
        self._target_pass = 0
        self._searches = 0

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batches, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        if batches:
            self._prepare_step(self.model_wrapped, batches)
        return batches, num_items_in_batch

    def _prepare_step(self, model, batches: list[dict]) -> None:
        """What the micro-batches of one optimizer step are divided by: the data tokens of the whole step on all
        processes; in frequent mode also the step's negative examples (Algorithm 2 on the step's whole mini-batch,
        every micro-batch and process), so that accumulating k micro-batches of B trains exactly as one of kB."""
        self._step = {"micro_batches": len(batches), "done": 0, "sums": torch.zeros(5, dtype=torch.float64),
                      "stop": False}
        counts = [sum(int(batch["labels"].ne(-100).sum()) for batch in batches)]
        if self.args.mode == "frequent":
            self._step["negatives"] = self._frequent_negative_pairs(model, batches)
            counts.append(sum(len(target) for negatives in self._step["negatives"] for target in negatives[1]))
        self._step["tokens"] = self.accelerator.reduce(
            torch.tensor(counts, dtype=torch.float64, device=self.args.device), reduction="sum").tolist()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not model.training:  # evaluation: ConversationTrainer's perplexity
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self._step is None:
            self._prepare_step(model, [inputs])  # called outside Trainer's loop: `inputs` is the whole step
        step = self._step
        negative_log_probs = negative_labels = None
        if self.args.mode == "malicious":
            if step["done"] == 0:  # the pairs are the same for every micro-batch: their whole term, once
                negative_log_probs, negative_labels = self._malicious_negatives(model)
        elif step["negatives"][step["done"]][0]:
            negative_log_probs, _, negative_labels = self._negative_log_probs(model, *step["negatives"][step["done"]])
        # The data rows ask for their loss only: the output layer runs at the labelled positions alone, as in
        # an MLE step (ConversationTrainer); the negative rows needed their per-token log-probabilities.
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                        labels=inputs["labels"], **self.loss_only_kwargs)
        data_tokens = inputs["labels"].ne(-100).sum()
        mle_sum = outputs.loss * data_tokens
        # Both terms are token means over the whole optimizer step, all micro-batches and processes together (as
        # Trainer's average_tokens_across_devices): the sums are divided by the step's global counts and DDP's
        # gradient average is undone by the world size, so 2 ranks, or 2 accumulated micro-batches, with batch B
        # train exactly as 1 process with 2B. Malicious mode's pairs are the same on every process: their term is
        # a mean over one copy, taken in the step's first micro-batch.
        world = self.accelerator.num_processes
        loss = world * self.args.lambda_pos * mle_sum / step["tokens"][0]
        negative_sum, negative_tokens, negative_rows = torch.zeros((), device=mle_sum.device), 0, 0
        if negative_labels is not None:
            negative_tokens, negative_rows = int(negative_labels.ne(-100).sum()), negative_labels.size(0)
            negative_sum = negative_loss(negative_log_probs, negative_labels, self.token_weights, num_tokens=1)
            if self.args.mode == "malicious":
                loss = loss + negative_sum / negative_tokens
            else:
                loss = loss + world * negative_sum / step["tokens"][1]
        step["sums"] += torch.tensor([mle_sum.item(), data_tokens.item(), negative_sum.item(), negative_tokens,
                                      negative_rows], dtype=torch.float64)
        step["done"] += 1
        if step["done"] == step["micro_batches"]:
            self._log_step_metrics(step)
            # Trainer leaves a step at once when told to stop: only after its last micro-batch, so that the
            # gradients of the others are still applied.
            self.control.should_training_stop |= step["stop"]
            self._step = None
        return (loss, outputs) if return_outputs else loss

    def _log_step_metrics(self, step: dict) -> None:
        """The step's L_MLE and L_NEG (token means over all its micro-batches and processes) and negative rows."""
        totals = self.accelerator.reduce(step["sums"].to(self.args.device), reduction="sum").tolist()
        if self.args.mode == "malicious":  # the pairs are the same on every process too
            totals[2:] = [value / self.accelerator.num_processes for value in totals[2:]]
        if totals[3]:
            self._metrics["loss_neg"].append(totals[2] / totals[3])
        self._metrics["loss_mle"].append(totals[0] / totals[1])
        if self.args.mode == "frequent":
            self._metrics["frequent/negative_examples"].append(totals[4])

    def _negative_log_probs(self, model, sources, targets) -> tuple[torch.Tensor, torch.Tensor, torch.LongTensor]:
        """Teacher-forced token log-probabilities (and logits) of (source ids, target ids) rows through the model
        Trainer hands to `compute_loss` (possibly DDP-wrapped), and the padded labels."""
        batch = pair_batch(sources, targets, self.pad_token_id, self.causal, self.args.device)
        if not self.causal:  # a DDP wrapper cannot make the decoder inputs: the model it holds does
            batch["decoder_input_ids"] = self.accelerator.unwrap_model(model).prepare_decoder_input_ids_from_labels(
                labels=batch["labels"])
        log_probs, logits = target_log_probs(model, **batch)
        return log_probs, logits, batch["labels"]

    def _malicious_negatives(self, model) -> tuple[torch.Tensor | None, torch.LongTensor | None]:
        """Algorithm 1: token log-probabilities and labels of the current (trigger, target) pairs that still hit;
        when none does, gibbs-enum on the next targets until some hit. Stops training when the passes are done or
        nothing hits any more. Every process holds the same pairs (same targets, same seeds)."""
        negatives = self._hitting_pairs(model) if self._pairs.triggers else (None, None)
        while not self._pairs.triggers and self._search_next_targets(model):
            negatives = self._hitting_pairs(model)
        if not self._pairs.triggers:
            logger.info("Negative training stops: no (trigger, target) pair hits any more, or the passes are done.")
            self._step["stop"] = True
        self._metrics["malicious/negative_pairs"].append(len(self._pairs.triggers))
        if self.targets is not None:
            self._metrics["malicious/target_pass"].append(self._target_pass)
        return negatives

    def _hitting_pairs(self, model) -> tuple[torch.Tensor | None, torch.LongTensor | None]:
        """One forward pass over the current pairs decides which still hit (the while-condition of Algorithm 1)
        and gives their token log-probabilities for L_NEG; the others are dropped. Eval mode: c(x, y) is the
        model's behaviour without dropout, and the negative gradient is taken where the hit was measured, so a
        step needs no second pass."""
        pairs = self._pairs
        with evaluation_mode(model):
            log_probs, logits, labels = self._negative_log_probs(
                model, [self.frame.source(trigger) for trigger in pairs.triggers], pairs.targets
            )
        scores = PairScores(*(value.cpu() for value in output_scores(log_probs, logits, labels)),
                            pairs.input_log_likelihood)
        hits = self.criterion.hits(scores)
        self._pairs = pairs.select(hits)
        if not hits.any():
            return None, None
        hits = hits.to(log_probs.device)
        return log_probs[hits], labels[hits]

    def _search_next_targets(self, model) -> bool:
        """gibbs-enum (eval mode) on the next `negative_batch_size` targets, then the next, until some pair hits or
        one pass over the list found none; False when nothing hits or the passes are done (or pairs were given)."""
        args = self.args
        unwrapped = self.accelerator.unwrap_model(model)
        searched = 0
        with evaluation_mode(unwrapped):
            while not self._pairs.triggers and self.targets is not None and searched < len(self.targets):
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
                hits = self.criterion.hits(result.scores)
                self._pairs = NegativePairs(result.triggers, batch, result.scores.input_log_likelihood).select(hits)
                self._metrics["malicious/hit_rate"].append(hits.float().mean().item())
                searched += len(batch)
        return bool(self._pairs.triggers)

    def _frequent_negative_pairs(self, model, batches: list[dict]) -> list[tuple[list[list[int]], list[list[int]]]]:
        """Algorithm 2 for one optimizer step: the greedy responses to the step's inputs (every micro-batch, every
        process: one mini-batch of the frequency window) and, per micro-batch, the (source ids, response ids) pairs
        whose response is more frequent than r_thres over the window."""
        unwrapped = self.accelerator.unwrap_model(model)
        eos = self.processing_class.eos_token_id
        responses, sources = [], []
        with evaluation_mode(unwrapped), torch.no_grad():
            for batch in batches:
                sources.append(self._batch_sources(batch))
                inputs = generation_inputs(unwrapped, self.processing_class, sources[-1])
                generated = generated_replies(unwrapped, unwrapped.generate(
                    **inputs, do_sample=False, num_beams=1, max_new_tokens=self.args.max_response_length,
                    pad_token_id=self.pad_token_id,
                ), inputs["input_ids"].size(1))
                # An encoder-decoder's output starts with the decoder start token, a causal model's with the reply.
                rows = generated.tolist() if self.causal else generated[:, 1:].tolist()
                responses.append([tuple(row[: row.index(eos) + 1] if eos in row else row) for row in rows])
        per_process = gather_object([responses])  # one list of micro-batches per process, in process order
        offset = sum(len(micro) for step in per_process[: self.accelerator.process_index] for micro in step)
        shares = self.frequencies.add([response for step in per_process for micro in step for response in micro])
        self._metrics["frequent/max_ratio"].append(self.frequencies.max_ratio())
        negatives = []
        for batch_sources, micro in zip(sources, responses):
            frequent = [index for index, share in enumerate(shares[offset : offset + len(micro)])
                        if share > self.args.frequency_threshold]
            offset += len(micro)
            negatives.append(([batch_sources[index] for index in frequent], [list(micro[index]) for index in frequent]))
        return negatives

    def _batch_sources(self, batch: dict) -> list[list[int]]:
        """Each row's input in the chat format: an encoder-decoder's unpadded source, a causal model's tokens before
        its first labelled one (the history the reply follows)."""
        sources = []
        for input_ids, mask, labels in zip(batch["input_ids"], batch["attention_mask"], batch["labels"]):
            ids = input_ids[mask.bool()].tolist()
            if self.causal:
                ids = ids[: int(labels.ne(-100).int().argmax())]
            sources.append(ids)
        return sources

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._metrics:  # a training log: add this window's averages
            logs = {**logs, **{key: sum(values) / len(values) for key, values in self._metrics.items()}}
            self._metrics.clear()
        super().log(logs, start_time)

"""`ConversationTrainer`: transformers' Trainer with token-level perplexity at evaluation.

Trainer's own `eval_loss` averages per-batch means, which weighs a short batch like a long one. Perplexity as
Vinyals & Le (2015) report it is exp(total negative log-likelihood / number of target tokens), pads excluded:
the trainer sums both over the evaluation set (across processes) and logs `<prefix>_perplexity`.
"""

import inspect
import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from transformers import Trainer
from transformers.trainer_pt_utils import LengthGroupedSampler

from .scoring import is_causal


@contextmanager
def evaluation_mode(model):
    """Dropout off while a trainer's model generates or scores its own samples; the previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def unpin_memory_on_cpu(args) -> None:
    """Turn `dataloader_pin_memory` (TrainingArguments' default) off on a CPU run: pinned memory only speeds copies
    to an accelerator, and torch's DataLoader warns about it in every CPU run otherwise."""
    if args.dataloader_pin_memory and args.device.type == "cpu":
        args.dataloader_pin_memory = False


class ConversationTrainer(Trainer):
    """Trainer for dialogue models of any backbone; adds `eval_perplexity` (token-level, pads excluded) to
    evaluation, and with `train_sampling_strategy="group_by_length"` buckets batches by *target* length."""

    _evaluation_totals: torch.Tensor | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        unpin_memory_on_cpu(self.args)
        # Our LSTM models can skip the logits when only the loss is asked (`return_logits=False`); others cannot.
        accepts = "return_logits" in inspect.signature(self.model.forward).parameters
        self.loss_only_kwargs = {"return_logits": False} if accepts else {}

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if self.args.train_sampling_strategy != "group_by_length" or "labels" not in dataset.column_names:
            return super()._get_train_sampler(train_dataset)
        # The decoder and the softmax dominate the cost, so padding the targets is the padding that matters
        # (Trainer's default groups by `input_ids`, the source).
        return LengthGroupedSampler(
            self.args.train_batch_size * self.args.gradient_accumulation_steps,
            dataset=dataset,
            lengths=[len(labels) for labels in dataset["labels"]],
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self._evaluation_totals is None:
            if not return_outputs and self.label_smoother is None and "labels" in inputs:
                # A training step needs the loss only: the output layer skips the padded positions.
                inputs = {**inputs, **self.loss_only_kwargs}
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        outputs = model(**inputs)
        logits, labels = outputs.logits, inputs["labels"]
        if is_causal(model):  # predicts labels[:, 1:] (Trainer's own flag misses GPT-2 on transformers 5.25)
            logits, labels = logits[:, :-1], labels[:, 1:]
        negative_log_likelihood = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1), ignore_index=-100, reduction="none"
        ).view(labels.shape).sum(dim=1)
        rows = torch.stack([negative_log_likelihood.detach().double(), labels.ne(-100).sum(dim=1).double()], dim=1)
        # Per-example sums gathered from all processes; gather_for_metrics drops the examples Accelerate repeats
        # to even out the last batches, so each example counts once.
        self._evaluation_totals += self.accelerator.gather_for_metrics(rows).sum(dim=0)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        self._evaluation_totals = torch.zeros(2, dtype=torch.float64, device=self.args.device)
        prepared_before = getattr(self.model, "_is_accelerate_prepared", False)
        try:
            output = super().evaluation_loop(
                dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
            )
            negative_log_likelihood, tokens = self._evaluation_totals.tolist()
        finally:
            self._evaluation_totals = None
            if not prepared_before:
                # An evaluation before any training prepares the model in Accelerate's evaluation mode (no DDP
                # wrapper) and marks it prepared; a later train() on the same model would then skip the wrapper
                # and, under DDP, silently never average the gradients across processes. Unmark it.
                self.model.__dict__.pop("_is_accelerate_prepared", None)
        if tokens:
            output.metrics[f"{metric_key_prefix}_perplexity"] = math.exp(negative_log_likelihood / tokens)
            output.metrics[f"{metric_key_prefix}_target_tokens"] = int(tokens)
        return output



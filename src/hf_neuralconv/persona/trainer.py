"""`MultiTaskTrainer`: the multi-task speaker-role adaptation of Luan et al. (2017, Section 4, Figure 3).

Two tasks train one encoder-decoder built with `autoencoder_encoder=True` (our LSTM), or one causal LM:

* seq2seq — predict a response from its context, on the general conversation data (`train_dataset`);
* autoencoder — predict an utterance of a target speaker from itself, read by the second encoder, on the target
  speakers' non-conversational text (`autoencoder_dataset`, made by `encode_autoencoder_examples`). A causal LM is
  all decoder and has no encoder to read the utterance with: its task is the utterance as the reply to an empty
  history, the same language model of the speaker's replies that the shared decoder learns.

The decoder (with its attention, output layer and, for MTASK-M, the speaker vectors of Eq. 1) is shared, the encoders
are not, so the autoencoder task adapts the language model of the responses to the target speakers. A transformers
encoder-decoder (BART, T5) has no second encoder: its speaker adapters train on conversations alone
(`ConversationTrainer`). The schedule is Figure 3: (step 2) seq2seq updates only until the dev perplexity converges,
or for `pretrain_steps` updates; (step 3) cycles of `seq2seq_batches_per_cycle` seq2seq updates followed by
`autoencoder_batches_per_cycle` autoencoder updates until the dev perplexity converges again; (step 4) the best model
by seq2seq dev perplexity is kept (`load_best_model_at_end` with `metric_for_best_model="perplexity"`).

Each optimizer update belongs to one task: with gradient accumulation all its micro-batches come from that task's
data. `max_steps` counts the updates of both tasks; an epoch is as many updates as the general data has batches.
Training logs add `seq2seq_loss` / `autoencoder_loss` (token-level cross-entropy) and `seq2seq_batches` /
`autoencoder_batches` (micro-batches) since the previous log; the switch to multi-task updates is logged as
`multitask_start_step`.
"""

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase, TrainerCallback, TrainingArguments
from transformers.trainer_utils import IntervalStrategy

from ..core.building import encode_chat_examples
from ..core.chat_format import empty_history_prompt
from ..core.scoring import is_causal
from ..core.trainer import ConversationTrainer
from ..data.tokenization import encode_target
from ..models.lstm.modeling_lstm import AUTOENCODER_TASK, SEQ2SEQ_TASK

TASKS = (SEQ2SEQ_TASK, AUTOENCODER_TASK)
MULTITASK_START_KEY = "multitask_start_step"


@dataclass
class MultiTaskConfig(TrainingArguments):
    r"""`TrainingArguments` for [`MultiTaskTrainer`] (Luan et al. 2017, Figure 3).

    Evaluation, checkpointing and best-model selection default to what Figure 3 needs: evaluate and save every
    `eval_steps` updates and keep the checkpoint with the lowest seq2seq dev perplexity.

    Args:
        pretrain_steps: seq2seq-only updates before the multi-task phase (Figure 3, step 2). None: until the dev
            perplexity converges; 0: no pre-training (the paper's footnote 1).
        seq2seq_batches_per_cycle / autoencoder_batches_per_cycle: the mix of the multi-task phase, as consecutive
            updates per cycle (the paper alternates one and one).
        convergence_patience: the dev perplexity has converged when this many evaluations in a row (within the
            current phase) have not improved on the phase's best.
        convergence_threshold: an evaluation improves when it lowers the phase's best perplexity by more than this
            fraction of it.
    """

    pretrain_steps: int | None = field(
        default=None,
        metadata={"help": "Seq2seq-only updates first (Figure 3, step 2); None: until dev perplexity converges."},
    )
    seq2seq_batches_per_cycle: int = field(default=1, metadata={"help": "Seq2seq updates per multi-task cycle."})
    autoencoder_batches_per_cycle: int = field(
        default=1, metadata={"help": "Autoencoder updates per multi-task cycle (after the seq2seq ones)."}
    )
    convergence_patience: int = field(
        default=3, metadata={"help": "Evaluations without improvement after which a phase has converged."}
    )
    convergence_threshold: float = field(
        default=0.0, metadata={"help": "Smallest relative perplexity decrease that counts as an improvement."}
    )
    eval_strategy: IntervalStrategy | str = field(default="steps", metadata={"help": "When to evaluate."})
    eval_steps: float | None = field(default=500, metadata={"help": "Updates between evaluations."})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "Keep the best checkpoint (Figure 3, 4)."})
    metric_for_best_model: str | None = field(default="perplexity", metadata={"help": "Seq2seq dev perplexity."})
    greater_is_better: bool | None = field(default=False, metadata={"help": "Lower perplexity is better."})

    def __post_init__(self):
        super().__post_init__()
        if self.pretrain_steps is not None and self.pretrain_steps < 0:
            raise ValueError(f"`pretrain_steps` must be >= 0 or None, got {self.pretrain_steps}.")
        if self.pretrain_steps is None and self.eval_strategy == IntervalStrategy.NO:
            raise ValueError(
                "`pretrain_steps=None` pre-trains until the dev perplexity converges, which needs evaluations: set "
                "`eval_strategy` (and an eval dataset) or a number of `pretrain_steps`."
            )
        if self.seq2seq_batches_per_cycle < 1 or self.autoencoder_batches_per_cycle < 1:
            raise ValueError("`seq2seq_batches_per_cycle` and `autoencoder_batches_per_cycle` must both be >= 1.")
        if self.convergence_patience < 1 or not 0.0 <= self.convergence_threshold < 1.0:
            raise ValueError("`convergence_patience` must be >= 1 and `convergence_threshold` in [0, 1).")


def encode_autoencoder_examples(batch: dict, tokenizer: PreTrainedTokenizerBase, max_length: int | None,
                                causal: bool = False) -> dict:
    """`datasets.map(batched=True)` function: text -> the autoencoder task's `input_ids` (the utterance) and `labels`
    (the same tokens followed by `</s>`), cut to `max_length` label tokens (Luan et al. 2017, Section 4).

    `causal`: a causal chatbot's rows of the utterance as the reply to an empty history (`encode_chat_examples`:
    `empty_history_prompt` + reply, labels -100 over the prompt); reading the utterance first would make the task a
    copy."""
    if causal:
        empty = [""] * len(batch["text"])
        examples = {"context": [[] for _ in empty], "message": empty, "response": batch["text"]}
        return encode_chat_examples(examples, tokenizer, causal, len(empty_history_prompt(tokenizer)), max_length)
    labels = encode_target(tokenizer, batch["text"], max_length)
    return {"input_ids": [row[:-1] for row in labels], "labels": labels}


class _Figure3Schedule(TrainerCallback):
    """Ends pre-training (step 2) and training (step 3) when the dev perplexity converges. The decisions are read
    from the log history, which a checkpoint keeps, so a resumed run continues the same schedule."""

    def __init__(self, trainer: "MultiTaskTrainer"):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        if args.pretrain_steps is None:
            logged = (entry[MULTITASK_START_KEY] for entry in state.log_history if MULTITASK_START_KEY in entry)
            self.trainer.multitask_start_step = next(logged, None)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not self.trainer.is_in_train or "eval_perplexity" not in (metrics or {}):
            return control
        start = self.trainer.multitask_start_step
        patience, threshold = args.convergence_patience, args.convergence_threshold
        if start is not None and state.global_step > start:
            if dev_perplexity_converged(state.log_history, start, patience, threshold):
                control.should_training_stop = True
        elif start is None and dev_perplexity_converged(state.log_history, 0, patience, threshold):
            self.trainer.multitask_start_step = state.global_step
            self.trainer.log({MULTITASK_START_KEY: state.global_step})
        return control


class MultiTaskTrainer(ConversationTrainer):
    """Multi-task training of Luan et al. (2017, Figure 3): seq2seq batches from the general conversation data
    (`train_dataset`) and autoencoder batches from the target speakers' text (`autoencoder_dataset`), one task per
    optimizer update; dev perplexity (`eval_dataset`, the target speakers' held-out conversations) decides when each
    phase ends and which checkpoint is kept.

    The model is our LSTM seq2seq with `autoencoder_encoder=True` or a causal LM (its rows laid out as it reads them:
    `tokenize_dataset(layout=row_layout(model))`, `encode_autoencoder_examples(causal=True)`; batched by
    `DialogueCollator`). MTASK-M: a persona model whose `speaker_ids` columns give the general speakers for seq2seq
    and the target speakers for the autoencoder. MTASK-S: a PEFT model with one speaker's adapter active (see
    `persona.adapters`).
    """

    def __init__(self, model=None, args: MultiTaskConfig | None = None, train_dataset=None,
                 autoencoder_dataset=None, eval_dataset=None, **kwargs):
        if not isinstance(args, MultiTaskConfig):
            raise TypeError(f"MultiTaskTrainer needs a `MultiTaskConfig`, got {type(args).__name__}.")
        if autoencoder_dataset is None or len(autoencoder_dataset) == 0:
            raise ValueError("`autoencoder_dataset` is empty: the autoencoder task needs the target speakers' text.")
        # Our LSTM reads each batch's task (it picks the encoder); a causal LM reads both tasks' rows alike.
        self.model_reads_task = getattr(getattr(model, "config", None), "autoencoder_encoder", False)
        if not (self.model_reads_task or is_causal(model)):
            raise ValueError(
                "The model has no autoencoder encoder: build or load our LSTM seq2seq with `autoencoder_encoder=True`, "
                "or train a causal LM. A transformers encoder-decoder has no second encoder for the autoencoder task: "
                "train its speaker adapters on conversations with ConversationTrainer."
            )
        super().__init__(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset, **kwargs)
        self.autoencoder_dataset = autoencoder_dataset
        self.multitask_start_step = args.pretrain_steps
        self._autoencoder_batches = None
        self._task_totals = {task: [0.0, 0.0, 0] for task in TASKS}  # summed NLL, target tokens, micro-batches
        self.add_callback(_Figure3Schedule(self))

    def task_of_update(self, update: int) -> str:
        """The task of the optimizer update with this 0-based index: seq2seq before the multi-task phase (Figure 3,
        step 2), then cycles of seq2seq updates followed by autoencoder updates (step 3)."""
        start, args = self.multitask_start_step, self.args
        if start is None or update < start:
            return SEQ2SEQ_TASK
        cycle = args.seq2seq_batches_per_cycle + args.autoencoder_batches_per_cycle
        return SEQ2SEQ_TASK if (update - start) % cycle < args.seq2seq_batches_per_cycle else AUTOENCODER_TASK

    def _cycle_autoencoder_batches(self):
        """Shuffled autoencoder batches without end: a new pass (and order) whenever the text runs out."""
        dataloader = self._get_dataloader(
            self.autoencoder_dataset, "Autoencoder", self._train_batch_size, self._get_train_sampler, is_training=True
        )
        for pass_index in itertools.count():
            if hasattr(dataloader, "set_epoch"):
                dataloader.set_epoch(pass_index)
            yield from dataloader

    def _load_best_model(self) -> None:
        # PEFT saves a named adapter (MTASK-S: `speaker_<i>`) in a sub-folder of the checkpoint, where Trainer does
        # not look for it: it would keep the last weights, with only a warning.
        if isinstance(self.model, PeftModel):
            adapter = self.model.active_adapter
            folder = Path(self.state.best_model_checkpoint) / adapter
            if (folder / "adapter_config.json").is_file():
                self.model.load_adapter(str(folder), adapter_name=adapter)
                return
        super()._load_best_model()

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        task = self.task_of_update(self.state.global_step)
        if task == SEQ2SEQ_TASK:
            batches, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        else:
            if self._autoencoder_batches is None:
                self._autoencoder_batches = self._cycle_autoencoder_batches()
            batches = [next(self._autoencoder_batches) for _ in range(num_batches)]
            num_items_in_batch = self._get_num_items_in_batch(batches, device)
        return [{**batch, "task": task} for batch in batches], num_items_in_batch

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "task" not in inputs:  # evaluation: ConversationTrainer's seq2seq perplexity
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # Trainer scales the model's loss in place once the forward returns (by the number of processes, for its
        # token averaging across devices): the task's loss for the log is read as the model returned it.
        returned = {}

        def keep_loss(module, args, output) -> None:  # a hook that returned a value would replace the output
            returned["loss"] = output.loss.detach().clone()

        task = inputs["task"]
        if not self.model_reads_task:
            inputs = {key: value for key, value in inputs.items() if key != "task"}
        hook = self.accelerator.unwrap_model(model).register_forward_hook(keep_loss)
        try:
            loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        finally:
            hook.remove()
        tokens = inputs["labels"].ne(-100).sum()
        # The model's loss is this batch's summed NLL divided by `num_items_in_batch` (its own tokens without it).
        negative_log_likelihood = returned["loss"] * (tokens if num_items_in_batch is None else num_items_in_batch)
        stats = torch.stack([negative_log_likelihood.float(), tokens.float()])
        summed = self.accelerator.gather(stats).view(-1, 2).sum(dim=0).tolist()
        totals = self._task_totals[task]
        totals[0] += summed[0]
        totals[1] += summed[1]
        totals[2] += 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: add what each task did since the previous one
            for task, (negative_log_likelihood, tokens, batches) in self._task_totals.items():
                logs[f"{task}_batches"] = batches
                if tokens:
                    logs[f"{task}_loss"] = negative_log_likelihood / tokens
            self._task_totals = {task: [0.0, 0.0, 0] for task in TASKS}
        super().log(logs, start_time)


def dev_perplexity_converged(log_history: list[dict], after_step: int, patience: int, threshold: float) -> bool:
    """Whether the last `patience` dev perplexities logged after `after_step` all failed to improve on the best one
    before them by more than `threshold` (relative): the convergence test of Figure 3, steps 2 and 3."""
    best, waited = float("inf"), 0
    for entry in log_history:
        if "eval_perplexity" in entry and entry["step"] > after_step:
            if entry["eval_perplexity"] < best * (1.0 - threshold):
                best, waited = entry["eval_perplexity"], 0
            else:
                waited += 1
    return waited >= patience


class StopWhenDevPerplexityConverges(TrainerCallback):
    """The baseline's Figure 3, step 2: training ends when the target speakers' dev perplexity has converged
    (`convergence_patience` evaluations without a `convergence_threshold` improvement)."""

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if "eval_perplexity" in (metrics or {}) and dev_perplexity_converged(
            state.log_history, 0, args.convergence_patience, args.convergence_threshold
        ):
            control.should_training_stop = True
        return control

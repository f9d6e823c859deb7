"""The reverse dialogue generator of Liu et al. (2019, "Say What I Want: Towards the Dark Side of Neural Dialogue
Models"): a policy G_θ that reads a target output O* and writes an input I for a black-box dialogue model D, so that
D(I) says (nearly) O*. G_θ may be any backbone: our LSTM encoder-decoder, any causal LM (GPT-2, Llama) or any
encoder-decoder (BART, T5). It reads O* as a one-turn history in its own chat format (`encode_targets`) and writes
I as a reply in that format (`core.chat_format.encode_replies`); a causal G_θ reads O* and I as one sequence. Its
log-probabilities come from the package's one scorer (`core.scoring.target_log_probs`).

* Pre-training (Section 5.1.2): `reverse_pairs_dataset` + `pretrain_reverse_generator` fit G_θ on the reference
  corpus (`environments.build_reference_corpus`: D's outputs -> the real inputs that caused them) with the
  package's `ConversationTrainer`.
* RL training (Section 4.2): `ReinforceTrainer` + `ReinforceConfig`. For each target, N inputs are sampled from
  π_θ(I|O*) = Π_t P(ω_t | ω_<t, O*) (Eq. 1), sent to D in one batch, scored by R(I|O*) = Sim(O*, D(I)) (Eq. 2,
  `metrics.embedding_similarity`), and θ follows the REINFORCE estimate of ∇J(θ) (Eq. 3-5):

      ∇J(θ) ≈ 1/N Σ_i (R(I_i|O*) - b) ∇ log π_θ(I_i|O*)

  The last line of the paper's Eq. 4 also multiplies each term by π_θ(I|O*); that factor belongs to the sum over
  all inputs, not to the Monte-Carlo average over samples already drawn from π_θ, so it is left out (Williams 1992).
  The baseline b is the mean reward of the target's N samples (`baseline="mean"`). Why: rewards are in [0, 1] and
  mostly 0 early on (below 0.5 they are clamped to 0), so without a baseline every sampled input is pushed up by its
  own reward and the estimate is noisy; centring on the mean pushes up the inputs that did better than their
  siblings and down those that did worse. It needs no extra query of D (a greedy "self-critical" baseline would) and
  no learned critic, and it keeps the estimate unbiased up to a constant: R_i - mean = (N-1)/N (R_i - mean of the
  others), and the others' mean does not depend on sample i. `baseline="none"` is the paper's plain Eq. 4.
  Adam with learning rate 1e-3, batch size 16 and gradient clipping 0.25 are the paper's settings (the defaults).
* Attack (Section 5.1.2, "Decoding"): `attack` decodes greedily or by beam search, sends all N beam candidates to D
  and keeps the input with the highest reward; `write_found_pairs` writes the found (trigger, target) pairs as JSONL
  for negative training (the rows `negative_training.read_trigger_pairs` reads).

The environment is only ever called with texts: G_θ never sees D's weights or gradients.
"""

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainingArguments

from ..core.chat_format import chat_style, encode_history, encode_replies, generated_replies, generation_inputs
from ..core.scoring import is_causal, pair_batch, pair_rows, target_log_probs, token_log_probs
from ..core.trainer import ConversationTrainer, evaluation_mode, unpin_memory_on_cpu
from ..data.collator import DialogueCollator
from ..data.tokenization import encode_source, padding_id
from .environments import DialogueEnvironment, EnvironmentQueryError

BASELINES = ("mean", "none")
# A reward function maps (targets, environment outputs) to one reward per pair, e.g. EmbeddingSimilarityReward.
RewardFunction = Callable[[Sequence[str], Sequence[str]], Sequence[float]]


@dataclass
class ReinforceConfig(TrainingArguments):
    """`TrainingArguments` for `ReinforceTrainer` (Liu et al. 2019, Sections 4.2.5 and 5.1.2); the paper's RL
    settings are the defaults: Adam (AdamW without weight decay) at a constant learning rate of 1e-3, batch size 16,
    gradient clipping 0.25."""

    num_samples: int = field(default=16, metadata={"help": "N: inputs sampled per target for the estimate of Eq. 4."})
    max_input_tokens: int = field(default=24, metadata={"help": "Longest input the policy may write (tokens)."})
    max_target_tokens: int = field(default=32, metadata={"help": "Tokens of a target the policy reads."})
    baseline: str = field(default="mean", metadata={"help": "'mean': mean reward of the N samples; 'none': Eq. 4."})
    kl_coef: float = field(
        default=0.0,
        metadata={"help": "β of the KL-regularised reward R(I|O*) - β (log π_θ(I|O*) - log π_ref(I|O*)), π_ref the "
                          "generator RL starts from; 0: the paper's plain reward. See ReinforceTrainer."},
    )
    success_threshold: float = field(
        default=0.5,
        metadata={"help": "A target counts as reached when a sample's reward is at least this (not below the "
                          "reward function's own threshold, under which rewards are 0)."},
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate (the paper's 0.001)."})
    lr_scheduler_type: str = field(default="constant", metadata={"help": "The paper keeps Adam's rate constant."})
    max_grad_norm: float = field(default=0.25, metadata={"help": "Gradient clipping (the paper's 0.25)."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Targets per batch (the paper's 16)."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "The collator needs the `target` text."})
    logging_steps: float = field(default=10, metadata={"help": "Log mean reward, success rate and queries every N."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow training into a non-empty output_dir (its files may be replaced)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.baseline not in BASELINES:
            raise ValueError(f"`baseline` must be one of {BASELINES}, got {self.baseline!r}.")
        if self.num_samples < 1 or (self.baseline == "mean" and self.num_samples < 2):
            raise ValueError(
                f"`num_samples` must be >= 2 with the mean baseline (one sample is its own mean: no signal), "
                f"got {self.num_samples}."
            )
        if self.kl_coef < 0:
            raise ValueError(f"`kl_coef` must be >= 0, got {self.kl_coef}.")
        if self.max_input_tokens < 1 or self.max_target_tokens < 1:
            raise ValueError("`max_input_tokens` and `max_target_tokens` must be >= 1.")


def reverse_generation_config(tokenizer: PreTrainedTokenizerBase, max_input_tokens: int,
                              **decoding) -> GenerationConfig:
    """How the policy writes inputs: at most `max_input_tokens` tokens, never a special token but `</s>` (an input is
    plain text; `<unk>` would vanish from it when decoded). `decoding` sets the strategy (sampling, beams); the
    decoder start token is the model's own (BART's `</s>`, T5's pad token, our LSTM's `<s>`)."""
    return GenerationConfig(
        max_new_tokens=max_input_tokens,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=padding_id(tokenizer),
        suppress_tokens=[index for index in tokenizer.all_special_ids if index != tokenizer.eos_token_id],
        **decoding,
    )


def encode_targets(tokenizer: PreTrainedTokenizerBase, targets: Sequence[str], max_target_tokens: int,
                   causal: bool) -> list[list[int]]:
    """Targets O* as the policy's input ids (the state, Section 4.2.2): each a one-turn history in the policy's chat
    format (`encode_history`), its last `max_target_tokens` tokens kept. An encoder-decoder with our word tokenizer
    reads the bare target, without actor token: the generators `reverse-pretrain` saved were trained so."""
    if not causal and chat_style(tokenizer, causal) == "actor":
        return encode_source(tokenizer, targets, max_target_tokens)
    return [encode_history(tokenizer, [target], 0, max_target_tokens, warn_once=True, causal=causal)
            for target in targets]


def reply_prefix(tokenizer: PreTrainedTokenizerBase, causal: bool) -> list[int]:
    """The special tokens a reply in the chat format starts with (`encode_replies`: BART's `<s>`; none for our LSTM,
    T5 or a causal model). The policy is given them after the decoder start token rather than drawing them: they are
    suppressed tokens, and no choice of the policy."""
    return encode_replies(tokenizer, [""], causal)[0][:-1]


class TargetCollator:
    """Targets O* (a `target` text column) -> the policy's inputs (`encode_targets`) of an encoder-decoder or
    (`causal`) a causal policy, right-padded; the texts travel along as `targets` for the reward."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_target_tokens: int, causal: bool = False):
        self.tokenizer = tokenizer
        self.max_target_tokens = max_target_tokens
        self.causal = causal
        self.padding = DialogueCollator.for_tokenizer(tokenizer)

    def __call__(self, examples: list[dict]) -> dict:
        targets = [example["target"] for example in examples]
        ids = encode_targets(self.tokenizer, targets, self.max_target_tokens, self.causal)
        batch = self.padding([{"input_ids": row} for row in ids])
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "targets": targets}


def _unpadded(input_ids: torch.LongTensor, attention_mask: torch.Tensor) -> list[list[int]]:
    return [row[mask.bool()].tolist() for row, mask in zip(input_ids, attention_mask, strict=True)]


def generate_inputs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, input_ids: torch.LongTensor,
                    attention_mask: torch.Tensor, generation_config: GenerationConfig) -> torch.LongTensor:
    """Inputs I written by the policy for a `TargetCollator` batch with `generation_config` (sampling: π_θ(·|O*),
    Section 4.2.3; greedy or beams: the attack), as `generate()` writes them: an encoder-decoder's rows are the
    decoder start token, the `reply_prefix` and the reply, a causal model's the reply alone (`generated_replies`);
    tokens after a reply's `</s>` are padding."""
    batch = generation_inputs(model, tokenizer, _unpadded(input_ids, attention_mask))
    prefix = reply_prefix(tokenizer, is_causal(model))
    if prefix:
        batch["decoder_input_ids"] = torch.tensor(prefix, device=model.device).expand(len(input_ids), -1)
    sequences = model.generate(**batch, generation_config=generation_config)
    return generated_replies(model, sequences, batch["input_ids"].size(1))


def policy_log_probs(model: PreTrainedModel, input_ids: torch.LongTensor, attention_mask: torch.Tensor,
                     sequences: torch.LongTensor, generation_config: GenerationConfig,
                     prefix_length: int = 0) -> torch.Tensor:
    """log π_θ(I|O*) = Σ_t log P(ω_t | ω_<t, O*) (Eq. 1) for each row of `sequences` written by `generate_inputs`
    with `generation_config` for the targets `input_ids` (one row each), under the distribution they were sampled
    from: the model's softmax without the suppressed tokens. The drawn tokens count, `</s>` included: not the
    padding after it, nor an encoder-decoder's decoder start token and the `prefix_length` tokens of its
    `reply_prefix`, which were given. Differentiable in θ (also through a DDP wrapper)."""
    causal, eos = is_causal(model), generation_config.eos_token_id
    drawn = sequences if causal else sequences[:, 1:]
    replies = [row[: row.index(eos) + 1] if eos in row else row for row in drawn.tolist()]
    batch = pair_batch(_unpadded(input_ids, attention_mask), replies, generation_config.pad_token_id, causal,
                       sequences.device)
    labels, decoder_input_ids = batch["labels"], None
    if not causal:
        labels[:, :prefix_length] = -100
        # the decoder inputs as they were generated: a wrapped model cannot make them from the labels
        decoder_input_ids = sequences[:, : labels.size(1)]
    _, logits = target_log_probs(model, batch["input_ids"], batch["attention_mask"], labels,
                                 decoder_input_ids=decoder_input_ids)
    suppressed = torch.zeros(logits.size(-1), dtype=torch.bool, device=logits.device)
    suppressed[list(generation_config.suppress_tokens or [])] = True
    return token_log_probs(logits.masked_fill(suppressed, float("-inf")), labels).sum(dim=1)


def reinforce_loss(log_probs: torch.Tensor, rewards: torch.Tensor, baseline: str = "mean") -> torch.Tensor:
    """-1/(B N) Σ_targets Σ_i (R_i - b) log π_θ(I_i|O*) for `(B, N)` log-probabilities and rewards: its gradient
    is minus the REINFORCE estimate of ∇J(θ) (Eq. 4), so a descent step is the ascent step of Eq. 5. `baseline`:
    "mean" (b = the target's mean reward) or "none" (b = 0); see the module docstring."""
    if baseline not in BASELINES:
        raise ValueError(f"`baseline` must be one of {BASELINES}, got {baseline!r}.")
    advantages = rewards - rewards.mean(dim=1, keepdim=True) if baseline == "mean" else rewards
    return -(advantages.detach() * log_probs).mean()


def score_inputs(environment: DialogueEnvironment, reward_function: RewardFunction, targets: Sequence[str],
                 inputs: Sequence[str]) -> tuple[list[float], list[str | None]]:
    """Rewards R(I|O*) of candidate `inputs` for their `targets`, and D's outputs. The distinct non-empty inputs go
    to the environment in one batch (a repeated input costs one query); an empty input scores 0 unasked (None)."""
    if len(targets) != len(inputs):
        raise ValueError(f"Got {len(targets)} targets for {len(inputs)} inputs.")
    asked = list(dict.fromkeys(text for text in inputs if text))
    replies = dict(zip(asked, environment(asked), strict=True)) if asked else {}
    outputs = [replies.get(text) for text in inputs]
    scored = [index for index, output in enumerate(outputs) if output is not None]
    rewards = [0.0] * len(inputs)
    scores = reward_function([targets[index] for index in scored], [outputs[index] for index in scored])
    for index, reward in zip(scored, scores, strict=True):
        rewards[index] = float(reward)
    return rewards, outputs


def check_targets(targets: Sequence[str], reward_function: RewardFunction) -> None:
    """Every target must be text the reward can measure a reply against (e.g. not only stopwords)."""
    check = getattr(reward_function, "check_target", None)
    for row, target in enumerate(targets):
        if not isinstance(target, str) or not target.strip():
            raise ValueError(f"Target {row} is empty ({target!r}): give the reply the chatbot should say.")
        if check is not None:
            try:
                check(target)
            except ValueError as error:
                raise ValueError(f"Target {row}: {error}") from None


def decode_inputs(tokenizer: PreTrainedTokenizerBase, sequences: torch.LongTensor) -> list[str]:
    """The generated inputs I (`generate_inputs`' rows) as the text the chatbot is sent (special tokens dropped: the
    decoder start, prefix and padding; surrounding space trimmed)."""
    return [text.strip() for text in tokenizer.batch_decode(sequences, skip_special_tokens=True)]


class ReinforceTrainer(Trainer):
    """REINFORCE training of the reverse dialogue generator against a black-box environment (Liu et al. 2019,
    Section 4.2; see the module docstring for the estimate and its baseline).

    `model` is the policy G_θ, of any backbone (an encoder-decoder or a causal LM; `processing_class` is its
    tokenizer). `train_dataset` holds the targets O* in a `target` column. Each step samples `args.num_samples`
    inputs per target (dropout off), queries `environment` once for the batch, scores the outputs with
    `reward_function` (targets, outputs) -> rewards, and descends `reinforce_loss`. Logged with the loss: `reward`
    (mean over samples), `success_rate` (share of targets with a sample rewarded at least `args.success_threshold`)
    and `env_queries` (inputs sent to the environment so far, all processes, retries included; a run resumed from a
    checkpoint continues the count logged there).
    The inputs are sampled with dropout off and their log-probabilities computed in training mode: with dropout 0
    the estimate is exactly on-policy; the paper's dropout 0.1 makes the update a regularised version of it.

    With `args.kl_coef` β > 0, each sample's reward is R(I|O*) - β (log π_θ(I|O*) - log π_ref(I|O*)), where
    `ref_model` π_ref is the frozen generator RL starts from: the KL-regularised objective of RL fine-tuning of
    language models (Jaques et al. 2017; Ziegler et al. 2019; TRL's `beta`), whose penalty term is a one-sample
    estimate of β KL(π_θ(·|O*) || π_ref(·|O*)). Why: with the paper's plain reward, the policy drifts towards a few
    inputs that work for many targets (generic openers the chatbot answers generically), and beam search over it stops
    covering the target-specific inputs the pre-trained generator proposes; the penalty keeps that coverage while
    the reward moves the policy. Both log-probabilities are taken with dropout off, so that π_θ = π_ref gives a
    penalty of exactly 0; the estimate is logged as `kl`.

    If the environment fails for good (`EnvironmentQueryError`), a checkpoint of the last completed step is saved
    before the error propagates: `trainer.train(resume_from_checkpoint=True)` continues from there.
    """

    loss_is_scaled_for_ga = False  # a per-batch mean: Trainer divides it by the accumulation steps

    def __init__(self, model: PreTrainedModel, args: ReinforceConfig, environment: DialogueEnvironment,
                 reward_function: RewardFunction, train_dataset: datasets.Dataset,
                 processing_class: PreTrainedTokenizerBase, ref_model: PreTrainedModel | None = None, callbacks=None):
        if not isinstance(args, ReinforceConfig):
            raise TypeError(f"`args` must be a ReinforceConfig, got {type(args).__name__}.")
        if args.kl_coef > 0 and ref_model is None:
            raise ValueError("`kl_coef` > 0 needs `ref_model`: the generator RL starts from (load it a second time).")
        if "target" not in train_dataset.column_names:
            raise ValueError(f"The train dataset needs a `target` column; it has {train_dataset.column_names}.")
        check_targets(train_dataset["target"], reward_function)
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            data_collator=TargetCollator(processing_class, args.max_target_tokens, is_causal(model)),
            processing_class=processing_class,
            callbacks=callbacks,
        )
        unpin_memory_on_cpu(self.args)
        self.environment = environment
        self.reward_function = reward_function
        self.ref_model = None
        if args.kl_coef > 0:
            self.ref_model = ref_model.to(self.args.device).eval().requires_grad_(False)
        self.prefix_length = len(reply_prefix(processing_class, is_causal(model)))
        self.sampling_config = reverse_generation_config(
            processing_class, args.max_input_tokens, do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
            num_return_sequences=args.num_samples,
        )
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self._env_queries = 0
        self._env_queries_before: int | None = None  # the count logged by the run this one resumes, read once

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        num_samples = self.args.num_samples
        input_ids = inputs["input_ids"].repeat_interleave(num_samples, dim=0)
        attention_mask = inputs["attention_mask"].repeat_interleave(num_samples, dim=0)
        samples = self._sample_inputs(model, inputs)
        targets = [target for target in inputs["targets"] for _ in range(num_samples)]
        texts = decode_inputs(self.processing_class, samples)
        queries_before = self.environment.num_queries
        rewards, _ = score_inputs(self.environment, self.reward_function, targets, texts)
        rewards = torch.tensor(rewards, dtype=torch.float32, device=input_ids.device).view(-1, num_samples)
        log_probs = policy_log_probs(model, input_ids, attention_mask, samples, self.sampling_config,
                                     self.prefix_length).view(-1, num_samples)
        shaped_rewards = rewards
        if self.ref_model is not None:
            kl = self._kl_estimates(model, input_ids, attention_mask, samples).view(-1, num_samples)
            shaped_rewards = rewards - self.args.kl_coef * kl
            self._metrics["kl"].append(self.accelerator.gather(kl).mean().item())
        loss = reinforce_loss(log_probs, shaped_rewards, self.args.baseline)

        all_rewards = self.accelerator.gather(rewards)
        queries = torch.tensor([self.environment.num_queries - queries_before], device=input_ids.device)
        self._env_queries += int(self.accelerator.gather(queries).sum())
        self._metrics["reward"].append(all_rewards.mean().item())
        self._metrics["success_rate"].append(
            all_rewards.max(dim=1).values.ge(self.args.success_threshold).float().mean().item()
        )
        # Share of distinct inputs among each target's N samples: near 1/N, the policy has collapsed onto one input
        # (all advantages 0 with the mean baseline: no more learning); a too high learning rate does that.
        distinct = [len(set(texts[start : start + num_samples])) / num_samples
                    for start in range(0, len(texts), num_samples)]
        self._metrics["distinct_inputs"].append(sum(distinct) / len(distinct))
        return (loss, {"rewards": rewards}) if return_outputs else loss

    def _sample_inputs(self, model, inputs) -> torch.LongTensor:
        """N inputs per target drawn from π_θ(·|O*) (Section 4.2.3: "chosen by stochastic sampling"), dropout off."""
        with evaluation_mode(self.accelerator.unwrap_model(model)) as policy, torch.no_grad():
            return generate_inputs(policy, self.processing_class, inputs["input_ids"], inputs["attention_mask"],
                                   self.sampling_config)

    def _kl_estimates(self, model, input_ids, attention_mask, samples) -> torch.Tensor:
        """log π_θ(I|O*) - log π_ref(I|O*) per sample, both with dropout off (not differentiated: a reward term)."""
        with evaluation_mode(self.accelerator.unwrap_model(model)) as policy, torch.no_grad():
            return (policy_log_probs(policy, input_ids, attention_mask, samples, self.sampling_config,
                                     self.prefix_length)
                    - policy_log_probs(self.ref_model, input_ids, attention_mask, samples, self.sampling_config,
                                       self.prefix_length))

    def training_step(self, model, inputs, num_items_in_batch=None):
        try:
            return super().training_step(model, inputs, num_items_in_batch)
        except EnvironmentQueryError as error:
            step = self.state.global_step
            if not step:
                raise
            self._save_checkpoint(model, trial=None)
            checkpoint = Path(self.args.output_dir) / f"checkpoint-{step}"
            raise EnvironmentQueryError(
                f"{error} Training stopped during step {step + 1}; the {step} completed steps are saved in "
                f"{checkpoint}: `trainer.train(resume_from_checkpoint=True)` continues from there.",
                error.failures,
            ) from error

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs or "train_loss" in logs:
            if self._metrics:
                logs.update({name: sum(values) / len(values) for name, values in self._metrics.items()})
                self._metrics.clear()
            if self._env_queries_before is None:  # first training log: the resumed state's history is loaded
                logged = [entry["env_queries"] for entry in self.state.log_history if "env_queries" in entry]
                self._env_queries_before = logged[-1] if logged else 0
            logs["env_queries"] = self._env_queries_before + self._env_queries
        super().log(logs, start_time)


def _reverse_examples(batch: dict, tokenizer: PreTrainedTokenizerBase, max_source_length: int,
                      max_target_length: int, causal: bool) -> dict:
    input_ids, labels = pair_rows(encode_targets(tokenizer, batch["output"], max_source_length, causal),
                                  encode_replies(tokenizer, batch["input"], causal, max_target_length), causal)
    return {"input_ids": input_ids, "labels": labels}


def reverse_pairs_dataset(pairs: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, max_source_length: int = 32,
                          max_target_length: int = 24, causal: bool = False) -> datasets.Dataset:
    """Reference-corpus pairs (`output`, `input`) as examples for the reverse generator (Section 5.1.2): D's output
    is read as the policy reads a target (`encode_targets`, at most `max_source_length` tokens), the input that
    caused it is the reply (`encode_replies`, ending in `</s>`). An encoder-decoder's `input_ids` are the source and
    its `labels` the reply; a causal model's (`causal`) `input_ids` are source + reply, labels -100 over the source
    (`pair_batch`)."""
    missing = {"output", "input"} - set(pairs.column_names)
    if missing:
        raise ValueError(f"The reference corpus needs `output` and `input` columns; {sorted(missing)} missing.")
    return pairs.map(
        _reverse_examples,
        batched=True,
        fn_kwargs={"tokenizer": tokenizer, "max_source_length": max_source_length,
                   "max_target_length": max_target_length, "causal": causal},
        remove_columns=pairs.column_names,
        desc="Tokenizing the reference corpus",
    )


def pretrain_reverse_generator(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, args: TrainingArguments,
                               train_pairs: datasets.Dataset, eval_pairs: datasets.Dataset | None = None,
                               max_source_length: int = 32, max_target_length: int = 24) -> ConversationTrainer:
    """Supervised pre-training of the reverse generator, of any backbone, on the reference corpus (Section 5.1.2; the
    paper: SGD with learning rate 20, decayed by 0.25 when the validation loss stops decreasing, batch size 16,
    dropout 0.1, gradient clipping 0.25). Returns the trained `ConversationTrainer` (its `evaluate()` reports
    perplexity)."""
    causal = is_causal(model)
    trainer = ConversationTrainer(
        model=model,
        args=args,
        train_dataset=reverse_pairs_dataset(train_pairs, tokenizer, max_source_length, max_target_length, causal),
        eval_dataset=None if eval_pairs is None else reverse_pairs_dataset(
            eval_pairs, tokenizer, max_source_length, max_target_length, causal
        ),
        data_collator=DialogueCollator.for_tokenizer(tokenizer),
        processing_class=tokenizer,
    )
    trainer.train()
    return trainer



"""`hf-neuralconv train CONFIG.yaml`: the Vinyals & Le (2015) seq2seq chatbot trained with transformers' Trainer.

A recipe is one YAML file parsed by `HfArgumentParser` into `ModelArguments`, `DataArguments` and
`ConversationTrainingArguments` (transformers' `TrainingArguments` plus `overwrite_output_dir`). The same
command runs unchanged on one process, under `torchrun` or under `accelerate launch`.

The output directory receives the model (safetensors + code for `trust_remote_code`), the tokenizer, the
generation settings, `data_config.json` (so `hf-neuralconv evaluate` rebuilds the same split) and
`results.json` (validation and test perplexity, training time).
"""

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import yaml
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    GenerationConfig,
    HfArgumentParser,
    PreTrainedTokenizerFast,
    TrainingArguments,
    enable_full_determinism,
    set_seed,
)

from .attacks import input_threshold, output_threshold
from .chat import load_model_dir
from .data import (
    SPECIAL_TOKENS,
    build_dataset_dict,
    chitchat_turns,
    encode_examples,
    encode_lm_examples,
    load_dialogue_file,
)
from .data.tokenization import BOT, USER, train_word_tokenizer
from .model_card import write_model_card
from .models import LSTMForCausalLM, LSTMLMConfig, LSTMSeq2SeqConfig, LSTMSeq2SeqForConditionalGeneration
from .pipelines import DATA_CONFIG_FILE, add_custom_pipeline
from .plotting import plot_training_curves
from .trainers import ConversationTrainer, NegativeTrainer, NegativeTrainingConfig

RESULTS_FILE = "results.json"
CURVES_FILE = "training_curves.png"
# What negative training logs (NegativeTrainer.log), plotted against the step into CURVES_FILE.
NEGATIVE_TRAINING_CURVES = ("malicious/hit_rate", "malicious/negative_pairs", "frequent/max_ratio",
                            "frequent/negative_examples", "loss_neg", "loss_mle", "test_perplexity")
DIRECTIONS = ("forward", "reverse")
ARCHITECTURES = {"seq2seq": LSTMSeq2SeqForConditionalGeneration, "causal-lm": LSTMForCausalLM}
logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    """Architecture of the encoder-decoder (see `LSTMSeq2SeqConfig`), or a saved model to start from."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Continue from a saved model directory (its architecture and dropout: the settings below "
                          "are then unused, and a warning names those that differ)."},
    )
    architecture: str = field(
        default="seq2seq",
        metadata={"help": "seq2seq (the chatbot, or with `direction: reverse` the MMI reverse model) | causal-lm "
                          "(an LSTM LM of the replies: the MMI anti-LM, the input LM of the io hit criteria)."},
    )
    tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Use this saved tokenizer instead of training one: an MMI reverse model or LM must share "
                          "the chatbot's vocabulary."},
    )
    embedding_size: int = 256
    hidden_size: int = 512
    num_layers: int = 1
    bidirectional_encoder: bool = False
    attention: str = field(default="general", metadata={"help": "none | dot | general (Luong et al. 2015)."})
    projection_size: int = field(default=0, metadata={"help": "Project to this size before the softmax (0: off)."})
    dropout: float = 0.2
    share_embeddings: bool = True
    tie_word_embeddings: bool = False
    init_range: float = 0.08

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"`architecture` must be one of {', '.join(ARCHITECTURES)}, got {self.architecture!r}.")


@dataclass
class DataArguments:
    """Where the dialogues come from and how they become examples."""

    dataset: str = field(
        default="chitchat",
        metadata={"help": "'chitchat' (the corpus in PyPI chitchat-dataset) or a .jsonl/.csv/.parquet file."},
    )
    max_context_turns: int = field(default=2, metadata={"help": "Turns kept before the message being answered."})
    direction: str = field(
        default="forward",
        metadata={"help": "forward: (context, message) -> response | reverse: response -> message, no context (the "
                          "reverse model p(M|R) of MMI-bidi, Luan et al. 2017 Eq. 4)."},
    )
    split_fractions: list[float] = field(default_factory=lambda: [0.9, 0.05, 0.05])
    split_seed: int = 0
    vocab_size: int = 20000
    min_frequency: int = 1
    max_source_length: int = 64
    max_target_length: int = 48
    max_train_examples: int | None = field(default=None, metadata={"help": "Use only the first N (quick runs)."})
    max_eval_examples: int | None = None

    def __post_init__(self):
        if self.direction not in DIRECTIONS:
            raise ValueError(f"`direction` must be one of {', '.join(DIRECTIONS)}, got {self.direction!r}.")


@dataclass
class ConversationTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus a guard for existing output directories."""

    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow training into a non-empty output_dir (its files may be replaced)."}
    )


def parse_config(
    path: str | Path,
    training_class: type[TrainingArguments] = ConversationTrainingArguments,
    overrides: Sequence[str] = (),
) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """Read a recipe YAML into the three argument dataclasses (unknown keys are an error); `training_class` is
    `NegativeTrainingConfig` for negative-training recipes. `overrides` are `key=value` strings (the value read as
    YAML) that replace or add recipe keys, e.g. `max_steps=700`, so a variant of a recipe needs no copy of it."""
    return parse_recipe(path, (ModelArguments, DataArguments, training_class), overrides)


def parse_recipe(path: str | Path, dataclass_types: Sequence[type], overrides: Sequence[str] = ()) -> tuple:
    """Read a recipe YAML, with `key=value` overrides (values read as YAML), into `dataclass_types` with
    `HfArgumentParser`; a key that none of them has is an error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such recipe file.")
    config = yaml.safe_load(path.read_text()) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a recipe is a YAML mapping of settings (key: value), got {type(config).__name__}.")
    for override in overrides:
        key, separator, value = override.partition("=")
        if not separator or not key.strip():
            raise ValueError(f"Override {override!r} is not key=value (e.g. max_steps=700).")
        parsed = yaml.safe_load(value)
        # YAML 1.1 reads no/yes/on/off as booleans: `eval_strategy=no` means the string.
        config[key.strip()] = value.strip() if isinstance(parsed, bool) and value.strip().lower() not in (
            "true", "false") else parsed
    return HfArgumentParser(dataclass_types).parse_dict(config, allow_extra_keys=False)


def check_output_dir(training_args: ConversationTrainingArguments) -> None:
    """Refuse to train into a directory that already holds files, unless resuming or explicitly allowed."""
    output_dir = Path(training_args.output_dir)
    if (
        output_dir.is_dir()
        and any(output_dir.iterdir())
        and not training_args.overwrite_output_dir
        and not training_args.resume_from_checkpoint
    ):
        raise FileExistsError(
            f"{output_dir} already exists and is not empty. Choose another output_dir, resume with "
            "`resume_from_checkpoint: true`, or set `overwrite_output_dir: true` to train over it."
        )


def load_conversations(dataset: str) -> dict[str, list[tuple[str, str]]]:
    """The dialogues of `DataArguments.dataset`: the chitchat corpus, or a user's dialogue file."""
    return chitchat_turns() if dataset == "chitchat" else load_dialogue_file(dataset)


def load_dialogues(data_args: DataArguments) -> datasets.DatasetDict:
    """Examples of the configured corpus, split by conversation (with `direction: reverse`, swapped)."""
    dialogues = build_dataset_dict(
        load_conversations(data_args.dataset), data_args.max_context_turns, data_args.split_fractions,
        data_args.split_seed,
    )
    if data_args.direction == "reverse":
        dialogues = dialogues.map(_reverse_example, desc="Reversing")
    return dialogues


def _reverse_example(example: dict) -> dict:
    """The reverse model's example: it reads the reply alone and predicts the message it answered (the form
    `generation.rerank.score_nbest` scores log p(M|R) in)."""
    return {"context": [], "message": example["response"], "response": example["message"]}


def training_texts(train: datasets.Dataset):
    """Every turn of the training split once: all responses plus each conversation's opening message."""
    for example in train:
        if not example["context"] and example["message"]:
            yield example["message"]
        yield example["response"]


def tokenize_dataset(
    dataset: datasets.Dataset,
    tokenizer: PreTrainedTokenizerFast,
    data_args: DataArguments,
    truncate_target: bool,
    architecture: str = "seq2seq",
) -> datasets.Dataset:
    """Dialogue examples -> `input_ids`, `labels`: source and reply for seq2seq, `<s>` reply `</s>` for a causal LM."""
    if architecture == "causal-lm":
        return dataset.map(
            encode_lm_examples,
            batched=True,
            fn_kwargs={"tokenizer": tokenizer,
                       "max_length": data_args.max_target_length + 1 if truncate_target else None},
            remove_columns=dataset.column_names,
            desc="Tokenizing",
        )
    return dataset.map(
        encode_examples,
        batched=True,
        fn_kwargs={
            "tokenizer": tokenizer,
            "max_source_length": data_args.max_source_length,
            "max_target_length": data_args.max_target_length if truncate_target else None,
        },
        remove_columns=dataset.column_names,
        desc="Tokenizing",
    )


def first_examples(dataset: datasets.Dataset, limit: int | None) -> datasets.Dataset:
    """The first `limit` examples (all with None): the `max_train_examples` / `max_eval_examples` of quick runs."""
    return dataset if limit is None else dataset.select(range(min(limit, len(dataset))))


def default_generation_config(tokenizer: PreTrainedTokenizerFast) -> GenerationConfig:
    """Greedy decoding of up to 32 tokens; tokens that never belong in a reply are suppressed."""
    return GenerationConfig(
        max_new_tokens=32,
        do_sample=False,
        num_beams=1,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        decoder_start_token_id=tokenizer.bos_token_id,
        suppress_tokens=tokenizer.convert_tokens_to_ids([SPECIAL_TOKENS[0], SPECIAL_TOKENS[1], USER, BOT]),
    )


NOT_ARCHITECTURE = ("model_name_or_path", "architecture", "tokenizer_name_or_path")  # ModelArguments' other fields


def build_model(
    model_args: ModelArguments, tokenizer: PreTrainedTokenizerFast
) -> LSTMSeq2SeqForConditionalGeneration | LSTMForCausalLM:
    """A fresh model sized by `model_args` for `tokenizer`'s vocabulary, or the saved one it names (its own
    architecture and dropout; settings of `model_args` that differ are logged as unused)."""
    model_class = ARCHITECTURES[model_args.architecture]
    if model_args.model_name_or_path:
        model = model_class.from_pretrained(model_args.model_name_or_path)
        unused = [f"{name} {value!r} (saved: {getattr(model.config, name)!r})"
                  for name, value in asdict(model_args).items()
                  if name not in NOT_ARCHITECTURE and hasattr(model.config, name)
                  and getattr(model.config, name) != value]
        if unused:  # a recipe's sizes or dropout would otherwise be dropped without a word
            logger.warning("%s is continued with its saved architecture; these settings of the recipe (or their "
                           "defaults) differ and are not used: %s.", model_args.model_name_or_path, ", ".join(unused))
        return model
    special_tokens = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id)
    if model_class is LSTMForCausalLM:  # the LM has no encoder: no attention, encoder or embedding-sharing settings
        config = LSTMLMConfig(
            vocab_size=len(tokenizer), embedding_size=model_args.embedding_size, hidden_size=model_args.hidden_size,
            num_layers=model_args.num_layers, projection_size=model_args.projection_size, dropout=model_args.dropout,
            tie_word_embeddings=model_args.tie_word_embeddings, init_range=model_args.init_range, **special_tokens,
        )
        return LSTMForCausalLM(config)
    architecture = {name: value for name, value in asdict(model_args).items() if name not in NOT_ARCHITECTURE}
    return LSTMSeq2SeqForConditionalGeneration(LSTMSeq2SeqConfig(vocab_size=len(tokenizer), **special_tokens,
                                                                 **architecture))


def _model_role(model_args: ModelArguments, data_args: DataArguments) -> str:
    """What the trained model is for, as its model card describes it."""
    if model_args.architecture == "causal-lm":
        return "language-model"
    return "reverse-model" if data_args.direction == "reverse" else "chatbot"


def describe_machine() -> str:
    """A one-line description of where a run happened, for result files and model cards."""
    import platform

    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"{platform.processor() or 'CPU'}"
    return f"{device}, {os.cpu_count()} CPU cores, torch {torch.__version__}, {platform.system()}"


def train(model_args: ModelArguments, data_args: DataArguments, training_args: ConversationTrainingArguments) -> dict:
    """Train, keep the best checkpoint by validation perplexity, evaluate on test; return the results."""
    check_output_dir(training_args)
    role = _model_role(model_args, data_args)
    # The model is built before Trainer seeds: seed here so that `seed` fixes the initial weights too.
    (enable_full_determinism if training_args.full_determinism else set_seed)(training_args.seed)
    output_dir = Path(training_args.output_dir)
    started = time.time()
    dialogues = load_dialogues(data_args)

    tokenizer_dir = (model_args.model_name_or_path or model_args.tokenizer_name_or_path
                     or (output_dir if (output_dir / "tokenizer.json").is_file() else None))
    if tokenizer_dir:  # fine-tuning, resuming or sharing a chatbot's vocabulary: the vocabulary must not change
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    else:
        tokenizer = train_word_tokenizer(
            training_texts(dialogues["train"]), data_args.vocab_size, data_args.min_frequency
        )

    with training_args.main_process_first(desc="tokenizing"):
        train_set = tokenize_dataset(first_examples(dialogues["train"], data_args.max_train_examples), tokenizer,
                                     data_args, truncate_target=True, architecture=model_args.architecture)
        eval_set = tokenize_dataset(first_examples(dialogues["validation"], data_args.max_eval_examples), tokenizer,
                                    data_args, truncate_target=True, architecture=model_args.architecture)
        test_set = tokenize_dataset(first_examples(dialogues["test"], data_args.max_eval_examples), tokenizer,
                                    data_args, truncate_target=False, architecture=model_args.architecture)

    model = build_model(model_args, tokenizer)
    model.generation_config = default_generation_config(tokenizer)
    if training_args.should_save:
        output_dir.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(output_dir)
        (output_dir / DATA_CONFIG_FILE).write_text(json.dumps(asdict(data_args), indent=2))

    trainer = ConversationTrainer(
        model=model,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100),
        processing_class=tokenizer,
    )
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint or None)
    trainer.save_model(str(output_dir))
    if training_args.should_save and role != "language-model":  # pipeline(model=output_dir, trust_remote_code=True)
        add_custom_pipeline(output_dir)

    validation = trainer.evaluate(metric_key_prefix="eval")
    test = trainer.evaluate(test_set, metric_key_prefix="test")
    results = {
        "validation_perplexity": validation["eval_perplexity"],
        "test_perplexity": test["test_perplexity"],
        "test_target_tokens": test["test_target_tokens"],
        "train_examples": len(train_set),
        "epochs": train_result.metrics.get("epoch"),
        "train_runtime_s": train_result.metrics.get("train_runtime"),
        "wall_time_s": time.time() - started,
        "parameters": sum(p.numel() for p in model.parameters()),
        "world_size": training_args.world_size,
        "machine": describe_machine(),
    }
    if training_args.should_save:
        if role == "chatbot":
            results.update(greedy_reply_metrics(output_dir))
        (output_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2))
        write_model_card(output_dir, results, data_args.dataset, base_model=model_args.model_name_or_path,
                         machine=describe_machine(), role=role)
    trainer.log({"test_perplexity": results["test_perplexity"]})
    return results


def greedy_reply_metrics(model_dir: Path) -> dict[str, float]:
    """What a saved chatbot's replies look like (He & Glass 2020, Table 4 columns): distinct-n, max-ratio, Ent-n,
    length and BLEU of its greedy replies to a seeded sample of the test inputs, as `test_greedy_<metric>` keys
    for results.json and the model card."""
    from .evaluation import GREEDY_REPORT_INPUTS, diversity_report  # evaluation imports this module

    report = diversity_report(model_dir, strategies=("greedy",), max_inputs=GREEDY_REPORT_INPUTS)
    return {f"test_greedy_{name}": value for name, value in report["rows"]["greedy"].items() if name != "seconds"}


def hit_thresholds(
    model: LSTMSeq2SeqForConditionalGeneration,
    tokenizer: PreTrainedTokenizerFast,
    test: datasets.Dataset,
    data_args: DataArguments,
    input_lm=None,
    t_out: float | None = None,
    t_in: float | None = None,
) -> tuple[float, float | None]:
    """(T_out, T_in) of the hit criteria (He & Glass 2020, Section 3.2 and Appendix C): `t_out` / `t_in` when
    given, else measured — T_out as the model's average word log-likelihood on the test examples, T_in (only with
    the input LM) as the LM's on the test messages."""
    if t_out is None:
        encoded = tokenize_dataset(test, tokenizer, data_args, truncate_target=False)
        t_out = output_threshold(model, encoded["input_ids"], encoded["labels"])
    if t_in is None and input_lm is not None:
        messages = tokenizer(list(test["message"]), add_special_tokens=False)["input_ids"]
        t_in = input_threshold(input_lm, messages)
    return t_out, t_in


def train_negative(model_args: ModelArguments, data_args: DataArguments, training_args: NegativeTrainingConfig) -> dict:
    """Negative training (He & Glass 2020) of the model saved at `model_name_or_path`, the recipe's training data as
    positive examples; T_out / T_in the recipe leaves out are measured on the test split first. Saves the model
    and returns (and writes to results.json) the test perplexity before and after."""
    if not model_args.model_name_or_path:
        raise ValueError("Negative training fine-tunes a trained model: set `model_name_or_path` to its directory.")
    check_output_dir(training_args)
    set_seed(training_args.seed)
    output_dir = Path(training_args.output_dir)
    started = time.time()
    model, tokenizer = load_model_dir(model_args.model_name_or_path)
    model.to(training_args.device)
    input_lm = None
    if training_args.input_lm_path:
        input_lm = AutoModelForCausalLM.from_pretrained(training_args.input_lm_path).to(training_args.device).eval()
    dialogues = load_dialogues(data_args)
    test = first_examples(dialogues["test"], data_args.max_eval_examples)
    io_hits = training_args.hit_type.startswith("io-")
    missing_threshold = training_args.output_threshold is None or (io_hits and training_args.input_threshold is None)
    if training_args.mode == "malicious" and missing_threshold:
        training_args.output_threshold, training_args.input_threshold = hit_thresholds(
            model, tokenizer, test, data_args, input_lm if io_hits else None, training_args.output_threshold,
            training_args.input_threshold,
        )
    with training_args.main_process_first(desc="tokenizing"):
        train_set = tokenize_dataset(first_examples(dialogues["train"], data_args.max_train_examples), tokenizer,
                                     data_args, truncate_target=True)
        test_set = tokenize_dataset(test, tokenizer, data_args, truncate_target=False)
    trainer = NegativeTrainer(model=model, args=training_args, train_dataset=train_set, eval_dataset=test_set,
                              processing_class=tokenizer, input_lm=input_lm)
    perplexity_before = trainer.evaluate(metric_key_prefix="test")["test_perplexity"]
    train_result = trainer.train()
    trainer.save_model(str(output_dir))
    trainer.save_state()  # trainer_state.json: the logged hit rates / max-ratio behind the figure
    if training_args.should_save:
        tokenizer.save_pretrained(output_dir)
        (output_dir / DATA_CONFIG_FILE).write_text(json.dumps(asdict(data_args), indent=2))
        add_custom_pipeline(output_dir)
        plot_training_curves(trainer.state.log_history, NEGATIVE_TRAINING_CURVES, output_dir / CURVES_FILE,
                             title=f"negative training ({training_args.mode})")
    results = {
        "mode": training_args.mode,
        "test_perplexity_before": perplexity_before,
        "test_perplexity_after": trainer.evaluate(metric_key_prefix="test")["test_perplexity"],
        "output_threshold": training_args.output_threshold,
        "input_threshold": training_args.input_threshold,
        "steps": trainer.state.global_step,
        "train_runtime_s": train_result.metrics.get("train_runtime"),
        "wall_time_s": time.time() - started,
    }
    if training_args.should_save:
        results.update(greedy_reply_metrics(output_dir))
        (output_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2))
        write_model_card(output_dir, {**results, "test_perplexity": results["test_perplexity_after"]},
                         data_args.dataset, base_model=model_args.model_name_or_path, machine=describe_machine(),
                         role="negative-trained")
    return results

"""`hf-neuralconv train CONFIG.yaml`: the Vinyals & Le (2015) seq2seq chatbot trained with transformers' Trainer.

A recipe is one YAML file parsed by `HfArgumentParser` into `ModelArguments`, `DataArguments` and
`ConversationTrainingArguments` (transformers' `TrainingArguments` plus `overwrite_output_dir`). The same
command runs unchanged on one process, under `torchrun` or under `accelerate launch`.

The output directory receives the model (safetensors + code for `trust_remote_code`), the tokenizer, the
generation settings, `data_config.json` (so `hf-neuralconv evaluate` rebuilds the same split) and
`results.json` (validation and test perplexity, training time).
"""

import enum
import json
import logging
import os
import re
import shutil
import time
import types
import typing
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import datasets
import yaml
from safetensors import safe_open
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
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from .attacks import input_threshold, output_threshold
from .chat import load_model_dir
from .data import (
    build_dataset_dict,
    chitchat_turns,
    encode_examples,
    encode_lm_examples,
    load_dialogue_file,
)
from .data.dialogue import read_utf8_text
from .data.tokenization import train_word_tokenizer
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
    generation_config: dict | None = field(
        default=None,
        metadata={"help": "generate() defaults saved with a trained chatbot in its generation_config, over greedy "
                          "decoding of 32 tokens, e.g. {do_sample: true, top_p: 0.9}: `chat` and the pipeline decode "
                          "with them unless a call names a strategy (greedy, beam, ...: those decode as named)."},
    )

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"`architecture` must be one of {', '.join(ARCHITECTURES)}, got {self.architecture!r}.")
        if self.generation_config:  # checked now: a mistake would otherwise surface after training, or never
            self.generation_config = checked_generation_settings(self.generation_config)


# Set from the tokenizer by `default_generation_config`; a recipe cannot change them.
TOKENIZER_GENERATION_SETTINGS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id",
                                 "suppress_tokens")


def checked_generation_settings(settings: dict) -> dict:
    """A recipe's `generation_config` mapping, each value of its GenerationConfig setting's type (a number written
    as text, which YAML 1.1 reads for 1e-1, becomes one), or a ValueError naming the setting and the fix."""
    # transformers 5 leaves unset settings None and keeps their effective defaults apart: those give the types.
    defaults = {**GenerationConfig().to_dict(), **GenerationConfig._get_default_generation_params()}
    unknown = sorted(set(settings) - set(defaults))
    if unknown:
        raise ValueError(f"generation_config: {', '.join(unknown)} is not a GenerationConfig setting; see "
                         "transformers' GenerationConfig for the names (e.g. num_beams, no_repeat_ngram_size).")
    reserved = sorted(set(settings) & set(TOKENIZER_GENERATION_SETTINGS))
    if reserved:
        raise ValueError(f"generation_config: {', '.join(reserved)} come from the tokenizer; remove them.")
    checked = dict(settings)
    for name, value in settings.items():
        if defaults[name] is None:  # no default to take a type from: `validate` below judges the value
            continue
        expected = type(defaults[name])
        accepted, checked[name] = _as_type(value, expected)  # the recipe's own reading of numbers and booleans
        if not accepted:
            raise ValueError(f"generation_config: {name}={value!r}: expected {_describe_type(expected)}.")
    try:
        GenerationConfig(**checked).validate(strict=True)
    except ValueError as error:
        raise ValueError(f"generation_config {checked}: {error}") from None
    return checked


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
    return parse_recipe(path, (ModelArguments, DataArguments, training_class), overrides,
                        saves_generation_config=training_class is ConversationTrainingArguments)


def parse_recipe(path: str | Path, dataclass_types: Sequence[type], overrides: Sequence[str] = (),
                 saves_generation_config: bool = False) -> tuple:
    """Read a recipe YAML, with `key=value` overrides (values read as YAML, like the file's), into `dataclass_types`
    with `HfArgumentParser`; a key that none of them has, or a value of the wrong type, is an error raised before
    any work starts. `generation_config` is refused unless the command saves it (`train`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such recipe file.")
    config = _read_yaml(read_utf8_text(path), str(path))
    if config is None:
        raise ValueError(f"{path} is empty (no settings); start from a copy of recipes/seq2seq/quickstart.yaml "
                         "and set its output_dir.")
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a recipe is a YAML mapping of settings (key: value), got {type(config).__name__}.")
    sources = dict.fromkeys(config, str(path))
    for override in overrides:
        key, separator, value = override.partition("=")
        if not separator or not key.strip():
            raise ValueError(f"Override {override!r} is not key=value (e.g. max_steps=700).")
        config[key.strip()] = _read_yaml(value, f"override {override!r}")
        sources[key.strip()] = "override"
    for dataclass_type in dataclass_types:
        hints = typing.get_type_hints(dataclass_type)
        for setting in fields(dataclass_type):
            if setting.init and setting.name in config:
                config[setting.name] = _typed_setting(setting.name, config[setting.name], hints[setting.name],
                                                      sources[setting.name])
    if config.get("generation_config") and not saves_generation_config:
        raise ValueError("generation_config: only `hf-neuralconv train` saves decoding defaults with the model it "
                         "trains; remove it from this recipe (a chat call chooses its own decoding).")
    return HfArgumentParser(dataclass_types).parse_dict(config, allow_extra_keys=False)


class _RecipeLoader(yaml.SafeLoader):
    """`yaml.safe_load` (YAML 1.1), except that only true/false are booleans here: yes/no/on/off, which YAML 1.1
    also reads as booleans, are left to `_typed_setting`, which reads them so for boolean settings only (for
    `eval_strategy: no`, `no` is the word)."""


_RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                    list("tTfF"))
YAML_BOOLEANS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def _read_yaml(text: str, source: str):
    try:
        return yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as error:
        mark, context = getattr(error, "problem_mark", None), getattr(error, "context", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        if context and getattr(error, "context_mark", None):
            problem += f", {context} from line {error.context_mark.line + 1}"
        raise ValueError(f"{source}{where}: not valid YAML ({problem}); fix it there (a setting is `key: value`; "
                         "quote a value that holds ': ' or ' #').") from None


def _typed_setting(name: str, value, annotation, source: str):
    """`value` as the type the setting `name` declares (yes/no/on/off as booleans, numbers written as text such as
    1e-3 — YAML 1.1 reads those as strings — as floats), or a ValueError naming the setting and what it takes."""
    accepted, typed = _as_type(value, annotation)
    if not accepted:
        where = "" if source == "override" else f"{source}: "
        raise ValueError(f"{where}{name}={value}: expected {_describe_type(annotation)}; fix the "
                         f"{'override' if source == 'override' else 'recipe'}.")
    return typed


def _as_type(value, annotation) -> tuple[bool, object]:
    origin, members = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        for member in members:
            accepted, typed = _as_type(value, member)
            if accepted:
                return True, typed
        return False, value
    if annotation is type(None):
        return value is None, value
    if annotation is bool:
        if isinstance(value, str) and value.lower() in YAML_BOOLEANS:
            return True, YAML_BOOLEANS[value.lower()]
        return isinstance(value, bool), value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is float:
        if isinstance(value, str):
            try:
                return True, float(value)
            except ValueError:
                return False, value
        return isinstance(value, (int, float)) and not isinstance(value, bool), value
    if annotation is str:  # scalars only: `resume_from_checkpoint: true` is documented, numbers read as names
        return not isinstance(value, (list, dict)), value
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        values = {member.value for member in annotation}
        return isinstance(value, annotation) or (isinstance(value, str) and value in values), value
    if origin is typing.Literal:
        return value in members, value
    if annotation is list or origin is list:
        if not isinstance(value, list):
            return False, value
        items = [_as_type(item, members[0]) if members else (True, item) for item in value]
        return all(accepted for accepted, _ in items), [typed for _, typed in items]
    if annotation is dict or origin is dict:  # its values are read as YAML 1.1 would: yes/no/on/off as booleans
        return isinstance(value, dict), _yaml11_booleans(value)
    return True, value  # other classes (e.g. accelerate's ParallelismConfig) check themselves


def _yaml11_booleans(value):
    """`value` with the words YAML 1.1 reads as booleans (yes/no/on/off/true/false) made booleans, at any depth."""
    if isinstance(value, dict):
        return {key: _yaml11_booleans(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_yaml11_booleans(item) for item in value]
    return YAML_BOOLEANS.get(value.lower(), value) if isinstance(value, str) else value


def _describe_type(annotation) -> str:
    origin, members = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_describe_type(member) for member in members))
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return f"one of {', '.join(str(member.value) for member in annotation)}"
    if origin is typing.Literal:
        return f"one of {', '.join(map(str, members))}"
    if annotation is list or origin is list:
        return f"a list ([...]) whose items are {_describe_type(members[0])}" if members else "a list ([...])"
    return {type(None): "null", bool: "true/false (yes/no, on/off also read as YAML booleans)",
            int: "a whole number", float: "a number (e.g. 0.001)", str: "text", dict: "a mapping (key: value)"}.get(
        annotation, getattr(annotation, "__name__", str(annotation)))


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


def resume_checkpoint(training_args: TrainingArguments) -> str | None:
    """The checkpoint directory a run resumes from (None when it does not resume): `resume_from_checkpoint: true`
    names the last `checkpoint-*` of `output_dir`. A missing one is an error before any work."""
    resume = training_args.resume_from_checkpoint
    if not resume:
        return None
    output_dir = Path(training_args.output_dir)
    if resume is True:
        checkpoint = get_last_checkpoint(output_dir) if output_dir.is_dir() else None
        if checkpoint is None:
            raise FileNotFoundError(
                f"resume_from_checkpoint: true, but {output_dir} holds no {PREFIX_CHECKPOINT_DIR}-* directory to "
                "resume from (checkpoints are saved by `save_strategy`); train without resume_from_checkpoint."
            )
        return checkpoint
    if not Path(resume).is_dir():
        raise FileNotFoundError(f"resume_from_checkpoint={resume}: no such checkpoint directory; give a "
                                f"{PREFIX_CHECKPOINT_DIR}-* directory, or true for the last one in output_dir.")
    return str(resume)


def check_checkpoint_matches(model, checkpoint: str) -> None:
    """Refuse to resume from a checkpoint whose weights do not fit `model` (another recipe's sizes or vocabulary),
    before anything is written; loading it would fail in the middle of `Trainer.train`."""
    weights = Path(checkpoint) / "model.safetensors"
    if not weights.is_file():
        return  # Trainer names a checkpoint without weights itself
    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    with safe_open(str(weights), "pt") as saved:
        saved_shapes = {name: tuple(saved.get_slice(name).get_shape()) for name in saved.keys()}
    tied = set(getattr(model, "_tied_weights_keys", None) or ())  # saved once, under the weight they share
    problems = [f"{name} is {shape} there, {shapes[name]} here" for name, shape in saved_shapes.items()
                if name in shapes and shapes[name] != shape]
    problems += [f"{name} is missing there" for name in sorted(set(shapes) - set(saved_shapes) - tied)]
    problems += [f"{name} is not in this model" for name in sorted(set(saved_shapes) - set(shapes))]
    if problems:  # Trainer would load it non-strictly: a partly initialised model, resumed with a warning
        raise ValueError(
            f"{checkpoint} does not fit this recipe's model: {'; '.join(problems[:3])} (the checkpoint comes from a "
            "run with other model sizes, options or vocabulary). Resume with that run's recipe, or drop "
            "resume_from_checkpoint and set overwrite_output_dir: true to start over."
        )


def clear_previous_checkpoints(training_args: TrainingArguments) -> None:
    """Overwriting an output directory starts a new run: the old run's `checkpoint-*` directories go, since a later
    `resume_from_checkpoint: true` would pick them up. Call it after every check has passed, before writing."""
    if not training_args.should_save or not getattr(training_args, "overwrite_output_dir", False):
        return
    if training_args.resume_from_checkpoint:  # resuming continues the run its checkpoints belong to
        return
    for checkpoint in Path(training_args.output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        if checkpoint.is_dir():
            shutil.rmtree(checkpoint)


def load_conversations(dataset: str) -> dict[str, list[tuple[str, str]]]:
    """The dialogues of `DataArguments.dataset`: the chitchat corpus, or a user's dialogue file."""
    if dataset == "chitchat":
        return chitchat_turns()
    if not Path(dataset).is_file():  # a misspelt corpus name would otherwise be "an unsupported file type ''"
        raise FileNotFoundError(f"dataset {dataset!r} is neither a built-in corpus (chitchat) nor an existing file; "
                                "fix the name or the path (a .jsonl, .json, .csv or .parquet file).")
    return load_dialogue_file(dataset)


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


def default_generation_config(tokenizer: PreTrainedTokenizerFast, settings: dict | None = None) -> GenerationConfig:
    """Greedy decoding of up to 32 tokens, or the recipe's `settings` over it; tokens that never belong in a reply
    are suppressed."""
    return GenerationConfig(
        **{"max_new_tokens": 32, "do_sample": False, "num_beams": 1, **(settings or {})},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        decoder_start_token_id=tokenizer.bos_token_id,
        # <unk> too: it would print as nothing (a reply never needs it; perplexity still counts it)
        suppress_tokens=[index for index in tokenizer.all_special_ids if index != tokenizer.eos_token_id],
    )


# ModelArguments' fields that are not architecture settings (the others are the model config's sizes and options).
NOT_ARCHITECTURE = ("model_name_or_path", "architecture", "tokenizer_name_or_path", "generation_config")


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
    checkpoint = resume_checkpoint(training_args)
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
    model.generation_config = default_generation_config(tokenizer, model_args.generation_config)
    if checkpoint:
        check_checkpoint_matches(model, checkpoint)
    trainer = ConversationTrainer(
        model=model,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100),
        processing_class=tokenizer,
    )
    # Every check has passed: only now are files written into the output directory (Trainer made it, empty).
    clear_previous_checkpoints(training_args)
    if training_args.should_save:
        output_dir.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(output_dir)
        (output_dir / DATA_CONFIG_FILE).write_text(json.dumps(asdict(data_args), indent=2))
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
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
    clear_previous_checkpoints(training_args)
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

"""Recipes: one YAML file parsed into dataclasses, the same for every method and launcher.

`ModelArguments` (the LSTM's architecture and sizes, or a transformers `model_type` and its `model_config`),
`DataArguments` (corpus, split, lengths, vocabulary) and
`ConversationTrainingArguments` (transformers' `TrainingArguments` plus `overwrite_output_dir`) are the settings
every training recipe shares; a method adds its own dataclass (e.g. `NegativeTrainingConfig`). `parse_recipe` reads
the file and `KEY=VALUE` overrides with one YAML reader and checks every value's type before anything is written.
"""

import difflib
import enum
import logging
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
import yaml
from transformers import (
    CONFIG_MAPPING,
    AutoConfig,
    GenerationConfig,
    HfArgumentParser,
    PretrainedConfig,
    TrainingArguments,
)

from ..data.dialogue import read_utf8_text
from ..models.lstm.modeling_lstm import LSTMForCausalLM, LSTMSeq2SeqForConditionalGeneration
from .loading import chatbot_auto_class

DIRECTIONS = ("forward", "reverse")
ARCHITECTURES = {"seq2seq": LSTMSeq2SeqForConditionalGeneration, "causal-lm": LSTMForCausalLM}
logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    """The model: our LSTM (`architecture` and the sizes below, see `LSTMSeq2SeqConfig`), a fresh transformers model
    (`model_type`, `model_config`), or a saved model to start from (`model_name_or_path`)."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Continue from a saved model directory, ours or a transformers causal LM / encoder-decoder "
                          "with its own tokenizer (its architecture and dropout: the settings below are then unused, "
                          "and for our LSTM a warning names those that differ)."},
    )
    architecture: str | None = field(
        default=None,
        metadata={"help": "The LSTM's kind (default seq2seq): seq2seq (the chatbot, or with `direction: reverse` the "
                          "MMI reverse model) | causal-lm (an LSTM LM of the replies: the MMI anti-LM, the input LM "
                          "of the io hit criteria). Leave it unset with `model_type`."},
    )
    model_type: str | None = field(
        default=None,
        metadata={"help": "Build a fresh, randomly initialised transformers chatbot of this type instead of the LSTM "
                          "(gpt2, llama, bart, t5: any causal LM or encoder-decoder type of AutoConfig) over the "
                          "package's word tokenizer, sized by `model_config`; the LSTM settings are then unused."},
    )
    model_config: dict | None = field(
        default=None,
        metadata={"help": "The `model_type` model's sizes, in its config's names, e.g. {n_embd: 256, n_layer: 4, "
                          "n_head: 4} for gpt2 (unset ones keep the config's defaults); the vocabulary and special "
                          "token ids come from the tokenizer."},
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
        # `architecture` picks an LSTM and `model_type` a transformer: each excludes the other, and a transformer is
        # built fresh (`model_config`) or continued from a directory that keeps its own sizes, never both.
        if self.model_type is None:
            if self.model_config:
                raise ValueError("model_config sizes a fresh transformers model: add model_type (e.g. model_type: "
                                 "gpt2), or remove model_config (the LSTM's sizes are embedding_size, hidden_size, "
                                 "num_layers, ...; a saved model keeps its own).")
            self.architecture = self.architecture or "seq2seq"
            if self.architecture not in ARCHITECTURES:
                raise ValueError(f"`architecture` must be one of {', '.join(ARCHITECTURES)}, got "
                                 f"{self.architecture!r}.")
        else:
            if self.architecture is not None:
                raise ValueError(f"architecture ({', '.join(ARCHITECTURES)}) chooses the LSTM; a model_type model is "
                                 "causal or an encoder-decoder by its type (gpt2 reads history and reply as one "
                                 "sequence, bart is an encoder-decoder): remove architecture.")
            if self.model_name_or_path:
                raise ValueError("model_type builds a fresh model and model_name_or_path continues a saved one: keep "
                                 "one of them.")
            self.model_config = checked_model_config(self.model_type, self.model_config or {})
        if self.generation_config:  # checked now: a mistake would otherwise surface after training, or never
            self.generation_config = checked_generation_settings(self.generation_config)


# Set from the tokenizer by `default_generation_config`; a recipe cannot change them.
TOKENIZER_GENERATION_SETTINGS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id",
                                 "suppress_tokens")
# Set from the tokenizer by `core.building.transformer_model`.
TOKENIZER_MODEL_SETTINGS = ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")
CHATBOT_MODEL_TYPES = "gpt2, llama, bart, t5"  # the examples an error names


def checked_model_config(model_type: str, sizes: dict) -> dict:
    """A recipe's `model_config` for `model_type`, each value of its config setting's type (a number written as
    text becomes one), or a ValueError naming the fix: an unknown type, a setting the config class does not have,
    one the tokenizer sets, or sizes that do not make a model (checked by building it on the meta device: no
    memory, no time)."""
    if model_type not in CONFIG_MAPPING:
        close = difflib.get_close_matches(model_type, list(CONFIG_MAPPING.keys()), n=3)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise ValueError(f"model_type {model_type!r} is not a transformers model type{hint}; give a causal LM or "
                         f"encoder-decoder type of transformers' AutoConfig, e.g. {CHATBOT_MODEL_TYPES}.")
    config_class = CONFIG_MAPPING[model_type]
    types_by_name = {setting.name: setting.type for setting in fields(config_class)}
    aliases = getattr(config_class, "attribute_map", {})  # e.g. gpt2's hidden_size for n_embd
    unknown = sorted(name for name in sizes if name not in types_by_name and name not in aliases)
    if unknown:
        common = {setting.name for setting in fields(PretrainedConfig)}  # output_hidden_states, dtype, ...
        own = [name for name in types_by_name if name not in common and name not in TOKENIZER_MODEL_SETTINGS]
        raise ValueError(f"model_config: {', '.join(unknown)} is not a setting of {config_class.__name__}; its "
                         f"settings are {', '.join(own)}.")
    reserved = sorted(set(sizes) & set(TOKENIZER_MODEL_SETTINGS))
    if reserved:
        raise ValueError(f"model_config: {', '.join(reserved)}: the tokenizer sets these; remove them from "
                         "model_config.")
    checked = {}
    for name, value in sizes.items():
        annotation = types_by_name[aliases.get(name, name)]
        accepted, checked[name] = _as_type(value, annotation)
        if not accepted:
            raise ValueError(f"model_config: {name}={value!r}: {config_class.__name__} expects "
                             f"{_describe_type(annotation)}.")
    try:
        config = AutoConfig.for_model(model_type, **checked)
        auto_class = chatbot_auto_class(config)
        if auto_class is not None:
            with torch.device("meta"):
                auto_class.from_config(config)
    except Exception as error:  # the config's validators and the model's own checks (e.g. heads dividing sizes)
        raise ValueError(f"model_config {checked} does not make a {model_type} model: {error}") from error
    if auto_class is None:
        raise ValueError(f"model_type {model_type!r} ({config_class.__name__}) is neither a causal LM nor an "
                         f"encoder-decoder, so it cannot be a chatbot; use e.g. {CHATBOT_MODEL_TYPES}.")
    return checked


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
    if config.get("bf16") and (config.get("use_cpu") or not _has_accelerator()) and not cpu_has_bf16():
        # oneDNN has no bf16 LSTM on such CPUs (the first step fails), and their bf16 matrix products are emulated
        logger.warning("bf16: this CPU has no native bf16 (AVX-512 BF16 or AMX); training in fp32 instead.")
        config["bf16"] = False
    if config.get("generation_config") and not saves_generation_config:
        raise ValueError("generation_config: only `hf-neuralconv train` saves decoding defaults with the model it "
                         "trains; remove it from this recipe (a chat call chooses its own decoding).")
    return HfArgumentParser(dataclass_types).parse_dict(config, allow_extra_keys=False)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (oneDNN's test: AVX-512 BF16 or AMX), so that bf16 autocast
    works for every layer and pays off; False on a torch build without oneDNN."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _has_accelerator() -> bool:
    """A GPU (CUDA, Apple MPS, Intel XPU) that `TrainingArguments` would train on."""
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or torch.backends.mps.is_available() or bool(xpu and xpu.is_available())


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



"""MTASK-S with PEFT: one base model and one LoRA adapter per target speaker (Luan et al. 2017, Section 5), on any
backbone: our LSTM encoder-decoder, a causal LM (GPT-2, Llama) or a transformers encoder-decoder (BART, T5).

The paper trains a whole model per target speaker ("N models for N users"); here the general model is shared and
each speaker owns a low-rank adapter of the decoder — the part the autoencoder task adapts (Section 4: decoder
shared between the tasks, encoders not); an encoder stays the general one. A causal LM is all decoder: its adapter
covers every layer. `speaker_lora_config` picks the weights:

* our LSTM: PEFT's LoRA cannot wrap an `nn.LSTM` module, but it can adapt its weight matrices through
  `target_parameters`: every decoder LSTM weight, the attention layers and the projection before the softmax;
* transformers models: PEFT's default LoRA targets of the model type (GPT-2 `c_attn`, Llama `q_proj`/`v_proj`, BART
  `q_proj`/`v_proj`, T5 `q`/`v`), those of the decoder only for an encoder-decoder (its self- and cross-attention).

The output layer (`lm_head`) and the embeddings are left out on purpose: PEFT saves the full input and output
embedding matrices with an adapter that targets them, and those are most of a conversation model's weights.

    >>> model = LSTMSeq2SeqForConditionalGeneration.from_pretrained(base_dir, autoencoder_encoder=True)
    >>> speakers = SpeakerVocabulary(["alice", "bob"])
    >>> model = add_speaker_adapter(model, speakers, "alice")  # then MultiTaskTrainer on alice's text, and bob ...
    >>> save_speaker_adapters(model, speakers, adapters_dir)
    >>> model, speakers = load_speaker_adapters(base_model, adapters_dir)  # later: answer as any of them
    >>> set_speaker(model, speakers, "bob"); model.generate(...)

An adapter trains as its base model does, on rows laid out for its backbone (`core.building.tokenize_dataset` with
`layout=row_layout(model)`, batched by `DialogueCollator`): by `MultiTaskTrainer` for our LSTM and causal LMs (the
autoencoder task needs our LSTM's second encoder, or a causal LM's empty history), by `ConversationTrainer` on
conversations alone for BART and T5. The generic speaker of the vocabulary is the base model itself:
`with model.disable_adapter(): ...`.
"""

import copy
import re
from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

from ..models.lstm.configuration_lstm import LSTMSeq2SeqConfig
from ..models.lstm.modeling_lstm import LSTMEncoder
from .speakers import GENERIC_SPEAKER, SpeakerVocabulary


def adapter_name(vocabulary: SpeakerVocabulary, speaker: str) -> str:
    """The PEFT adapter name of a speaker: `speaker_<index in the vocabulary>` (speaker ids can hold characters
    that adapter names cannot). Unknown speakers, and the generic one, have no adapter: a ValueError."""
    if speaker == GENERIC_SPEAKER:
        raise ValueError(f"{GENERIC_SPEAKER!r} is the base model: use `with model.disable_adapter():` instead.")
    return f"speaker_{vocabulary.index(speaker)}"


def speaker_lora_config(model_config, r: int = 8, lora_alpha: int = 16) -> LoraConfig:
    """LoRA of the decoder of a model with this config (Luan et al. 2017, Section 5: MTASK-S adapts the decoder).

    `LSTMSeq2SeqConfig`: the input and recurrent weights of every decoder LSTM layer (`target_parameters`), the
    attention's linear layers and the projection before the softmax, if any. A transformers config: PEFT's default
    LoRA targets of its model type, restricted to the decoder of an encoder-decoder. Another model type is a
    ValueError: build its `LoraConfig` yourself."""
    if isinstance(model_config, LSTMSeq2SeqConfig):
        return _lstm_lora_config(model_config, r, lora_alpha)
    model_type = model_config.model_type
    if model_type not in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING:
        raise ValueError(f"PEFT has no default LoRA target modules for model type {model_type!r}: pass "
                         "`add_speaker_adapter` a `LoraConfig` naming the decoder's linear layers.")
    modules = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING[model_type]
    if model_config.is_encoder_decoder:  # a regex is matched against the full module name
        modules = rf"(.*\.)?decoder\..*\.({'|'.join(map(re.escape, modules))})"
    return LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        lora_dropout=0.0,  # as the LSTM's adapters must: one adapter recipe on every backbone
        target_modules=modules,
        fan_in_fan_out=model_type == "gpt2",  # GPT-2's `Conv1D` layers store their weights transposed
    )


def _lstm_lora_config(model_config: LSTMSeq2SeqConfig, r: int, lora_alpha: int) -> LoraConfig:
    lstm_weights = [f"decoder.{weight}_l{layer}" for layer in range(model_config.num_layers)
                    for weight in ("weight_ih", "weight_hh")]
    modules = []
    if model_config.attention == "general":
        modules.append("attention.query_transform")
    if model_config.attention != "none":
        modules.append("attention.output_transform")
    if model_config.projection_size:
        modules.append("output_layer.projection")
    return LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        lora_dropout=0.0,  # LoRA on a parameter (target_parameters) cannot apply dropout to its input
        target_parameters=lstm_weights,
        target_modules=modules or None,
    )


def add_speaker_adapter(model, vocabulary: SpeakerVocabulary, speaker: str, lora_config: LoraConfig | None = None):
    """Add and activate `speaker`'s adapter (MTASK-S, Luan et al. 2017, Section 5); returns the `PeftModel`.

    `model` is the base model of any backbone (it becomes a `PeftModel`) or a `PeftModel` holding other speakers'
    adapters; `lora_config` defaults to `speaker_lora_config(model.config)`. When the base model (our LSTM) has an
    autoencoder encoder, it is replaced by a freshly initialised, trainable one (Figure 3, step 1: each speaker's
    multi-task training starts from a random autoencoder encoder). That encoder is not part of the adapter: only
    training reads it.
    """
    name = adapter_name(vocabulary, speaker)
    if isinstance(model, PeftModel):
        if name in model.peft_config:
            raise ValueError(f"Speaker {speaker!r} already has an adapter ({name}).")
        model.add_adapter(name, lora_config or speaker_lora_config(model.config))
        model.set_adapter(name)
    else:
        model = get_peft_model(model, lora_config or speaker_lora_config(model.config), adapter_name=name)
    base = model.get_base_model()
    if getattr(base.config, "autoencoder_encoder", False):
        encoder = LSTMEncoder(base.config).to(base.device)
        encoder.apply(base._init_weights)
        base.autoencoder_encoder = encoder  # a new module: trainable, outside the adapter
    return model


def save_speaker_adapters(model: PeftModel, vocabulary: SpeakerVocabulary, directory: str | Path) -> None:
    """Save every speaker adapter (`directory/speaker_<i>/`, LoRA weights only) and the vocabulary (`speakers.json`)."""
    model.save_pretrained(directory, save_embedding_layers=False)
    vocabulary.save(directory)


def load_speaker_adapters(base_model, directory: str | Path) -> tuple[PeftModel, SpeakerVocabulary]:
    """The base model with every adapter saved by `save_speaker_adapters` loaded; the first speaker is active."""
    directory = Path(directory)
    vocabulary = SpeakerVocabulary.load(directory)
    speakers = vocabulary.names[1:]
    if not speakers:
        raise ValueError(f"{directory}: the speaker vocabulary names no speaker with an adapter.")
    names = [adapter_name(vocabulary, speaker) for speaker in speakers]
    missing = [name for name in names if not (directory / name / "adapter_config.json").is_file()]
    if missing:
        raise FileNotFoundError(f"{directory}: no adapter saved for {missing}.")
    model = PeftModel.from_pretrained(base_model, directory / names[0], adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(directory / name, adapter_name=name)
    model.set_adapter(names[0])
    return model, vocabulary


def _loaded_adapter(model: PeftModel, vocabulary: SpeakerVocabulary, speaker: str) -> str:
    name = adapter_name(vocabulary, speaker)
    if name not in model.peft_config:
        raise ValueError(f"Speaker {speaker!r} is in the vocabulary but has no adapter in this model.")
    return name


def set_speaker(model: PeftModel, vocabulary: SpeakerVocabulary, speaker: str) -> None:
    """Make `speaker`'s adapter the active one; an unknown speaker, or one without an adapter, is a ValueError."""
    model.set_adapter(_loaded_adapter(model, vocabulary, speaker))


def merged_speaker_model(model: PeftModel, vocabulary: SpeakerVocabulary, speaker: str):
    """A standalone model answering as `speaker`: a copy of the base model with that speaker's LoRA merged into its
    weights (`model` itself, with all its adapters and its active one, is left as it was)."""
    name = _loaded_adapter(model, vocabulary, speaker)
    return copy.deepcopy(model).merge_and_unload(adapter_names=[name])

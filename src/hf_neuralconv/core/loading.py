"""A saved model directory loaded with errors that say which file is missing or broken: the loader of every
command that reads a trained chatbot, an encoder-decoder or a causal LM (ours or any transformers model)."""

from pathlib import Path

from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, PreTrainedModel

from ..models.lstm.modeling_lstm import LSTMForCausalLM


def chatbot_auto_class(config):
    """`AutoModelForSeq2SeqLM` for an encoder-decoder config, `AutoModelForCausalLM` for a causal LM, else None."""
    for auto_class in (AutoModelForSeq2SeqLM, AutoModelForCausalLM):
        if type(config) in auto_class._model_mapping:
            return auto_class
    return None


def load_model_dir(model_dir: str | Path) -> tuple[PreTrainedModel, "AutoTokenizer"]:
    """Load a saved model and its tokenizer, with errors that say which file is missing or broken."""
    model = load_model(model_dir, also_required=("tokenizer.json",))
    if isinstance(model, LSTMForCausalLM):
        raise ValueError(f"{model_dir}: a {type(model.config).__name__} model ({model.config.model_type!r}) is not a "
                         "chatbot this command can answer with: it models replies alone (an MMI anti-LM). Give a "
                         "chatbot's directory (`hf-neuralconv train` with `architecture: seq2seq`, or a transformers "
                         "chatbot).")
    return model, AutoTokenizer.from_pretrained(model_dir)


def load_model(model_dir: str | Path, also_required: tuple[str, ...] = ()) -> PreTrainedModel:
    """Load a saved encoder-decoder or causal LM in eval mode (a reverse model or an anti-LM, which share the
    chatbot's tokenizer), with errors that say which file is missing or broken."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: no such model directory (train one with `hf-neuralconv train`).")
    # A large model's weights are sharded: model.safetensors.index.json names the shards.
    weights = "model.safetensors.index.json" if (model_dir / "model.safetensors.index.json").is_file() else (
        "model.safetensors")
    for required in ("config.json", weights, *also_required):
        if not (model_dir / required).is_file():
            raise FileNotFoundError(
                f"{model_dir}: {required} is missing; this is not a complete model directory saved by "
                "`hf-neuralconv train` (or `save_pretrained` + tokenizer.save_pretrained)."
            )
    try:
        config = AutoConfig.from_pretrained(model_dir)
    except Exception as error:  # invalid JSON, or a value the config class refuses: not a weights problem
        raise ValueError(f"{model_dir / 'config.json'}: {str(error).rstrip('.')}. Fix that file, or save the model "
                         "again.") from error
    auto_class = chatbot_auto_class(config)
    if auto_class is None:
        raise ValueError(f"{model_dir}: a {type(config).__name__} model ({config.model_type!r}) is neither an "
                         "encoder-decoder nor a causal language model, so it cannot answer a chat; give the directory "
                         "of a sequence-to-sequence or causal LM chatbot.")
    try:
        model = auto_class.from_pretrained(model_dir, config=config)
    except OSError:
        raise  # it names the file already (our models' `from_pretrained`)
    except Exception as error:  # safetensors/transformers raise several types for a damaged file
        raise OSError(
            f"{model_dir}: could not load the weights ({type(error).__name__}: {error}). The file "
            "model.safetensors may be truncated or corrupt: copy it again or retrain."
        ) from error
    return model.eval()



"""A saved model directory loaded with errors that say which file is missing or broken: the loader of every
command that reads a trained chatbot."""

from pathlib import Path

from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer, PreTrainedModel


def load_model_dir(model_dir: str | Path) -> tuple[PreTrainedModel, "AutoTokenizer"]:
    """Load a saved model and its tokenizer, with errors that say which file is missing or broken."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: no such model directory (train one with `hf-neuralconv train`).")
    for required in ("config.json", "model.safetensors", "tokenizer.json"):
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
    if type(config) not in AutoModelForSeq2SeqLM._model_mapping:
        raise ValueError(f"{model_dir}: a {type(config).__name__} model ({config.model_type!r}) is not a chatbot this "
                         "command can answer with; give an encoder-decoder model directory (`hf-neuralconv train` "
                         "with the default `architecture: seq2seq`).")
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(model_dir, config=config)
    except OSError:
        raise  # it names the file already (our models' `from_pretrained`)
    except Exception as error:  # safetensors/transformers raise several types for a damaged file
        raise OSError(
            f"{model_dir}: could not load the weights ({type(error).__name__}: {error}). The file "
            "model.safetensors may be truncated or corrupt: copy it again or retrain."
        ) from error
    return model.eval(), AutoTokenizer.from_pretrained(model_dir)



"""Model cards: the `README.md` a trained model directory carries, with Hub metadata and the run's measured metrics.

Written with `huggingface_hub`'s `ModelCard` / `ModelCardData` so that the YAML header (library, tags, datasets,
base model, `model-index` results) is what the Hub parses.
"""

from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

PAPER_TAGS = ["hf-neuralconv", "lstm", "seq2seq", "conversational", "dialogue", "vinyals-le-2015"]

# How a metric key of `results.json` / evaluation JSON is named on the card: (metric type, split, readable name).
CARD_METRICS = {
    "validation_perplexity": ("perplexity", "validation", "Perplexity (validation)"),
    "test_perplexity": ("perplexity", "test", "Perplexity (test)"),
}

USAGE = """## How to use

```python
import hf_neuralconv  # or pass trust_remote_code=True and skip this import
from transformers import pipeline

chat = pipeline("conversational", model="{path}")
print(chat("hi ! how are you ?")[0]["generated_text"][-1]["content"])
```

In a terminal: `hf-neuralconv chat {path}` (multi-turn, `/reset` to start over).
"""


def write_model_card(
    model_dir: str | Path, metrics: dict, dataset: str, base_model: str | None = None, machine: str | None = None
) -> Path:
    """Write `model_dir/README.md`: Hub metadata, the metrics measured by the run (keys of `CARD_METRICS` that are
    present), the training set-up and how to load and chat. Returns the card's path."""
    model_dir = Path(model_dir)
    dataset_name = "chitchat-dataset" if dataset == "chitchat" else Path(dataset).name
    eval_results = [
        EvalResult(task_type="text-generation", dataset_type=dataset_name, dataset_name=dataset_name,
                   dataset_split=split, metric_type=metric_type, metric_name=name, metric_value=round(metrics[key], 4))
        for key, (metric_type, split, name) in CARD_METRICS.items()
        if metrics.get(key) is not None
    ]
    card_data = ModelCardData(
        library_name="transformers",
        tags=PAPER_TAGS,
        datasets=[dataset_name],
        base_model=base_model,
        model_name=model_dir.name,
        eval_results=eval_results or None,
        pipeline_tag="text-generation",
    )
    rows = "\n".join(f"| {name} | {metrics[key]:.4g} |" for key, (_, _, name) in CARD_METRICS.items()
                     if metrics.get(key) is not None)
    facts = [f"- training examples: {metrics['train_examples']:,}" if "train_examples" in metrics else "",
             f"- epochs: {metrics['epochs']}" if metrics.get("epochs") is not None else "",
             f"- training time: {metrics['train_runtime_s'] / 60:.1f} min" if metrics.get("train_runtime_s") else "",
             f"- parameters: {metrics['parameters']:,}" if "parameters" in metrics else "",
             f"- machine: {machine}" if machine else ""]
    body = "\n".join([
        f"# {model_dir.name}",
        "",
        "An LSTM encoder-decoder conversation model (Vinyals & Le 2015, *A Neural Conversational Model*) trained "
        f"with hf-neuralconv on `{dataset_name}`.",
        "",
        "## Results measured by the training run",
        "",
        "| metric | value |",
        "|---|---|",
        rows,
        "",
        "Perplexity is token-level over the reference replies (pads excluded, one `</s>` per reply).",
        "",
        "## Training",
        "",
        *[fact for fact in facts if fact],
        "",
        USAGE.format(path=model_dir),
    ])
    card = ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}")
    path = model_dir / "README.md"
    card.save(path)
    return path

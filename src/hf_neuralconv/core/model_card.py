"""Model cards: the `README.md` a trained model directory carries, with Hub metadata and the run's measured metrics.

Written with `huggingface_hub`'s `ModelCard` / `ModelCardData` so that the YAML header (library, tags, datasets,
base model, `model-index` results) is what the Hub parses.
"""

from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

PAPER_TAGS = ["hf-neuralconv", "conversational", "dialogue", "vinyals-le-2015"]

# How a metric key of `results.json` / evaluation JSON is named on the card: (metric type, split, readable name).
CARD_METRICS = {
    "validation_perplexity": ("perplexity", "validation", "Perplexity (validation)"),
    "test_perplexity": ("perplexity", "test", "Perplexity (test)"),
    # Greedy replies to (a seeded sample of) the test inputs, words as `data.metric_words` splits them.
    "test_greedy_distinct_1": ("distinct-1", "test", "distinct-1, corpus level (greedy replies)"),
    "test_greedy_distinct_2": ("distinct-2", "test", "distinct-2, corpus level (greedy replies)"),
    "test_greedy_max_ratio": ("max-ratio", "test", "max-ratio (greedy replies)"),
    "test_greedy_ent_3": ("ent-3", "test", "Ent-3 (greedy replies)"),
    "test_greedy_bleu": ("bleu", "test", "BLEU (greedy replies)"),
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

# What each kind of trained model is and how it is used: (description, usage). `{path}` is the model directory.
ROLES = {
    "chatbot": (
        "A conversation model (Vinyals & Le 2015, *A Neural Conversational Model*), {architecture}",
        USAGE,
    ),
    "negative-trained": (
        "A conversation model (Vinyals & Le 2015), {architecture}, fine-tuned by negative training against "
        "malicious or frequent responses (He & Glass 2020)",
        USAGE,
    ),
    "reverse-model": (
        "The reverse model p(message | reply) of MMI-bidi reranking (Li et al. 2016; Luan et al. 2017, Eq. 4), "
        "{architecture}",
        """## How to use

The reverse model rescores a chatbot's N-best replies; it shares the chatbot's vocabulary.

```python
from transformers import pipeline
import hf_neuralconv

chat = pipeline("conversational", model="CHATBOT_DIR", reverse_model="{path}")
print(chat("hi ! how are you ?", strategy="mmi-bidi", mmi_lambda=0.5, mmi_gamma=0.5)[0]["generated_text"][-1])
```
""",
    ),
    "language-model": (
        "A language model of chat replies, {architecture}: the anti-LM of MMI-antiLM decoding (Li et al. 2016; He & "
        "Glass 2020, Section 4.3) and the input LM of the io hit criteria (He & Glass 2020, Section 3.2)",
        """## How to use

```python
from transformers import pipeline
import hf_neuralconv

chat = pipeline("conversational", model="CHATBOT_DIR", anti_lm="{path}")
print(chat("hi ! how are you ?", strategy="mmi-antilm", mmi_lambda=0.5, mmi_gamma=3)[0]["generated_text"][-1])
```
""",
    ),
}


def architecture_name(config) -> str:
    """How a card names a model's architecture: "an LSTM encoder-decoder", "a gpt2 causal language model", ..."""
    kind = "encoder-decoder" if getattr(config, "is_encoder_decoder", False) else "causal language model"
    if config.model_type.startswith("lstm"):
        return "an LSTM " + ("encoder-decoder" if kind == "encoder-decoder" else "language model")
    return f"a {config.model_type} {kind}"


def write_model_card(
    model_dir: str | Path,
    metrics: dict,
    dataset: str,
    config,
    base_model: str | None = None,
    machine: str | None = None,
    role: str = "chatbot",
) -> Path:
    """Write `model_dir/README.md`: Hub metadata, the metrics measured by the run (keys of `CARD_METRICS` that are
    present), the training set-up and how to load and use it (`role`: a key of `ROLES`; `config`: the model's, for
    its architecture). Returns the card's path."""
    if role not in ROLES:
        raise ValueError(f"`role` must be one of {', '.join(ROLES)}, got {role!r}.")
    description, usage = ROLES[role]
    description = description.format(architecture=architecture_name(config))
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
        tags=[*PAPER_TAGS, config.model_type],
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
        f"{description}, trained with hf-neuralconv on `{dataset_name}`.",
        "",
        "## Results measured by the training run",
        "",
        "| metric | value |",
        "|---|---|",
        rows,
        "",
        "Perplexity is token-level over the reference replies (pads excluded, one `</s>` per reply)."
        + (" The reply metrics are those of greedy replies to a seeded sample of the test inputs, against the human "
           "replies (`hf-neuralconv diversity-report`; distinct-n divides by all generated words)."
           if "test_greedy_distinct_2" in metrics else ""),
        "",
        "## Training",
        "",
        *[fact for fact in facts if fact],
        "",
        usage.format(path=model_dir),
    ])
    card = ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}")
    path = model_dir / "README.md"
    card.save(path)
    return path

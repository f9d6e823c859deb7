"""Decoding strategies side by side on the same test inputs (`hf-neuralconv diversity-report`): He & Glass
(2020) Table 4 (max-ratio, Ent-2/3) and Luan et al. (2017) Table 2 (BLEU, distinct-1/2), the human replies as the
reference row; and the greedy-reply metrics `hf-neuralconv train` writes into results.json and the model card.
"""

import time
from pathlib import Path

from transformers import set_seed

from ..core.evaluation import quiet_truncation, reply_metrics, report_inputs
from ..core.loading import load_model_dir
from .responder import Responder, chat_pipeline

# The rows of the diversity report, He & Glass (2020) Table 4 / Luan et al. (2017) Table 2 style.
REPORT_STRATEGIES = ("greedy", "beam", "sample", "mmi-antilm", "mmi-bidi")
# Test inputs whose greedy replies `hf-neuralconv train` measures for results.json and the model card.
GREEDY_REPORT_INPUTS = 1000


def diversity_report(
    model_dir: str | Path,
    anti_lm: str | Path | None = None,
    reverse_model: str | Path | None = None,
    strategies: tuple[str, ...] = REPORT_STRATEGIES,
    split: str = "test",
    max_inputs: int | None = 1000,
    num_beams: int = 10,
    max_new_tokens: int = 20,
    antilm_lambda: float = 0.5,
    antilm_gamma: int = 3,
    batch_size: int = 64,
    seed: int = 0,
    dataset: str | None = None,
) -> dict:
    """Decode the same inputs of a split under several strategies and measure each against the human replies:
    He & Glass (2020) Table 4 (max-ratio, Ent-2, Ent-3) and Luan et al. (2017) Table 2 (BLEU, distinct-1/2) in one
    table, the human replies as the reference row.

    `beam` and `mmi-antilm` use `num_beams` beams; `mmi-antilm` subtracts `antilm_lambda` x log p_LM over the first
    `antilm_gamma` tokens (needs `anti_lm`: a causal LM directory, or "self" for a causal chatbot); `mmi-bidi`
    reranks with the settings tuned into the model's `generation_config.mmi` (`hf-neuralconv mmi-tune`) and the
    reverse model named there or given. Sampling is seeded. Every row decodes at most `max_new_tokens` tokens.
    The inputs are the split the model was trained on (`data_config.json`), or one of `dataset` (required for a
    directory without `data_config.json`)."""
    unknown = sorted(set(strategies) - set(REPORT_STRATEGIES))
    if unknown:
        raise ValueError(f"Unknown strategies {unknown}; choose among {', '.join(REPORT_STRATEGIES)}.")
    model_dir = Path(model_dir)
    chats, references = report_inputs(model_dir, split, max_inputs, seed, dataset)
    chat = chat_pipeline(*load_model_dir(model_dir), anti_lm=anti_lm, reverse_model=reverse_model)
    missing = sorted(set(strategies) - set(chat.available_strategies()))
    if missing:
        raise ValueError(f"Strategies {missing} need a model this report was not given: pass --anti-lm for "
                         "mmi-antilm and a tuned model (hf-neuralconv mmi-tune) or --reverse-model for mmi-bidi.")
    rows = {"human": {**reply_metrics(chat.tokenizer, references, references), "seconds": None}}
    replies_by_strategy = {}
    for strategy in strategies:
        options = {"strategy": strategy, "max_new_tokens": max_new_tokens}
        if strategy in ("beam", "mmi-antilm"):
            options["num_beams"] = num_beams
        if strategy == "mmi-antilm":
            options.update(mmi_lambda=antilm_lambda, mmi_gamma=antilm_gamma)
        set_seed(seed)
        started = time.perf_counter()
        with quiet_truncation():
            outputs = chat([Responder.as_chat(turns) for turns in chats], batch_size=batch_size, **options)
        seconds = time.perf_counter() - started
        replies = [output[0]["generated_text"][-1]["content"] for output in outputs]
        replies_by_strategy[strategy] = replies
        rows[strategy] = {**reply_metrics(chat.tokenizer, replies, references), "seconds": seconds}
    samples = [{"history": turns, "human": reference, **{name: replies[index]
                                                         for name, replies in replies_by_strategy.items()}}
               for index, (turns, reference) in enumerate(zip(chats[:8], references[:8]))]
    return {
        "model": str(model_dir), "split": split, "inputs": len(chats), "num_beams": num_beams,
        "max_new_tokens": max_new_tokens, "antilm": {"lambda": antilm_lambda, "gamma": antilm_gamma,
                                                     "model": None if anti_lm is None else str(anti_lm)},
        "mmi_bidi": chat.mmi_settings or None, "seed": seed, "rows": rows, "samples": samples,
    }


def greedy_reply_metrics(model_dir: Path) -> dict[str, float]:
    """What a saved chatbot's replies look like (He & Glass 2020, Table 4 columns): distinct-n, max-ratio, Ent-n,
    length and BLEU of its greedy replies to a seeded sample of the test inputs, as `test_greedy_<metric>` keys
    for results.json and the model card."""
    report = diversity_report(model_dir, strategies=("greedy",), max_inputs=GREEDY_REPORT_INPUTS)
    return {f"test_greedy_{name}": value for name, value in report["rows"]["greedy"].items() if name != "seconds"}

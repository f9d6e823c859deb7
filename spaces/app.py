"""The hf-neuralconv Space: chat with a trained conversation model and compare decoding strategies.

Start it from the repository root (after `pip install -e ".[space]"`):

    python spaces/app.py

It serves http://127.0.0.1:7860 (GRADIO_SERVER_PORT / GRADIO_SERVER_NAME choose another port / address). The model
comes from HF_NEURALCONV_MODEL, a local directory or a Hub id, by default `outputs/seq2seq-quickstart`: the model that
the README's main command (`hf-neuralconv train recipes/seq2seq/quickstart.yaml`) trains.

Tabs: *Chat* (multi-turn; persona picker for persona models; decoding controls; the N-best list with scores) and
*Diversity* (decode a list of prompts with two strategies; distinct-1/2 and max-ratio, in a table and a chart).
Each browser session keeps its own chat history (Gradio session state); the model is shared, one call at a time.
"""

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no usage reports leave the machine

import sys
import threading
from pathlib import Path

import gradio as gr
import pandas as pd
from transformers import pipeline

from hf_neuralconv.chat import load_model_dir
from hf_neuralconv.metrics import distinct_n, max_ratio
from hf_neuralconv.pipelines import DECODING_STRATEGIES, TASK, ConversationalPipeline, clean_text

MODEL_ENV = "HF_NEURALCONV_MODEL"
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "outputs" / "seq2seq-quickstart"
TRAIN_COMMAND = "hf-neuralconv train recipes/seq2seq/quickstart.yaml"
MAX_MESSAGE_CHARS = 1_000  # the model reads a few dozen tokens; longer input only costs the server
MAX_PROMPTS = 200
DIVERSITY_BATCH_SIZE = 16
DEFAULT_PROMPTS = "\n".join(
    ["hi , how are you ?", "what do you do for fun ?", "where are you from ?", "do you like music ?", "good night ."]
)


def load_pipeline(name_or_path: str) -> ConversationalPipeline:
    """The conversational pipeline of a local model directory or a Hub model id, with a clear error when the
    default model has not been trained yet."""
    path = Path(name_or_path)
    if path.is_dir():
        model, tokenizer = load_model_dir(path)
        return ConversationalPipeline(model=model, tokenizer=tokenizer)
    if path == DEFAULT_MODEL or path.is_absolute() or name_or_path.startswith("."):
        raise FileNotFoundError(
            f"{path}: no model directory here. Train the default model with `{TRAIN_COMMAND}`, or point "
            f"{MODEL_ENV} at a model directory or a Hub model id."
        )
    return pipeline(TASK, model=name_or_path)


def persona_choices(pipe: ConversationalPipeline) -> list[str]:
    """Names of the model's speakers (its speakers.json), or their ids when it has no names; empty without speakers."""
    if not pipe.num_speakers:
        return []
    return sorted(pipe.speakers) if pipe.speakers else [str(index) for index in range(pipe.num_speakers)]


def decoding_options(strategy: str, num_beams: int, temperature: float, top_p: float, max_new_tokens: int,
                     n_best: int = 1) -> dict:
    """Pipeline options for the decoding controls; only the controls that apply to `strategy` are used."""
    options = {"strategy": strategy, "max_new_tokens": int(max_new_tokens), "num_return_sequences": int(n_best)}
    if strategy == "beam":
        options["num_beams"] = max(int(num_beams), int(n_best), 2)
    elif strategy == "sample":
        options.update(temperature=float(temperature), top_p=float(top_p))
    elif n_best > 1:
        gr.Warning("Greedy decoding gives one reply: choose beam or sample for an N-best list.")
        options["num_return_sequences"] = 1
    return options


def answer(pipe: ConversationalPipeline, lock: threading.Lock, message: str, history: list[dict], persona: str | None,
           strategy: str, num_beams: int, temperature: float, top_p: float, max_new_tokens: int, context_turns: int,
           n_best: int) -> tuple[str, list[list]]:
    """One chat turn: the reply to `message` after this session's `history`, and the N-best table.

    Bad input (empty, too long, unknown persona, contradictory options) becomes a `gr.Error` the user can read.
    """
    if isinstance(message, str) and len(message) > MAX_MESSAGE_CHARS:
        raise gr.Error(
            f"The message has {len(message):,} characters; the limit is {MAX_MESSAGE_CHARS:,} "
            f"(the model reads only its last {pipe.max_source_length} tokens)."
        )
    chat = [{"role": turn["role"], "content": turn["content"]} for turn in history]
    chat.append({"role": "user", "content": message})
    options = decoding_options(strategy, num_beams, temperature, top_p, max_new_tokens, n_best)
    if pipe.num_speakers:
        options["speaker"] = persona if pipe.speakers else int(persona or 0)
    try:
        with lock:
            outputs = pipe(chat, context_turns=int(context_turns), **options)
    except (ValueError, TypeError) as error:
        raise gr.Error(str(error)) from None
    candidates = [[output["generated_text"][-1]["content"], round(output["score"], 3)] for output in outputs]
    return candidates[0][0], candidates


def compare_strategies(pipe: ConversationalPipeline, lock: threading.Lock, prompts_text: str, strategy_a: str,
                       strategy_b: str, max_new_tokens: int, persona: str | None,
                       progress: gr.Progress | None = None) -> tuple[list[list], list[list], pd.DataFrame]:
    """Replies to every prompt (one per line) under two strategies, and their diversity: distinct-1/2 (distinct
    n-grams over all generated tokens) and max-ratio (share of the most frequent reply)."""
    prompts = [line.strip() for line in prompts_text.splitlines() if clean_text(line)]
    if not prompts:
        raise gr.Error("Give at least one prompt, one per line.")
    if len(prompts) > MAX_PROMPTS or any(len(prompt) > MAX_MESSAGE_CHARS for prompt in prompts):
        raise gr.Error(f"Give at most {MAX_PROMPTS} prompts of at most {MAX_MESSAGE_CHARS:,} characters each.")
    runs = {f"A: {strategy_a}": strategy_a, f"B: {strategy_b}": strategy_b}
    batches = [prompts[start : start + DIVERSITY_BATCH_SIZE] for start in range(0, len(prompts), DIVERSITY_BATCH_SIZE)]
    replies, done = {}, 0
    for label, strategy in runs.items():
        options = {"strategy": strategy, "max_new_tokens": int(max_new_tokens)}
        if pipe.num_speakers:
            options["speaker"] = persona if pipe.speakers else int(persona or 0)
        replies[label] = []
        for batch in batches:
            if progress is not None:
                progress((done, 2 * len(batches)), desc=f"Decoding with {label}")
            try:
                with lock:
                    outputs = pipe(batch, batch_size=len(batch), **options)
            except (ValueError, TypeError) as error:
                raise gr.Error(str(error)) from None
            replies[label] += [candidates[0]["generated_text"][-1]["content"] for candidates in outputs]
            done += 1
    table = [[prompt, *(replies[label][index] for label in runs)] for index, prompt in enumerate(prompts)]
    metrics = [
        [label, distinct_n(replies[label], 1), distinct_n(replies[label], 2), max_ratio(replies[label])]
        for label in runs
    ]
    chart = pd.DataFrame(
        [
            {"bar": f"{metric} · {row[0]}", "value": value, "strategy": row[0]}
            for row in metrics
            for metric, value in zip(("distinct-1", "distinct-2", "max-ratio"), row[1:], strict=True)
        ]
    )
    return table, [[row[0], *(round(value, 4) for value in row[1:])] for row in metrics], chart


def build_demo(pipe: ConversationalPipeline, model_name: str = "") -> gr.Blocks:
    """The Space's interface around one loaded pipeline."""
    lock = threading.Lock()  # the model serves one call at a time; histories live in each session's state
    strategies = list(DECODING_STRATEGIES)
    personas = persona_choices(pipe)
    generation = pipe.model.generation_config

    def chat(message, history, persona, strategy, num_beams, temperature, top_p, max_new_tokens, context_turns,
             n_best):
        return answer(pipe, lock, message, history, persona, strategy, num_beams, temperature, top_p,
                      max_new_tokens, context_turns, n_best)

    def diversity(prompts_text, strategy_a, strategy_b, max_new_tokens, persona, progress=gr.Progress()):  # noqa: B008
        return compare_strategies(pipe, lock, prompts_text, strategy_a, strategy_b, max_new_tokens, persona, progress)

    with gr.Blocks(title="hf-neuralconv", analytics_enabled=False) as demo:
        gr.Markdown(
            f"# hf-neuralconv\nA neural conversational model (Vinyals & Le 2015) `{model_name}`. It reads the last "
            f"{pipe.max_source_length} tokens of your message and the turns before it."
        )
        with gr.Tab("Chat"):
            persona = gr.Dropdown(personas, value=personas[0] if personas else None, label="Persona",
                                  visible=bool(personas), render=False)
            controls = [
                persona,
                gr.Radio(strategies, value="greedy", label="Decoding strategy", render=False),
                gr.Slider(2, 10, value=5, step=1, label="Beams (beam search)", render=False),
                gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature (sampling)", render=False),
                gr.Slider(0.1, 1.0, value=0.9, step=0.05, label="Top-p (sampling)", render=False),
                gr.Slider(1, 64, value=generation.max_new_tokens or 32, step=1, label="Max new tokens", render=False),
                gr.Slider(0, 10, value=pipe.context_turns, step=1, label="Context turns kept", render=False),
                gr.Slider(1, 5, value=1, step=1, label="N-best list size", render=False),
            ]
            candidates = gr.Dataframe(headers=["candidate reply", "score"], label="N-best (best first)",
                                      interactive=False, render=False)
            gr.ChatInterface(
                chat,
                additional_inputs=controls,
                additional_outputs=[candidates],
                additional_inputs_accordion=gr.Accordion("Persona and decoding", open=True, render=False),
                textbox=gr.Textbox(placeholder="Say something", max_length=MAX_MESSAGE_CHARS, render=False),
            )
            candidates.render()
        with gr.Tab("Diversity"):
            prompts = gr.Textbox(DEFAULT_PROMPTS, lines=8, label="Prompts, one per line")
            with gr.Row():
                strategy_a = gr.Dropdown(strategies, value="greedy", label="Strategy A")
                strategy_b = gr.Dropdown(strategies, value="sample", label="Strategy B")
                max_new_tokens = gr.Slider(1, 64, value=generation.max_new_tokens or 32, step=1,
                                           label="Max new tokens")
                diversity_persona = gr.Dropdown(personas, value=personas[0] if personas else None, label="Persona",
                                                visible=bool(personas))
            run = gr.Button("Decode and compare", variant="primary")
            gr.Markdown("distinct-n: distinct n-grams divided by the number of generated tokens (Li et al. 2016); "
                        "max-ratio: share of the most frequent reply (He & Glass 2020).")
            metrics = gr.Dataframe(headers=["strategy", "distinct-1", "distinct-2", "max-ratio"], label="Diversity",
                                   interactive=False)
            chart = gr.BarPlot(x="bar", y="value", color="strategy", label="Diversity chart", sort=None)
            table = gr.Dataframe(headers=["prompt", "reply A", "reply B"], label="Replies", interactive=False)
            run.click(diversity, [prompts, strategy_a, strategy_b, max_new_tokens, diversity_persona],
                      [table, metrics, chart], api_name="diversity")
    return demo


def main() -> None:
    name = os.environ.get(MODEL_ENV) or str(DEFAULT_MODEL)
    try:
        pipe = load_pipeline(name)
    except (OSError, ValueError) as error:
        sys.exit(f"spaces/app.py: {error}")
    build_demo(pipe, name).queue().launch()


if __name__ == "__main__":
    main()

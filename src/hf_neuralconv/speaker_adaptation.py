"""`hf-neuralconv persona-train` and `persona-report`: the experiment of Luan et al. (2017), Tables 1-2 and Figure 7.

The three runs share one seeded data protocol (Section 6.1, `persona.speaker_adaptation_data`): general conversation
data from every speaker but `num_target_speakers` target speakers, the target speakers' held-out conversations (dev
and test) and their other turns, context dropped, as their non-conversational text (the `autoencoder` split).

* `baseline` — the SEQ2SEQ model of Section 3.2 trained on the general data until the target speakers' dev perplexity
  converges (Figure 3, step 2); the checkpoint with the best dev perplexity is kept.
* `mtask-m` — the baseline turned into a persona model (Section 3.3, Eq. 1; `persona.add_speaker_embeddings`): a
  vector per general speaker with at least `speaker_min_count` responses (rarer ones share the generic vector) and
  a random one per target speaker; then Figure 3, step 3: seq2seq batches of general data, each response read with
  its speaker's vector, alternate with autoencoder batches of the target speakers' text read with theirs (Section 5).
* `mtask-s` — one LoRA adapter of the baseline's decoder per target speaker (`adapters`), each trained on its own by
  Figure 3, step 3 on the general data and that speaker's text (Section 5, "N models for N users").

Both MTASK runs start from the trained baseline, which is their Figure 3, step 2: `pretrain_steps` defaults to 0
(`pretrain_steps: N` adds N seq2seq-only updates first, for MTASK-M those of the persona model).

Every run is evaluated the same way (Section 6.2): the perplexity of the target speakers' dev and test responses,
each speaker's examples read as that speaker (its vector, its adapter), pooled over all target tokens and per speaker
(Figure 4); and the replies to a seeded sample of `max_eval_inputs` test inputs, beam search with `num_beams` beams
and at most `max_new_tokens` tokens (Section 6.4), scored by corpus BLEU and distinct-1/2 against the human
responses. The paper's baseline also reranks the N-best list with MMI-bidi (Section 6.3, Eq. 4): give every run the
same `reverse_model`, `mmi_lambda` and `mmi_gamma` for that; without one the replies are the beam search 1-best.

A run directory holds the model (MTASK-S: the baseline's weights plus one adapter per target speaker in
`speaker_<i>/`), the tokenizer, `speakers.json` (MTASK runs), `data_config.json`, `protocol.json` (the split
summary), `results.json` and `replies.jsonl` (the decoded test inputs). `persona_report` sets runs side by side as
the paper's Tables 1-2 and answers a few test inputs as several target speakers (Figure 7).
"""

import json
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import datasets
import torch
from transformers import (
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    PreTrainedTokenizerFast,
    TrainerCallback,
    enable_full_determinism,
    set_seed,
)

from .adapters import add_speaker_adapter, adapter_name, load_speaker_adapters, save_speaker_adapters, set_speaker
from .adapters import speaker_lora_config
from .chat import load_model_dir
from .data import train_word_tokenizer
from .evaluation import perplexity, pooled_perplexity, reply_metrics, sorted_by_target_length
from .generation import encode_histories, generate_nbest, mmi_bidi_generate
from .models import LSTMSeq2SeqForConditionalGeneration
from .persona import (
    SpeakerVocabulary,
    add_speaker_embeddings,
    add_speaker_ids,
    load_speaker_texts,
    select_speaker_texts,
    speaker_adaptation_data,
)
from .pipelines import DATA_CONFIG_FILE, add_custom_pipeline
from .trainers import ConversationTrainer, MultiTaskConfig, MultiTaskTrainer
from .trainers.multitask import dev_perplexity_converged, encode_autoencoder_examples
from .training import (
    RESULTS_FILE,
    ConversationTrainingArguments,
    DataArguments,
    ModelArguments,
    build_model,
    check_output_dir,
    default_generation_config,
    describe_machine,
    first_examples,
    load_conversations,
    parse_recipe,
    tokenize_dataset,
    training_texts,
)

MODES = ("baseline", "mtask-s", "mtask-m")  # the columns of the paper's Tables 1-2, in order
MODE_LABELS = {"baseline": "Baseline", "mtask-s": "MTASK-S", "mtask-m": "MTASK-M"}
PROTOCOL_FILE = "protocol.json"
REPLIES_FILE = "replies.jsonl"
# MTASK-S: each speaker's checkpoints, in `<output_dir>/speaker_checkpoints/speaker_<i>/`.
SPEAKER_CHECKPOINTS_DIR = "speaker_checkpoints"
EVALUATION_SPLITS = ("validation", "test")
# Figure 7 samples: the responder of the test input and the next target speakers after them answer it.
SPEAKERS_PER_SAMPLE = 3
# The Markdown table of `persona_report`: column, results.json key, format (distinct-n as percentages, like Table 2).
TABLE_COLUMNS = (
    ("PPL dev", "validation_perplexity", "{:.2f}"),
    ("PPL test", "test_perplexity", "{:.2f}"),
    ("BLEU (test)", "test_bleu", "{:.2f}"),
    ("distinct-1", "test_distinct_1_corpus", "{:.2%}"),
    ("distinct-2", "test_distinct_2_corpus", "{:.2%}"),
    ("distinct-1 per utt.", "test_distinct_1_per_utterance", "{:.2%}"),
    ("distinct-2 per utt.", "test_distinct_2_per_utterance", "{:.2%}"),
)
# `evaluation.reply_metrics` names -> results.json names that say which distinct-n each one is.
REPLY_METRIC_NAMES = {"distinct_1": "distinct_1_corpus", "distinct_2": "distinct_2_corpus", "num_replies": "replies"}


@dataclass
class SpeakerAdaptationArguments:
    """Which run of Luan et al. (2017) a recipe is, its data protocol (Section 6.1), speaker settings (Section 5) and
    decoding (Section 6.4). The model, data and training settings are `ModelArguments` (baseline only: MTASK runs
    adapt `base_model`), `DataArguments` and `SpeakerAdaptationTrainingArguments`."""

    mode: str = field(default="baseline", metadata={"help": "baseline | mtask-m | mtask-s (Section 5)."})
    base_model: str | None = field(
        default=None, metadata={"help": "MTASK runs: the baseline run's output_dir (its training is Figure 3, step 2)."}
    )
    min_utterances: int = field(default=500, metadata={"help": "Turns a speaker needs to be a target speaker."})
    num_target_speakers: int = field(default=10, metadata={"help": "Target speakers drawn (the paper has 20)."})
    heldout_fraction: float = field(
        default=0.3, metadata={"help": "Share of each target speaker's conversations held out for dev + test."}
    )
    protocol_seed: int = field(default=0, metadata={"help": "Seed of the target speakers, the split and the sample."})
    speaker_texts: str | None = field(
        default=None,
        metadata={"help": "MTASK runs: a .jsonl/.csv/.parquet file of the target speakers' non-conversational text "
                          "(`text`, `speaker` columns) instead of the protocol's `autoencoder` split."},
    )
    speaker_min_count: int = field(
        default=50, metadata={"help": "MTASK-M: responses a general speaker needs for a vector of their own."}
    )
    speaker_embedding_size: int = field(default=500, metadata={"help": "MTASK-M: size of a speaker vector (Eq. 1)."})
    lora_rank: int = field(default=8, metadata={"help": "MTASK-S: rank of each speaker's LoRA adapter."})
    lora_alpha: int = field(default=16, metadata={"help": "MTASK-S: LoRA scaling numerator (scale alpha / rank)."})
    num_beams: int = field(default=50, metadata={"help": "Beam size of the test replies (the paper's B = 50)."})
    max_new_tokens: int = field(default=20, metadata={"help": "Longest test reply, in tokens (the paper's 20)."})
    reverse_model: str | None = field(
        default=None, metadata={"help": "p(M|R) for MMI-bidi reranking (Section 6.3); None: plain beam search."}
    )
    mmi_lambda: float | None = field(default=None, metadata={"help": "MMI-bidi weight of log p(M|R) (Eq. 4)."})
    mmi_gamma: float | None = field(default=None, metadata={"help": "MMI-bidi reward per reply token (Eq. 4)."})
    max_eval_inputs: int | None = field(
        default=1000, metadata={"help": "Test inputs decoded for BLEU / distinct-n (a seeded sample; None: all)."}
    )
    generation_batch_size: int = field(default=16, metadata={"help": "Inputs decoded together (x num_beams rows)."})

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"`mode` must be one of {', '.join(MODES)}, got {self.mode!r}.")
        if self.mode == "baseline" and (self.base_model or self.speaker_texts):
            raise ValueError(
                "The baseline is trained from scratch on the general data: `base_model` and `speaker_texts` belong to "
                "the mtask-m and mtask-s runs."
            )
        if self.mode != "baseline" and not self.base_model:
            raise ValueError(
                f"`mode: {self.mode}` adapts the trained baseline: set `base_model` to the baseline run's output_dir "
                "(e.g. outputs/persona/baseline, trained by recipes/persona_mtask/baseline.yaml)."
            )
        mmi_settings = [setting is not None for setting in (self.reverse_model, self.mmi_lambda, self.mmi_gamma)]
        if any(mmi_settings) and not all(mmi_settings):
            raise ValueError(
                "MMI-bidi reranking needs `reverse_model`, `mmi_lambda` and `mmi_gamma` together (tune the weights "
                "with `hf-neuralconv mmi-tune`); leave all three out for plain beam search."
            )
        sizes = dict(num_target_speakers=self.num_target_speakers, speaker_min_count=self.speaker_min_count,
                     speaker_embedding_size=self.speaker_embedding_size, lora_rank=self.lora_rank,
                     num_beams=self.num_beams, max_new_tokens=self.max_new_tokens,
                     generation_batch_size=self.generation_batch_size)
        if self.max_eval_inputs is not None:
            sizes["max_eval_inputs"] = self.max_eval_inputs
        too_small = [name for name, value in sizes.items() if value < 1]
        if too_small:
            raise ValueError(f"{', '.join(f'`{name}`' for name in too_small)} must be >= 1.")


@dataclass
class SpeakerAdaptationTrainingArguments(MultiTaskConfig, ConversationTrainingArguments):
    """`MultiTaskConfig` for all three runs (Luan et al. 2017, Figure 3: evaluate every `eval_steps` updates, stop
    when the dev perplexity converges, keep the best checkpoint) plus `overwrite_output_dir`. The baseline is Figure
    3's step 2 and the MTASK runs start from it, so `pretrain_steps` defaults to 0. For MTASK-S, `max_steps` and the
    epochs count each target speaker's run."""

    pretrain_steps: int | None = field(
        default=0,
        metadata={"help": "MTASK runs: seq2seq-only updates before the multi-task phase. 0: none, the baseline's "
                          "training was Figure 3's step 2; None: until the dev perplexity converges."},
    )


RECIPE_CLASSES = (ModelArguments, DataArguments, SpeakerAdaptationTrainingArguments, SpeakerAdaptationArguments)


def parse_speaker_adaptation_recipe(path: str | Path, overrides: Sequence[str] = ()) -> tuple:
    """A `persona-train` recipe (YAML, `key=value` overrides) as `RECIPE_CLASSES` instances; unknown keys are errors."""
    return parse_recipe(path, RECIPE_CLASSES, overrides)


def _check_recipe(model_args: ModelArguments, data_args: DataArguments,
                  training_args: SpeakerAdaptationTrainingArguments) -> None:
    """Settings of the shared dataclasses that this experiment cannot honour are errors, not silently ignored."""
    if model_args.model_name_or_path or model_args.tokenizer_name_or_path or model_args.architecture != "seq2seq":
        raise ValueError(
            "persona-train builds the baseline's seq2seq model and vocabulary itself and the MTASK runs adapt "
            "`base_model`: remove `model_name_or_path`, `tokenizer_name_or_path` and `architecture`."
        )
    defaults = DataArguments()
    ignored = [name for name in ("direction", "split_fractions", "split_seed", "max_eval_examples")
               if getattr(data_args, name) != getattr(defaults, name)]
    if ignored:
        raise ValueError(
            f"{', '.join(ignored)} do not apply: the speaker-adaptation protocol (min_utterances, num_target_speakers, "
            "heldout_fraction, protocol_seed) makes the splits, every target-speaker example is scored and "
            "`max_eval_inputs` limits the decoded test inputs."
        )
    if training_args.world_size > 1:
        raise ValueError("persona-train runs in one process (its evaluation and MTASK-S loop are not distributed).")


def adaptation_data(data_args: DataArguments, adaptation_args: SpeakerAdaptationArguments
                    ) -> tuple[datasets.DatasetDict, dict]:
    """The data protocol of Luan et al. (2017, Section 6.1) on `data_args.dataset` (`persona.speaker_adaptation_data`)
    and its summary, the `protocol.json` of every run (with the dataset named): runs compare only on one protocol."""
    data, summary = speaker_adaptation_data(
        load_conversations(data_args.dataset), adaptation_args.min_utterances, adaptation_args.num_target_speakers,
        adaptation_args.heldout_fraction, data_args.max_context_turns, adaptation_args.protocol_seed,
    )
    return data, {"dataset": data_args.dataset, **summary}


def target_speaker_texts(data: datasets.DatasetDict, targets: Sequence[str], speaker_texts: str | None = None
                         ) -> datasets.Dataset:
    """The target speakers' non-conversational text of the autoencoder task (Section 4; Section 6.1: their single
    posts): the protocol's `autoencoder` split, or a `speaker_texts` file, which must name target speakers only and
    give each of them some text."""
    if speaker_texts is None:
        return data["autoencoder"]
    texts = load_speaker_texts(speaker_texts)
    unknown = sorted(set(texts["speaker"]) - set(targets))
    if unknown:
        raise ValueError(
            f"{speaker_texts}: text by {len(unknown)} speaker(s) who are not target speakers (e.g. {unknown[:3]}); "
            f"the target speakers are those of {PROTOCOL_FILE} (e.g. {list(targets[:3])})."
        )
    return select_speaker_texts(texts, targets)


def _run_results(run_dir: Path) -> dict:
    """The results.json of a persona-train run, with errors that say what the directory is missing."""
    path = run_dir / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{run_dir}: no {RESULTS_FILE}; this is not a finished persona-train run (train it with `hf-neuralconv "
            "persona-train recipes/persona_mtask/<mode>.yaml`)."
        )
    results = json.loads(path.read_text())
    if results.get("mode") not in MODES:
        raise ValueError(f"{path} is not the result of a persona-train run (no `mode` among {', '.join(MODES)}).")
    return results


def check_baseline_run(base_model: str | Path, protocol: dict) -> None:
    """An MTASK run adapts a finished baseline run of the same data protocol: its targets' held-out conversations
    were never training data of the baseline."""
    base_model = Path(base_model)
    mode = _run_results(base_model)["mode"]
    if mode != "baseline":
        raise ValueError(f"{base_model} is a {mode} run: `base_model` must be the baseline run's output_dir.")
    saved = json.loads((base_model / PROTOCOL_FILE).read_text())
    differing = sorted(key for key in saved.keys() | protocol.keys() if saved.get(key) != protocol.get(key))
    if differing:
        raise ValueError(
            f"{base_model} was trained on another data protocol ({PROTOCOL_FILE} differs in {', '.join(differing)}): "
            "give this run the baseline's dataset, max_context_turns, min_utterances, num_target_speakers, "
            "heldout_fraction and protocol_seed."
        )


class SpeakerModel:
    """A run's model answering as one of its target speakers (Luan et al. 2017, Section 5): the baseline answers the
    same whoever it speaks as, MTASK-M reads the speaker's vector (Eq. 1), MTASK-S switches to the speaker's adapter.

    `context_turns` / `max_source_length` are how the model reads a history (the run's `data_config.json`)."""

    def __init__(self, mode: str, model, tokenizer: PreTrainedTokenizerFast, target_speakers: Sequence[str],
                 vocabulary: SpeakerVocabulary | None = None, context_turns: int = 2, max_source_length: int = 64):
        self.mode = mode
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.target_speakers = list(target_speakers)
        self.vocabulary = vocabulary
        self.context_turns = context_turns
        self.max_source_length = max_source_length

    @classmethod
    def load(cls, run_dir: str | Path, device: str | torch.device | None = None) -> "SpeakerModel":
        """A saved persona-train run (MTASK-S: the base weights with every speaker's adapter loaded)."""
        run_dir = Path(run_dir)
        mode = _run_results(run_dir)["mode"]
        model, tokenizer = load_model_dir(run_dir)
        vocabulary = None
        if mode == "mtask-m":
            vocabulary = SpeakerVocabulary.load(run_dir)
        elif mode == "mtask-s":
            model, vocabulary = load_speaker_adapters(model, run_dir)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        data_config = json.loads((run_dir / DATA_CONFIG_FILE).read_text())
        targets = json.loads((run_dir / PROTOCOL_FILE).read_text())["target_speakers"]
        return cls(mode, model.to(device), tokenizer, targets, vocabulary, data_config["max_context_turns"],
                   data_config["max_source_length"])

    def as_speaker(self, speaker: str) -> int | None:
        """Make the model answer as target speaker `speaker`; returns the speaker id its inputs need (`speaker_ids`),
        or None when the model has no speaker vectors."""
        if speaker not in self.target_speakers:
            examples = ", ".join(map(repr, self.target_speakers[:3]))
            raise ValueError(
                f"Unknown target speaker {speaker!r}: this run adapts to {len(self.target_speakers)} target speakers "
                f"(e.g. {examples}; all in its {PROTOCOL_FILE})."
            )
        if self.mode == "mtask-s":
            set_speaker(self.model, self.vocabulary, speaker)
        return self.vocabulary.index(speaker) if self.mode == "mtask-m" else None

    @torch.no_grad()
    def reply(self, histories: Sequence[Sequence[str]], speaker: str, num_beams: int, max_new_tokens: int,
              batch_size: int = 16, reverse_model=None, mmi_lambda: float | None = None,
              mmi_gamma: float | None = None) -> list[str]:
        """The reply to each history (turns, oldest first, the last one to answer) as `speaker`: the beam search
        1-best (Section 6.4) or, with a reverse model, the N-best reranked by MMI-bidi (Section 6.3, Eq. 4)."""
        speaker_id = self.as_speaker(speaker)
        replies = []
        for start in range(0, len(histories), batch_size):
            chunk = histories[start : start + batch_size]
            speaker_ids = None if speaker_id is None else [speaker_id] * len(chunk)
            if reverse_model is None:
                encoded = encode_histories(self.model, self.tokenizer, chunk, speaker_ids, self.context_turns,
                                           self.max_source_length)
                nbest = generate_nbest(self.model, self.tokenizer, encoded, num_beams, 1, max_new_tokens)
                replies += [candidates[0] for candidates in nbest]
            else:
                ranked = mmi_bidi_generate(
                    self.model, reverse_model, self.tokenizer, chunk, mmi_lambda, mmi_gamma, num_beams,
                    max_new_tokens=max_new_tokens, speaker_ids=speaker_ids, context_turns=self.context_turns,
                    max_source_length=self.max_source_length,
                )
                replies += [candidates[0][0] for candidates in ranked]
        return replies


def _speaker_rows(dataset: datasets.Dataset, speakers: Sequence[str]) -> dict[str, list[int]]:
    """The row indices of each speaker's examples."""
    rows = {speaker: [] for speaker in speakers}
    for index, name in enumerate(dataset["speaker"]):
        rows[name].append(index)
    return rows


def speaker_perplexities(speaker_model: SpeakerModel, data: datasets.DatasetDict, data_args: DataArguments,
                         batch_size: int = 64, use_cpu: bool = False) -> dict:
    """Table 1 (and Figure 4): the perplexity of the target speakers' dev and test responses (no truncation), each
    speaker's examples read as that speaker; pooled over all their target tokens, and per speaker."""
    per_speaker = {speaker: {} for speaker in speaker_model.target_speakers}
    pooled = {}
    for split in EVALUATION_SPLITS:
        encoded = tokenize_dataset(data[split], speaker_model.tokenizer, data_args, truncate_target=False)
        parts = []
        for speaker, rows in _speaker_rows(data[split], speaker_model.target_speakers).items():
            speaker_id = speaker_model.as_speaker(speaker)
            examples = encoded.select(rows)
            if speaker_id is not None:
                examples = examples.add_column("speaker_ids", [speaker_id] * len(rows))
            value, tokens = perplexity(speaker_model.model, speaker_model.tokenizer, examples, batch_size, use_cpu)
            per_speaker[speaker].update({f"{split}_perplexity": value, f"{split}_target_tokens": tokens})
            parts.append((value, tokens))
        pooled.update({f"{split}_perplexity": pooled_perplexity(parts),
                       f"{split}_target_tokens": sum(tokens for _, tokens in parts)})
    return {**pooled, "per_speaker": per_speaker}


def decoding_settings(adaptation_args: SpeakerAdaptationArguments) -> dict:
    """How the test replies are decoded (Section 6.4; with a reverse model, MMI-bidi reranking as in Section 6.3), as
    results.json records it and `persona_report` decodes its samples."""
    return {
        "strategy": "beam" if adaptation_args.reverse_model is None else "mmi-bidi",
        "num_beams": adaptation_args.num_beams,
        "max_new_tokens": adaptation_args.max_new_tokens,
        "reverse_model": adaptation_args.reverse_model,
        "mmi_lambda": adaptation_args.mmi_lambda,
        "mmi_gamma": adaptation_args.mmi_gamma,
    }


def _reply_options(decoding: dict, device) -> dict:
    """`SpeakerModel.reply` keyword arguments for the settings of `decoding_settings` (the reverse model loaded)."""
    reverse_model = None
    if decoding["reverse_model"]:
        reverse_model = load_model_dir(decoding["reverse_model"])[0].to(device)
    return {"num_beams": decoding["num_beams"], "max_new_tokens": decoding["max_new_tokens"],
            "reverse_model": reverse_model, "mmi_lambda": decoding["mmi_lambda"], "mmi_gamma": decoding["mmi_gamma"]}


def decode_test_inputs(speaker_model: SpeakerModel, test: datasets.Dataset, max_inputs: int | None, seed: int,
                       decoding: dict, batch_size: int = 16) -> list[dict]:
    """Table 2's replies: a seeded sample of `max_inputs` test inputs (the same in every run of a protocol), each
    answered as its responder; rows with the history, the human reference and the reply."""
    if max_inputs is not None:
        test = test.shuffle(seed=seed).select(range(min(max_inputs, len(test))))
    rows = [{"speaker": example["speaker"], "conversation_id": example["conversation_id"],
             "context": example["context"], "message": example["message"], "reference": example["response"]}
            for example in test]
    options = _reply_options(decoding, speaker_model.model.device)
    for speaker, indices in _speaker_rows(test, speaker_model.target_speakers).items():
        histories = [[*rows[index]["context"], rows[index]["message"]] for index in indices]
        for index, reply in zip(indices, speaker_model.reply(histories, speaker, batch_size=batch_size, **options)):
            rows[index]["reply"] = reply
    return rows


def reply_scores(tokenizer: PreTrainedTokenizerFast, rows: Sequence[dict]) -> dict:
    """Table 2's columns for decoded test rows: corpus BLEU (sacrebleu) and distinct-1/2 as the paper defines them
    (distinct n-grams / generated tokens, `test_distinct_<n>_corpus`), the per-utterance variant
    (`test_distinct_<n>_per_utterance`), max-ratio, Ent-n and length (`evaluation.reply_metrics`)."""
    scores = reply_metrics(tokenizer, [row["reply"] for row in rows], [row["reference"] for row in rows])
    return {f"test_{REPLY_METRIC_NAMES.get(name, name)}": value for name, value in scores.items()}


class _StopWhenDevPerplexityConverges(TrainerCallback):
    """The baseline's Figure 3, step 2: training ends when the target speakers' dev perplexity has converged
    (`convergence_patience` evaluations without a `convergence_threshold` improvement)."""

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if "eval_perplexity" in (metrics or {}) and dev_perplexity_converged(
            state.log_history, 0, args.convergence_patience, args.convergence_threshold
        ):
            control.should_training_stop = True
        return control


def _collator(tokenizer: PreTrainedTokenizerFast) -> DataCollatorForSeq2Seq:
    return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)


def _autoencoder_set(texts: datasets.Dataset, tokenizer: PreTrainedTokenizerFast, data_args: DataArguments
                     ) -> datasets.Dataset:
    """Text -> the autoencoder task's examples, with the `speaker_ids` column if the texts have one."""
    return texts.map(encode_autoencoder_examples, batched=True,
                     remove_columns=[column for column in texts.column_names if column != "speaker_ids"],
                     fn_kwargs={"tokenizer": tokenizer, "max_length": data_args.max_target_length},
                     desc="Autoencoder examples")


def _training_dev_set(validation: datasets.Dataset, tokenizer: PreTrainedTokenizerFast, data_args: DataArguments
                      ) -> datasets.Dataset:
    """The dev examples whose perplexity decides when training stops and which checkpoint is kept (Figure 3), targets
    cut to `max_target_length` as in training (as `hf-neuralconv train` does): a full batch of the longest chat turns
    would need gigabytes of logits. The reported perplexities read every target whole (`speaker_perplexities`)."""
    return tokenize_dataset(validation, tokenizer, data_args, truncate_target=True)


def _training_summary(trainer, train_result) -> dict:
    return {"steps": trainer.state.global_step, "epochs": train_result.metrics.get("epoch"),
            "train_runtime_s": train_result.metrics.get("train_runtime"),
            "best_dev_perplexity": trainer.state.best_metric}


def train_baseline(data_args: DataArguments, training_args: SpeakerAdaptationTrainingArguments,
                   model_args: ModelArguments, data: datasets.DatasetDict, targets: Sequence[str]
                   ) -> tuple[SpeakerModel, dict]:
    """The baseline (Section 3.2; Figure 3, step 2): a new vocabulary and seq2seq model trained on the general data
    (`ConversationTrainer`) until the target speakers' dev perplexity converges; saved to `output_dir`."""
    output_dir = Path(training_args.output_dir)
    tokenizer = train_word_tokenizer(training_texts(data["train"]), data_args.vocab_size, data_args.min_frequency)
    model = build_model(model_args, tokenizer)
    model.generation_config = default_generation_config(tokenizer)
    train = tokenize_dataset(first_examples(data["train"], data_args.max_train_examples), tokenizer, data_args,
                             truncate_target=True)
    validation = _training_dev_set(data["validation"], tokenizer, data_args)
    trainer = ConversationTrainer(model=model, args=training_args, train_dataset=train,
                                  eval_dataset=sorted_by_target_length(validation),
                                  data_collator=_collator(tokenizer), processing_class=tokenizer,
                                  callbacks=[_StopWhenDevPerplexityConverges()])
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint or None)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    add_custom_pipeline(output_dir)
    summary = {"train_examples": len(train), **_training_summary(trainer, train_result)}
    return SpeakerModel("baseline", model, tokenizer, targets, None, data_args.max_context_turns,
                        data_args.max_source_length), summary


def train_mtask_m(data_args: DataArguments, training_args: SpeakerAdaptationTrainingArguments,
                  adaptation_args: SpeakerAdaptationArguments, data: datasets.DatasetDict, targets: Sequence[str]
                  ) -> tuple[SpeakerModel, dict]:
    """MTASK-M (Section 5): the baseline with speaker vectors (Eq. 1; the general speakers' and random ones for the
    targets) and a random autoencoder encoder (Figure 3, step 1), trained by `MultiTaskTrainer` (step 3) on the
    general data and all target speakers' text, each example read with its speaker's vector.

    Saved to `output_dir` as a persona model with `speakers.json` (`pipeline(..., speaker=<target>)` answers as a
    target speaker) and without the autoencoder encoder, which only training reads."""
    output_dir = Path(training_args.output_dir)
    tokenizer = AutoTokenizer.from_pretrained(adaptation_args.base_model)
    model = LSTMSeq2SeqForConditionalGeneration.from_pretrained(adaptation_args.base_model, autoencoder_encoder=True)
    vocabulary = SpeakerVocabulary.from_speakers(data["train"]["speaker"], adaptation_args.speaker_min_count)
    vocabulary.extend(targets)
    add_speaker_embeddings(model, len(vocabulary), adaptation_args.speaker_embedding_size)

    general = first_examples(data["train"], data_args.max_train_examples)
    train = tokenize_dataset(general, tokenizer, data_args, truncate_target=True).add_column(
        "speaker_ids", add_speaker_ids(general, vocabulary, allow_generic=True)["speaker_ids"])
    validation = _training_dev_set(data["validation"], tokenizer, data_args).add_column(
        "speaker_ids", add_speaker_ids(data["validation"], vocabulary)["speaker_ids"])
    texts = add_speaker_ids(target_speaker_texts(data, targets, adaptation_args.speaker_texts), vocabulary)
    autoencoder = _autoencoder_set(texts, tokenizer, data_args)
    trainer = MultiTaskTrainer(model=model, args=training_args, train_dataset=train, autoencoder_dataset=autoencoder,
                               eval_dataset=sorted_by_target_length(validation), data_collator=_collator(tokenizer),
                               processing_class=tokenizer)
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint or None)

    model.autoencoder_encoder, model.config.autoencoder_encoder = None, False
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    vocabulary.save(output_dir)
    add_custom_pipeline(output_dir)
    summary = {"train_examples": len(train), "autoencoder_examples": len(autoencoder), "speakers": len(vocabulary),
               "multitask_start_step": trainer.multitask_start_step, **_training_summary(trainer, train_result)}
    return SpeakerModel("mtask-m", model, tokenizer, targets, vocabulary, data_args.max_context_turns,
                        data_args.max_source_length), summary


def train_mtask_s(data_args: DataArguments, training_args: SpeakerAdaptationTrainingArguments,
                  adaptation_args: SpeakerAdaptationArguments, data: datasets.DatasetDict, targets: Sequence[str]
                  ) -> tuple[SpeakerModel, dict]:
    """MTASK-S (Section 5): per target speaker, a LoRA adapter of the baseline's decoder and a random autoencoder
    encoder (Figure 3, step 1) trained by `MultiTaskTrainer` (step 3) on the general data and that speaker's text,
    the best checkpoint chosen by that speaker's dev perplexity.

    Saved to `output_dir`: the baseline's weights, one adapter per speaker (`speaker_<i>/`) and `speakers.json`;
    `SpeakerModel.load` or `adapters.load_speaker_adapters` reads them back."""
    if training_args.resume_from_checkpoint:
        raise ValueError("An mtask-s run cannot resume (one training per speaker): start it again instead.")
    output_dir = Path(training_args.output_dir)
    tokenizer = AutoTokenizer.from_pretrained(adaptation_args.base_model)
    model = LSTMSeq2SeqForConditionalGeneration.from_pretrained(adaptation_args.base_model, autoencoder_encoder=True)
    vocabulary = SpeakerVocabulary(targets)
    train = tokenize_dataset(first_examples(data["train"], data_args.max_train_examples), tokenizer, data_args,
                             truncate_target=True)
    validation = _training_dev_set(data["validation"], tokenizer, data_args)
    validation_rows = _speaker_rows(data["validation"], targets)
    texts = target_speaker_texts(data, targets, adaptation_args.speaker_texts)
    per_speaker = {}
    for speaker in targets:
        lora_config = speaker_lora_config(model.config, adaptation_args.lora_rank, adaptation_args.lora_alpha)
        model = add_speaker_adapter(model, vocabulary, speaker, lora_config)
        speaker_args = replace(training_args, output_dir=str(
            output_dir / SPEAKER_CHECKPOINTS_DIR / adapter_name(vocabulary, speaker)))
        own_text = _autoencoder_set(select_speaker_texts(texts, [speaker]), tokenizer, data_args)
        trainer = MultiTaskTrainer(model=model, args=speaker_args, train_dataset=train, autoencoder_dataset=own_text,
                                   eval_dataset=sorted_by_target_length(validation.select(validation_rows[speaker])),
                                   data_collator=_collator(tokenizer), processing_class=tokenizer)
        train_result = trainer.train()
        per_speaker[speaker] = {"autoencoder_examples": len(own_text), **_training_summary(trainer, train_result)}

    LSTMSeq2SeqForConditionalGeneration.from_pretrained(adaptation_args.base_model).save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    save_speaker_adapters(model, vocabulary, output_dir)
    summary = {"train_examples": len(train), "lora_rank": adaptation_args.lora_rank,
               "train_runtime_s": sum(speaker["train_runtime_s"] for speaker in per_speaker.values()),
               "per_speaker": per_speaker}
    return SpeakerModel("mtask-s", model, tokenizer, targets, vocabulary, data_args.max_context_turns,
                        data_args.max_source_length), summary


def train_speaker_adaptation(model_args: ModelArguments, data_args: DataArguments,
                             training_args: SpeakerAdaptationTrainingArguments,
                             adaptation_args: SpeakerAdaptationArguments) -> dict:
    """One run of Luan et al. (2017)'s Tables 1-2 (`adaptation_args.mode`), trained and evaluated; the run directory
    (see the module docstring) is written and the results returned."""
    _check_recipe(model_args, data_args, training_args)
    check_output_dir(training_args)
    started = time.time()
    # The models are built before a Trainer seeds: seed here so that `seed` fixes the new weights too.
    (enable_full_determinism if training_args.full_determinism else set_seed)(training_args.seed)
    data, protocol = adaptation_data(data_args, adaptation_args)
    targets = protocol["target_speakers"]
    mode = adaptation_args.mode
    if mode == "baseline":
        speaker_model, training = train_baseline(data_args, training_args, model_args, data, targets)
    else:
        check_baseline_run(adaptation_args.base_model, protocol)
        run = train_mtask_m if mode == "mtask-m" else train_mtask_s
        speaker_model, training = run(data_args, training_args, adaptation_args, data, targets)

    output_dir = Path(training_args.output_dir)
    (output_dir / DATA_CONFIG_FILE).write_text(json.dumps(asdict(data_args), indent=2))
    (output_dir / PROTOCOL_FILE).write_text(json.dumps(protocol, indent=2))
    decoding = decoding_settings(adaptation_args)
    scores = speaker_perplexities(speaker_model, data, data_args, training_args.per_device_eval_batch_size,
                                  training_args.use_cpu)
    decoding_started = time.time()
    rows = decode_test_inputs(speaker_model, data["test"], adaptation_args.max_eval_inputs,
                              adaptation_args.protocol_seed, decoding, adaptation_args.generation_batch_size)
    decoding["seconds"] = time.time() - decoding_started
    with (output_dir / REPLIES_FILE).open("w", encoding="utf-8") as replies:
        replies.writelines(json.dumps(row) + "\n" for row in rows)
    results = {
        "mode": mode,
        "base_model": adaptation_args.base_model,
        "target_speakers": targets,
        **scores,
        **reply_scores(speaker_model.tokenizer, rows),
        "decoding": decoding,
        "training": training,
        "wall_time_s": time.time() - started,
        "machine": describe_machine(),
    }
    (output_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2))
    return results


def _relative_change(value: float, baseline: float) -> float | None:
    return None if baseline == 0 else (value - baseline) / baseline


def table_rows(runs: dict[str, dict]) -> list[dict]:
    """The rows of Tables 1-2 (Baseline, MTASK-S, MTASK-M, those given) from their results.json: each column's value
    and its relative change against the baseline row (a fraction; None for the baseline itself)."""
    baseline = runs["baseline"]
    rows = []
    for mode in (mode for mode in MODES if mode in runs):
        cells = {}
        for _, key, _ in TABLE_COLUMNS:
            value = runs[mode][key]
            cells[key] = {"value": value,
                          "relative_change": None if mode == "baseline" else _relative_change(value, baseline[key])}
        rows.append({"model": MODE_LABELS[mode], "mode": mode, "replies": runs[mode]["test_replies"],
                     "decoding": runs[mode]["decoding"], **cells})
    return rows


def _describe_decoding(decoding: dict) -> str:
    text = f"beam search with {decoding['num_beams']} beams, at most {decoding['max_new_tokens']} tokens"
    if decoding["strategy"] == "mmi-bidi":
        text += (f", reranked by MMI-bidi (lambda {decoding['mmi_lambda']}, gamma {decoding['mmi_gamma']}, reverse "
                 f"model {decoding['reverse_model']})")
    return text


def format_table(rows: Sequence[dict]) -> str:
    """Tables 1-2 as one Markdown table: a row per model, relative changes against the baseline in parentheses."""
    lines = ["| Model | " + " | ".join(name for name, _, _ in TABLE_COLUMNS) + " | replies |",
             "|---|" + "---:|" * (len(TABLE_COLUMNS) + 1)]
    for row in rows:
        cells = []
        for _, key, number in TABLE_COLUMNS:
            cell = number.format(row[key]["value"])
            change = row[key]["relative_change"]
            if change is not None:
                cell += f" ({change:+.1%})"
            cells.append(cell)
        lines.append(f"| {row['model']} | " + " | ".join(cells) + f" | {row['replies']} |")
    lines.append("")
    lines.append("PPL: perplexity of the target speakers' responses. BLEU, distinct-n: their decoded test replies; "
                 "distinct-n as Luan et al. (2017) define it: distinct n-grams / generated tokens; per utt.: the mean "
                 "over replies of the same ratio.")
    described = {row["model"]: _describe_decoding(row["decoding"]) for row in rows}
    if len(set(described.values())) == 1:
        lines.append(f"Replies: {next(iter(described.values()))}.")
    else:  # the BLEU and distinct-n columns then compare decoders as well as models
        differences = "; ".join(f"{model}: {text}" for model, text in described.items())
        lines.append(f"Replies decoded differently: {differences}.")
    return "\n".join(lines)


def figure7_samples(run_dirs: dict[str, Path], count: int, seed: int = 0) -> list[dict]:
    """Figure 7 for our runs: `count` test inputs (a seeded choice among the baseline's decoded ones), each with the
    human reply, the baseline's reply and the MTASK runs' replies as the input's responder and as the next target
    speakers (`SPEAKERS_PER_SAMPLE` in all), decoded as each run decoded its test inputs."""
    lines = (run_dirs["baseline"] / REPLIES_FILE).read_text(encoding="utf-8").splitlines()
    chosen = [json.loads(lines[index]) for index in sorted(random.Random(seed).sample(range(len(lines)),
                                                                                      min(count, len(lines))))]
    models = {mode: SpeakerModel.load(run_dirs[mode]) for mode in ("mtask-s", "mtask-m") if mode in run_dirs}
    options = {mode: _reply_options(_run_results(run_dirs[mode])["decoding"], model.model.device)
               for mode, model in models.items()}
    samples = []
    for row in chosen:
        history = [*row["context"], row["message"]]
        sample = {"responder": row["speaker"], "conversation_id": row["conversation_id"], "context": row["context"],
                  "message": row["message"], "human": row["reference"], "baseline": row["reply"]}
        for mode, model in models.items():
            targets = model.target_speakers
            first = targets.index(row["speaker"])
            speakers = [targets[(first + step) % len(targets)]
                        for step in range(min(SPEAKERS_PER_SAMPLE, len(targets)))]
            sample[mode] = {speaker: model.reply([history], speaker, **options[mode])[0] for speaker in speakers}
        samples.append(sample)
    return samples


def format_samples(samples: Sequence[dict]) -> str:
    """Figure 7 samples as Markdown: the history, the human and baseline replies, then each MTASK run as each
    speaker (the responder of the test input first)."""
    blocks = []
    for number, sample in enumerate(samples, start=1):
        lines = [f"**Sample {number}** (responder {sample['responder']})", ""]
        lines += [f"- Context: {turn}" for turn in sample["context"]]
        lines += [f"- Input: {sample['message']}", f"- Human: {sample['human']}", f"- Baseline: {sample['baseline']}"]
        for mode in ("mtask-s", "mtask-m"):
            for speaker, reply in sample.get(mode, {}).items():
                lines.append(f"- {MODE_LABELS[mode]} as {speaker}: {reply}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def persona_report(run_dirs: Sequence[str | Path], samples: int = 4, seed: int = 0) -> dict:
    """Our Tables 1-2 (one row per run, the baseline's among them; all of one data protocol) and `samples`
    Figure 7 samples. Returns the rows, their Markdown table and the samples."""
    runs, directories = {}, {}
    for run_dir in map(Path, run_dirs):
        results = _run_results(run_dir)
        mode = results["mode"]
        if mode in runs:
            raise ValueError(f"Two {mode} runs given ({directories[mode]} and {run_dir}): give one run per mode.")
        runs[mode], directories[mode] = results, run_dir
    if "baseline" not in runs:
        raise ValueError("No baseline run among the run directories: the table's relative changes are against it.")
    protocol = json.loads((directories["baseline"] / PROTOCOL_FILE).read_text())
    for mode, run_dir in directories.items():
        if json.loads((run_dir / PROTOCOL_FILE).read_text()) != protocol:
            raise ValueError(f"{run_dir} used another data protocol than {directories['baseline']}: the runs of one "
                             "table must share the protocol (the same target speakers and splits).")
    rows = table_rows(runs)
    return {"runs": {mode: str(run_dir) for mode, run_dir in directories.items()}, "table": rows,
            "markdown": format_table(rows), "samples": figure7_samples(directories, samples, seed) if samples else []}

"""The settings and files of the speaker-adaptation experiment (Luan et al. 2017, Tables 1-2): the recipe's
dataclasses, the run modes and the files a run directory holds.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..core.arguments import ConversationTrainingArguments, DataArguments, ModelArguments, parse_recipe
from ..core.run_dir import RESULTS_FILE
from .trainer import MultiTaskConfig

ADAPTATION_MODES = ("baseline", "mtask-s", "mtask-m")  # the columns of the paper's Tables 1-2, in order
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


# `core.evaluation.reply_metrics` names -> results.json names that say which distinct-n each one is.
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
        if self.mode not in ADAPTATION_MODES:
            raise ValueError(f"`mode` must be one of {', '.join(ADAPTATION_MODES)}, got {self.mode!r}.")
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


def run_results(run_dir: Path) -> dict:
    """The results.json of a persona-train run, with errors that say what the directory is missing."""
    path = run_dir / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{run_dir}: no {RESULTS_FILE}; this is not a finished persona-train run (train it with `hf-neuralconv "
            "persona-train recipes/persona_mtask/<mode>.yaml`)."
        )
    results = json.loads(path.read_text())
    if results.get("mode") not in ADAPTATION_MODES:
        raise ValueError(f"{path} is not the result of a persona-train run (no `mode` among "
                         f"{', '.join(ADAPTATION_MODES)}).")
    return results

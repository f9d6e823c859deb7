"""How a speaker-adaptation run is measured (Luan et al. 2017, Section 6.2): the target speakers' dev and test
perplexity, each speaker's examples read as that speaker, and the test replies decoded as the responder (beam search,
or MMI-bidi reranking), scored by BLEU and distinct-1/2.
"""

import json
from collections.abc import Sequence
from pathlib import Path

import datasets
import torch
from transformers import PreTrainedTokenizerFast

from ..core.arguments import DataArguments
from ..core.building import tokenize_dataset
from ..core.chat_format import DATA_CONFIG_FILE, encode_histories
from ..core.evaluation import perplexity, pooled_perplexity, reply_metrics
from ..core.loading import load_model_dir
from ..mmi.rerank import generate_nbest, mmi_bidi_generate
from .adapters import load_speaker_adapters, set_speaker
from .config import EVALUATION_SPLITS, PROTOCOL_FILE, REPLY_METRIC_NAMES, SpeakerAdaptationArguments, run_results
from .speakers import SpeakerVocabulary, check_speaker_vectors


class SpeakerModel:
    """A run's model answering as one of its target speakers (Luan et al. 2017, Section 5): the baseline answers the
    same whoever it speaks as, MTASK-M reads the speaker's vector (Eq. 1), MTASK-S switches to the speaker's adapter.

    `context_turns` / `max_source_length` are how the model reads a history (the run's `data_config.json`)."""

    def __init__(self, mode: str, model, tokenizer: PreTrainedTokenizerFast, target_speakers: Sequence[str],
                 vocabulary: SpeakerVocabulary | None = None, context_turns: int = 2, max_source_length: int = 64):
        if mode == "mtask-m":
            check_speaker_vectors(model)
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
        mode = run_results(run_dir)["mode"]
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


def speaker_rows(dataset: datasets.Dataset, speakers: Sequence[str]) -> dict[str, list[int]]:
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
        for speaker, rows in speaker_rows(data[split], speaker_model.target_speakers).items():
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


def reply_options(decoding: dict, device) -> dict:
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
    options = reply_options(decoding, speaker_model.model.device)
    for speaker, indices in speaker_rows(test, speaker_model.target_speakers).items():
        histories = [[*rows[index]["context"], rows[index]["message"]] for index in indices]
        for index, reply in zip(indices, speaker_model.reply(histories, speaker, batch_size=batch_size, **options)):
            rows[index]["reply"] = reply
    return rows


def reply_scores(tokenizer: PreTrainedTokenizerFast, rows: Sequence[dict]) -> dict:
    """Table 2's columns for decoded test rows: corpus BLEU (sacrebleu) and distinct-1/2 as the paper defines them
    (distinct n-grams / generated tokens, `test_distinct_<n>_corpus`), the per-utterance variant
    (`test_distinct_<n>_per_utterance`), max-ratio, Ent-n and length (`core.evaluation.reply_metrics`)."""
    scores = reply_metrics(tokenizer, [row["reply"] for row in rows], [row["reference"] for row in rows])
    return {f"test_{REPLY_METRIC_NAMES.get(name, name)}": value for name, value in scores.items()}

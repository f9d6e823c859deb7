"""`hf-neuralconv persona-train`: one run of the experiment of Luan et al. (2017), Tables 1-2 and Figure 7.

The three runs share one seeded data protocol (Section 6.1, `speakers.speaker_adaptation_data`): general conversation
data from every speaker but `num_target_speakers` target speakers, the target speakers' held-out conversations (dev
and test) and their other turns, context dropped, as their non-conversational text (the `autoencoder` split).

* `baseline` — the SEQ2SEQ model of Section 3.2 trained on the general data until the target speakers' dev perplexity
  converges (Figure 3, step 2); the checkpoint with the best dev perplexity is kept.
* `mtask-m` — the baseline turned into a persona model (Section 3.3, Eq. 1; `speakers.add_speaker_embeddings`): a
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
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import datasets
from transformers import (
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    PreTrainedTokenizerFast,
)

from ..core.arguments import DataArguments, ModelArguments
from ..core.building import (
    build_model,
    default_generation_config,
    first_examples,
    load_conversations,
    tokenize_dataset,
    training_texts,
)
from ..core.evaluation import sorted_by_target_length
from ..core.run_dir import export_pipeline_code, start_training_run
from ..core.trainer import ConversationTrainer
from ..data.jsonl import write_jsonl
from ..data.tokenization import train_word_tokenizer
from ..models.lstm.modeling_lstm import LSTMSeq2SeqForConditionalGeneration
from .adapters import adapter_name, add_speaker_adapter, save_speaker_adapters, speaker_lora_config
from .config import (
    PROTOCOL_FILE,
    REPLIES_FILE,
    SPEAKER_CHECKPOINTS_DIR,
    SpeakerAdaptationArguments,
    SpeakerAdaptationTrainingArguments,
    run_results,
)
from .evaluation import (
    SpeakerModel,
    decode_test_inputs,
    decoding_settings,
    reply_scores,
    speaker_perplexities,
    speaker_rows,
)
from .speakers import (
    SpeakerVocabulary,
    add_speaker_embeddings,
    add_speaker_ids,
    load_speaker_texts,
    select_speaker_texts,
    speaker_adaptation_data,
)
from .trainer import MultiTaskTrainer, StopWhenDevPerplexityConverges, encode_autoencoder_examples


def _check_recipe(model_args: ModelArguments, data_args: DataArguments,
                  training_args: SpeakerAdaptationTrainingArguments) -> None:
    """Settings of the shared dataclasses that this experiment cannot honour are errors, not silently ignored."""
    if (model_args.model_name_or_path or model_args.tokenizer_name_or_path or model_args.model_type
            or model_args.architecture != "seq2seq"):
        raise ValueError(
            "persona-train builds the baseline's LSTM seq2seq model and vocabulary itself (the paper's) and the MTASK "
            "runs adapt `base_model`: remove `model_name_or_path`, `tokenizer_name_or_path`, `model_type` and "
            "`architecture`. MTASK-S adapters of other backbones: `hf_neuralconv.persona.add_speaker_adapter` "
            "(docs/backbones.md)."
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
    """The data protocol of Luan et al. (2017, Section 6.1) on `data_args.dataset` (`speakers.speaker_adaptation_data`)
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


def check_baseline_run(base_model: str | Path, protocol: dict) -> None:
    """An MTASK run adapts a finished baseline run of the same data protocol: its targets' held-out conversations
    were never training data of the baseline."""
    base_model = Path(base_model)
    mode = run_results(base_model)["mode"]
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
                                  callbacks=[StopWhenDevPerplexityConverges()])
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint or None)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    export_pipeline_code(output_dir)
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
    export_pipeline_code(output_dir)
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
    validation_rows = speaker_rows(data["validation"], targets)
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
    run = start_training_run(training_args)
    data, protocol = adaptation_data(data_args, adaptation_args)
    targets = protocol["target_speakers"]
    mode = adaptation_args.mode
    if mode == "baseline":
        speaker_model, training = train_baseline(data_args, training_args, model_args, data, targets)
    else:
        check_baseline_run(adaptation_args.base_model, protocol)
        train_mtask = train_mtask_m if mode == "mtask-m" else train_mtask_s
        speaker_model, training = train_mtask(data_args, training_args, adaptation_args, data, targets)

    output_dir = run.path
    run.save_data_config(data_args)
    (output_dir / PROTOCOL_FILE).write_text(json.dumps(protocol, indent=2))
    decoding = decoding_settings(adaptation_args)
    scores = speaker_perplexities(speaker_model, data, data_args, training_args.per_device_eval_batch_size,
                                  training_args.use_cpu)
    decoding_started = time.time()
    rows = decode_test_inputs(speaker_model, data["test"], adaptation_args.max_eval_inputs,
                              adaptation_args.protocol_seed, decoding, adaptation_args.generation_batch_size)
    decoding["seconds"] = time.time() - decoding_started
    write_jsonl(output_dir / REPLIES_FILE, rows)
    results = {
        "mode": mode,
        "base_model": adaptation_args.base_model,
        "target_speakers": targets,
        **scores,
        **reply_scores(speaker_model.tokenizer, rows),
        "decoding": decoding,
        "training": training,
    }
    return run.write_results(results)



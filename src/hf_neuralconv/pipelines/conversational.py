"""`pipeline("conversational")`: answer a chat with an encoder-decoder or a causal LM chatbot.

transformers removed its conversational pipeline (4.42), so `import hf_neuralconv` registers this one, for our LSTM
and for any `AutoModelForSeq2SeqLM` (BART, T5, BlenderBot) or `AutoModelForCausalLM` (GPT-2, DialoGPT, Llama). A
chat is transformers' message list (`[{"role": "user", "content": "hi"}, ...]`); the pipeline turns it into the
model's input in its chat format (`core.chat_format`: our actor tokens, the tokenizer's chat template, turns joined
by the end-of-sequence token, or an encoder-decoder's joined source), generates a reply and returns the chat with
that reply appended:

    >>> chat = pipeline("conversational", model="outputs/seq2seq-quickstart")
    >>> chat([{"role": "user", "content": "hi , how are you ?"}])[0]["generated_text"][-1]
    {'role': 'assistant', 'content': '...'}

Call options (also accepted when building the pipeline, as defaults):

* `speaker`: the persona to answer as (Li et al. 2016), a name of the model's `speakers.json` or an integer id;
  required by persona models (`config.num_speakers > 0`), refused by the others.
* `strategy`: `"greedy"`, `"beam"` or `"sample"` (see `DECODING_STRATEGIES`); any `generate()` argument
  (`num_beams`, `temperature`, `top_p`, `max_new_tokens`, ...) refines it. Without a strategy the model's
  `generation_config` decides. Two more strategies need a second model (`available_strategies()` lists those this
  pipeline can run):
  - `"mmi-antilm"` (Li et al. 2016): beam search with `MMIAntiLMLogitsProcessor`, i.e. log p(T|S) minus
    `mmi_lambda` times the anti-LM's log p(T) over the first `mmi_gamma` tokens. Needs `anti_lm=` when building the
    pipeline: any causal LM over the chatbot's vocabulary (an `LSTMForCausalLM`, a GPT-2 trained on replies), or
    its directory; for a causal chatbot, the chatbot itself (`anti_lm=pipe.model` or `anti_lm="self"`: p(T) is its
    reply probability after an empty history, no second model).
  - `"mmi-bidi"` (Luan et al. 2017, Eq. 4): the beam-search N-best reranked by log p(R|M) + `mmi_lambda` log p(M|R)
    + `mmi_gamma` |R| (`hf_neuralconv.mmi.mmi_bidi_generate`); the scores are the reranked ones. Needs
    `reverse_model=` (a model or its directory), or the settings saved in `model.generation_config.mmi` (weights,
    beams, reverse model directory; `hf_neuralconv.mmi.save_mmi_settings`).
* `mmi_lambda`, `mmi_gamma`: the weights of the MMI strategies (other strategies ignore them). Defaults: for
  mmi-antilm 0.5 and 3 (a starting point, not tuned), for mmi-bidi the tuned weights of `generation_config.mmi`.
* `context_turns`: earlier turns kept before the message being answered (default: the model's training setting).
* `num_return_sequences`: an N-best list; every candidate comes with its score, best first.

This file is copied next to a saved model by `core.run_dir.export_pipeline_code` (with `chat_format.py`,
`scoring.py` and `tokenization.py`, the modules of the package it reads), so `pipeline(model=dir,
trust_remote_code=True)` works with transformers alone. It must therefore import only torch, transformers, the
standard library and those modules at module level; the MMI strategies and `save_pretrained` import `hf_neuralconv`
when they run (`pip install hf-neuralconv`), and say so when it is missing.
"""

import copy
import importlib
import json
from pathlib import Path

import torch
from transformers import GenerationConfig, LogitsProcessorList, Pipeline, PreTrainedModel

from ..core.chat_format import (
    DATA_CONFIG_FILE,
    MMI_CONFIG_KEY,
    SPEAKERS_FILE,
    conversation_turns,
    empty_history_prompt,
    encode_history,
    generated_replies,
    read_model_json,
    reading_settings,
)
from ..core.scoring import is_causal, sequence_scores

TASK = "conversational"

# Each strategy fills in `generate()` arguments the caller did not give.
DECODING_STRATEGIES = {
    "greedy": {"do_sample": False, "num_beams": 1},
    "beam": {"do_sample": False, "num_beams": 5},
    "sample": {"do_sample": True, "num_beams": 1},
    "mmi-antilm": {"do_sample": False, "num_beams": 5},
    "mmi-bidi": {"do_sample": False},  # beams: generation_config.mmi, else mmi.rerank.DEFAULT_NUM_BEAMS
}
BASIC_STRATEGIES = ("greedy", "beam", "sample")
# The model's generation_config settings a named strategy keeps; its other decoding defaults (a recipe's sampling
# temperature, an n-gram block, ...) go back to transformers' defaults, so that "greedy" is greedy search.
STRATEGY_KEEPS = ("max_new_tokens", "max_length", "bos_token_id", "eos_token_id", "pad_token_id",
                  "decoder_start_token_id", "suppress_tokens", "begin_suppress_tokens", "transformers_version",
                  # not decoding choices: resetting `use_cache` would make a transformer re-read its prefix each step
                  "use_cache", "output_attentions", "output_hidden_states", "_from_model_config",
                  # the output's format, not a decoding choice (mBART's language token, some BART checkpoints)
                  "forced_bos_token_id", "forced_eos_token_id")
# MMI-antiLM weights when neither the call nor the pipeline gives them: lambda and the number of penalised leading
# tokens (Li et al. 2016 tune both on development data; these only make the strategy usable out of the box).
DEFAULT_ANTILM_LAMBDA = 0.5
DEFAULT_ANTILM_GAMMA = 3


class ConversationalPipeline(Pipeline):
    """Answers chats with an encoder-decoder or a causal LM (Vinyals & Le 2015); see the module docstring for the
    options.

    Input: a string, a list of role/content messages, or a list of such chats (a batch; `batch_size=` pads and
    decodes them together). Output, per chat: the N-best candidates, best first, each
    `{"generated_text": chat + [{"role": "assistant", "content": reply}], "score": float, "num_tokens": int,
    "finish_reason": "stop" | "length"}`. The score is the length-normalised beam score under beam search
    (mmi-antilm: of the penalised scores), the Eq. 4 score under mmi-bidi, else the sum of the reply's token
    log-probabilities. `num_tokens` counts the tokens generated, the end-of-sequence token included; the finish
    reason is "length" when the reply stopped at the length limit (mmi-bidi's reranked candidates have neither).

    `speakers` and `max_source_length` override what the model directory says (`speakers.json`,
    `data_config.json`); `context_turns` given when building the pipeline becomes the default of every call.
    `anti_lm` and `reverse_model` (a loaded model or a directory) enable the MMI strategies; a model over another
    vocabulary is refused here, with a ValueError.
    """

    _pipeline_calls_generate = True
    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False

    def __init__(self, *args, speakers: dict[str, int] | None = None, max_source_length: int | None = None,
                 anti_lm: PreTrainedModel | str | Path | None = None,
                 reverse_model: PreTrainedModel | str | Path | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.causal = is_causal(self.model)
        self._saved_tokenizer = self.tokenizer  # what `save_pretrained` writes: the caller's, unchanged
        if self.causal:  # batched prompts end where the reply starts: pad on the left, in a copy of the tokenizer
            self.tokenizer = copy.deepcopy(self.tokenizer)
            self.tokenizer.padding_side = "left"
            if self.tokenizer.pad_token is None:  # batching needs one; the padding is masked
                self.tokenizer.pad_token = self.tokenizer.eos_token
        self.context_turns, self.max_source_length = reading_settings(self.model, None, max_source_length or None)
        self.speakers = (dict(speakers) if speakers is not None
                         else read_model_json(self.model.name_or_path, SPEAKERS_FILE) or {})
        self.num_speakers = getattr(self.model.config, "num_speakers", 0)
        self.anti_lm = None if anti_lm is None else self._load_anti_lm(anti_lm)
        self.reverse_model = None if reverse_model is None else self._load_reverse_model(reverse_model)

    @property
    def mmi_settings(self) -> dict:
        """The tuned MMI-bidi settings saved in `model.generation_config.mmi` (empty when there are none)."""
        return getattr(self.model.generation_config, MMI_CONFIG_KEY, None) or {}

    def available_strategies(self) -> list[str]:
        """The decoding strategies this pipeline can run: the basic ones, and each MMI one whose model is here
        (mmi-bidi also when `generation_config.mmi` names a reverse model directory)."""
        strategies = list(BASIC_STRATEGIES)
        if self.anti_lm is not None:
            strategies.append("mmi-antilm")
        if self.reverse_model is not None or self.mmi_settings.get("reverse_model"):
            strategies.append("mmi-bidi")
        return strategies

    def _load_anti_lm(self, anti_lm) -> PreTrainedModel:
        checks = _package_module("core.checks", "strategy='mmi-antilm'")
        if isinstance(anti_lm, str) and anti_lm == "self":
            anti_lm = self.model
        if isinstance(anti_lm, (str, Path)):
            if not Path(anti_lm).is_dir():
                raise FileNotFoundError(f"{anti_lm}: no anti-LM directory here (a saved causal language model).")
            anti_lm = _package_module("core.loading", "strategy='mmi-antilm'").load_model(anti_lm)
        if not isinstance(anti_lm, PreTrainedModel) or not is_causal(anti_lm):
            raise TypeError(f"`anti_lm` must be a causal language model or its directory, got "
                            f"{type(anti_lm).__name__}.")
        checks.check_same_vocabulary(self.model.config, anti_lm.config, "chatbot", "anti-LM")
        return anti_lm.to(self.model.device).eval()

    def _load_reverse_model(self, reverse_model) -> PreTrainedModel:
        checks = _package_module("core.checks", "strategy='mmi-bidi'")
        if isinstance(reverse_model, (str, Path)):
            if not Path(reverse_model).is_dir():
                raise FileNotFoundError(f"{reverse_model}: no reverse model directory here (a saved p(M|R) model).")
            reverse_model = _package_module("core.loading", "strategy='mmi-bidi'").load_model(reverse_model)
        if not isinstance(reverse_model, PreTrainedModel):
            raise TypeError(f"`reverse_model` must be a model or its directory, got {type(reverse_model).__name__}.")
        checks.check_same_vocabulary(self.model.config, reverse_model.config, "chatbot", "reverse model")
        return reverse_model.to(self.model.device).eval()

    def _mmi_model(self, strategy: str) -> PreTrainedModel:
        """The second model a MMI strategy needs, or a ValueError saying how to give it."""
        if strategy == "mmi-antilm":
            if self.anti_lm is None:
                raise ValueError(
                    "strategy='mmi-antilm' needs an anti-LM: build the pipeline with `anti_lm=` (a causal LM "
                    "trained on the chatbot's replies, or its directory; \"self\" for a causal chatbot)."
                )
            return self.anti_lm
        if self.reverse_model is None:
            saved = self.mmi_settings.get("reverse_model")
            if not saved:
                raise ValueError(
                    "strategy='mmi-bidi' needs a reverse model p(M|R): build the pipeline with `reverse_model=`, or "
                    f"save tuned settings in the model's generation_config.{MMI_CONFIG_KEY} "
                    "(`hf_neuralconv.mmi.save_mmi_settings`)."
                )
            self.reverse_model = self._load_reverse_model(saved)
        return self.reverse_model

    def __call__(self, inputs, **kwargs):
        """Answer one chat (a string or a message list) or a list of chats; see the class docstring."""
        if isinstance(inputs, (list, tuple)) and not inputs:
            raise ValueError("Nothing to answer: the conversation (or batch) is empty.")
        if isinstance(inputs, (list, tuple)) and not any(isinstance(item, dict) for item in inputs):
            # A batch: check every chat before any is answered, and say which one is wrong.
            for index, chat in enumerate(inputs):
                try:
                    conversation_turns(getattr(chat, "messages", chat))
                except (TypeError, ValueError) as error:
                    raise type(error)(f"Chat {index} of the batch: {error}") from None
        elif isinstance(inputs, (list, tuple)):
            conversation_turns(inputs)  # one chat: otherwise Pipeline takes a list of malformed messages for a batch
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(self, speaker=None, strategy=None, context_turns=None, mmi_lambda=None, mmi_gamma=None,
                             **generate_kwargs):
        preprocess_params = {}
        if speaker is not None:
            preprocess_params["speaker"] = speaker
        if context_turns is not None:
            preprocess_params["context_turns"] = context_turns
        if strategy is not None:
            if strategy not in DECODING_STRATEGIES:
                raise ValueError(f"Unknown decoding strategy {strategy!r}; choose one of {list(DECODING_STRATEGIES)}.")
            generate_kwargs["strategy"] = strategy
        for key, value in (("mmi_lambda", mmi_lambda), ("mmi_gamma", mmi_gamma)):
            if value is not None:
                generate_kwargs[key] = value
        return preprocess_params, generate_kwargs, {}

    def speaker_id(self, speaker: str | int | None) -> int | None:
        """The speaker embedding index for a persona name (from `speakers.json`) or id; None for a model without
        speakers. Raises ValueError for a missing, unknown or unusable speaker."""
        if speaker is None:
            if self.num_speakers:
                known = f" (e.g. {', '.join(map(repr, list(self.speakers)[:5]))})" if self.speakers else ""
                raise ValueError(
                    f"This persona model answers as one of its {self.num_speakers} speakers: pass `speaker=`{known}."
                )
            return None
        if not self.num_speakers:
            raise ValueError(f"This model has no speakers (num_speakers=0): it cannot answer as {speaker!r}.")
        if isinstance(speaker, int) and not isinstance(speaker, bool):
            if not 0 <= speaker < self.num_speakers:
                raise ValueError(f"Speaker id {speaker} is outside [0, {self.num_speakers}).")
            return speaker
        if speaker not in self.speakers:
            if not self.speakers:
                raise ValueError(
                    f"Unknown speaker {speaker!r}: the model has no {SPEAKERS_FILE}, so give an integer id in "
                    f"[0, {self.num_speakers})."
                )
            examples = ", ".join(map(repr, list(self.speakers)[:5]))
            raise ValueError(f"Unknown speaker {speaker!r}; the model knows {len(self.speakers)}, e.g. {examples}.")
        return self.speakers[speaker]

    def preprocess(self, chat, speaker=None, context_turns=None):
        messages = getattr(chat, "messages", chat)  # Pipeline.__call__ wraps message lists into a `Chat`
        turns = conversation_turns(messages)
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        speaker_id = self.speaker_id(speaker)
        keep = self.context_turns if context_turns is None else context_turns
        ids = encode_history(self.tokenizer, turns, keep, self.max_source_length, causal=self.causal)
        model_inputs = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
        if speaker_id is not None:
            model_inputs["speaker_ids"] = torch.tensor([speaker_id])
        model_inputs["messages"] = list(messages)
        # What mmi-bidi re-reads through `mmi.mmi_bidi_generate` (the same `encode_history`, so the same ids).
        model_inputs["turns"] = turns[max(0, len(turns) - 1 - keep):]
        return model_inputs

    def _decoding_kwargs(self, strategy: str | None, generate_kwargs: dict) -> dict:
        """The call's `generate()` arguments over those given at init, completed by the strategy's defaults."""
        kwargs = {**self._generate_kwargs, **generate_kwargs}
        if strategy is None:
            return kwargs
        for key, value in DECODING_STRATEGIES[strategy].items():
            kwargs.setdefault(key, value)
        defaults = GenerationConfig().to_dict()
        for key in self.model.generation_config.to_diff_dict():
            if key in defaults and key not in STRATEGY_KEEPS:
                kwargs.setdefault(key, defaults[key])
        beams = kwargs.get("num_beams")
        wrong_beams = strategy in ("greedy", "beam") and (beams > 1) != (strategy == "beam")
        if kwargs["do_sample"] != (strategy == "sample") or wrong_beams:
            raise ValueError(
                f"strategy={strategy!r} contradicts do_sample={kwargs['do_sample']}, num_beams={beams}: greedy "
                "decoding uses one beam without sampling, beam search several beams, sampling do_sample=True, the "
                "MMI strategies decode without sampling."
            )
        return kwargs

    def _forward(self, model_inputs, strategy=None, mmi_lambda=None, mmi_gamma=None, **generate_kwargs):
        if strategy == "mmi-bidi":
            return self._forward_mmi_bidi(model_inputs, mmi_lambda, mmi_gamma, generate_kwargs)
        if strategy == "mmi-antilm":
            anti_lm = self._mmi_model(strategy)
            processor = _package_module("mmi", f"strategy={strategy!r}").MMIAntiLMLogitsProcessor(
                anti_lm, self.model.config,
                lam=DEFAULT_ANTILM_LAMBDA if mmi_lambda is None else mmi_lambda,
                gamma=DEFAULT_ANTILM_GAMMA if mmi_gamma is None else mmi_gamma,
                prompt_ids=empty_history_prompt(self.tokenizer) if anti_lm is self.model else None,
            )
            given = generate_kwargs.get("logits_processor", self._generate_kwargs.get("logits_processor"))
            generate_kwargs["logits_processor"] = LogitsProcessorList([*(given or []), processor])
        generate_kwargs = self._prepare_generate_kwargs(
            self._decoding_kwargs(strategy, generate_kwargs), return_dict_in_generate=True, output_scores=True
        )
        input_ids = model_inputs["input_ids"]
        extra = {"speaker_ids": model_inputs["speaker_ids"]} if "speaker_ids" in model_inputs else {}
        output = self.model.generate(
            input_ids=input_ids, attention_mask=model_inputs["attention_mask"], **extra, **generate_kwargs
        )
        scores = getattr(output, "sequences_scores", None)
        if scores is None:
            steps = len(output.scores)
            scores = sequence_scores(output.sequences[:, -steps:], output.scores, self.tokenizer.eos_token_id)
        batch_size = input_ids.size(0)
        replies = generated_replies(self.model, output.sequences, input_ids.shape[1])
        lengths, finished = self._reply_lengths(replies)
        return {
            "sequences": replies.reshape(batch_size, -1, replies.size(-1)),
            "scores": scores.reshape(batch_size, -1),
            "lengths": lengths.reshape(batch_size, -1),
            "finished": finished.reshape(batch_size, -1),
            "messages": model_inputs["messages"],
        }

    def _reply_lengths(self, replies: torch.LongTensor) -> tuple[torch.LongTensor, torch.BoolTensor]:
        """How many tokens each reply generated (its end-of-sequence token included) and whether it ended with one
        (else it stopped at the length limit). An encoder-decoder's output opens with the decoder's start token,
        which was given, not generated."""
        generated = replies if self.causal else replies[:, 1:]
        ends = self.model.generation_config.eos_token_id
        ends = [ends] if isinstance(ends, int) else list(ends or [self.tokenizer.eos_token_id])
        is_end = torch.isin(generated, torch.tensor(ends, device=generated.device))
        finished = is_end.any(dim=1)
        first_end = torch.where(finished, is_end.int().argmax(dim=1), generated.size(1) - 1)
        return first_end + 1, finished

    def _forward_mmi_bidi(self, model_inputs, mmi_lambda, mmi_gamma, generate_kwargs):
        """The reranked N-best of each chat (`mmi.mmi_bidi_generate`, all chats of the batch in one call)."""
        kwargs = self._decoding_kwargs("mmi-bidi", generate_kwargs)
        kwargs.pop("do_sample")  # mmi_bidi_generate decodes the N-best without sampling
        returned = kwargs.pop("num_return_sequences", None) or 1
        turns = model_inputs["turns"]
        single = isinstance(turns[0], str)  # one chat unbatched, else one list of turns per chat
        histories = [turns] if single else turns
        speaker_ids = model_inputs.get("speaker_ids")
        ranked = _package_module("mmi", "strategy='mmi-bidi'").mmi_bidi_generate(
            self.model, self._mmi_model("mmi-bidi"), self.tokenizer, histories, lam=mmi_lambda, gamma=mmi_gamma,
            speaker_ids=None if speaker_ids is None else speaker_ids.reshape(-1).tolist(),
            # `preprocess` already kept the turns to read: every history is read whole
            context_turns=max(len(history) for history in histories) - 1, max_source_length=self.max_source_length,
            **kwargs,
        )
        candidates = [answer[:returned] for answer in ranked]
        return {"candidates": candidates[0] if single else candidates, "messages": model_inputs["messages"]}

    def postprocess(self, model_outputs):
        messages = model_outputs["messages"]
        if "candidates" in model_outputs:  # mmi-bidi: reranked (text, score) pairs, best first
            return [{"generated_text": [*messages, {"role": "assistant", "content": text}], "score": score}
                    for text, score in model_outputs["candidates"]]
        texts = self.tokenizer.batch_decode(model_outputs["sequences"][0], skip_special_tokens=True)
        candidates = sorted(zip(texts, model_outputs["scores"][0].tolist(), model_outputs["lengths"][0].tolist(),
                                model_outputs["finished"][0].tolist(), strict=True),
                            key=lambda candidate: -candidate[1])
        return [
            {"generated_text": [*messages, {"role": "assistant", "content": text}], "score": score,
             "num_tokens": length, "finish_reason": "stop" if finished else "length"}
            for text, score, length, finished in candidates
        ]

    def save_pretrained(self, save_directory: str | Path, **kwargs) -> None:
        """Save the model, tokenizer, reading settings and persona vocabulary, with this pipeline's code."""
        save_directory = Path(save_directory)
        self.model.save_pretrained(save_directory, **kwargs)
        self._saved_tokenizer.save_pretrained(save_directory, **kwargs)
        data_config_path = save_directory / DATA_CONFIG_FILE
        data_config = json.loads(data_config_path.read_text()) if data_config_path.is_file() else {}
        data_config.update(max_source_length=self.max_source_length, max_context_turns=self.context_turns)
        data_config_path.write_text(json.dumps(data_config, indent=2))
        if self.speakers:
            (save_directory / SPEAKERS_FILE).write_text(json.dumps(self.speakers, indent=2))
        _package_module("core.run_dir", "Saving the pipeline").export_pipeline_code(save_directory)


def _package_module(name: str, purpose: str):
    """`hf_neuralconv.<name>`, imported on first use: this file also runs as remote code next to a saved model,
    where the package may be missing, and the basic strategies must work there without it."""
    try:
        return importlib.import_module(f"hf_neuralconv.{name}")
    except ImportError as error:
        raise ImportError(
            f"{purpose} needs the hf_neuralconv package (`pip install hf-neuralconv`): {error}"
        ) from error

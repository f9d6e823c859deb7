"""LSTM conversation models as transformers `PreTrainedModel`s.

* `LSTMSeq2SeqForConditionalGeneration` — the sequence-to-sequence conversational model of Vinyals & Le (2015,
  Section 2): an LSTM encoder reads the context, an LSTM decoder started from the encoder's final state predicts
  the reply one token at a time. Options: Luong et al. (2015) global attention, a projection before the softmax
  (Vinyals & Le, Section 5.2), and a persona speaker vector concatenated to the decoder input at every step
  (Li et al. 2016; Luan et al. 2017, Eq. 1), and a second encoder for the autoencoder task of Luan et al. (2017,
  Section 4), which shares the decoder with the seq2seq task.
* `LSTMForCausalLM` — an LSTM language model built from the same blocks.

The recurrent state is the generation cache (`LSTMState`): `generate()` runs exactly one decoder step per new
token and beam search reorders the state through `LSTMState.reorder_cache`. transformers 5.25 renamed the cache
argument and output field from `past_key_values` to `cache`; the models take either name and return the state under
the one the installed transformers uses (`CACHE_NAME`), so that `generate()` hands it back on every version.

This file only imports torch, transformers, safetensors and the configuration beside it, so that a saved model
loads with `trust_remote_code=True` in an environment without this package.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import CausalLMOutputWithPast, Seq2SeqLMOutput
from transformers.utils import ModelOutput

from .configuration_lstm import LSTMLMConfig, LSTMSeq2SeqConfig

# The name under which `generate()` passes the cache to `prepare_inputs_for_generation` and reads it from a model's
# output: `cache` since transformers 5.25, `past_key_values` before. A model that answers to the other name only
# silently loses its state and re-reads the whole prefix at every step.
CACHE_NAME = "cache" if "cache" in Seq2SeqLMOutput.__dataclass_fields__ else "past_key_values"


def _given_state(cache: "LSTMState | None", past_key_values: "LSTMState | None") -> "LSTMState | None":
    """The state passed under the new name (`cache`) or the old one (`past_key_values`), never both."""
    if cache is not None and past_key_values is not None:
        raise ValueError("Pass the LSTM state as `cache` or as `past_key_values`, not both.")
    return cache if cache is not None else past_key_values


# The tasks of Luan et al. (2017, Section 4) an encoder-decoder with `autoencoder_encoder=True` is trained on: both
# read their input with their own encoder and predict the target with the one shared decoder.
SEQ2SEQ_TASK, AUTOENCODER_TASK = "seq2seq", "autoencoder"


class LSTMState:
    """The recurrent state (h, c) of a stacked LSTM, used as the cache (`CACHE_NAME`) by `generate()`.

    `hidden` and `cell` have shape `(num_layers, batch, hidden_size)`, the layout of `nn.LSTM`.
    """

    is_compileable = False

    def __init__(self, hidden: torch.Tensor, cell: torch.Tensor, seen_tokens: int = 0):
        self.hidden = hidden
        self.cell = cell
        self.seen_tokens = seen_tokens

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Keep the rows chosen by beam search (in place, as transformers' caches do)."""
        beam_idx = beam_idx.to(self.hidden.device)
        self.hidden = self.hidden.index_select(1, beam_idx)
        self.cell = self.cell.index_select(1, beam_idx)

    def as_tuple(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.hidden, self.cell


@dataclass
class LSTMEncoderOutput(ModelOutput):
    """Encoder output. Every field is batch-first so that `generate()` can expand it for beams.

    last_hidden_state: `(batch, source_len, hidden_size)` top-layer outputs (attention memory).
    final_hidden / final_cell: `(batch, num_layers, hidden_size)` final state the decoder starts from.
    """

    last_hidden_state: torch.FloatTensor | None = None
    final_hidden: torch.FloatTensor | None = None
    final_cell: torch.FloatTensor | None = None


class LSTMPreTrainedModel(PreTrainedModel):
    """Weight initialisation and generation plumbing shared by the LSTM models."""

    base_model_prefix = "lstm"
    main_input_name = "input_ids"
    # The loss is a token sum divided by `num_items_in_batch`: exact under gradient accumulation and DDP.
    accepts_loss_kwargs = True

    def _init_weights(self, module: nn.Module) -> None:
        # U(-0.08, 0.08) for every parameter, as in Sutskever et al. (2014) and Vinyals & Le (2015).
        init_range = self.config.init_range
        if isinstance(module, (nn.Linear, nn.LSTM, nn.Embedding)):
            for name, parameter in module.named_parameters(recurse=False):
                init.uniform_(parameter, -init_range, init_range)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            init.zeros_(module.weight[module.padding_idx])

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        try:
            model = super().from_pretrained(*args, **kwargs)
        except SafetensorError as error:  # its message names neither the file nor what to do
            name = args[0] if args else kwargs.get("pretrained_model_name_or_path")
            raise OSError(f"{name}: the weights file model.safetensors cannot be read ({error}); it is truncated or "
                          "corrupt: copy it again, or save the model again.") from error
        # Loaded tensors can start at 8-byte offsets; CPU kernels (BLAS, the packed-sequence LSTM) then take a
        # differently vectorised path whose sums differ in the last bits. 64-byte aligned copies make a reloaded
        # model compute exactly what the saved one did.
        for parameter in model.parameters():
            if parameter.data_ptr() % 64:
                parameter.data = parameter.data.clone()
        return model

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # Our cache is the LSTM state, not attention keys/values: generate must not build a DynamicCache.
        return False


def _token_loss(logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch) -> torch.Tensor:
    """Cross-entropy over non-ignored (-100) labels: a sum divided by `num_items_in_batch` when Trainer gives it
    (the global token count across accumulation steps and ranks), else the mean."""
    loss = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1), ignore_index=-100, reduction="sum"
    )
    if num_items_in_batch is None:
        num_items_in_batch = labels.ne(-100).sum().clamp(min=1)
    return loss / num_items_in_batch


def _labelled_loss(output_layer: nn.Module, states: torch.Tensor, labels: torch.Tensor, num_items_in_batch):
    """The loss of `labels` with the output layer run on the labelled positions only (`return_logits=False`): in a
    padded batch of chat replies most positions are padding, and the vocabulary softmax is the largest cost of a
    training step. Equal to `_token_loss` over the full logits."""
    labelled = labels.ne(-100)
    return _token_loss(output_layer(states[labelled]), labels[labelled], num_items_in_batch)


class LSTMOutputLayer(nn.Module):
    """Dropout, optional linear projection (Vinyals & Le, Section 5.2) and the vocabulary logits."""

    def __init__(self, hidden_size: int, projection_size: int, vocab_size: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.projection = nn.Linear(hidden_size, projection_size) if projection_size else None
        self.lm_head = nn.Linear(projection_size or hidden_size, vocab_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = self.dropout(hidden)
        if self.projection is not None:
            hidden = self.projection(hidden)
        return self.lm_head(hidden)


class LSTMEncoder(nn.Module):
    """Embeds the source and runs a (bi)directional stacked LSTM over it, padding excluded."""

    main_input_name = "input_ids"

    def __init__(self, config: LSTMSeq2SeqConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
        self.dropout = nn.Dropout(config.dropout)
        directions = 2 if config.bidirectional_encoder else 1
        self.lstm = nn.LSTM(
            config.embedding_size,
            config.hidden_size // directions,
            num_layers=config.num_layers,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            bidirectional=config.bidirectional_encoder,
            batch_first=True,
        )

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        initial_state: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> LSTMEncoderOutput:
        """`initial_state` (h, c in `nn.LSTM`'s layout) continues a reading: the source is then the rest of one whose
        beginning left the encoder in that state (a left-to-right encoder only; gibbs-enum reads the words before
        the position it changes once for all candidates)."""
        if initial_state is not None and self.config.bidirectional_encoder:
            raise ValueError("A bidirectional encoder cannot continue from a state: its backward pass reads the "
                             "source from the end.")
        embedded = self.dropout(self.embed_tokens(input_ids))
        if attention_mask is None:
            lengths = torch.full((input_ids.size(0),), input_ids.size(1), dtype=torch.long)
        else:
            lengths = attention_mask.sum(dim=1).cpu()
        if (lengths == 0).any():
            raise ValueError("Every source sequence needs at least one token (an attention mask row is all zeros).")
        # Packing makes the final state the one after each row's last real token, whatever the padding side.
        if attention_mask is not None and not bool(attention_mask[:, 0].all()):
            raise ValueError("The LSTM encoder expects right-padded inputs (set `tokenizer.padding_side='right'`).")
        packed = nn.utils.rnn.pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        packed_outputs, (hidden, cell) = self.lstm(packed, initial_state)
        outputs, _ = nn.utils.rnn.pad_packed_sequence(packed_outputs, batch_first=True, total_length=input_ids.size(1))
        if self.config.bidirectional_encoder:
            # (layers * 2, batch, hidden/2) -> (layers, batch, hidden): forward and backward halves side by side.
            hidden = torch.cat([hidden[0::2], hidden[1::2]], dim=-1)
            cell = torch.cat([cell[0::2], cell[1::2]], dim=-1)
        return LSTMEncoderOutput(
            last_hidden_state=outputs,
            final_hidden=hidden.transpose(0, 1).contiguous(),
            final_cell=cell.transpose(0, 1).contiguous(),
        )


class LuongAttention(nn.Module):
    """Luong et al. (2015) global attention: score(h_t, h_s) = h_t . h_s ("dot") or h_t . W_a h_s ("general");
    c_t = sum_s a_ts h_s; output h~_t = tanh(W_c [c_t; h_t])."""

    def __init__(self, hidden_size: int, score: str):
        super().__init__()
        # "general" applies W_a to the queries (h_t W_a), which scores the same as W_a h_s but is computed
        # once per decoder step instead of once per source position.
        self.query_transform = nn.Linear(hidden_size, hidden_size, bias=False) if score == "general" else None
        self.output_transform = nn.Linear(2 * hidden_size, hidden_size, bias=False)

    def forward(
        self, decoder_states: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        queries = decoder_states if self.query_transform is None else self.query_transform(decoder_states)
        scores = torch.bmm(queries, memory.transpose(1, 2))
        if memory_mask is not None:
            scores = scores.masked_fill(~memory_mask[:, None, :].bool(), torch.finfo(scores.dtype).min)
        weights = scores.softmax(dim=-1)
        context = torch.bmm(weights, memory)
        attended = torch.tanh(self.output_transform(torch.cat([context, decoder_states], dim=-1)))
        return attended, weights


class LSTMSeq2SeqForConditionalGeneration(LSTMPreTrainedModel, GenerationMixin):
    """Vinyals & Le (2015) LSTM encoder-decoder for dialogue: p(reply | context) = prod_t p(y_t | y_<t, context).

    The decoder starts from the encoder's final (h, c), reads the previous token's embedding (plus, with
    `num_speakers > 0`, the responder's speaker vector v_i as in Luan et al. 2017 Eq. 1) and predicts the next
    token, optionally through Luong global attention over the encoder outputs.

    With `autoencoder_encoder=True`, `forward(..., task="autoencoder")` reads the input with a second encoder and
    predicts it with the same decoder (Luan et al. 2017, Section 4 and Figure 2: decoder shared, encoders not).
    """

    config_class = LSTMSeq2SeqConfig

    def __init__(self, config: LSTMSeq2SeqConfig):
        super().__init__(config)
        self.encoder = LSTMEncoder(config)
        self.autoencoder_encoder = LSTMEncoder(config) if config.autoencoder_encoder else None
        self.decoder_embeddings = (
            None
            if config.share_embeddings
            else nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
        )
        self.speaker_embeddings = (
            nn.Embedding(config.num_speakers, config.speaker_embedding_size) if config.num_speakers else None
        )
        self.decoder_dropout = nn.Dropout(config.dropout)
        self.decoder = nn.LSTM(
            config.embedding_size + (config.speaker_embedding_size if config.num_speakers else 0),
            config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.attention = LuongAttention(config.hidden_size, config.attention) if config.attention != "none" else None
        self.output_layer = LSTMOutputLayer(
            config.hidden_size, config.projection_size, config.vocab_size, config.dropout
        )
        embedding_name = "encoder.embed_tokens" if config.share_embeddings else "decoder_embeddings"
        self._tied_weights_keys = {"output_layer.lm_head.weight": f"{embedding_name}.weight"}
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.encoder.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.encoder.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.output_layer.lm_head

    def get_encoder(self, modality: str | None = None) -> LSTMEncoder:
        return self.encoder

    def get_decoder_input_embeddings(self) -> nn.Embedding:
        return self.encoder.embed_tokens if self.decoder_embeddings is None else self.decoder_embeddings

    def prepare_decoder_input_ids_from_labels(self, labels: torch.LongTensor) -> torch.LongTensor:
        """The decoder inputs that teacher-force `labels`: `decoder_start_token_id`, then the labels shifted right
        (-100 read as padding). `DataCollatorForSeq2Seq(model=...)` calls it; so does `forward` without
        `decoder_input_ids`."""
        start = torch.full_like(labels[:, :1], self.config.decoder_start_token_id)
        shifted = torch.cat([start, labels[:, :-1]], dim=1)
        return shifted.masked_fill(shifted.eq(-100), self.config.pad_token_id)

    def _speaker_vectors(self, speaker_ids: torch.LongTensor | None, batch_size: int) -> torch.Tensor | None:
        if self.speaker_embeddings is None:
            if speaker_ids is not None:
                raise ValueError("`speaker_ids` was given but this model has no speaker embeddings (num_speakers=0).")
            return None
        if speaker_ids is None:
            raise ValueError(
                f"This persona model has {self.config.num_speakers} speakers: pass `speaker_ids` (one per example)."
            )
        speaker_ids = speaker_ids.reshape(-1)
        if speaker_ids.numel() != batch_size:
            raise ValueError(f"Got {speaker_ids.numel()} speaker ids for a batch of {batch_size}.")
        if speaker_ids.min() < 0 or speaker_ids.max() >= self.config.num_speakers:
            raise ValueError(f"Speaker ids must lie in [0, {self.config.num_speakers}), got {speaker_ids.tolist()}.")
        return self.speaker_embeddings(speaker_ids)

    def _task_encoder(self, task: str) -> LSTMEncoder:
        if task == SEQ2SEQ_TASK:
            return self.encoder
        if task != AUTOENCODER_TASK:
            raise ValueError(f"Unknown task {task!r}; choose {SEQ2SEQ_TASK!r} or {AUTOENCODER_TASK!r}.")
        if self.autoencoder_encoder is None:
            raise ValueError("The autoencoder task needs a model built with `autoencoder_encoder=True`.")
        return self.autoencoder_encoder

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: LSTMEncoderOutput | None = None,
        cache: LSTMState | None = None,
        speaker_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
        task: str = SEQ2SEQ_TASK,
        return_logits: bool = True,
        past_key_values: LSTMState | None = None,
    ) -> Seq2SeqLMOutput:
        r"""Decoder logits for `decoder_input_ids` (or the right-shifted `labels`) given the source.

        With `cache` (an `LSTMState`; `past_key_values` is its pre-5.25 name), only the new decoder tokens are read
        and the state continues from there; the output's `CACHE_NAME` field is the state after the last token.
        `decoder_attention_mask` is accepted for API compatibility: padding at the end of a right-padded target does
        not influence the earlier positions of a unidirectional decoder, and the loss ignores labels equal to -100.

        `task="autoencoder"` encodes `input_ids` with the autoencoder encoder instead of the seq2seq one (Luan et al.
        2017, Section 4); everything after the encoder is the same.

        `return_logits=False` (with `labels`) returns the loss only: the output layer then runs on the labelled
        positions alone, so no softmax is spent on padding (the training step's choice; same loss).
        """
        if encoder_outputs is None:
            if input_ids is None:
                raise ValueError("Pass `input_ids` (the context) or precomputed `encoder_outputs`.")
            encoder_outputs = self._task_encoder(task)(input_ids, attention_mask)
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("Pass `decoder_input_ids` or `labels`.")
            decoder_input_ids = self.prepare_decoder_input_ids_from_labels(labels)

        state = _given_state(cache, past_key_values)
        if state is None:
            state = LSTMState(
                encoder_outputs.final_hidden.transpose(0, 1).contiguous(),
                encoder_outputs.final_cell.transpose(0, 1).contiguous(),
            )
        embedded = self.decoder_dropout(self.get_decoder_input_embeddings()(decoder_input_ids))
        speaker_vectors = self._speaker_vectors(speaker_ids, decoder_input_ids.size(0))
        if speaker_vectors is not None:
            steps = decoder_input_ids.size(1)
            embedded = torch.cat([embedded, speaker_vectors[:, None, :].expand(-1, steps, -1)], dim=-1)
        decoder_states, (hidden, cell) = self.decoder(embedded, state.as_tuple())

        attention_weights = None
        if self.attention is not None:
            decoder_states, attention_weights = self.attention(
                decoder_states, encoder_outputs.last_hidden_state, attention_mask
            )
        if labels is not None and not return_logits:
            logits, loss = None, _labelled_loss(self.output_layer, decoder_states, labels, num_items_in_batch)
        else:
            logits = self.output_layer(decoder_states)
            loss = None if labels is None else _token_loss(logits, labels, num_items_in_batch)
        next_state = None
        if use_cache is not False:
            next_state = LSTMState(hidden, cell, state.seen_tokens + decoder_input_ids.size(1))
        return Seq2SeqLMOutput(
            loss=loss,
            logits=logits,
            **{CACHE_NAME: next_state},
            decoder_hidden_states=(decoder_states,) if output_hidden_states else None,
            cross_attentions=(attention_weights,) if output_attentions and attention_weights is not None else None,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
        )

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        encoder_outputs: LSTMEncoderOutput | None = None,
        speaker_ids: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        task: str = SEQ2SEQ_TASK,
        **kwargs,
    ) -> dict:
        if task != SEQ2SEQ_TASK:  # generate() encodes with `get_encoder()`: it can only answer as the seq2seq model
            raise ValueError(f"generate() runs the {SEQ2SEQ_TASK!r} task; {task!r} is a training task (`forward`).")
        # With a state, only the newest token is fed: one decoder step per generated token. Without one
        # (use_cache=False) the whole prefix is re-read from the encoder's final state.
        state = kwargs.get(CACHE_NAME)
        if state is not None:
            input_ids = input_ids[:, -1:]
        return {
            "decoder_input_ids": input_ids,
            "cache": state,
            "attention_mask": attention_mask,
            "encoder_outputs": encoder_outputs,
            "speaker_ids": speaker_ids,
            "use_cache": use_cache,
        }


class LSTMForCausalLM(LSTMPreTrainedModel, GenerationMixin):
    """A stacked-LSTM language model p(T) = prod_t p(t_i | t_<i): the anti-LM of MMI-antiLM decoding
    (Li et al. 2016; He & Glass 2020, Section 4.3) and the input LM of the io-hit criteria (He & Glass, 3.2).

    Inputs are expected right-padded; `cache` (or its pre-5.25 name `past_key_values`) carries the LSTM state
    between calls.
    """

    config_class = LSTMLMConfig
    _tied_weights_keys = {"output_layer.lm_head.weight": "embed_tokens.weight"}

    def __init__(self, config: LSTMLMConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
        self.dropout = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(
            config.embedding_size,
            config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.output_layer = LSTMOutputLayer(
            config.hidden_size, config.projection_size, config.vocab_size, config.dropout
        )
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.output_layer.lm_head

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        cache: LSTMState | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
        return_logits: bool = True,
        past_key_values: LSTMState | None = None,
    ) -> CausalLMOutputWithPast:
        r"""Next-token logits; with `labels` (usually `input_ids` with pads set to -100) the loss of predicting
        `labels[:, 1:]` from the positions before them, as transformers' causal LMs do. `return_logits=False`
        (with `labels`) returns the loss only, the output layer run on the labelled positions alone."""
        state = _given_state(cache, past_key_values)
        embedded = self.dropout(self.embed_tokens(input_ids))
        outputs, (hidden, cell) = self.lstm(embedded, None if state is None else state.as_tuple())
        if labels is not None and not return_logits:
            logits, loss = None, _labelled_loss(self.output_layer, outputs[:, :-1], labels[:, 1:], num_items_in_batch)
        else:
            logits = self.output_layer(outputs)
            loss = None if labels is None else _token_loss(logits[:, :-1], labels[:, 1:], num_items_in_batch)
        next_state = None
        if use_cache is not False:
            seen = 0 if state is None else state.seen_tokens
            next_state = LSTMState(hidden, cell, seen + input_ids.size(1))
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            **{CACHE_NAME: next_state},
            hidden_states=(outputs,) if output_hidden_states else None,
        )

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> dict:
        state = kwargs.get(CACHE_NAME)
        if attention_mask is not None and state is None and not bool(attention_mask.all()):
            raise ValueError("LSTMForCausalLM.generate needs prompts of equal length (no padding) in one batch.")
        if state is not None:
            input_ids = input_ids[:, -1:]
        return {"input_ids": input_ids, "cache": state, "use_cache": use_cache}

"""Configurations of the LSTM conversation models.

`LSTMSeq2SeqConfig` describes the encoder-decoder of Vinyals & Le (2015, "A Neural Conversational Model"),
with the Luong et al. (2015) global attention, the persona speaker vector of Li et al. (2016) / Luan et al.
(2017, Eq. 1) and the second encoder of Luan et al.'s autoencoder task (2017, Section 4) as options.
`LSTMLMConfig` describes the LSTM language model built from the same blocks (used for MMI-antiLM decoding and as
the input LM of the negative-training hit criteria).

This file imports nothing from the package: it is copied verbatim next to saved models so that
`trust_remote_code=True` works with transformers alone.
"""

from transformers import PretrainedConfig

ATTENTION_TYPES = ("none", "dot", "general")


class LSTMConfigBase(PretrainedConfig):
    r"""What both LSTM models share: the vocabulary, the LSTM sizes, dropout, the output layer and initialisation.

    Args:
        vocab_size: number of tokens of the vocabulary.
        embedding_size: size of the word embeddings.
        hidden_size: size of the LSTM state.
        num_layers: stacked LSTM layers.
        projection_size: if > 0, the LSTM output is projected linearly to this size before the softmax
            (Vinyals & Le, Section 5.2: "we project the memory cells to 2048 linear units") — cheaper softmax.
        dropout: dropout on embeddings, between LSTM layers and before the output layer.
        tie_word_embeddings: the output layer reuses the (decoder) embedding matrix (needs the output width,
            `projection_size` or `hidden_size`, to equal `embedding_size`).
        init_range: parameters are drawn from U(-init_range, init_range) (Sutskever et al. 2014, used by
            Vinyals & Le).
    """

    def __init__(
        self,
        vocab_size: int = 20000,
        embedding_size: int = 256,
        hidden_size: int = 512,
        num_layers: int = 1,
        projection_size: int = 0,
        dropout: float = 0.2,
        tie_word_embeddings: bool = False,
        init_range: float = 0.08,
        pad_token_id: int = 0,
        bos_token_id: int = 1,
        eos_token_id: int = 2,
        **kwargs,
    ):
        name = type(self).__name__
        for size_name, value in (("vocab_size", vocab_size), ("embedding_size", embedding_size),
                                 ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}: `{size_name}` must be a positive integer, got {value!r}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{name}: `dropout` must be in [0, 1), got {dropout!r}.")
        if projection_size < 0:
            raise ValueError(f"{name}: `projection_size` must be >= 0, got {projection_size}.")
        output_size = projection_size or hidden_size
        if tie_word_embeddings and output_size != embedding_size:
            raise ValueError(
                f"{name}: `tie_word_embeddings=True` needs the output size ({output_size}, the `projection_size` or "
                f"else `hidden_size`) to equal `embedding_size` ({embedding_size})."
            )
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.projection_size = projection_size
        self.dropout = dropout
        self.init_range = init_range
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                         tie_word_embeddings=tie_word_embeddings, **kwargs)


class LSTMSeq2SeqConfig(LSTMConfigBase):
    r"""Configuration of [`LSTMSeq2SeqForConditionalGeneration`] (Vinyals & Le 2015, Section 2).

    Args:
        vocab_size: number of tokens of the (shared) source/target vocabulary.
        embedding_size: size of the word embeddings.
        hidden_size: size of the decoder LSTM state (and of the encoder's final state it starts from).
        num_layers: LSTM layers of the encoder and of the decoder (the decoder starts from the encoder's
            final state layer by layer, so both have the same depth).
        bidirectional_encoder: run the encoder in both directions; each direction then has `hidden_size // 2`
            units and their final states are concatenated to start the decoder.
        attention: Luong et al. (2015) global attention score: `"none"`, `"dot"` (h_t . h_s) or `"general"`
            (h_t . W_a h_s). With attention the decoder output is h~_t = tanh(W_c [c_t; h_t]).
        projection_size: if > 0, the decoder output is projected linearly to this size before the softmax
            (Vinyals & Le, Section 5.2: "we project the memory cells to 2048 linear units") — cheaper softmax.
        dropout: dropout on embeddings, between LSTM layers and before the output layer.
        share_embeddings: one embedding matrix for the encoder and the decoder.
        tie_word_embeddings: the output layer reuses the decoder embedding matrix (needs the output width,
            `projection_size` or `hidden_size`, to equal `embedding_size`).
        init_range: parameters are drawn from U(-init_range, init_range) (Sutskever et al. 2014, used by
            Vinyals & Le).
        num_speakers: if > 0, the model holds a speaker embedding table concatenated to the decoder input at
            every step (persona model, Li et al. 2016; Luan et al. 2017 Eq. 1).
        speaker_embedding_size: size of a speaker vector (used when `num_speakers > 0`).
        autoencoder_encoder: if True, the model holds a second encoder, of the same shape as the first but with its
            own parameters, read by the autoencoder task of Luan et al. (2017, Section 4, Figure 2): the decoder,
            attention and output layer are shared with the seq2seq task, the encoders are not.
    """

    model_type = "lstm_seq2seq"

    def __init__(
        self,
        *,
        bidirectional_encoder: bool = False,
        attention: str = "general",
        share_embeddings: bool = True,
        num_speakers: int = 0,
        speaker_embedding_size: int = 0,
        autoencoder_encoder: bool = False,
        decoder_start_token_id: int | None = None,
        **kwargs,
    ):
        kwargs["is_encoder_decoder"] = True  # also present (and true) in a saved config.json
        super().__init__(**kwargs)  # the shared sizes (`LSTMConfigBase`), checked there
        name = type(self).__name__
        if attention not in ATTENTION_TYPES:
            raise ValueError(f"{name}: `attention` must be one of {ATTENTION_TYPES}, got {attention!r}.")
        if bidirectional_encoder and self.hidden_size % 2:
            raise ValueError(
                f"{name}: a bidirectional encoder splits `hidden_size` between two directions, so it must be even "
                f"(got {self.hidden_size})."
            )
        if num_speakers < 0 or speaker_embedding_size < 0:
            raise ValueError(f"{name}: `num_speakers` and `speaker_embedding_size` must be >= 0.")
        if num_speakers and not speaker_embedding_size:
            raise ValueError(f"{name}: `num_speakers={num_speakers}` needs a positive `speaker_embedding_size`.")
        self.bidirectional_encoder = bidirectional_encoder
        self.attention = attention
        self.share_embeddings = share_embeddings
        self.num_speakers = num_speakers
        self.speaker_embedding_size = speaker_embedding_size
        self.autoencoder_encoder = autoencoder_encoder
        self.decoder_start_token_id = self.bos_token_id if decoder_start_token_id is None else decoder_start_token_id


class LSTMLMConfig(LSTMConfigBase):
    r"""Configuration of [`LSTMForCausalLM`]: a multi-layer LSTM language model p(T) over one side of the dialogue.

    He & Glass (2020) use such an LM for the MMI-antiLM baseline (Section 4.3) and for the input
    log-likelihood of the io-hit criteria (Section 3.2). Its settings are those of [`LSTMConfigBase`].
    """

    model_type = "lstm_lm"

    def __init__(self, **kwargs):
        # transformers >= 5 turns a config class without an `__init__` of its own into a dataclass of its annotated
        # fields, which would drop the settings `LSTMConfigBase.__init__` sets: keep this one explicit.
        super().__init__(**kwargs)

"""Word-level tokenizer and the model's view of a dialogue turn.

Vinyals & Le (2015) feed "the concatenation of what was said so far" with "special tokens indicating turn taking
and actor". Here every turn of the source starts with an actor token that doubles as the turn separator:
`<user>` for turns of the person being answered, `<bot>` for turns of the responder, e.g.
`<bot> hi there ! <user> how are you ?`. The target is the response followed by `</s>`.
"""

from collections.abc import Iterable, Sequence

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
USER, BOT = "<user>", "<bot>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK, USER, BOT]  # ids 0..5 in this order


def train_word_tokenizer(
    texts: Iterable[str], vocab_size: int = 20000, min_frequency: int = 1
) -> PreTrainedTokenizerFast:
    """Train a lowercasing word-level tokenizer (punctuation split from words) with the `tokenizers` library.

    `vocab_size` counts the special tokens; words outside the vocabulary map to `<unk>`.
    """
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"`vocab_size` must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}.")
    if min_frequency < 1:
        raise ValueError(f"`min_frequency` must be >= 1, got {min_frequency}.")
    backend = Tokenizer(models.WordLevel(unk_token=UNK))
    backend.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    # \w+|[^\w\s]+ : words, and runs of punctuation ("?", "...", ":)") as tokens of their own.
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins with spaces, tidies " ," " ?" etc.
    trainer = trainers.WordLevelTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS, show_progress=False
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return wrap_tokenizer(backend)


def wrap_tokenizer(backend: Tokenizer) -> PreTrainedTokenizerFast:
    """Wrap a backend tokenizer as the `PreTrainedTokenizerFast` saved next to our models."""
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        extra_special_tokens=[USER, BOT],
        padding_side="right",
        truncation_side="left",
        # Replies read as text: "i ' m fine , don ' t" decodes to "i'm fine, don't" (the WordPiece decoder alone
        # joins " ," and " ?" but not the apostrophes). Encoding the decoded text gives the same ids back.
        clean_up_tokenization_spaces=True,
        model_max_length=10**6,
    )
    return tokenizer


def padding_id(source) -> int:
    """The id padding is written with, for a tokenizer or a model config: its pad token's, else its end-of-sequence
    token's (GPT-2's and Llama's tokenizers have none; padding is masked, or labelled -100, wherever it is read)."""
    return source.eos_token_id if source.pad_token_id is None else source.pad_token_id


def start_id(config) -> int:
    """The token a language model reads before a text: its `bos_token_id`, else its `eos_token_id` (GPT-2's are
    one token; a T5 config has no bos at all)."""
    bos = getattr(config, "bos_token_id", None)
    return config.eos_token_id if bos is None else bos


def source_text(context: Sequence[str], message: str) -> str:
    """The encoder input for answering `message` after `context` (oldest first): actor-marked turns.

    The message is by the user; going back in time the actors alternate (a turn is all consecutive messages of
    one sender, so neighbouring turns always have different senders).
    """
    turns = [*context, message]
    last = len(turns) - 1
    return " ".join(f"{USER if (last - i) % 2 == 0 else BOT} {turn}" for i, turn in enumerate(turns))


def encode_source(tokenizer: PreTrainedTokenizerFast, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of source texts, keeping the most recent `max_length` tokens."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [row[-max_length:] for row in ids]


def encode_target(
    tokenizer: PreTrainedTokenizerFast, texts: Sequence[str], max_length: int | None
) -> list[list[int]]:
    """Token ids of target texts followed by `</s>`, cut to `max_length` tokens in all (None: no limit)."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    if max_length is not None:
        ids = [row[: max_length - 1] for row in ids]
    return [row + [tokenizer.eos_token_id] for row in ids]


def encode_lm_examples(batch: dict, tokenizer: PreTrainedTokenizerFast, max_length: int | None) -> dict:
    """`datasets.map(batched=True)` function: dialogue examples -> causal-LM rows `<s> reply </s>` (cut to
    `max_length` tokens in all), labels equal to the inputs. The LM predicts every token after `<s>`, `</s>`
    included: the same tokens a seq2seq model's perplexity counts, and the form the MMI anti-LM reads."""
    rows = [[tokenizer.bos_token_id, *row]
            for row in encode_target(tokenizer, batch["response"], None if max_length is None else max_length - 1)]
    return {"input_ids": rows, "labels": [list(row) for row in rows]}


def metric_words(tokenizer: PreTrainedTokenizerFast, text: str) -> list[str]:
    """The words of `text` as the tokenizer splits them (normalised: lowercased, punctuation apart) but without the
    vocabulary lookup, so a word the model cannot produce stays itself. Replies and human references are compared
    in this form (distinct-n, max-ratio, Ent-n, BLEU): the decoder's tidy-up ("i'm", "fine,") and the references'
    case do not count, and the human row keeps its rare words."""
    backend = tokenizer.backend_tokenizer
    normalized = backend.normalizer.normalize_str(text) if backend.normalizer else text
    return [word for word, _ in backend.pre_tokenizer.pre_tokenize_str(normalized)]

"""The reverse generator's reward: embedding-average similarity (Liu et al. 2019, "Say What I Want", Section 4.2.4).

    ē_r = Σ_{w∈r} e_w / ||Σ_{w'∈r} e_w'||_2        R(I|O*) = Sim(O*, D(I)) = cos(ē_O, ē_O*)        (Eq. 2)

Only words out of a fixed stopword list count. The paper's list "consists of common punctuations and special
symbols" (Section 5.1.2): every token without a letter or a digit is dropped here, and `stopwords` adds the words of
your choice (e.g. gensim's English `STOPWORDS` to drop function words too). Words without a vector are skipped, as
embedding averages do. "In order to accelerate the convergence", rewards below 0.5 are set to 0 (`threshold`).

Word vectors are any gensim `KeyedVectors`: the paper's GoogleNews word2vec vectors
(`KeyedVectors.load_word2vec_format(path, binary=True)`), or vectors that `train_word_vectors` trains on a corpus with
gensim's Word2Vec and caches in word2vec's binary format (never a pickle: the file may be handed to someone else).
Texts are split the way the package's word tokenizer splits them (NFKC, lowercase, words and punctuation runs).
"""

import hashlib
import json
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from gensim.models import KeyedVectors, Word2Vec
from tokenizers import normalizers, pre_tokenizers

DEFAULT_THRESHOLD = 0.5
# The normaliser and pre-tokenizer of `data.tokenization.train_word_tokenizer`.
_NORMALIZER = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
_PRE_TOKENIZER = pre_tokenizers.Whitespace()


def words(text: str) -> list[str]:
    """Lowercased words and punctuation runs of `text` ("I'm ready!" -> ["i", "'", "m", "ready", "!"])."""
    return [word for word, _ in _PRE_TOKENIZER.pre_tokenize_str(_NORMALIZER.normalize_str(text))]


def content_words(text: str, stopwords: Iterable[str] = ()) -> list[str]:
    """The words of `text` that count for the similarity: not punctuation or symbols, not in `stopwords`."""
    stopwords = {word.lower() for word in stopwords}
    return [word for word in words(text) if any(ch.isalnum() for ch in word) and word not in stopwords]


def _stable_hash(text: str) -> int:
    # Word2Vec seeds each word's initial vector with a hash of it; Python's str hash changes from run to run.
    return zlib.crc32(text.encode("utf-8"))


def train_word_vectors(texts: Iterable[str], cache_dir: str | Path | None = None, vector_size: int = 100,
                       window: int = 5, min_count: int = 1, epochs: int = 5, seed: int = 0) -> KeyedVectors:
    """Word2Vec (CBOW, gensim) vectors trained on `texts` split by `words`, deterministic for a given corpus
    and settings (one worker, stable hashing).

    With `cache_dir`, the vectors are saved there as `word2vec-<fingerprint>.bin` (word2vec binary format) and
    loaded instead of retrained when the same texts and settings come again.
    """
    sentences = [words(text) for text in texts]
    sentences = [sentence for sentence in sentences if sentence]
    if not sentences:
        raise ValueError("No words to train word vectors on: the texts are empty.")
    settings = {"vector_size": vector_size, "window": window, "min_count": min_count, "epochs": epochs, "seed": seed}
    path = None
    if cache_dir is not None:
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
        for sentence in sentences:
            digest.update(("\t".join(sentence) + "\n").encode("utf-8"))
        path = Path(cache_dir) / f"word2vec-{digest.hexdigest()[:16]}.bin"
        if path.is_file():
            return KeyedVectors.load_word2vec_format(str(path), binary=True)
    model = Word2Vec(sentences, workers=1, hashfxn=_stable_hash, **settings)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        model.wv.save_word2vec_format(str(path), binary=True)
    return model.wv


def load_word_vectors(path: str | Path) -> KeyedVectors:
    """Vectors in word2vec format: binary for a `.bin` file, else text (what `save_word2vec_format` writes)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such word-vector file (word2vec text or binary format).")
    return KeyedVectors.load_word2vec_format(str(path), binary=path.suffix == ".bin")


class EmbeddingSimilarityReward:
    """R(I|O*) = cos(ē_O, ē_O*) with rewards below `threshold` set to 0 (Liu et al. 2019, Eq. 2 and Section 5.1.2).

    `reward(targets, outputs)` scores each environment output against its target. An output with no counted word
    scores 0; a target with none (empty, only punctuation/stopwords, or no word with a vector) is an error, as no
    reply can be measured against it (`check_target` says so before an attack starts).

    Args:
        word_vectors: gensim `KeyedVectors`, or the path of a word2vec-format file (`load_word_vectors`).
        stopwords: words that do not count, besides punctuation and symbols (which never count).
        threshold: rewards below it become 0 (the paper's 0.5); -1 keeps every similarity as it is.
    """

    def __init__(self, word_vectors: KeyedVectors | str | Path, stopwords: Iterable[str] = (),
                 threshold: float = DEFAULT_THRESHOLD):
        if not -1.0 <= threshold <= 1.0:
            raise ValueError(f"`threshold` is compared with a cosine similarity: keep it in [-1, 1], not {threshold}.")
        self.word_vectors = word_vectors if isinstance(word_vectors, KeyedVectors) else load_word_vectors(word_vectors)
        self.stopwords = frozenset(word.lower() for word in stopwords)
        self.threshold = threshold

    def sentence_embedding(self, text: str) -> np.ndarray | None:
        """ē_r: the sum of the counted words' vectors, L2-normalised; None when no counted word has a vector."""
        known = [word for word in content_words(text, self.stopwords) if word in self.word_vectors.key_to_index]
        if not known:
            return None
        total = np.sum([self.word_vectors[word] for word in known], axis=0, dtype=np.float64)
        norm = np.linalg.norm(total)
        return total / norm if norm > 0 else None

    def check_target(self, target: str) -> np.ndarray:
        """ē_O* of a target, or ValueError saying why the target cannot be scored."""
        if not isinstance(target, str) or not target.strip():
            raise ValueError(f"The target {target!r} is empty: give the reply the chatbot should say.")
        counted = content_words(target, self.stopwords)
        if not counted:
            raise ValueError(
                f"The target {target!r} has only punctuation, symbols or stopwords: nothing to measure a reply "
                "against (the similarity ignores them)."
            )
        embedding = self.sentence_embedding(target)
        if embedding is None:
            raise ValueError(f"No word of the target {target!r} has a word vector ({', '.join(counted)}).")
        return embedding

    def similarity(self, target: str, output: str) -> float:
        """cos(ē_output, ē_target) in [-1, 1], without the threshold; 0 for an output with no counted word."""
        output_embedding = self.sentence_embedding(output)
        if output_embedding is None:
            return 0.0
        return float(np.clip(self.check_target(target) @ output_embedding, -1.0, 1.0))

    def __call__(self, targets: Sequence[str], outputs: Sequence[str]) -> list[float]:
        """The rewards of `outputs` for their `targets` (pairwise, equal lengths)."""
        if len(targets) != len(outputs):
            raise ValueError(f"Got {len(targets)} targets for {len(outputs)} outputs: give one target per output.")
        rewards = []
        for target, output in zip(targets, outputs, strict=True):
            score = self.similarity(target, output)
            rewards.append(score if score >= self.threshold else 0.0)
        return rewards

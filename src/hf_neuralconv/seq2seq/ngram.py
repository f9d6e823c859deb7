"""Kneser-Ney n-gram language model baseline, estimated and queried with KenLM.

The model is interpolated modified Kneser-Ney (Chen & Goodman, 1998: three discounts per order, computed in closed
form from the counts of counts) as estimated by KenLM's `lmplz` (Heafield et al., 2013); it is queried with the
`kenlm` Python module. `lmplz` is a C++ program that PyPI's `kenlm` does not ship: build it with
`scripts/build_kenlm.sh` (`make kenlm`).

Out-of-vocabulary words are modelled like a closed-vocabulary LM in which `<unk>` is an ordinary word. `lmplz`
rejects a literal `<unk>` in its corpus ("Special word <unk> is not allowed in the corpus") and `--skip_symbols`
would delete it, joining its neighbours into n-grams that never occurred. So the training text spells `<unk>` as a
placeholder word that lmplz counts like any other, and the written ARPA file swaps the two names: `<unk>` then
carries the probabilities learned for the OOV class, in every context it was seen in, and the placeholder is left
with lmplz's own zero-count `<unk>` entry (its share of the interpolated uniform distribution). Renaming two words
leaves every distribution of the model unchanged. KenLM maps any word the model does not know to `<unk>`, so OOV
words score as the learned `<unk>` class.
"""

import math
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path

UNK = "<unk>"
_PLACEHOLDER = "<lmplz_unk>"  # stands for <unk> in lmplz's corpus; cannot come out of a word tokenizer
_SENTENCE_MARKERS = ("<s>", "</s>")  # added by KenLM itself
_BIN_ENV = "HF_NEURALCONV_KENLM_BIN"


def default_kenlm_bin_dir() -> Path:
    """Where `scripts/build_kenlm.sh` installs KenLM's programs unless `HF_NEURALCONV_KENLM_BIN` says otherwise."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "hf-neuralconv" / "kenlm" / "bin"


def find_lmplz() -> str:
    """Path of KenLM's `lmplz`: in `$HF_NEURALCONV_KENLM_BIN`, the build script's cache directory, then `PATH`."""
    directories = [Path(os.environ[_BIN_ENV])] if os.environ.get(_BIN_ENV) else []
    directories.append(default_kenlm_bin_dir())
    for directory in directories:
        candidate = directory / "lmplz"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    on_path = shutil.which("lmplz")
    if on_path:
        return on_path
    searched = ", ".join(str(d) for d in directories)
    raise FileNotFoundError(
        f"KenLM's `lmplz` was not found (looked in {searched} and on PATH). "
        "Build it with `scripts/build_kenlm.sh` (or `make kenlm`)."
    )


def _map_words(words: list[str], vocabulary: set[str]) -> list[str]:
    """Words outside `vocabulary` -> `<unk>`; reject what a line of KenLM text cannot hold."""
    for word in words:
        if word in _SENTENCE_MARKERS or word == _PLACEHOLDER or len(word.split()) != 1:
            raise ValueError(
                f"Invalid word {word!r}: words must be non-empty, without whitespace, and not "
                f"{' / '.join(_SENTENCE_MARKERS)} (KenLM adds sentence boundaries) or {_PLACEHOLDER}."
            )
    return [word if word in vocabulary else UNK for word in words]


def _swap_unk(line: str) -> str:
    """Exchange `<unk>` and the placeholder in the words field of an ARPA n-gram line."""
    if UNK not in line and _PLACEHOLDER not in line:
        return line
    fields = line.rstrip("\n").split("\t")
    if len(fields) < 2:
        return line
    swap = {UNK: _PLACEHOLDER, _PLACEHOLDER: UNK}
    fields[1] = " ".join(swap.get(word, word) for word in fields[1].split(" "))
    return "\t".join(fields) + "\n"


def train_kenlm(
    train_sentences: Iterable[list[str]],
    order: int,
    output_dir: str | Path,
    vocabulary: set[str],
    *,
    overwrite: bool = False,
    memory: str = "20%",
) -> Path:
    """Estimate an interpolated modified Kneser-Ney LM of `order` with `lmplz`; return the ARPA file's path.

    `train_sentences` are word lists without `<s>`/`</s>`; words outside `vocabulary` (normally already `<unk>`)
    become `<unk>`, which is estimated like an ordinary word (see the module docstring). `memory` is lmplz's
    sorting memory (`-S`). Where the closed-form discounts are undefined (tiny data), lmplz's fallback discounts
    0.5/1/1.5 are used, with a warning. The model is written to `output_dir/{order}gram.arpa`; an existing file
    is an error unless `overwrite`.
    """
    if order < 1:
        raise ValueError(f"`order` must be >= 1, got {order}.")
    output_dir = Path(output_dir)
    arpa_path = output_dir / f"{order}gram.arpa"
    if arpa_path.exists() and not overwrite:
        raise FileExistsError(f"{arpa_path} already exists; pass overwrite=True to replace it.")
    lmplz = find_lmplz()
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output_dir) as scratch:
        text_path, raw_arpa = Path(scratch) / "train.txt", Path(scratch) / "lmplz.arpa"
        with text_path.open("w", encoding="utf-8") as text:
            for words in train_sentences:
                mapped = _map_words(list(words), vocabulary)
                text.write(" ".join(_PLACEHOLDER if word == UNK else word for word in mapped) + "\n")
        command = [lmplz, "-o", str(order), "-S", memory, "-T", scratch + os.sep, "--discount_fallback"]
        command += ["--text", str(text_path), "--arpa", str(raw_arpa)]
        run = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"lmplz failed (exit {run.returncode}): {' '.join(command)}\n{run.stderr[-3000:]}")
        for line in run.stderr.splitlines():
            if line.startswith("Substituting fallback discounts"):
                warnings.warn(f"lmplz: {line}", stacklevel=2)
        swapped = Path(scratch) / "model.arpa"
        with raw_arpa.open(encoding="utf-8") as source, swapped.open("w", encoding="utf-8") as target:
            for line in source:
                target.write(_swap_unk(line))
        os.replace(swapped, arpa_path)  # never leaves a partial ARPA file behind
    return arpa_path


def kenlm_perplexity(arpa_path: str | Path, test_sentences: Iterable[list[str]], vocabulary: set[str]) -> dict:
    """Per-token perplexity of a KenLM model on word lists, with `</s>` counted once per sentence.

    Each sentence is scored as `<s> w1 ... wn </s>` (`<s>` is context, not predicted), with words outside
    `vocabulary` mapped to `<unk>`, so `num_tokens` = words + sentences and perplexity = exp(-ln P / num_tokens).
    `num_unk` counts the words scored as `<unk>` (mapped here, or unknown to the model).
    """
    import kenlm

    model = kenlm.Model(str(arpa_path))
    log10_sum, num_tokens, num_unk = 0.0, 0, 0
    for words in test_sentences:
        mapped = _map_words(list(words), vocabulary)
        log10_sum += model.score(" ".join(mapped), bos=True, eos=True)
        num_tokens += len(mapped) + 1
        num_unk += sum(word not in model for word in mapped)
    if num_tokens == 0:
        raise ValueError("No test sentences to score.")
    log_prob_sum_ln = log10_sum * math.log(10)
    return {
        "perplexity": math.exp(-log_prob_sum_ln / num_tokens),
        "num_tokens": num_tokens,
        "num_unk": num_unk,
        "log_prob_sum_ln": log_prob_sum_ln,
        "order": model.order,
    }

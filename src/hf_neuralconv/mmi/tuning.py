"""Tuning the MMI-bidi weights lambda and gamma of Luan et al. (2017), Eq. 4, for corpus BLEU on a development set.

Luan et al. (Section 6.3) tune lambda and gamma with MERT "on BLEU using N-best lists of response candidates
generated from the development set". Here the search is an exhaustive grid: the N-best lists and the three terms
of Eq. 4 are computed once (one beam search, one batched pass of each model), after which every (lambda, gamma)
point only re-adds three numbers per candidate and re-scores the chosen replies with `sacrebleu.corpus_bleu`, so
a grid of hundreds of points costs seconds. BLEU compares the replies as decoded (`skip_special_tokens=True`)
with the reference texts, both first split into the tokenizer's normalised words (`data.metric_words`: lowercased,
punctuation apart, so that the decoder's tidy-up and the references' case do not count), under sacrebleu's
default tokenisation (13a).

    >>> result = tune_mmi(model, reverse_model, tokenizer, dev_histories, dev_references)
    >>> save_mmi_settings(model.generation_config, result, reverse_model="outputs/reverse", num_beams=10)
    >>> model.save_pretrained("outputs/chatbot-mmi")   # generation_config.json now holds {"mmi": {...}}

`mmi_bidi_generate(model, None, tokenizer, histories)` then decodes with the saved settings.
"""

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import sacrebleu
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from ..core.chat_format import DATA_CONFIG_FILE, MMI_CONFIG_KEY, SPEAKERS_FILE, encode_histories
from ..core.checks import check_same_vocabulary, check_weight
from ..core.evaluation import quiet_truncation, report_inputs, saved_data_arguments
from ..core.loading import load_model_dir
from ..core.model_card import write_model_card
from ..core.run_dir import RESULTS_FILE, check_output_dir, export_pipeline_code
from ..core.scoring import DEFAULT_SCORE_BATCH_SIZE
from ..data.tokenization import metric_words
from .rerank import DEFAULT_MAX_NEW_TOKENS, DEFAULT_NUM_BEAMS, ScoredNBest, generate_nbest, score_nbest

logger = logging.getLogger(__name__)

# lambda weighs a log-probability of the message (tens of nats), gamma rewards each reply token. On chitchat the
# BLEU optimum of a narrower grid (lambda <= 1, gamma <= 2) lay on its edge: the grid reaches well beyond it.
DEFAULT_LAMBDAS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
DEFAULT_GAMMAS = (-1.0, -0.5, 0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


@dataclass
class MMITuningResult:
    """The chosen weights, their development BLEU, and the BLEU of every grid point {(lambda, gamma): BLEU}."""

    lam: float
    gamma: float
    bleu: float
    grid: dict[tuple[float, float], float] = field(default_factory=dict)

    @property
    def on_grid_edge(self) -> bool:
        """Whether the chosen point is on the edge of the grid searched (the optimum may lie beyond it), not
        counting lambda = 0, the smallest lambda there is."""
        lambdas = {lam for lam, _ in self.grid}
        gammas = {gamma for _, gamma in self.grid}
        return self.lam == max(lambdas) or self.gamma in (min(gammas), max(gammas))


def grid_search(
    nbest_lists: Sequence[ScoredNBest],
    references: Sequence[str],
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    gammas: Sequence[float] = DEFAULT_GAMMAS,
    normalize: Callable[[str], str] | None = None,
) -> MMITuningResult:
    """The (lambda, gamma) whose 1-best replies (by Eq. 4) have the highest corpus BLEU against `references`.

    Every point of `lambdas` x `gammas` is tried; among equal BLEU scores the first point in that order wins.
    `normalize` maps replies and references to the text BLEU compares (default: as they are).
    """
    if len(nbest_lists) != len(references):
        raise ValueError(f"Got {len(nbest_lists)} N-best lists for {len(references)} references.")
    if not lambdas or not gammas:
        raise ValueError("The grid is empty: give at least one lambda and one gamma.")
    lambdas = [check_weight("lambda", lam) for lam in lambdas]
    gammas = [check_weight("gamma", gamma, allow_negative=True) for gamma in gammas]
    # Text `normalize` has split into words is scored as it is (sacrebleu's tokenizer would re-split it, and warn
    # that it looks tokenized); raw text gets sacrebleu's default "13a".
    tokenize = "13a" if normalize is None else "none"
    normalize = normalize or str
    references = [normalize(reference) for reference in references]
    grid = {}
    for lam in lambdas:
        for gamma in gammas:
            best = [normalize(nbest.candidates[int(nbest.scores(lam, gamma).argmax())]) for nbest in nbest_lists]
            grid[(lam, gamma)] = sacrebleu.corpus_bleu(best, [references], tokenize=tokenize,
                                                         force=tokenize == "none").score
    (lam, gamma), bleu = max(grid.items(), key=lambda item: item[1])  # max keeps the first of equal items
    result = MMITuningResult(lam, gamma, bleu, grid)
    if result.on_grid_edge:
        logger.warning("The best MMI weights (lambda %s, gamma %s) lie on the edge of the grid: the BLEU optimum "
                       "may be beyond it; search a wider grid.", lam, gamma)
    return result


def tune_mmi(
    model: PreTrainedModel,
    reverse_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    histories: Sequence[str | Sequence[str]],
    references: Sequence[str],
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    gammas: Sequence[float] = DEFAULT_GAMMAS,
    num_beams: int = DEFAULT_NUM_BEAMS,
    num_return_sequences: int | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    speaker_ids: Sequence[int] | None = None,
    batch_size: int | None = DEFAULT_SCORE_BATCH_SIZE,
    **generate_kwargs,
) -> MMITuningResult:
    """Grid-search lambda and gamma of Luan et al. (2017) Eq. 4 for corpus BLEU on development (history, reference)
    pairs: N-best lists by beam search once, their terms scored once, then `grid_search`."""
    encoded = encode_histories(model, tokenizer, histories, speaker_ids)
    candidates = generate_nbest(
        model, tokenizer, encoded, num_beams, num_return_sequences, max_new_tokens, **generate_kwargs
    )
    nbest_lists = score_nbest(model, reverse_model, tokenizer, encoded, candidates, batch_size)
    return grid_search(nbest_lists, references, lambdas, gammas,
                       normalize=lambda text: " ".join(metric_words(tokenizer, text)))


def save_mmi_settings(
    generation_config: GenerationConfig,
    result: MMITuningResult,
    reverse_model: str,
    num_beams: int = DEFAULT_NUM_BEAMS,
    num_return_sequences: int | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
) -> GenerationConfig:
    """Store the tuned decoding under `generation_config.mmi` (returned, changed in place):
    `{"lambda", "gamma", "num_beams", "num_return_sequences", "max_new_tokens", "reverse_model", "dev_bleu"}`.

    `reverse_model` is the directory (or Hub id) of the reverse model p(M|R); `mmi_bidi_generate` loads it from
    there. Saving the model (or `generation_config.save_pretrained`) writes the settings to
    generation_config.json, and `GenerationConfig.from_pretrained` reads them back.
    """
    # A config derived from the model config drops custom entries when it is read back: this one is now the user's.
    generation_config._from_model_config = False
    setattr(
        generation_config,
        MMI_CONFIG_KEY,
        {
            "lambda": result.lam,
            "gamma": result.gamma,
            "num_beams": num_beams,
            "num_return_sequences": num_return_sequences or num_beams,
            "max_new_tokens": max_new_tokens,
            "reverse_model": str(reverse_model),
            "dev_bleu": result.bleu,
        },
    )
    return generation_config


def tune_mmi_model(
    model_dir: str | Path,
    reverse_model_dir: str | Path,
    output_dir: str | Path,
    split: str = "validation",
    max_inputs: int | None = 500,
    num_beams: int = 10,
    max_new_tokens: int = 20,
    seed: int = 0,
    overwrite: bool = False,
    dataset: str | None = None,
) -> dict:
    """Tune lambda and gamma of MMI-bidi (Luan et al. 2017, Eq. 4) for corpus BLEU on a development split
    (`tune_mmi`: beam-search N-best lists, then a grid), and save the chatbot with the tuned settings in
    its generation config to `output_dir`, so that loading it from there decodes the same way. The grid and the
    chosen point go to `output_dir/mmi_tuning.json`. The development split is the one the chatbot was trained on
    (`data_config.json`), or one of `dataset` (required for a directory without `data_config.json`)."""
    model_dir, output_dir = Path(model_dir), check_output_dir(output_dir, overwrite)
    chats, references = report_inputs(model_dir, split, max_inputs, seed, dataset)  # before the models: fails fast
    model, tokenizer = load_model_dir(model_dir)
    reverse_model, _ = load_model_dir(reverse_model_dir)
    check_same_vocabulary(model.config, reverse_model.config, "chatbot", "reverse model")
    with quiet_truncation():
        result = tune_mmi(model, reverse_model, tokenizer, chats, references, num_beams=num_beams,
                          max_new_tokens=max_new_tokens)
    save_mmi_settings(model.generation_config, result, reverse_model=str(Path(reverse_model_dir).resolve()),
                      num_beams=num_beams, max_new_tokens=max_new_tokens)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    for name in (DATA_CONFIG_FILE, SPEAKERS_FILE, RESULTS_FILE):
        if (model_dir / name).is_file():
            (output_dir / name).write_text((model_dir / name).read_text())
    export_pipeline_code(output_dir)
    if (model_dir / RESULTS_FILE).is_file():  # the same weights: the base model's measured figures still hold
        results = json.loads((model_dir / RESULTS_FILE).read_text())
        write_model_card(output_dir, results, saved_data_arguments(model_dir).dataset, model.config,
                         base_model=str(model_dir),
                         machine=results.get("machine"))
    summary = {
        "model": str(model_dir), "reverse_model": str(reverse_model_dir), "split": split, "inputs": len(chats),
        "num_beams": num_beams, "max_new_tokens": max_new_tokens, "lambda": result.lam, "gamma": result.gamma,
        "dev_bleu": result.bleu, "on_grid_edge": result.on_grid_edge,
        "grid": [{"lambda": lam, "gamma": gamma, "bleu": bleu} for (lam, gamma), bleu in result.grid.items()],
    }
    (output_dir / "mmi_tuning.json").write_text(json.dumps(summary, indent=2))
    return summary

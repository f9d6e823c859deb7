"""`evaluate` module: corpus BLEU (Papineni et al. 2002) by sacrebleu (Post 2018), one reference per prediction —
the BLEU that the MMI weight tuning (`hf_neuralconv.mmi.tuning`) maximises. The Hub's `sacrebleu` module
cannot be downloaded offline; this local one scores the same way and also returns sacrebleu's signature, which names
the tokenization, casing, smoothing and version, so a figure can be reproduced.

A local module: `evaluate.load` reads it from this file, offline (evaluate copies a local script into its modules
cache and imports it from there, so it imports the package absolutely):

    >>> import evaluate
    >>> from hf_neuralconv.metrics import corpus_bleu
    >>> metric = evaluate.load(corpus_bleu.__file__)
    >>> round(metric.compute(predictions=["i am fine ."], references=["i am fine ."])["bleu"], 2)
    100.0
"""

import evaluate
from sacrebleu.metrics import BLEU

from hf_neuralconv.metrics.module_info import PAPINENI_2002, POST_2018, PREDICTIONS_AND_REFERENCES, metric_info

_KWARGS_DESCRIPTION = """
Args:
    predictions: the generated replies (detokenized strings).
    references: the reference replies (strings), one per prediction.
    tokenize: sacrebleu's tokenizer (default "13a", sacrebleu's default; "none" for text already split into words,
        which is then scored as it is, without sacrebleu's warning that it looks tokenized).
    lowercase: lowercase both sides before scoring (default False).
Returns:
    bleu: corpus BLEU, 0-100.
    precisions: the modified 1- to 4-gram precisions, 0-100.
    brevity_penalty: the brevity penalty.
    sys_len: tokens in the predictions.
    ref_len: tokens in the references.
    signature: sacrebleu's signature string of the settings (e.g. "nrefs:1|case:mixed|eff:no|tok:13a|...").
"""


class CorpusBleu(evaluate.Metric):
    """Corpus BLEU (Papineni et al. 2002) as computed by `sacrebleu.corpus_bleu`, with its signature."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info(__doc__, (PAPINENI_2002, POST_2018), _KWARGS_DESCRIPTION, PREDICTIONS_AND_REFERENCES)

    def _compute(self, predictions, references, tokenize="13a", lowercase=False) -> dict:
        # evaluate itself refuses predictions and references of different lengths before this runs.
        if not predictions:
            raise ValueError("Nothing to score: give at least one prediction and its reference.")
        # The object `sacrebleu.corpus_bleu` builds, kept here because only it gives the signature.
        # `force`: text declared split (tokenize="none") is not second-guessed as "forgot to detokenize".
        bleu = BLEU(tokenize=tokenize, lowercase=lowercase, force=tokenize == "none")
        score = bleu.corpus_score(predictions, [references])
        return {
            "bleu": score.score,
            "precisions": score.precisions,
            "brevity_penalty": score.bp,
            "sys_len": score.sys_len,
            "ref_len": score.ref_len,
            "signature": str(bleu.get_signature()),
        }

"""MMI decoding (Li et al. 2016; Luan et al. 2017, Section 6.3): the anti-LM logits processor, MMI-bidi N-best
reranking by Eq. 4, and the tuning of its weights for BLEU (`hf-neuralconv mmi-tune`)."""

from .anti_lm import MMIAntiLMLogitsProcessor
from .rerank import ScoredNBest, generate_nbest, mmi_bidi_generate, rerank, score_nbest
from .tuning import MMITuningResult, grid_search, save_mmi_settings, tune_mmi, tune_mmi_model

__all__ = [
    "MMIAntiLMLogitsProcessor",
    "MMITuningResult",
    "ScoredNBest",
    "generate_nbest",
    "grid_search",
    "mmi_bidi_generate",
    "rerank",
    "save_mmi_settings",
    "score_nbest",
    "tune_mmi",
    "tune_mmi_model",
]

"""Decoding beyond beam search: MMI-antiLM (Li et al. 2016; He & Glass 2020, Section 4.3) as a `LogitsProcessor`,
MMI-bidi N-best reranking (Luan et al. 2017, Eq. 4) and the tuning of its weights for BLEU."""

from .mmi import MMIAntiLMLogitsProcessor
from .rerank import (
    MMI_CONFIG_KEY,
    EncodedHistories,
    ScoredNBest,
    encode_histories,
    generate_nbest,
    mmi_bidi_generate,
    rerank,
    score_nbest,
    sequence_log_probs,
)
from .tuning import MMITuningResult, grid_search, save_mmi_settings, tune_mmi

__all__ = [
    "MMI_CONFIG_KEY",
    "EncodedHistories",
    "MMIAntiLMLogitsProcessor",
    "MMITuningResult",
    "ScoredNBest",
    "encode_histories",
    "generate_nbest",
    "grid_search",
    "mmi_bidi_generate",
    "rerank",
    "save_mmi_settings",
    "score_nbest",
    "sequence_log_probs",
    "tune_mmi",
]

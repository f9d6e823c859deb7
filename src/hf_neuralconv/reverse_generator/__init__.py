"""The reverse dialogue generator (Liu et al. 2019): black-box chatbot environments, the embedding-similarity reward,
`ReinforceTrainer` (Eq. 1-5) and the attacks and experiment of Section 5 (`hf-neuralconv reverse-*`)."""

from ..metrics.embedding_similarity import EmbeddingSimilarityReward, train_word_vectors
from .attack import attack, attack_targets, write_found_pairs
from .config import AttackSetupArguments, ReferenceCorpusArguments, ReinforceRunArguments
from .environments import (
    CallableEnvironment,
    DialogueEnvironment,
    EnvironmentQueryError,
    GradioEnvironment,
    OpenAIChatEnvironment,
    PipelineEnvironment,
    build_reference_corpus,
)
from .experiment import evaluate_attacks, pretrain, reinforce
from .trainer import ReinforceConfig, ReinforceTrainer, pretrain_reverse_generator

__all__ = [
    "AttackSetupArguments",
    "CallableEnvironment",
    "DialogueEnvironment",
    "EmbeddingSimilarityReward",
    "EnvironmentQueryError",
    "GradioEnvironment",
    "OpenAIChatEnvironment",
    "PipelineEnvironment",
    "ReferenceCorpusArguments",
    "ReinforceConfig",
    "ReinforceRunArguments",
    "ReinforceTrainer",
    "attack",
    "attack_targets",
    "build_reference_corpus",
    "evaluate_attacks",
    "pretrain",
    "pretrain_reverse_generator",
    "reinforce",
    "train_word_vectors",
    "write_found_pairs",
]

from .conversation import ConversationTrainer
from .multitask import MultiTaskConfig, MultiTaskTrainer
from .negative import NegativeTrainer, NegativeTrainingConfig
from .reinforce import ReinforceConfig, ReinforceTrainer

__all__ = ["ConversationTrainer", "MultiTaskConfig", "MultiTaskTrainer", "NegativeTrainer", "NegativeTrainingConfig",
           "ReinforceConfig", "ReinforceTrainer"]

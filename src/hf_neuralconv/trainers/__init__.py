from .conversation import ConversationTrainer
from .multitask import MultiTaskConfig, MultiTaskTrainer
from .negative import NegativeTrainer, NegativeTrainingConfig

__all__ = ["ConversationTrainer", "MultiTaskConfig", "MultiTaskTrainer", "NegativeTrainer", "NegativeTrainingConfig"]

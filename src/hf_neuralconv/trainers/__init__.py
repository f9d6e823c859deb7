from .conversation import ConversationTrainer
from .negative import NegativeTrainer, NegativeTrainingConfig

__all__ = ["ConversationTrainer", "NegativeTrainer", "NegativeTrainingConfig"]

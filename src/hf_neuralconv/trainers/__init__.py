from .conversation import ConversationTrainer

__all__ = ["ConversationTrainer"]

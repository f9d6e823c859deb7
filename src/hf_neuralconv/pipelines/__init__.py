"""`pipeline("conversational")` (`conversational`), the terminal chat built on it (`responder`) and the decoding
strategies side by side (`report`). Only the pipeline is imported here: `import hf_neuralconv` registers it."""

from .conversational import DECODING_STRATEGIES, TASK, ConversationalPipeline

__all__ = ["DECODING_STRATEGIES", "TASK", "ConversationalPipeline"]

"""Serving a trained chatbot to many clients: the micro-batcher that decodes concurrent chats together (`batcher`)
and the OpenAI-compatible chat-completions server built on it (`openai_api`, `hf-neuralconv serve`)."""

from .batcher import ChatBatcher
from .openai_api import BackgroundServer, ChatCompletionServer, create_app

__all__ = ["BackgroundServer", "ChatBatcher", "ChatCompletionServer", "create_app"]

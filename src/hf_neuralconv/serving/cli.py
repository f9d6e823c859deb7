"""`hf-neuralconv serve MODEL_DIR`: a trained chatbot behind an OpenAI-compatible `/v1/chat/completions`."""

import argparse
import math
import os

import uvicorn

from ..core.command_line import bounded
from ..core.loading import load_model_dir
from ..pipelines.responder import chat_pipeline
from .openai_api import DEFAULT_MAX_TOKENS_LIMIT, MAX_BODY_BYTES, ChatCompletionServer, create_app, served_model_name


def command_serve(args: argparse.Namespace) -> None:
    """`hf-neuralconv serve`: load the chatbot, then answer HTTP requests until interrupted."""
    if not math.isfinite(args.batch_wait_ms):
        raise ValueError(f"--batch-wait-ms must be a finite number of milliseconds, got {args.batch_wait_ms}.")
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise ValueError(f"--api-key-env {args.api_key_env}: that environment variable is not set (or empty); "
                             "export the key the clients must send, or drop the option to serve without a key.")
    model, tokenizer = load_model_dir(args.model_dir)
    pipe = chat_pipeline(model, tokenizer, args.anti_lm, args.reverse_model)
    name = args.model_name or served_model_name(args.model_dir)
    server = ChatCompletionServer(pipe, name, max_batch_size=args.max_batch_size, max_wait_s=args.batch_wait_ms / 1e3,
                                  max_tokens_limit=args.max_tokens_limit, api_key=api_key,
                                  max_body_bytes=args.max_body_bytes)
    print(f"Serving {name!r} ({', '.join(pipe.available_strategies())}) on http://{args.host}:{args.port}/v1 "
          f"(batches of up to {args.max_batch_size}; Ctrl-C stops).", flush=True)
    uvicorn.run(create_app(server), host=args.host, port=args.port, log_level=args.log_level)


def add_commands(commands) -> None:
    """Register `serve` on the `hf-neuralconv` parser's subparsers."""
    serve = commands.add_parser("serve", help="an OpenAI-compatible chat-completions server for a chatbot")
    serve.add_argument("model_dir", help="the chatbot: a model directory the package loads (ours or transformers')")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: this machine only; 0.0.0.0 opens it to the network)")
    serve.add_argument("--port", type=bounded(int, 1, 65535), default=8000)
    serve.add_argument("--model-name", help="the id clients give as `model` (default: the directory's name)")
    serve.add_argument("--max-batch-size", type=bounded(int, 1), default=32,
                       help="most concurrent chats decoded in one call")
    serve.add_argument("--batch-wait-ms", type=bounded(float, 0), default=10.0,
                       help="how long a request waits for others to join its batch")
    serve.add_argument("--max-tokens-limit", type=bounded(int, 1), default=DEFAULT_MAX_TOKENS_LIMIT,
                       help="the largest max_tokens a request may ask for")
    serve.add_argument("--max-body-bytes", type=bounded(int, 1024), default=MAX_BODY_BYTES,
                       help="the largest request body read")
    serve.add_argument("--api-key-env", metavar="VARIABLE",
                       help="require `Authorization: Bearer <key>`, the key read from this environment variable")
    serve.add_argument("--anti-lm", help="anti-LM for strategy mmi-antilm: a causal LM directory over the chatbot's "
                       "vocabulary, or 'self' for a causal chatbot")
    serve.add_argument("--reverse-model", help="reverse model directory for strategy mmi-bidi")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.set_defaults(run=command_serve)

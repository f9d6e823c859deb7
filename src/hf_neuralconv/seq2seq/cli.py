"""`hf-neuralconv train` and `evaluate`: the seq2seq chatbot of Vinyals & Le (2015)."""

import argparse

from ..core.arguments import parse_config
from ..core.command_line import (
    add_dataset_argument,
    add_recipe_command,
    bounded,
    check_output_file,
    print_and_save,
    print_on_main_process,
)
from .evaluate import evaluate_model
from .train import train


def command_train(args: argparse.Namespace) -> None:
    """`hf-neuralconv train`: run it with the parsed arguments and print the results."""
    print_on_main_process(train(*parse_config(args.config, overrides=args.overrides)))


def command_evaluate(args: argparse.Namespace) -> None:
    """`hf-neuralconv evaluate`: run it with the parsed arguments and print the results."""
    check_output_file(args)
    results = evaluate_model(args.model_dir, tuple(args.ngram_orders), args.split, args.batch_size,
                             args.dataset)
    print_and_save(results, args.output)


def add_commands(commands) -> None:
    """Register this method's subcommands on the `hf-neuralconv` parser's subparsers."""
    add_recipe_command(
        commands, "train", "train a model from a recipe YAML (Trainer; accelerate/torchrun ready)",
        "recipes/seq2seq/quickstart.yaml", command_train,
    )

    evaluate = commands.add_parser("evaluate", help="test perplexity of a model next to KenLM n-gram LMs")
    evaluate.add_argument("model_dir")
    evaluate.add_argument("--ngram-orders", type=bounded(int, 1), nargs="*", default=[],
                          help="e.g. 3 5 (needs KenLM lmplz)")
    evaluate.add_argument("--split", default="test", choices=["train", "validation", "test"])
    evaluate.add_argument("--batch-size", type=bounded(int, 1), default=64)
    add_dataset_argument(evaluate)
    evaluate.add_argument("--output", help="also write the results to this JSON file")
    evaluate.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    evaluate.set_defaults(run=command_evaluate)


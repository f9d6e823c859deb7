"""What every method's command line shares: argument types checked before any model loads, recipe commands with
`KEY=VALUE` overrides, and output files that are never replaced unasked."""

import argparse
import json
import os
import unicodedata
from pathlib import Path


def bounded(kind: type, low: float, high: float | None = None, above: bool = False):
    """An argparse type: a `kind` number of at least `low` (above it with `above`) and at most `high`, so that a
    value out of range is refused with the range before any model is loaded."""
    bounds = f"{'>' if above else '>='} {low}" if high is None else f"in {'(' if above else '['}{low}, {high}]"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'a whole number' if kind is int else 'a number'} {bounds}, got {text!r}") from None
        if value < low or (above and value == low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value

    return parse


def add_recipe_command(commands, name: str, description: str, example: str, run) -> None:
    """A command that runs a recipe YAML, with `KEY=VALUE` overrides of its settings."""
    command = commands.add_parser(name, help=description)
    command.add_argument("config", help=f"recipe YAML, e.g. {example}")
    command.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe settings to replace or add")
    command.set_defaults(run=run)


def add_dataset_argument(parser: argparse.ArgumentParser) -> None:
    """`--dataset`: the dialogues a command reads instead of those of the model directory's `data_config.json`
    (which a transformers model saved with `save_pretrained` alone does not have)."""
    parser.add_argument("--dataset", help="dialogue file (.jsonl/.csv/.parquet) or 'chitchat' to read instead of the "
                        "model directory's data_config.json (required without one: a model not trained by "
                        "hf-neuralconv train)")


def check_output_file(args: argparse.Namespace) -> None:
    """Refuse, before any work, to replace an existing --output file without --overwrite."""
    if args.output and Path(args.output).exists() and not args.overwrite:
        raise SystemExit(f"{args.output} exists; pass --overwrite to replace it.")


def print_and_save(results: dict, output: str | None) -> None:
    """Print the results as JSON, and write them to `output` when given."""
    print(json.dumps(results, indent=2))
    if output:
        Path(output).write_text(json.dumps(results, indent=2))


def print_on_main_process(results: dict) -> None:
    """Print the results as JSON once: under torchrun / accelerate launch only rank 0 prints."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(results, indent=2))


def printable(text: str) -> str:
    """`text` with control characters shown as escapes (`\\x1b`): a prompt file must not drive the terminal."""
    return "".join(ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch)[0] == "C" else ch
                   for ch in text)

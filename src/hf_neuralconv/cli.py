"""The `hf-neuralconv` command: train, evaluate, attack and chat with the neural conversation models.

The parser is assembled from the methods: each registers its own subcommands (`<method>/cli.py: add_commands`).
"""

import argparse
import sys

import torch.distributed

from .mmi import cli as mmi_cli
from .negative_training import cli as negative_training_cli
from .persona import cli as persona_cli
from .pipelines import cli as pipeline_cli
from .reverse_generator import cli as reverse_generator_cli
from .seq2seq import cli as seq2seq_cli
from .serving import cli as serving_cli

# In the order `hf-neuralconv --help` lists them.
METHOD_COMMANDS = (seq2seq_cli, negative_training_cli, mmi_cli, pipeline_cli, reverse_generator_cli, persona_cli,
                   serving_cli)


def build_parser() -> argparse.ArgumentParser:
    """The `hf-neuralconv` parser with every method's subcommands."""
    parser = argparse.ArgumentParser(prog="hf-neuralconv", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for method in METHOD_COMMANDS:
        method.add_commands(commands)
    return parser


def _leave_process_group() -> None:
    """Under torchrun / accelerate launch, leave the process group before the interpreter exits: a rank that exits
    with its gloo group alive can abort in the backend's teardown ("terminate called without an active
    exception", SIGABRT) after its work is done, failing the launch."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    """Run one `hf-neuralconv` command; a bad input ends it with the error's message and exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (FileNotFoundError, FileExistsError, ValueError, OSError) as error:
        print(f"hf-neuralconv {args.command}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        _leave_process_group()


if __name__ == "__main__":
    main()

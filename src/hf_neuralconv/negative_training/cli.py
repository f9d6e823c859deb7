"""`hf-neuralconv negative-train` and `attack`: negative training and the malicious-target attack of He & Glass
(2020)."""

import argparse
import json

from ..core.arguments import parse_config
from ..core.command_line import add_dataset_argument, add_recipe_command, check_output_file, print_on_main_process
from .attack import attack_model
from .train import train_negative
from .trainer import NegativeTrainingConfig


def command_negative_train(args: argparse.Namespace) -> None:
    """`hf-neuralconv negative-train`: run it with the parsed arguments and print the results."""
    print_on_main_process(train_negative(*parse_config(args.config, NegativeTrainingConfig, args.overrides)))


def command_attack(args: argparse.Namespace) -> None:
    """`hf-neuralconv attack`: run it with the parsed arguments and print the results."""
    check_output_file(args)
    results = attack_model(
        args.model_dir, args.targets, args.hit_type, args.input_lm, args.output_threshold, args.input_threshold,
        args.output, args.dataset, trigger_length=args.trigger_length, num_candidates=args.num_candidates,
        max_sweeps=args.max_sweeps, num_restarts=args.num_restarts, targets_per_batch=args.targets_per_batch,
        seed=args.seed,
    )
    print(json.dumps(results, indent=2))


def add_commands(commands) -> None:
    """Register this method's subcommands on the `hf-neuralconv` parser's subparsers."""
    add_recipe_command(
        commands, "negative-train", "negative training of a trained model (He & Glass 2020)",
        "recipes/negative_training/malicious.yaml", command_negative_train,
    )

    attack = commands.add_parser("attack", help="hit rate of malicious targets: gibbs-enum trigger search")
    attack.add_argument("model_dir")
    attack.add_argument("targets", help="target list, one a line: a file, or a list shipped with the package, "
                        "e.g. package:malicious_targets/test_500.txt")
    attack.add_argument("--hit-type", default="o-sample-min-hit", help="o-greedy-hit | {o,io}-sample-{min,avg}-hit")
    attack.add_argument("--input-lm", help="causal LM directory over the chatbot's vocabulary (io hits), e.g. an "
                        "LSTM LM (architecture: causal-lm)")
    attack.add_argument("--output-threshold", type=float, help="T_out (default: measured on the test split)")
    attack.add_argument("--input-threshold", type=float, help="T_in (default: measured on the test split)")
    add_dataset_argument(attack)
    attack.add_argument("--trigger-length", type=int, default=15)
    attack.add_argument("--num-candidates", type=int, default=100, help="G")
    attack.add_argument("--max-sweeps", type=int, default=5, help="T")
    attack.add_argument("--num-restarts", type=int, default=5)
    attack.add_argument("--targets-per-batch", type=int, default=8, help="memory: x restarts x G rows a pass")
    attack.add_argument("--seed", type=int, default=0)
    attack.add_argument("--output", help="write the (trigger, target) pairs as JSONL")
    attack.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    attack.set_defaults(run=command_attack)


"""`hf-neuralconv reverse-pretrain / reverse-train / reverse-evaluate / reverse-attack`: the reverse dialogue
generator of Liu et al. (2019)."""

import argparse
import json
from pathlib import Path

from ..core.arguments import ConversationTrainingArguments, ModelArguments, parse_recipe
from ..core.command_line import add_recipe_command
from .attack import attack_targets
from .config import AttackSetupArguments, ReferenceCorpusArguments, ReinforceRunArguments
from .experiment import evaluate_attacks, pretrain, reinforce
from .trainer import ReinforceConfig


def command_reverse_pretrain(args: argparse.Namespace) -> None:
    """`hf-neuralconv reverse-pretrain`: run it with the parsed arguments and print the results."""
    classes = (ModelArguments, AttackSetupArguments, ReferenceCorpusArguments, ConversationTrainingArguments)
    print(json.dumps(pretrain(*parse_recipe(args.config, classes, args.overrides)), indent=2))


def command_reverse_train(args: argparse.Namespace) -> None:
    """`hf-neuralconv reverse-train`: run it with the parsed arguments and print the results."""
    print(json.dumps(reinforce(*parse_recipe(args.config, (ReinforceRunArguments, ReinforceConfig),
                                             args.overrides)), indent=2))


def command_reverse_evaluate(args: argparse.Namespace) -> None:
    """`hf-neuralconv reverse-evaluate`: run it with the parsed arguments and print the results."""
    results = evaluate_attacks(args.pretrained, args.reinforced, args.output_dir, args.targets_per_bucket,
                               tuple(args.beam_sizes), args.num_messages, args.seed, args.overwrite,
                               tuple(args.pretrained_beam_sizes))
    print((Path(args.output_dir) / "tables.md").read_text())
    print(f"env queries: {results['env_queries']}; results, Figure 2 and found inputs in {args.output_dir}")


def command_reverse_attack(args: argparse.Namespace) -> None:
    """`hf-neuralconv reverse-attack`: run it with the parsed arguments and print the results."""
    print(json.dumps(attack_targets(args.generator, args.targets, args.output, args.num_beams, args.min_similarity,
                                    args.skip_unscorable, args.overwrite, args.environment, args.api_key_env),
                     indent=2))


def add_commands(commands) -> None:
    """Register this method's subcommands on the `hf-neuralconv` parser's subparsers."""
    add_recipe_command(
        commands, "reverse-pretrain",
        "reference corpus from a black-box chatbot + supervised reverse generator (Liu et al.)",
        "recipes/reverse_generator/pretrain.yaml", command_reverse_pretrain,
    )

    add_recipe_command(
        commands, "reverse-train", "REINFORCE the reverse generator against the chatbot",
        "recipes/reverse_generator/reinforce.yaml", command_reverse_train,
    )

    reverse_evaluate = commands.add_parser(
        "reverse-evaluate", help="Figure 2 / Tables 1-2 of Liu et al.: Generated and Real targets by length"
    )
    reverse_evaluate.add_argument("pretrained", help="the reverse-pretrain output (Pre-trained Greedy)")
    reverse_evaluate.add_argument("reinforced", help="the reverse-train output (RL Greedy / BeamSearch)")
    reverse_evaluate.add_argument("--output-dir", required=True, help="results.json, figure2.png, tables.md, JSONL")
    reverse_evaluate.add_argument("--targets-per-bucket", type=int, default=200, help="the paper's 200")
    reverse_evaluate.add_argument("--beam-sizes", type=int, nargs="+", default=[50, 200], help="N of RL BeamSearch(N)")
    reverse_evaluate.add_argument("--pretrained-beam-sizes", type=int, nargs="*", default=[],
                                  help="N of Pre-trained BeamSearch(N), an ablation the paper does not report")
    reverse_evaluate.add_argument("--num-messages", type=int, default=10000,
                                  help="test messages whose replies are the Generated targets")
    reverse_evaluate.add_argument("--seed", type=int, default=0)
    reverse_evaluate.add_argument("--overwrite", action="store_true", help="write into a non-empty --output-dir")
    reverse_evaluate.set_defaults(run=command_reverse_evaluate)

    reverse_attack = commands.add_parser(
        "reverse-attack", help="find inputs for a list of targets; write them as negative-training pairs"
    )
    reverse_attack.add_argument("generator", help="a reverse-train (or reverse-pretrain) output")
    reverse_attack.add_argument("targets", help="one target a line: a file, or a list shipped with the package, "
                                "e.g. package:malicious_targets/test_500.txt")
    reverse_attack.add_argument("--output", required=True, help="JSONL of found (trigger, target) pairs")
    reverse_attack.add_argument("--num-beams", type=int, default=200, help="RL BeamSearch(N); 1: greedy")
    reverse_attack.add_argument("--min-similarity", type=float, default=0.5, help="a pair counts as found from here")
    reverse_attack.add_argument("--skip-unscorable", action="store_true",
                                help="skip targets the reward cannot score (only stopwords) instead of stopping")
    reverse_attack.add_argument("--environment", help="attack this chatbot instead of the generator's own: a model "
                                "directory, an OpenAI-compatible API's base URL (ending in /v1) or a Gradio app's URL")
    reverse_attack.add_argument("--api-key-env", metavar="VARIABLE",
                                help="the environment variable holding the OpenAI-compatible API's key")
    reverse_attack.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    reverse_attack.set_defaults(run=command_reverse_attack)


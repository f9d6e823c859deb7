"""`hf-neuralconv mmi-tune`: MMI-bidi's weights tuned for BLEU (Luan et al. 2017, Eq. 4) and saved with the chatbot."""

import argparse
import json

from ..core.command_line import add_dataset_argument
from .tuning import tune_mmi_model


def command_mmi_tune(args: argparse.Namespace) -> None:
    """`hf-neuralconv mmi-tune`: run it with the parsed arguments and print the results."""
    results = tune_mmi_model(args.model_dir, args.reverse_model, args.output_dir, args.split, args.max_inputs,
                             args.num_beams, args.max_new_tokens, seed=args.seed, overwrite=args.overwrite,
                             dataset=args.dataset)
    print(json.dumps({key: value for key, value in results.items() if key != "grid"}, indent=2))


def add_commands(commands) -> None:
    """Register this method's subcommands on the `hf-neuralconv` parser's subparsers."""
    tune = commands.add_parser("mmi-tune", help="tune MMI-bidi's lambda/gamma for dev BLEU; save the tuned chatbot")
    tune.add_argument("model_dir", help="the chatbot")
    tune.add_argument("--reverse-model", required=True, help="the reverse model p(M|R) (recipes/mmi/reverse.yaml)")
    tune.add_argument("--output-dir", required=True, help="where the chatbot is saved with the tuned settings")
    tune.add_argument("--split", default="validation", choices=["train", "validation", "test"])
    tune.add_argument("--max-inputs", type=int, default=500, help="seeded sample of the split")
    tune.add_argument("--num-beams", type=int, default=10, help="beam size = N-best size")
    tune.add_argument("--max-new-tokens", type=int, default=20)
    tune.add_argument("--seed", type=int, default=0)
    add_dataset_argument(tune)
    tune.add_argument("--overwrite", action="store_true", help="write into a non-empty --output-dir")
    tune.set_defaults(run=command_mmi_tune)


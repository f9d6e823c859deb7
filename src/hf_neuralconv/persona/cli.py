"""`hf-neuralconv persona-train` and `persona-report`: the speaker-role adaptation experiment of Luan et al. (2017)."""

import argparse
import json
from pathlib import Path

from ..core.command_line import add_recipe_command, check_output_file
from .config import parse_speaker_adaptation_recipe
from .experiment import train_speaker_adaptation
from .report import format_samples, persona_report


def command_persona_train(args: argparse.Namespace) -> None:
    """`hf-neuralconv persona-train`: run it with the parsed arguments and print the results."""
    results = train_speaker_adaptation(*parse_speaker_adaptation_recipe(args.config, args.overrides))
    print(json.dumps(results, indent=2))


def command_persona_report(args: argparse.Namespace) -> None:
    """`hf-neuralconv persona-report`: run it with the parsed arguments and print the results."""
    check_output_file(args)
    report = persona_report(args.run_dirs, args.samples, args.seed)
    print(report["markdown"])
    if report["samples"]:
        print(f"\n{format_samples(report['samples'])}")
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2))


def add_commands(commands) -> None:
    """Register this method's subcommands on the `hf-neuralconv` parser's subparsers."""
    add_recipe_command(
        commands, "persona-train",
        "a run of Luan et al. (2017) Tables 1-2: baseline, mtask-m or mtask-s (recipe `mode`)",
        "recipes/persona_mtask/baseline.yaml", command_persona_train,
    )

    persona_report = commands.add_parser(
        "persona-report", help="Tables 1-2 of Luan et al. (2017) for persona-train runs, and Figure 7 samples"
    )
    persona_report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                                help="persona-train output directories, the baseline's among them")
    persona_report.add_argument("--samples", type=int, default=4,
                                help="test inputs answered as several target speakers (Figure 7); 0: none")
    persona_report.add_argument("--seed", type=int, default=0, help="which test inputs the samples are")
    persona_report.add_argument("--output", help="also write the table and samples to this JSON file")
    persona_report.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    persona_report.set_defaults(run=command_persona_report)


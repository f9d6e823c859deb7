"""The `hf-neuralconv` command: train, evaluate, attack and chat with the neural conversation models."""

import argparse
import json
import os
import sys
import unicodedata
from pathlib import Path


def _bounded(kind: type, low: float, high: float | None = None, above: bool = False):
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


def _add_decoding_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("decoding (transformers generate)")
    group.add_argument("--strategy", choices=["greedy", "beam", "sample", "mmi-antilm", "mmi-bidi"],
                       help="decoding strategy (default: the model's generation config)")
    group.add_argument("--anti-lm", help="LSTM LM directory for --strategy mmi-antilm")
    group.add_argument("--reverse-model", help="reverse model directory for mmi-bidi (default: the tuned one)")
    group.add_argument("--mmi-lambda", type=float, help="MMI weight lambda (default: tuned, or 0.5 for mmi-antilm)")
    group.add_argument("--mmi-gamma", type=float, help="MMI gamma (tokens penalised by mmi-antilm; length reward)")
    group.add_argument("--max-new-tokens", type=_bounded(int, 1),
                       help="longest reply in tokens (default: the model's generation_config)")
    group.add_argument("--num-beams", type=_bounded(int, 1), help="beam size (default: the strategy's)")
    group.add_argument("--num-return-sequences", type=_bounded(int, 1), default=1,
                       help="N-best list size (<= num beams)")
    group.add_argument("--do-sample", action="store_true", help="sample instead of greedy/beam search; the three "
                       "settings below (default: the model's generation_config) apply to sampling")
    group.add_argument("--temperature", type=_bounded(float, 0, above=True))
    group.add_argument("--top-k", type=_bounded(int, 0), help="0: no top-k filtering")
    group.add_argument("--top-p", type=_bounded(float, 0, 1, above=True))
    group.add_argument("--context-turns", type=_bounded(int, 0), default=None, help="turns kept before the message")


def _decoding_kwargs(args: argparse.Namespace) -> dict:
    # Greedy decoding has one beam; the other strategies, and the model's own settings, bring theirs (generate()
    # refuses more sequences than beams for those).
    beams = args.num_beams if args.num_beams is not None else 1 if args.strategy == "greedy" else None
    if beams is not None and args.num_return_sequences > beams and not args.do_sample:
        raise ValueError(f"--num-return-sequences {args.num_return_sequences} cannot exceed --num-beams {beams} for "
                         "greedy/beam search: give more beams, fewer sequences, or --do-sample.")
    given = {"num_return_sequences": args.num_return_sequences, "max_new_tokens": args.max_new_tokens,
             "strategy": args.strategy, "num_beams": args.num_beams, "mmi_lambda": args.mmi_lambda,
             "mmi_gamma": None if args.mmi_gamma is None else _mmi_gamma(args)}
    if args.do_sample:
        given.update(do_sample=True, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    return {name: value for name, value in given.items() if value is not None}


def _mmi_gamma(args: argparse.Namespace) -> float | int:
    """mmi-antilm's gamma counts tokens (an integer); mmi-bidi's weighs the reply length (any number)."""
    return int(args.mmi_gamma) if args.strategy == "mmi-antilm" and args.mmi_gamma.is_integer() else args.mmi_gamma


def _print_replies(replies) -> None:
    for rank, reply in enumerate(replies, start=1):
        prefix = f"  {rank}." if len(replies) > 1 else "Bot:"
        score = f"  ({reply.score:.3f})" if reply.score is not None and len(replies) > 1 else ""
        print(f"{prefix} {reply.text}{score}", flush=True)


def command_train(args: argparse.Namespace) -> None:
    from .training import parse_config, train

    results = train(*parse_config(args.config, overrides=args.overrides))
    if int(os.environ.get("RANK", "0")) == 0:  # one copy under torchrun / accelerate launch
        print(json.dumps(results, indent=2))


def command_negative_train(args: argparse.Namespace) -> None:
    from .trainers import NegativeTrainingConfig
    from .training import parse_config, train_negative

    results = train_negative(*parse_config(args.config, NegativeTrainingConfig, args.overrides))
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(results, indent=2))


def command_reverse_pretrain(args: argparse.Namespace) -> None:
    from .reverse_experiment import AttackSetupArguments, ReferenceCorpusArguments, pretrain
    from .training import ConversationTrainingArguments, ModelArguments, parse_recipe

    classes = (ModelArguments, AttackSetupArguments, ReferenceCorpusArguments, ConversationTrainingArguments)
    print(json.dumps(pretrain(*parse_recipe(args.config, classes, args.overrides)), indent=2))


def command_reverse_train(args: argparse.Namespace) -> None:
    from .reverse_experiment import ReinforceRunArguments, reinforce
    from .trainers.reinforce import ReinforceConfig
    from .training import parse_recipe

    print(json.dumps(reinforce(*parse_recipe(args.config, (ReinforceRunArguments, ReinforceConfig),
                                             args.overrides)), indent=2))


def command_reverse_evaluate(args: argparse.Namespace) -> None:
    from .reverse_experiment import evaluate_attacks

    results = evaluate_attacks(args.pretrained, args.reinforced, args.output_dir, args.targets_per_bucket,
                               tuple(args.beam_sizes), args.num_messages, args.seed, args.overwrite,
                               tuple(args.pretrained_beam_sizes))
    print((Path(args.output_dir) / "tables.md").read_text())
    print(f"env queries: {results['env_queries']}; results, Figure 2 and found inputs in {args.output_dir}")


def command_reverse_attack(args: argparse.Namespace) -> None:
    from .reverse_experiment import attack_targets

    print(json.dumps(attack_targets(args.generator, args.targets, args.output, args.num_beams, args.min_similarity,
                                    args.skip_unscorable, args.overwrite), indent=2))


def command_persona_train(args: argparse.Namespace) -> None:
    from .speaker_adaptation import parse_speaker_adaptation_recipe, train_speaker_adaptation

    results = train_speaker_adaptation(*parse_speaker_adaptation_recipe(args.config, args.overrides))
    print(json.dumps(results, indent=2))


def command_persona_report(args: argparse.Namespace) -> None:
    from .speaker_adaptation import format_samples, persona_report

    _check_output(args)
    report = persona_report(args.run_dirs, args.samples, args.seed)
    print(report["markdown"])
    if report["samples"]:
        print(f"\n{format_samples(report['samples'])}")
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2))


def _check_output(args: argparse.Namespace) -> None:
    """Refuse, before any work, to replace an existing --output file without --overwrite."""
    if args.output and Path(args.output).exists() and not args.overwrite:
        raise SystemExit(f"{args.output} exists; pass --overwrite to replace it.")


def _print_and_save(results: dict, output: str | None) -> None:
    print(json.dumps(results, indent=2))
    if output:
        Path(output).write_text(json.dumps(results, indent=2))


def command_attack(args: argparse.Namespace) -> None:
    from .evaluation import attack_model

    _check_output(args)
    results = attack_model(
        args.model_dir, args.targets, args.hit_type, args.input_lm, args.output_threshold, args.input_threshold,
        args.output, trigger_length=args.trigger_length, num_candidates=args.num_candidates,
        max_sweeps=args.max_sweeps, num_restarts=args.num_restarts, targets_per_batch=args.targets_per_batch,
        seed=args.seed,
    )
    print(json.dumps(results, indent=2))


def command_evaluate(args: argparse.Namespace) -> None:
    from .evaluation import evaluate_model

    _check_output(args)
    results = evaluate_model(args.model_dir, tuple(args.ngram_orders), args.split, args.batch_size)
    _print_and_save(results, args.output)


def command_mmi_tune(args: argparse.Namespace) -> None:
    from .evaluation import tune_mmi_model

    results = tune_mmi_model(args.model_dir, args.reverse_model, args.output_dir, args.split, args.max_inputs,
                             args.num_beams, args.max_new_tokens, seed=args.seed, overwrite=args.overwrite)
    print(json.dumps({key: value for key, value in results.items() if key != "grid"}, indent=2))


def command_diversity_report(args: argparse.Namespace) -> None:
    from .evaluation import diversity_report

    _check_output(args)
    results = diversity_report(
        args.model_dir, args.anti_lm, args.reverse_model, tuple(args.strategies), args.split, args.max_inputs,
        args.num_beams, args.max_new_tokens, args.antilm_lambda, args.antilm_gamma, args.batch_size, args.seed,
    )
    _print_and_save(results, args.output)


def _printable(text: str) -> str:
    """`text` with control characters shown as escapes (`\\x1b`): a prompt file must not drive the terminal."""
    return "".join(ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch)[0] == "C" else ch
                   for ch in text)


def command_chat(args: argparse.Namespace) -> None:
    from .chat import Responder
    from .data.dialogue import read_utf8_text

    decoding = _decoding_kwargs(args)
    prompts = None
    if args.prompts:  # read before the model loads: a bad file fails at once
        prompts = [line.strip() for line in read_utf8_text(args.prompts).splitlines() if line.strip()]
        if not prompts:
            raise ValueError(f"{args.prompts}: no prompts (the file is empty or blank); write one message a line.")
    responder = Responder(args.model_dir, anti_lm=args.anti_lm, reverse_model=args.reverse_model)
    if args.seed is not None:
        from transformers import set_seed

        set_seed(args.seed)
    if prompts is not None:
        # Non-interactive: every line of the file is answered on its own (one-turn conversations).
        for line in prompts:
            print(f"Human: {_printable(line)}")
            _print_replies(responder.reply([line], args.context_turns, **decoding))
        return
    print("Chat with the model. /reset starts a new conversation, /quit (or Ctrl-D) leaves.", flush=True)
    history: list[str] = []
    while True:
        try:
            message = input("Human: ")
        except EOFError:
            print()
            return
        if message.strip() == "/quit":
            return
        if message.strip() == "/reset":
            history = []
            print("(conversation reset)")
            continue
        try:
            replies = responder.reply([*history, message], args.context_turns, **decoding)
        except ValueError as error:
            print(f"(!) {error}")
            continue
        _print_replies(replies)
        history += [message, replies[0].text]


def _add_recipe_command(commands, name: str, description: str, example: str, run) -> None:
    """A command that runs a recipe YAML, with `KEY=VALUE` overrides of its settings."""
    command = commands.add_parser(name, help=description)
    command.add_argument("config", help=f"recipe YAML, e.g. {example}")
    command.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe settings to replace or add")
    command.set_defaults(run=run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-neuralconv", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_recipe_command(
        commands, "train", "train a model from a recipe YAML (Trainer; accelerate/torchrun ready)",
        "recipes/seq2seq/quickstart.yaml", command_train,
    )

    evaluate = commands.add_parser("evaluate", help="test perplexity of a model next to KenLM n-gram LMs")
    evaluate.add_argument("model_dir")
    evaluate.add_argument("--ngram-orders", type=_bounded(int, 1), nargs="*", default=[],
                          help="e.g. 3 5 (needs KenLM lmplz)")
    evaluate.add_argument("--split", default="test", choices=["train", "validation", "test"])
    evaluate.add_argument("--batch-size", type=_bounded(int, 1), default=64)
    evaluate.add_argument("--output", help="also write the results to this JSON file")
    evaluate.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    evaluate.set_defaults(run=command_evaluate)

    _add_recipe_command(
        commands, "negative-train", "negative training of a trained model (He & Glass 2020)",
        "recipes/negative_training/malicious.yaml", command_negative_train,
    )

    attack = commands.add_parser("attack", help="hit rate of malicious targets: gibbs-enum trigger search")
    attack.add_argument("model_dir")
    attack.add_argument("targets", help="target list, one a line: a file, or a list shipped with the package, "
                        "e.g. package:malicious_targets/test_500.txt")
    attack.add_argument("--hit-type", default="o-sample-min-hit", help="o-greedy-hit | {o,io}-sample-{min,avg}-hit")
    attack.add_argument("--input-lm", help="saved LSTM LM (io hits)")
    attack.add_argument("--output-threshold", type=float, help="T_out (default: measured on the test split)")
    attack.add_argument("--input-threshold", type=float, help="T_in (default: measured on the test split)")
    attack.add_argument("--trigger-length", type=int, default=15)
    attack.add_argument("--num-candidates", type=int, default=100, help="G")
    attack.add_argument("--max-sweeps", type=int, default=5, help="T")
    attack.add_argument("--num-restarts", type=int, default=5)
    attack.add_argument("--targets-per-batch", type=int, default=8, help="memory: x restarts x G rows a pass")
    attack.add_argument("--seed", type=int, default=0)
    attack.add_argument("--output", help="write the (trigger, target) pairs as JSONL")
    attack.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    attack.set_defaults(run=command_attack)

    tune = commands.add_parser("mmi-tune", help="tune MMI-bidi's lambda/gamma for dev BLEU; save the tuned chatbot")
    tune.add_argument("model_dir", help="the chatbot")
    tune.add_argument("--reverse-model", required=True, help="the reverse model p(M|R) (recipes/mmi/reverse.yaml)")
    tune.add_argument("--output-dir", required=True, help="where the chatbot is saved with the tuned settings")
    tune.add_argument("--split", default="validation", choices=["train", "validation", "test"])
    tune.add_argument("--max-inputs", type=int, default=500, help="seeded sample of the split")
    tune.add_argument("--num-beams", type=int, default=10, help="beam size = N-best size")
    tune.add_argument("--max-new-tokens", type=int, default=20)
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--overwrite", action="store_true", help="write into a non-empty --output-dir")
    tune.set_defaults(run=command_mmi_tune)

    report = commands.add_parser("diversity-report",
                                 help="decoding strategies side by side: distinct-n, max-ratio, Ent-n, BLEU")
    report.add_argument("model_dir", help="the chatbot (an mmi-tune output for the mmi-bidi row)")
    report.add_argument("--anti-lm", help="LSTM LM directory for the mmi-antilm row (recipes/mmi/anti_lm.yaml)")
    report.add_argument("--reverse-model", help="reverse model directory for mmi-bidi (default: the tuned one)")
    report.add_argument("--strategies", nargs="+", default=["greedy", "beam", "sample", "mmi-antilm", "mmi-bidi"])
    report.add_argument("--split", default="test", choices=["train", "validation", "test"])
    report.add_argument("--max-inputs", type=int, default=1000, help="seeded sample of the split")
    report.add_argument("--num-beams", type=int, default=10, help="beams of the beam and mmi-antilm rows")
    report.add_argument("--max-new-tokens", type=int, default=20)
    report.add_argument("--antilm-lambda", type=float, default=0.5)
    report.add_argument("--antilm-gamma", type=int, default=3)
    report.add_argument("--batch-size", type=int, default=64)
    report.add_argument("--seed", type=int, default=0)
    report.add_argument("--output", help="also write the report to this JSON file")
    report.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    report.set_defaults(run=command_diversity_report)

    _add_recipe_command(
        commands, "reverse-pretrain",
        "reference corpus from a black-box chatbot + supervised reverse generator (Liu et al.)",
        "recipes/reverse_generator/pretrain.yaml", command_reverse_pretrain,
    )

    _add_recipe_command(
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
    reverse_attack.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    reverse_attack.set_defaults(run=command_reverse_attack)

    _add_recipe_command(
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

    chat = commands.add_parser("chat", help="chat in the terminal, or answer a file of prompts (--prompts)")
    chat.add_argument("model_dir")
    chat.add_argument("--prompts", help="answer each line of this file instead of chatting interactively")
    chat.add_argument("--seed", type=_bounded(int, 0),
                      help="seed the random numbers: sampled replies repeat from run to run")
    _add_decoding_arguments(chat)
    chat.set_defaults(run=command_chat)
    return parser


def _leave_process_group() -> None:
    """Under torchrun / accelerate launch, leave the process group before the interpreter exits: a rank that exits
    with its gloo group alive can abort in the backend's teardown ("terminate called without an active
    exception", SIGABRT) after its work is done, failing the launch."""
    import torch.distributed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
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

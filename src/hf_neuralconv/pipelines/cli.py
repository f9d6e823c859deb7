"""`hf-neuralconv chat` and `diversity-report`: a saved chatbot answering through `pipeline("conversational")`,
in the terminal or over a file of prompts, and its decoding strategies side by side."""

import argparse

from transformers import set_seed

from ..core.command_line import add_dataset_argument, bounded, check_output_file, print_and_save, printable
from ..data.dialogue import read_utf8_text
from .conversational import DECODING_STRATEGIES
from .report import REPORT_STRATEGIES, diversity_report
from .responder import Responder

ANTI_LM_HELP = ("anti-LM for {row}: a causal LM directory over the chatbot's vocabulary (recipes/mmi/anti_lm.yaml), "
                "or 'self' for a causal chatbot (its own p(T) after an empty history)")


def _add_decoding_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("decoding (transformers generate)")
    group.add_argument("--strategy", choices=list(DECODING_STRATEGIES),
                       help="decoding strategy (default: the model's generation config)")
    group.add_argument("--anti-lm", help=ANTI_LM_HELP.format(row="--strategy mmi-antilm"))
    group.add_argument("--reverse-model", help="reverse model directory for mmi-bidi (default: the tuned one)")
    group.add_argument("--mmi-lambda", type=float, help="MMI weight lambda (default: tuned, or 0.5 for mmi-antilm)")
    group.add_argument("--mmi-gamma", type=float, help="MMI gamma (tokens penalised by mmi-antilm; length reward)")
    group.add_argument("--max-new-tokens", type=bounded(int, 1),
                       help="longest reply in tokens (default: the model's generation_config)")
    group.add_argument("--num-beams", type=bounded(int, 1), help="beam size (default: the strategy's)")
    group.add_argument("--num-return-sequences", type=bounded(int, 1), default=1,
                       help="N-best list size (<= num beams)")
    group.add_argument("--do-sample", action="store_true", help="sample instead of greedy/beam search; the three "
                       "settings below (default: the model's generation_config) apply to sampling")
    group.add_argument("--temperature", type=bounded(float, 0, above=True))
    group.add_argument("--top-k", type=bounded(int, 0), help="0: no top-k filtering")
    group.add_argument("--top-p", type=bounded(float, 0, 1, above=True))
    group.add_argument("--context-turns", type=bounded(int, 0), default=None, help="turns kept before the message")


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


def command_diversity_report(args: argparse.Namespace) -> None:
    """`hf-neuralconv diversity-report`: run it with the parsed arguments and print the results."""
    check_output_file(args)
    results = diversity_report(
        args.model_dir, args.anti_lm, args.reverse_model, tuple(args.strategies), args.split, args.max_inputs,
        args.num_beams, args.max_new_tokens, args.antilm_lambda, args.antilm_gamma, args.batch_size, args.seed,
        args.dataset,
    )
    print_and_save(results, args.output)


def command_chat(args: argparse.Namespace) -> None:
    """`hf-neuralconv chat`: run it with the parsed arguments and print the results."""
    decoding = _decoding_kwargs(args)
    prompts = None
    if args.prompts:  # read before the model loads: a bad file fails at once
        prompts = [line.strip() for line in read_utf8_text(args.prompts).splitlines() if line.strip()]
        if not prompts:
            raise ValueError(f"{args.prompts}: no prompts (the file is empty or blank); write one message a line.")
    responder = Responder(args.model_dir, anti_lm=args.anti_lm, reverse_model=args.reverse_model)
    if args.seed is not None:
        set_seed(args.seed)
    if prompts is not None:
        # Non-interactive: every line of the file is answered on its own (one-turn conversations).
        for line in prompts:
            print(f"Human: {printable(line)}")
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


def add_commands(commands) -> None:
    """Register the pipeline's subcommands on the `hf-neuralconv` parser's subparsers."""
    report = commands.add_parser("diversity-report",
                                 help="decoding strategies side by side: distinct-n, max-ratio, Ent-n, BLEU")
    report.add_argument("model_dir", help="the chatbot (an mmi-tune output for the mmi-bidi row)")
    report.add_argument("--anti-lm", help=ANTI_LM_HELP.format(row="the mmi-antilm row"))
    report.add_argument("--reverse-model", help="reverse model directory for mmi-bidi (default: the tuned one)")
    report.add_argument("--strategies", nargs="+", default=list(REPORT_STRATEGIES))
    report.add_argument("--split", default="test", choices=["train", "validation", "test"])
    report.add_argument("--max-inputs", type=int, default=1000, help="seeded sample of the split")
    report.add_argument("--num-beams", type=int, default=10, help="beams of the beam and mmi-antilm rows")
    report.add_argument("--max-new-tokens", type=int, default=20)
    report.add_argument("--antilm-lambda", type=float, default=0.5)
    report.add_argument("--antilm-gamma", type=int, default=3)
    report.add_argument("--batch-size", type=int, default=64)
    report.add_argument("--seed", type=int, default=0)
    add_dataset_argument(report)
    report.add_argument("--output", help="also write the report to this JSON file")
    report.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    report.set_defaults(run=command_diversity_report)

    chat = commands.add_parser("chat", help="chat in the terminal, or answer a file of prompts (--prompts)")
    chat.add_argument("model_dir")
    chat.add_argument("--prompts", help="answer each line of this file instead of chatting interactively")
    chat.add_argument("--seed", type=bounded(int, 0),
                      help="seed the random numbers: sampled replies repeat from run to run")
    _add_decoding_arguments(chat)
    chat.set_defaults(run=command_chat)

"""The experiment of Liu et al. (2019, "Say What I Want", Section 5) on the chitchat corpus, as four commands:

* `hf-neuralconv reverse-pretrain RECIPE` — feed real training-split messages to the black-box chatbot, keep the
  (output -> input) pairs as the reference corpus (Section 5.1.2) and pre-train the reverse generator on them.
* `hf-neuralconv reverse-train RECIPE` — REINFORCE against the same chatbot, the reference corpus' outputs as
  targets (Section 4.2, `trainer.ReinforceTrainer`).
* `hf-neuralconv reverse-evaluate` — Section 5.2: *Generated* targets (the chatbot's replies to held-out test
  messages) and *Real* targets (human test responses) in length buckets 1-3, 4-6 and 7-10; Pre-trained Greedy,
  RL Greedy and RL BeamSearch(N) attacks; Figure 2 (success rate against the similarity threshold), Table 1 (mean
  similarity, with the real input's row) and Table 2 (examples).
* `hf-neuralconv reverse-attack` — any list of targets (e.g. the malicious targets of He & Glass 2020), the found
  (trigger, target) pairs written as negative-training examples.

The attack setup (`AttackSetupArguments`: which chatbot, how its replies are scored) is saved with each generator as
`attack_setup.json`, so that training and evaluation attack the same chatbot with the same reward. The attacker only
ever calls the chatbot with texts (`environments`).
"""

import copy
import random
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import datasets
from transformers import AutoTokenizer

from ..core.arguments import ConversationTrainingArguments, ModelArguments
from ..core.building import build_model, default_generation_config
from ..core.loading import load_model_dir
from ..core.plotting import plot_success_curves, plot_training_curves
from ..core.run_dir import start_run, start_training_run
from ..data.dialogue import load_chitchat
from ..data.jsonl import read_text_pairs, write_jsonl
from ..data.tokenization import train_word_tokenizer
from ..metrics.embedding_similarity import EmbeddingSimilarityReward, content_words
from .attack import attack, targets_per_call
from .config import REFERENCE_CORPUS_FILE, AttackSetupArguments, ReferenceCorpusArguments, ReinforceRunArguments
from .environments import build_reference_corpus
from .trainer import ReinforceConfig, ReinforceTrainer, pretrain_reverse_generator

# Section 5.2's length groups of target outputs (words: tokens with a letter or digit).
LENGTH_BUCKETS = ((1, 3), (4, 6), (7, 10))
THRESHOLDS = tuple(round(0.5 + 0.05 * step, 2) for step in range(11))  # Figure 2's x axis, 0.5 ... 1.0
REINFORCE_CURVES = ("reward", "success_rate", "distinct_inputs", "env_queries", "loss")


def word_count(text: str) -> int:
    """Length of a target as Section 5.2 buckets it: its word tokens (punctuation not counted)."""
    return len(content_words(text))


def read_reference_corpus(path: str | Path) -> datasets.Dataset:
    """(`output`, `input`) pairs from a JSONL file, each a non-empty text; errors name the line."""
    rows = read_text_pairs(path, ("output", "input"))
    if len(rows) < 2:
        raise ValueError(f"{path}: a reference corpus needs at least 2 pairs (one for validation).")
    return datasets.Dataset.from_list(rows)


def pretrain(model_args: ModelArguments, setup: AttackSetupArguments, corpus_args: ReferenceCorpusArguments,
             training_args: ConversationTrainingArguments) -> dict:
    """Build the reference corpus from D (or reuse one) and pre-train the reverse generator on it (Section 5.1.2).
    A generator is new (sized by `model_args`, with a word tokenizer of the corpus) or starts from
    `model_name_or_path`, e.g. a reverse model p(message|reply) trained on human dialogue
    (`recipes/mmi/reverse.yaml`)."""
    if model_args.model_type is None and model_args.architecture != "seq2seq":
        raise ValueError("The reverse generator reads a target and writes an input, a chatbot of its own: our LSTM "
                         "with `architecture: seq2seq` (the default), or a transformers chatbot with `model_type:`; "
                         "not the LSTM language model.")
    run = start_training_run(training_args)
    output_dir = run.path
    output_dir.mkdir(parents=True, exist_ok=True)

    env_queries = 0
    if corpus_args.reference_corpus:
        corpus = read_reference_corpus(corpus_args.reference_corpus)
    else:
        messages = [text for text in dict.fromkeys(load_chitchat()["train"]["message"])
                    if 0 < word_count(text) <= corpus_args.max_message_words]
        random.Random(corpus_args.reference_seed).shuffle(messages)
        messages = messages[: corpus_args.num_reference_messages]
        environment = setup.make_environment()
        corpus = build_reference_corpus(environment, messages, batch_size=setup.environment_batch_size)
        env_queries = environment.num_queries
        if len(corpus) < 2:  # checked before anything is written: the output directory stays empty
            raise ValueError(
                f"{environment!r} gave a non-empty reply to {len(corpus)} of the {len(messages)} messages it was sent, "
                "and a reference corpus needs at least 2 (reply, message) pairs (pairs with an empty reply are "
                "dropped): send more messages (`num_reference_messages`), or check the chatbot's replies "
                f"(`hf-neuralconv chat {setup.environment}`)."
            )
    write_jsonl(output_dir / REFERENCE_CORPUS_FILE, corpus.to_list())
    setup.save(output_dir)
    splits = corpus.train_test_split(test_size=corpus_args.validation_fraction, seed=corpus_args.reference_seed)

    if model_args.model_name_or_path:
        tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    else:
        tokenizer = train_word_tokenizer(list(corpus["input"]) + list(corpus["output"]), corpus_args.vocab_size)
    model = build_model(model_args, tokenizer)
    model.generation_config = default_generation_config(tokenizer, model=model)
    tokenizer.save_pretrained(output_dir)
    trainer = pretrain_reverse_generator(model, tokenizer, training_args, splits["train"], splits["test"])
    trainer.save_model(str(output_dir))
    results = {
        "validation_perplexity": trainer.evaluate()["eval_perplexity"],
        "reference_pairs": len(corpus),
        "env_queries": env_queries,
    }
    return run.write_results(results)


def _scorable(targets, reward: EmbeddingSimilarityReward) -> list[str]:
    kept = []
    for target in targets:
        try:
            reward.check_target(target)
        except ValueError:
            continue
        kept.append(target)
    return kept


def reinforce_targets(outputs: Sequence[str], sampling: str, seed: int, max_targets: int | None = None) -> list[str]:
    """The RL training targets drawn from the reference corpus' outputs (all scorable), in a seeded order.

    'frequency' keeps every output (Section 5.1.2: "the 160K outputs in the reference corpus"), so D's generic
    replies dominate; 'distinct' takes each once, so long, rare replies dominate (few of D's replies are short);
    'length-balanced' repeats the distinct outputs of each of `LENGTH_BUCKETS` round-robin until every bucket has as
    many as the largest, so each length is trained as often. `max_targets` keeps the first ones of the order."""
    rng = random.Random(seed)
    if sampling == "frequency":
        targets = list(outputs)
    elif sampling == "distinct":
        targets = list(dict.fromkeys(outputs))
    else:
        buckets = [[text for text in dict.fromkeys(outputs) if low <= word_count(text) <= high]
                   for low, high in LENGTH_BUCKETS]
        largest = max(len(bucket) for bucket in buckets)
        targets = [bucket[index % len(bucket)] for bucket in buckets if bucket for index in range(largest)]
    rng.shuffle(targets)
    return targets[:max_targets]


def reinforce(run_args: ReinforceRunArguments, training_args: ReinforceConfig) -> dict:
    """REINFORCE training of a pre-trained generator against its D (Section 4.2); the reference corpus' outputs
    scorable by the reward are the targets, sampled as `run_args.target_sampling` says."""
    run = start_training_run(training_args)
    generator_dir = Path(run_args.generator)
    setup = AttackSetupArguments.load(generator_dir)
    corpus_path = generator_dir / REFERENCE_CORPUS_FILE
    if not corpus_path.is_file():
        raise FileNotFoundError(f"{corpus_path}: missing; the generator must come from `reverse-pretrain`.")
    reward = setup.make_reward()
    outputs = read_reference_corpus(corpus_path)["output"]
    distinct = list(dict.fromkeys(outputs))
    scorable = set(_scorable(distinct, reward))  # each distinct reply checked once
    targets = reinforce_targets([text for text in outputs if text in scorable], run_args.target_sampling,
                                training_args.seed, run_args.max_targets)
    if not targets:
        raise ValueError(f"{corpus_path}: no reference output is a target under target_sampling="
                         f"{run_args.target_sampling!r} (none the reward can score, or none of 1-10 words).")
    model, tokenizer = load_model_dir(generator_dir)
    # π_ref of the KL penalty: a frozen copy of the generator as pre-trained (taken before any training, so also a
    # resumed run, whose policy is then loaded from its checkpoint, measures its drift from the pre-trained one).
    ref_model = copy.deepcopy(model) if training_args.kl_coef > 0 else None
    environment = setup.make_environment()
    trainer = ReinforceTrainer(model, training_args, environment, reward,
                               datasets.Dataset.from_dict({"target": targets}), tokenizer, ref_model=ref_model)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint or None)
    output_dir = Path(training_args.output_dir)
    trainer.save_model(str(output_dir))
    trainer.save_state()
    setup.save(output_dir)
    plot_training_curves(trainer.state.log_history, REINFORCE_CURVES, output_dir / "training_curves.png",
                         "REINFORCE against the chatbot (Liu et al. 2019)")
    logged = [entry for entry in trainer.state.log_history if "reward" in entry]
    results = {
        "targets": len(targets),
        "distinct_targets": len(set(targets)),
        "target_sampling": run_args.target_sampling,
        "distinct_reference_outputs": len(distinct),
        "steps": trainer.state.global_step,
        "first_logged": logged[0] if logged else None,
        "last_logged": logged[-1] if logged else None,
        "env_queries": environment.num_queries,
    }
    return run.write_results(results)


def bucket_targets(texts: Sequence[str], per_bucket: int, seed: int) -> dict[str, list[str]]:
    """Distinct texts grouped by `LENGTH_BUCKETS` and sampled (seeded) to at most `per_bucket` each."""
    rng = random.Random(seed)
    buckets = {}
    for low, high in LENGTH_BUCKETS:
        members = [text for text in dict.fromkeys(texts) if low <= word_count(text) <= high]
        buckets[f"{low}-{high}"] = rng.sample(members, min(per_bucket, len(members)))
    return buckets


def success_rates(similarities: Sequence[float], thresholds: Sequence[float] = THRESHOLDS) -> list[float]:
    """Figure 2's y values: the share of targets whose found input's output is at least as similar as each threshold."""
    return [sum(score >= threshold for score in similarities) / len(similarities) for threshold in thresholds]


def evaluate_attacks(pretrained_dir: str | Path, reinforced_dir: str | Path, output_dir: str | Path,
                     targets_per_bucket: int = 200, beam_sizes: Sequence[int] = (50, 200), num_messages: int = 10000,
                     seed: int = 0, overwrite: bool = False, pretrained_beam_sizes: Sequence[int] = ()) -> dict:
    """Section 5.2 on the chitchat test split; writes `results.json`, `figure2.png`, `tables.md` and one JSONL of
    found inputs per (target list, method) into `output_dir`. Methods: Pre-trained Greedy, RL Greedy and RL
    BeamSearch(N) for each N of `beam_sizes`, and Pre-trained BeamSearch(N) for each N of `pretrained_beam_sizes`
    (not in the paper: what RL adds to beam search); for Real targets also Real Input (D's reply to the message the
    human response answered). The similarity is the reward without its 0.5 clamp."""
    run = start_run(output_dir, overwrite)
    output_dir = run.path
    output_dir.mkdir(parents=True, exist_ok=True)
    setup = AttackSetupArguments.load(reinforced_dir)
    similarity = setup.make_reward(threshold=-1.0)
    environment = setup.make_environment()
    test = load_chitchat()["test"].shuffle(seed=seed)

    messages = list(dict.fromkeys(test["message"]))[:num_messages]
    generated = build_reference_corpus(environment, messages, setup.environment_batch_size)
    answered = {}  # Real targets: the human response -> the message it answered (its first occurrence)
    for message, response in zip(test["message"], test["response"], strict=True):
        answered.setdefault(response.strip(), message)
    target_lists = {
        "Generated": bucket_targets(_scorable(generated["output"], similarity), targets_per_bucket, seed),
        "Real": bucket_targets(_scorable(answered, similarity), targets_per_bucket, seed),
    }
    generators = {"Pre-trained": load_model_dir(pretrained_dir), "RL": load_model_dir(reinforced_dir)}
    methods = [("Pre-trained Greedy", "Pre-trained", 1), ("RL Greedy", "RL", 1)]
    methods += [(f"Pre-trained BeamSearch({beams})", "Pre-trained", beams) for beams in pretrained_beam_sizes]
    methods += [(f"RL BeamSearch({beams})", "RL", beams) for beams in beam_sizes]

    results = {"setup": asdict(setup), "targets_per_bucket": targets_per_bucket, "seed": seed, "lists": {}}
    for list_name, buckets in target_lists.items():
        list_results = results["lists"][list_name] = {}
        for bucket, targets in buckets.items():
            bucket_results = list_results[bucket] = {"targets": len(targets)}
            if not targets:
                continue
            if list_name == "Real":
                queries, started = environment.num_queries, time.time()
                inputs = [answered[target] for target in targets]
                replies = environment(inputs)
                scores = similarity(targets, replies)
                bucket_results["Real Input"] = _summary(scores, environment.num_queries - queries, started)
            for method, generator, beams in methods:
                model, tokenizer = generators[generator]
                queries, started = environment.num_queries, time.time()
                records = attack(model, tokenizer, environment, similarity, targets, num_beams=beams,
                                 batch_size=targets_per_call(beams))
                write_jsonl(output_dir / f"{list_name}_{bucket}_{method.replace(' ', '_')}.jsonl", records)
                bucket_results[method] = _summary([record["reward"] for record in records],
                                                  environment.num_queries - queries, started)
                bucket_results[method]["examples"] = sorted(records, key=lambda r: -r["reward"])[:3]
    results["env_queries"] = environment.num_queries
    results = run.write_results(results)
    plot_success_curves(results["lists"], THRESHOLDS, output_dir / "figure2.png")
    (output_dir / "tables.md").write_text(format_tables(results))
    return results


def _summary(scores: Sequence[float], queries: int, started: float) -> dict:
    return {"mean_similarity": sum(scores) / len(scores), "success_rates": success_rates(scores),
            "env_queries": queries, "wall_time_s": time.time() - started}


def format_tables(results: dict) -> str:
    """Table 1 (mean similarity per length bucket, per method, for each target list) and success at 0.5 as
    Markdown, then Table 2: the best-scored examples of the largest beam."""
    lines = []
    for list_name, buckets in results["lists"].items():
        names = list(buckets)
        methods = list(dict.fromkeys(m for bucket in buckets.values() for m in bucket if m != "targets"))
        sizes = ", ".join(f"{name}: {buckets[name]['targets']}" for name in names)
        lines += [f"### {list_name} targets ({sizes})",
                  "", "| method | " + " | ".join(f"sim {name}" for name in names) + " | "
                  + " | ".join(f"success@0.5 {name}" for name in names) + " |",
                  "|---" * (1 + 2 * len(names)) + "|"]
        for method in methods:
            sims = [f"{buckets[n][method]['mean_similarity']:.3f}" if method in buckets[n] else "–" for n in names]
            rates = [f"{buckets[n][method]['success_rates'][0]:.0%}" if method in buckets[n] else "–" for n in names]
            lines.append(f"| {method} | " + " | ".join(sims + rates) + " |")
        lines.append("")
    lines += ["### Examples (the largest beam)", "", "| list | input found | target | output | similarity |",
              "|---|---|---|---|---|"]
    for list_name, buckets in results["lists"].items():
        for bucket in buckets.values():
            beam_methods = [m for m in bucket if m.startswith("RL BeamSearch")]
            for record in bucket[beam_methods[-1]]["examples"][:1] if beam_methods else []:
                lines.append(f"| {list_name} | {record['trigger']} | {record['target']} | {record['output']} | "
                             f"{record['reward']:.3f} |")
    return "\n".join(lines) + "\n"



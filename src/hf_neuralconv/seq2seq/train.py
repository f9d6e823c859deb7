"""`hf-neuralconv train RECIPE.yaml`: the Vinyals & Le (2015) seq2seq chatbot trained with transformers' Trainer.

A recipe is one YAML file parsed into `ModelArguments`, `DataArguments` and `ConversationTrainingArguments`
(`core.arguments`). The same command runs unchanged on one process, under `torchrun` or under `accelerate launch`.
`architecture: causal-lm` trains the LSTM language model instead (the MMI anti-LM, the input LM of He & Glass's io
hits) and `direction: reverse` the reverse model p(M|R) on swapped pairs. `model_type: gpt2` (or llama, bart, t5,
...) with `model_config` sizes builds a fresh transformers chatbot over the same word tokenizer, so its perplexity
counts the same tokens as the LSTM's; `model_name_or_path` fine-tunes a saved chatbot, ours or a transformers one
(GPT-2, DialoGPT, BART, ...), with its own tokenizer and chat format (`core.chat_format`).

The output directory receives the model (safetensors, + code for `trust_remote_code` for the LSTM), the tokenizer,
the generation settings, `data_config.json` (so `hf-neuralconv evaluate` rebuilds the same split), `results.json`
(validation and test perplexity, training time, the greedy replies' diversity), the pipeline's code and a model card.
"""

from transformers import AutoTokenizer

from ..core.arguments import ConversationTrainingArguments, DataArguments, ModelArguments
from ..core.building import (
    build_model,
    check_positions,
    default_generation_config,
    first_examples,
    load_dialogues,
    row_layout,
    tokenize_dataset,
    training_texts,
)
from ..core.model_card import write_model_card
from ..core.run_dir import check_checkpoint_matches, clear_previous_checkpoints, resume_checkpoint, start_training_run
from ..core.trainer import ConversationTrainer
from ..data.collator import DialogueCollator
from ..data.tokenization import train_word_tokenizer
from ..pipelines.report import greedy_reply_metrics


def _model_role(model, data_args: DataArguments) -> str:
    """What the trained model is for, as its model card describes it."""
    if row_layout(model) == "causal-lm":
        return "language-model"
    return "reverse-model" if data_args.direction == "reverse" else "chatbot"


def train(model_args: ModelArguments, data_args: DataArguments, training_args: ConversationTrainingArguments) -> dict:
    """Train, keep the best checkpoint by validation perplexity, evaluate on test; return the results."""
    run = start_training_run(training_args)
    checkpoint = resume_checkpoint(training_args)
    dialogues = load_dialogues(data_args)

    tokenizer_dir = (model_args.model_name_or_path or model_args.tokenizer_name_or_path
                     or (run.path if (run.path / "tokenizer.json").is_file() else None))
    if tokenizer_dir:  # fine-tuning, resuming or sharing a chatbot's vocabulary: the vocabulary must not change
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    else:
        tokenizer = train_word_tokenizer(
            training_texts(dialogues["train"]), data_args.vocab_size, data_args.min_frequency
        )
    model = build_model(model_args, tokenizer)
    model.generation_config = default_generation_config(tokenizer, model_args.generation_config, model)
    role, layout = _model_role(model, data_args), row_layout(model)

    with training_args.main_process_first(desc="tokenizing"):
        train_set = tokenize_dataset(first_examples(dialogues["train"], data_args.max_train_examples), tokenizer,
                                     data_args, truncate_target=True, layout=layout)
        eval_set = tokenize_dataset(first_examples(dialogues["validation"], data_args.max_eval_examples), tokenizer,
                                    data_args, truncate_target=True, layout=layout)
        test_set = tokenize_dataset(first_examples(dialogues["test"], data_args.max_eval_examples), tokenizer,
                                    data_args, truncate_target=False, layout=layout)
    for split, dataset in (("train", train_set), ("validation", eval_set), ("test", test_set)):
        check_positions(model, dataset, split)
    if checkpoint:
        check_checkpoint_matches(model, checkpoint)
    trainer = ConversationTrainer(
        model=model,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=DialogueCollator.for_tokenizer(tokenizer),
        processing_class=tokenizer,
    )
    # Every check has passed: only now are files written into the output directory (Trainer made it, empty).
    clear_previous_checkpoints(training_args)
    run.save_tokenizer_and_data_config(tokenizer, data_args)
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(str(run.path))
    if role != "language-model":  # pipeline(model=output_dir, trust_remote_code=True)
        run.export_pipeline_code()

    validation = trainer.evaluate(metric_key_prefix="eval")
    test = trainer.evaluate(test_set, metric_key_prefix="test")
    results = {
        "validation_perplexity": validation["eval_perplexity"],
        "test_perplexity": test["test_perplexity"],
        "test_target_tokens": test["test_target_tokens"],
        "train_examples": len(train_set),
        "epochs": train_result.metrics.get("epoch"),
        "train_runtime_s": train_result.metrics.get("train_runtime"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "world_size": training_args.world_size,
    }
    if training_args.should_save and role == "chatbot":
        results.update(greedy_reply_metrics(run.path))
    results = run.write_results(results)
    if training_args.should_save:
        write_model_card(run.path, results, data_args.dataset, model.config, base_model=model_args.model_name_or_path,
                         machine=results["machine"], role=role)
    trainer.log({"test_perplexity": results["test_perplexity"]})
    return results

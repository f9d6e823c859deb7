"""`hf-neuralconv negative-train RECIPE.yaml`: negative training of a trained chatbot (He & Glass 2020), with the
hit thresholds T_out / T_in measured first when the recipe leaves them out (Section 3.2, Appendix C)."""

import datasets
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

from ..core.arguments import DataArguments, ModelArguments
from ..core.building import first_examples, load_dialogues, row_layout, tokenize_dataset
from ..core.loading import load_model_dir
from ..core.model_card import write_model_card
from ..core.plotting import plot_training_curves
from ..core.run_dir import (
    CURVES_FILE,
    check_checkpoint_matches,
    clear_previous_checkpoints,
    resume_checkpoint,
    start_training_run,
)
from ..pipelines.report import greedy_reply_metrics
from .hits import input_threshold, output_threshold
from .trainer import NegativeTrainer, NegativeTrainingConfig

# What negative training logs (NegativeTrainer.log), plotted against the step into CURVES_FILE.
NEGATIVE_TRAINING_CURVES = ("malicious/hit_rate", "malicious/negative_pairs", "frequent/max_ratio",
                            "frequent/negative_examples", "loss_neg", "loss_mle", "test_perplexity")


def hit_thresholds(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    test: datasets.Dataset,
    data_args: DataArguments,
    input_lm=None,
    t_out: float | None = None,
    t_in: float | None = None,
) -> tuple[float, float | None]:
    """(T_out, T_in) of the hit criteria (He & Glass 2020, Section 3.2 and Appendix C): `t_out` / `t_in` when
    given, else measured — T_out as the model's average word log-likelihood on the test examples, T_in (only with
    the input LM) as the LM's on the test messages."""
    if t_out is None:
        encoded = tokenize_dataset(test, tokenizer, data_args, truncate_target=False, layout=row_layout(model))
        t_out = output_threshold(model, encoded["input_ids"], encoded["labels"])
    if t_in is None and input_lm is not None:
        messages = tokenizer(list(test["message"]), add_special_tokens=False)["input_ids"]
        t_in = input_threshold(input_lm, messages)
    return t_out, t_in


def train_negative(model_args: ModelArguments, data_args: DataArguments, training_args: NegativeTrainingConfig) -> dict:
    """Negative training (He & Glass 2020) of the model saved at `model_name_or_path`, the recipe's training data as
    positive examples; T_out / T_in the recipe leaves out are measured on the test split first. Saves the model
    and returns (and writes to results.json) the test perplexity before and after."""
    if not model_args.model_name_or_path:
        raise ValueError("Negative training fine-tunes a trained model: set `model_name_or_path` to its directory.")
    run = start_training_run(training_args)
    checkpoint = resume_checkpoint(training_args)
    model, tokenizer = load_model_dir(model_args.model_name_or_path)
    if checkpoint:
        check_checkpoint_matches(model, checkpoint)
    model.to(training_args.device)
    input_lm = None
    if training_args.input_lm_path:
        input_lm = AutoModelForCausalLM.from_pretrained(training_args.input_lm_path).to(training_args.device).eval()
    dialogues = load_dialogues(data_args)
    test = first_examples(dialogues["test"], data_args.max_eval_examples)
    io_hits = training_args.hit_type.startswith("io-")
    missing_threshold = training_args.output_threshold is None or (io_hits and training_args.input_threshold is None)
    if training_args.mode == "malicious" and missing_threshold:
        training_args.output_threshold, training_args.input_threshold = hit_thresholds(
            model, tokenizer, test, data_args, input_lm if io_hits else None, training_args.output_threshold,
            training_args.input_threshold,
        )
    with training_args.main_process_first(desc="tokenizing"):
        train_set = tokenize_dataset(first_examples(dialogues["train"], data_args.max_train_examples), tokenizer,
                                     data_args, truncate_target=True, layout=row_layout(model))
        test_set = tokenize_dataset(test, tokenizer, data_args, truncate_target=False, layout=row_layout(model))
    trainer = NegativeTrainer(model=model, args=training_args, train_dataset=train_set, eval_dataset=test_set,
                              processing_class=tokenizer, input_lm=input_lm)
    perplexity_before = trainer.evaluate(metric_key_prefix="test")["test_perplexity"]
    clear_previous_checkpoints(training_args)
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(str(run.path))
    trainer.save_state()  # trainer_state.json: the logged hit rates / max-ratio behind the figure
    run.save_tokenizer_and_data_config(tokenizer, data_args)
    run.export_pipeline_code()
    if training_args.should_save:
        plot_training_curves(trainer.state.log_history, NEGATIVE_TRAINING_CURVES, run.path / CURVES_FILE,
                             title=f"negative training ({training_args.mode})")
    results = {
        "mode": training_args.mode,
        "test_perplexity_before": perplexity_before,
        "test_perplexity_after": trainer.evaluate(metric_key_prefix="test")["test_perplexity"],
        "output_threshold": training_args.output_threshold,
        "input_threshold": training_args.input_threshold,
        "steps": trainer.state.global_step,
        "train_runtime_s": train_result.metrics.get("train_runtime"),
    }
    if training_args.should_save:
        results.update(greedy_reply_metrics(run.path))
    results = run.write_results(results)
    if training_args.should_save:
        write_model_card(run.path, {**results, "test_perplexity": results["test_perplexity_after"]},
                         data_args.dataset, model.config, base_model=model_args.model_name_or_path,
                         machine=results["machine"],
                         role="negative-trained")
    return results

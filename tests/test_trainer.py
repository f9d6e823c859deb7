"""ConversationTrainer: target-length bucketing, exact resumption from a checkpoint, continuing a saved model."""

import json

import datasets
import pytest
import torch
from safetensors.torch import load_file
from transformers import DataCollatorForSeq2Seq, TrainingArguments

from conftest import tiny_model
from hf_neuralconv.cli import main
from hf_neuralconv.trainers import ConversationTrainer
from hf_neuralconv.training import ModelArguments, build_model
from test_cli import write_recipe


def test_group_by_length_buckets_targets(tiny_tokenizer, tmp_path):
    from conftest import tiny_model

    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 40, (400,), generator=generator).tolist()
    # Sources all alike, targets of varied lengths: Trainer's default would bucket by the (constant) source.
    rows = [{"input_ids": [7, 8, 9], "labels": [10] * n + [2]} for n in lengths]
    dataset = datasets.Dataset.from_list(rows)

    def padded_target_positions(strategy):
        args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8, report_to=[],
                                 train_sampling_strategy=strategy, seed=0, use_cpu=True)
        trainer = ConversationTrainer(model=tiny_model(tiny_tokenizer), args=args, train_dataset=dataset,
                                      data_collator=DataCollatorForSeq2Seq(tiny_tokenizer, label_pad_token_id=-100))
        order = list(trainer._get_train_sampler())
        assert sorted(order) == list(range(len(rows)))  # a permutation: every example once
        batches = [order[i : i + 8] for i in range(0, len(order), 8)]
        return sum(len(b) * max(lengths[i] + 1 for i in b) for b in batches)

    real_positions = sum(n + 1 for n in lengths)
    bucketed, shuffled = padded_target_positions("group_by_length"), padded_target_positions("random")
    assert bucketed < real_positions * 1.15 < shuffled


@pytest.mark.slow
def test_resume_from_checkpoint_continues_exactly(tmp_path, dialogue_file):
    """4 steps in one go == 2 steps, stop, resume from checkpoint-2 for 2 more (weights and logged losses)."""
    # Constant LR: a 2-step run is then exactly the first half of the 4-step run (an interruption at step 2).
    settings = dict(max_steps=4, save_strategy="steps", save_steps=2, logging_steps=1, dropout=0.1,
                    lr_scheduler_type="constant")
    straight = write_recipe(tmp_path, dialogue_file, "straight.yaml", output_dir=str(tmp_path / "straight"),
                            **settings)
    main(["train", str(straight)])
    interrupted = write_recipe(tmp_path, dialogue_file, "part.yaml", output_dir=str(tmp_path / "resumed"),
                               **{**settings, "max_steps": 2})
    main(["train", str(interrupted)])
    resumed = write_recipe(tmp_path, dialogue_file, "resume.yaml", output_dir=str(tmp_path / "resumed"),
                           resume_from_checkpoint=str(tmp_path / "resumed" / "checkpoint-2"), **settings)
    main(["train", str(resumed)])
    first = load_file(tmp_path / "straight" / "model.safetensors")
    second = load_file(tmp_path / "resumed" / "model.safetensors")
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=1e-5, atol=1e-6)

    def losses(run):
        state = json.loads((tmp_path / run / "checkpoint-4" / "trainer_state.json").read_text())
        return [entry["loss"] for entry in state["log_history"] if "loss" in entry]

    assert losses("straight")[2:] == pytest.approx(losses("resumed")[-2:], rel=1e-5)


def test_continuing_a_saved_model_keeps_its_architecture_and_names_unused_settings(tiny_tokenizer, tmp_path, caplog):
    saved = tiny_model(tiny_tokenizer, dropout=0.1)
    saved.save_pretrained(tmp_path / "saved")
    same = dict(embedding_size=12, hidden_size=16, projection_size=0, dropout=0.1, init_range=0.5)
    with caplog.at_level("WARNING", logger="hf_neuralconv.training"):
        model = build_model(ModelArguments(model_name_or_path=str(tmp_path / "saved"), **same), tiny_tokenizer)
    assert not caplog.records
    for name, tensor in saved.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor)

    settings = {**same, "hidden_size": 64, "dropout": 0.3}
    with caplog.at_level("WARNING", logger="hf_neuralconv.training"):
        model = build_model(ModelArguments(model_name_or_path=str(tmp_path / "saved"), **settings), tiny_tokenizer)
    assert (model.config.hidden_size, model.config.dropout) == (16, 0.1)  # the saved model's, not the recipe's
    [record] = caplog.records
    assert "hidden_size 64 (saved: 16)" in record.getMessage() and "dropout 0.3 (saved: 0.1)" in record.getMessage()
    assert "embedding_size" not in record.getMessage()

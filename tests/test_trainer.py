"""ConversationTrainer: target-length bucketing, continuing a saved model (resuming from a checkpoint, DDP and gradient
accumulation: tests/test_trainers_table.py, with the other trainers)."""

import datasets
import torch
from conftest import tiny_model
from transformers import DataCollatorForSeq2Seq, TrainingArguments

from hf_neuralconv.core.arguments import ModelArguments
from hf_neuralconv.core.building import build_model
from hf_neuralconv.core.trainer import ConversationTrainer


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


def test_continuing_a_saved_model_keeps_its_architecture_and_names_unused_settings(tiny_tokenizer, tmp_path, caplog):
    saved = tiny_model(tiny_tokenizer, dropout=0.1)
    saved.save_pretrained(tmp_path / "saved")
    same = dict(embedding_size=12, hidden_size=16, projection_size=0, dropout=0.1, init_range=0.5)
    with caplog.at_level("WARNING", logger="hf_neuralconv.core.building"):
        model = build_model(ModelArguments(model_name_or_path=str(tmp_path / "saved"), **same), tiny_tokenizer)
    assert not caplog.records
    for name, tensor in saved.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor)

    settings = {**same, "hidden_size": 64, "dropout": 0.3}
    with caplog.at_level("WARNING", logger="hf_neuralconv.core.building"):
        model = build_model(ModelArguments(model_name_or_path=str(tmp_path / "saved"), **settings), tiny_tokenizer)
    assert (model.config.hidden_size, model.config.dropout) == (16, 0.1)  # the saved model's, not the recipe's
    [record] = caplog.records
    assert "hidden_size 64 (saved: 16)" in record.getMessage() and "dropout 0.3 (saved: 0.1)" in record.getMessage()
    assert "embedding_size" not in record.getMessage()

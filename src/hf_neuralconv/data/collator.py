"""The batch collator of every trainer: tokenized dialogue rows of any backbone padded into one batch."""

from dataclasses import dataclass

import torch

from .tokenization import padding_id


@dataclass
class DialogueCollator:
    """Right-pads `input_ids` (with `pad_token_id`), `attention_mask` (0) and `labels` (-100) of tokenized rows,
    each column to its own longest row, and stacks any other integer column.

    Rows are an encoder-decoder's (source `input_ids`, reply `labels`) or a causal model's (history and reply in
    `input_ids`, `labels` -100 over the history): transformers' `DataCollatorForSeq2Seq` does the same for the first
    kind but needs the tokenizer to have a pad token, which GPT-2's and Llama's do not (their padding is masked
    anyway, so `pad_token_id` may be any id, e.g. the end-of-sequence token)."""

    pad_token_id: int

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = {}
        for key in rows[0]:
            values = [row[key] for row in rows]
            if key not in ("input_ids", "labels", "attention_mask"):
                batch[key] = torch.tensor(values)
                continue
            value = {"input_ids": self.pad_token_id, "labels": -100, "attention_mask": 0}[key]
            batch[key] = torch.nn.utils.rnn.pad_sequence(
                [torch.as_tensor(row, dtype=torch.long) for row in values], batch_first=True, padding_value=value)
        if "attention_mask" not in batch:
            lengths = torch.tensor([len(row["input_ids"]) for row in rows])
            batch["attention_mask"] = (torch.arange(batch["input_ids"].size(1))[None, :] < lengths[:, None]).long()
        return batch

    @classmethod
    def for_tokenizer(cls, tokenizer) -> "DialogueCollator":
        """The collator of a model with this tokenizer (`padding_id`)."""
        return cls(padding_id(tokenizer))

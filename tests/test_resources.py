"""Files shipped with the package: He & Glass's target lists, named by package path, and recipes that need no
file outside the repository."""

from pathlib import Path

import pytest
import yaml

from hf_neuralconv.data.resources import resolve_data_path, shipped_files
from hf_neuralconv.negative_training.hits import load_targets

ROOT = Path(__file__).resolve().parents[1]
PAPER_LISTS = {"train_500_cp1.txt": 500, "train_500_cp5.txt": 2500, "test_500.txt": 500}


@pytest.mark.parametrize("name,lines", sorted(PAPER_LISTS.items()))
def test_the_papers_target_lists_ship_with_the_package(name, lines):
    path = resolve_data_path(f"package:malicious_targets/{name}")
    assert path.is_file()
    texts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(texts) == lines
    assert texts == [text.lower() for text in texts]  # the paper's lists are lowercased


def test_shipped_lists_are_listed_and_an_unknown_one_names_them():
    assert shipped_files("malicious_targets") == [f"package:malicious_targets/{name}" for name in sorted(PAPER_LISTS)]
    with pytest.raises(FileNotFoundError, match="test_5000.txt: no such file in the package.*test_500.txt"):
        resolve_data_path("package:malicious_targets/test_5000.txt")
    assert resolve_data_path("some/dir/list.txt") == Path("some/dir/list.txt")  # ordinary paths pass through


def test_load_targets_reads_a_shipped_list(tiny_tokenizer):
    targets = load_targets("package:malicious_targets/test_500.txt", tiny_tokenizer, causal=False)
    # The tiny tokenizer knows few words: every target it keeps or skips is counted, none lost.
    assert len(targets.texts) + len(targets.skipped) == 500


def test_recipes_name_no_file_outside_the_repository():
    for recipe in sorted((ROOT / "recipes").rglob("*.yaml")):
        settings = yaml.safe_load(recipe.read_text(encoding="utf-8")) or {}
        for key, value in settings.items():
            if isinstance(value, str) and ("/" in value or value.endswith((".txt", ".jsonl"))):
                assert not value.startswith(("..", "/")), f"{recipe.name}: {key}={value} lies outside the clone"
                if value.startswith("package:"):
                    assert resolve_data_path(value).is_file()

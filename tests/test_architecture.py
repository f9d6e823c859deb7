"""The package's layout: code depends downward only, one folder per method, no import cycle, small files, and a
public API at the top.

Imports are read from the source (every `import` statement, those inside functions included), so an import placed
in a function does not hide a cycle.
"""

import ast
import importlib
from pathlib import Path

import pytest

import hf_neuralconv

PACKAGE = Path(hf_neuralconv.__file__).parent
REPOSITORY = PACKAGE.parents[1]
# Lower layers never import higher ones; within a layer, only the same top-level folder. MMI decoding sits below the
# pipeline, whose mmi strategies run it, so methods above may use it (persona reranks with MMI-bidi). Serving (the
# batcher and the HTTP API) sits on the pipeline; the methods do not need it.
LAYERS = (
    ("models", "data", "metrics"),
    ("core",),
    ("mmi",),
    ("pipelines",),
    ("serving",),
    ("seq2seq", "persona", "negative_training", "reverse_generator"),
    ("cli", "__init__"),
)
LAYER_OF = {folder: level for level, folders in enumerate(LAYERS) for folder in folders}
MAX_LINES = 600


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str) -> set[str]:
    """The package modules `name` imports (relative or absolute, anywhere in the file), as names under the package."""
    path = MODULES[name]
    package = name.split(".") if path.name == "__init__.py" and name != "__init__" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            elif (node.module or "").startswith("hf_neuralconv"):
                target = node.module.removeprefix("hf_neuralconv").lstrip(".")
            else:
                continue
            for alias in node.names:  # `from .mmi import cli` imports the module mmi.cli
                candidate = f"{target}.{alias.name}" if target else alias.name
                found.add(candidate if candidate in MODULES else target or "__init__")
        elif isinstance(node, ast.Import):
            found |= {alias.name.removeprefix("hf_neuralconv").lstrip(".") or "__init__" for alias in node.names
                      if alias.name.startswith("hf_neuralconv")}
    return {module for module in found if module in MODULES and module != name}


GRAPH = {name: imported_modules(name) for name in MODULES}


def test_the_import_reader_sees_imports_inside_functions(tmp_path, monkeypatch):
    assert {"core.chat_format", "core.scoring"} <= GRAPH["pipelines.conversational"]
    assert "mmi.tuning" in GRAPH["mmi.cli"] and "models.lstm.modeling_lstm" in GRAPH["mmi.anti_lm"]
    probe = PACKAGE / "core" / "checks.py"  # a module read as if it imported upward from inside a function
    monkeypatch.setitem(MODULES, "core.checks", tmp_path / "checks.py")
    late_imports = ("\n\ndef late():\n    from ..persona import trainer\n    import hf_neuralconv.mmi.rerank\n"
                    "    return trainer\n")
    (tmp_path / "checks.py").write_text(probe.read_text() + late_imports)
    assert {"persona.trainer", "mmi.rerank"} <= imported_modules("core.checks")


def test_no_import_cycle():
    state, path, cycles = {}, [], []

    def visit(module):
        state[module] = "open"
        path.append(module)
        for imported in sorted(GRAPH[module]):
            if state.get(imported) == "open":
                cycles.append(path[path.index(imported):] + [imported])
            elif imported not in state:
                visit(imported)
        path.pop()
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)
    assert not cycles, [" -> ".join(cycle) for cycle in cycles]


def test_code_depends_downward_only():
    wrong = []
    for module, imports in GRAPH.items():
        folder = module.split(".")[0]
        for imported in imports:
            target = imported.split(".")[0]
            if target == folder:
                continue
            if LAYER_OF[target] >= LAYER_OF[folder] and folder != "__init__":
                wrong.append(f"{module} imports {imported}")
    assert not wrong, wrong


def test_the_core_imports_nothing_paper_specific():
    paper_specific = {"mmi", "pipelines", "seq2seq", "persona", "negative_training", "reverse_generator"}
    for module, imports in GRAPH.items():
        if module.startswith("core"):
            assert not {imported.split(".")[0] for imported in imports} & paper_specific, module


@pytest.mark.parametrize("folder", ["src", "benchmarks", "tests", "spaces", "scripts"])
def test_no_source_file_over_600_lines(folder):
    long = {str(path.relative_to(REPOSITORY)): length for path in (REPOSITORY / folder).rglob("*.py")
            if (length := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_each_method_has_its_folder_and_commands():
    for method in LAYERS[4]:
        assert (PACKAGE / method / "__init__.py").is_file() and (PACKAGE / method / "cli.py").is_file(), method
    assert (PACKAGE / "mmi" / "cli.py").is_file() and (PACKAGE / "pipelines" / "cli.py").is_file()


def test_every_public_name_imports_from_the_top():
    for name in hf_neuralconv.__all__:
        value = getattr(hf_neuralconv, name)
        assert value is not None, name
    # each name is the object its method folder defines, not a copy
    assert hf_neuralconv.NegativeTrainer is importlib.import_module("hf_neuralconv.negative_training").NegativeTrainer
    assert hf_neuralconv.mmi_bidi_generate is importlib.import_module("hf_neuralconv.mmi").mmi_bidi_generate
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        hf_neuralconv.not_a_name  # noqa: B018


def test_the_readme_lists_the_public_api():
    readme = (REPOSITORY / "README.md").read_text()
    missing = [name for name in hf_neuralconv.__all__ if f"`{name}`" not in readme]
    assert not missing, missing

"""Files shipped inside the package (`hf_neuralconv/resources/`), named by a package path.

He & Glass's (2020) malicious target lists ship with the package, so recipes and commands that read them run from
a clone or an installed wheel alike: `package:malicious_targets/test_500.txt` names
`hf_neuralconv/resources/malicious_targets/test_500.txt` wherever the package is installed.
"""

from importlib import resources
from pathlib import Path

PACKAGE_PREFIX = "package:"


def shipped_files(folder: str) -> list[str]:
    """The package paths of the files shipped in `resources/<folder>` (README excluded), sorted."""
    root = resources.files("hf_neuralconv") / "resources" / folder
    if not root.is_dir():
        return []
    return sorted(f"{PACKAGE_PREFIX}{folder}/{entry.name}" for entry in root.iterdir()
                  if entry.is_file() and entry.name != "README.md")


def resolve_data_path(value: str | Path) -> Path:
    """`value` as a file path: a `package:FOLDER/FILE` package path is looked up in the installed package's
    resources; anything else is an ordinary path, returned as it is (its reader reports a missing file)."""
    text = str(value)
    if not text.startswith(PACKAGE_PREFIX):
        return Path(value)
    relative = text[len(PACKAGE_PREFIX):]
    path = Path(str(resources.files("hf_neuralconv") / "resources" / relative))
    if not path.is_file():
        folder = relative.split("/")[0]
        known = shipped_files(folder)
        hint = f"shipped: {', '.join(known)}" if known else "the package ships package:malicious_targets/*.txt"
        raise FileNotFoundError(f"{text}: no such file in the package ({hint}).")
    return path

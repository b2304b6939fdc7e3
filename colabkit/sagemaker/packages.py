"""What the job installs before its cells run, and what the cells import.

A notebook written for Colab rarely installs what Colab ships: it just imports transformers,
datasets, sklearn or cv2. The job's image has none of those (or other versions), so
requirements.txt pins each one the cells import without installing, at the version the notebook
ran with: the kernel's own, when the export runs in the notebook; Colab's published list
(colab-packages.txt), when it runs from a terminal. The cells' own `!pip install` lines stay
where they are and run in the job as they ran on Colab (conditions, `-r file`, `--no-deps`, URLs
and order keep their meaning). The framework the image brings (torch on a PyTorch image) is not
pinned: the image is chosen to match it (images.py).
"""

from __future__ import annotations

import ast
import re
import shlex
import sys
from dataclasses import dataclass, field
from importlib import metadata
from importlib.resources import files

# Modules whose distribution has another name, where the environment can't say (a terminal export).
DISTRIBUTIONS = {
    "sklearn": "scikit-learn", "cv2": "opencv-python", "PIL": "pillow", "yaml": "pyyaml", "skimage": "scikit-image",
    "bs4": "beautifulsoup4", "mpl_toolkits": "matplotlib", "dateutil": "python-dateutil", "attr": "attrs",
    "jwt": "pyjwt", "Crypto": "pycryptodome", "dotenv": "python-dotenv", "fitz": "pymupdf", "git": "gitpython",
    "Levenshtein": "levenshtein", "umap": "umap-learn", "google.protobuf": "protobuf",
}
# Never pinned: colabkit comes as its own wheel, google.colab as the job's stand-in, and the cells
# run in the job's own IPython.
NOT_PINNED = frozenset({"colabkit", "google.colab", "IPython", "ipykernel"})
COLAB_LIST_DATE = "2026-08-19"  # of colab-packages.txt
PIP_OPTIONS_WITH_VALUE = {"-i", "--index-url", "--extra-index-url", "-f", "--find-links", "-c", "--constraint",
                          "-r", "--requirement", "--target", "-t", "--prefix", "--root", "--python-version",
                          "--platform", "--trusted-host", "-e", "--editable", "--src", "--upgrade-strategy"}


def normalize(name: str) -> str:
    """A distribution's name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Imported:
    module: str  # the top-level name imported (e.g. "sklearn")
    cell: int
    line: int


def imports(cells) -> list[Imported]:
    """Every top-level module the cells import (also inside functions and ifs), first use first."""
    found, seen = [], set()
    for cell in cells:
        for node in ast.walk(cell.tree) if cell.tree is not None else ():
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                key = _module_key(name)
                if key not in seen:
                    seen.add(key)
                    found.append(Imported(key, cell.number, cell.raw_line(node.lineno)))
    return found


def _module_key(name: str) -> str:
    """The name a module is installed under: its top level, or two levels in the `google`
    namespace (google.protobuf, google.colab) and three in google.cloud (google.cloud.storage)."""
    parts = name.split(".")
    if parts[0] != "google" or len(parts) == 1:
        return parts[0]
    return ".".join(parts[:3] if parts[1] == "cloud" and len(parts) > 2 else parts[:2])


def pip_installs(cells) -> set[str]:
    """The distributions the cells install themselves (`!pip install`, `%pip install`), normalized."""
    installed = set()
    for cell in cells:
        for node in ast.walk(cell.tree) if cell.tree is not None else ():
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args \
                    and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in node.args):
                words = _pip_words(node.func.attr, [a.value for a in node.args])
                installed |= {normalize(name) for name in _requirement_names(words)}
    return installed


def _pip_words(method: str, args: list[str]) -> list[str]:
    try:
        if method == "system":  # !pip install x, also after `cd x &&` or with `python -m`
            words = shlex.split(args[0], comments=True)
        elif method == "run_line_magic" and len(args) == 2 and args[0] == "pip":
            words = ["pip"] + shlex.split(args[1], comments=True)
        else:
            return []
    except ValueError:  # unbalanced quotes: not a command we can read
        return []
    for start, word in enumerate(words):
        if word in ("pip", "pip3") or word.endswith("/pip"):
            rest = words[start + 1:]
        elif word == "-m" and start + 1 < len(words) and words[start + 1] == "pip":
            rest = words[start + 2:]
        else:
            continue
        if rest[:1] == ["install"]:
            return rest[1:]
    return []


def _requirement_names(words: list[str]) -> list[str]:
    names, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word in PIP_OPTIONS_WITH_VALUE:
            skip = True
        elif not word.startswith(("-", "{", "$", ".", "/", "git+", "http")):
            match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", word)
            if match:
                names.append(match.group(0))
    return names


def colab_versions() -> dict[str, str]:
    """Colab's GPU runtime packages, normalized name -> version (colab-packages.txt, dated)."""
    versions = {}
    for line in files(__package__).joinpath("colab-packages.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, _, version = line.partition("==")
            versions[normalize(name)] = version.strip()
    return versions


FETCHES = re.compile(r"\b(git clone|wget|curl|gdown|unzip|tar |hf_hub_download|snapshot_download)")


def written_modules(cells) -> set[str]:
    """Modules the cells write themselves (`%%writefile model_builder.py`)."""
    names = set()
    for cell in cells:
        first = cell.source.lstrip().split("\n", 1)[0].split()
        if first[:1] == ["%%writefile"] and len(first) > 1 and first[-1].endswith(".py"):
            parts = first[-1].strip("./").split("/")
            names |= {parts[-1][:-3], parts[0].removesuffix(".py")}  # the module, and its package folder
    return names


def fetching_cells(cells) -> list[int]:
    """The cells that clone, download or unpack code, where a module may come from."""
    return [cell.number for cell in cells if FETCHES.search(cell.source)]


@dataclass
class Requirements:
    pins: list[str] = field(default_factory=list)  # "transformers==5.15.0", for requirements.txt
    notes: list[str] = field(default_factory=list)  # what the person should know


def _public(version: str) -> str:
    """Without the local label: torch's "2.11.0+cu128" isn't on PyPI, "2.11.0" is."""
    return version.split("+")[0]


def requirements(cells, framework: frozenset[str], in_kernel: bool) -> Requirements:
    """The pins for what the cells import and don't install. `framework`: the image's own modules
    (not pinned). `in_kernel`: versions from this kernel (else Colab's published list)."""
    result = Requirements()
    installed_by_cells = pip_installs(cells)
    local = written_modules(cells)
    fetching = fetching_cells(cells)
    distributions = metadata.packages_distributions()
    colab = None if in_kernel else colab_versions()
    for imported in imports(cells):
        module = imported.module
        if module in sys.stdlib_module_names or module in NOT_PINNED or module in framework or module in local \
                or module == "__future__":
            continue
        names = ([DISTRIBUTIONS.get(module, module.replace(".", "-"))] if "." in module
                 else distributions.get(module) or [DISTRIBUTIONS.get(module, module)])
        if any(normalize(name) in installed_by_cells for name in names):
            continue
        pin = _pin(names, colab)
        if pin is None:
            where = "installed in this kernel" if in_kernel else "in Colab's package list"
            fails = "the job fails there unless its image has it: install it in a cell (!pip install ...)."
            if fetching:
                fails = f"It may come from what cell {', '.join(map(str, fetching))} clones or downloads; if not, {fails}"
            else:
                fails = fails[0].upper() + fails[1:]
            result.notes.append(f"cell {imported.cell}, line {imported.line} imports {module}, which is neither {where} "
                                f"nor installed by a cell's pip install. {fails}")
        elif pin not in result.pins:
            result.pins.append(pin)
    return result


def _pin(names: list[str], colab: dict[str, str] | None) -> str | None:
    for name in names:
        if colab is None:
            try:
                return f"{name}=={_public(metadata.version(name))}"
            except metadata.PackageNotFoundError:
                continue
        elif normalize(name) in colab:
            return f"{name}=={_public(colab[normalize(name)])}"
    return None

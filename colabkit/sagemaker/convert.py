"""Notebook cells -> a SageMaker script-mode source folder.

    entry.py            runs cells.json in order under IPython (sagemaker_program)
    cells.json          the cells, minus the package installs requirements.txt already makes
    requirements.txt    from `!pip install` / `%pip install` lines (versions kept), and colabkit
                        itself as the wheel beside it
    colabkit-*.whl      this colabkit, built from the installed package (never from PyPI by name)

Cell source is read through IPython's own input transformers, then Python's ast: never regexes.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from .capture import Cell
from . import wheel

# pip install options that take a value, so the value is not taken for a package.
PIP_OPTIONS_WITH_VALUE = {"-i", "--index-url", "--extra-index-url", "-f", "--find-links", "-c", "--constraint",
                          "--target", "-t", "--prefix", "--root", "--python-version", "--platform", "--trusted-host"}
ENTRY = "entry.py"


@dataclass(frozen=True)
class SourceFolder:
    path: Path
    requirements: tuple[str, ...]
    cells: tuple[Cell, ...]


def _pip_install_args(call: ast.Call) -> list[str] | None:
    """The arguments of a pip install, if this call is `!pip install ...` or `%pip install ...`."""
    func = call.func
    if not (isinstance(func, ast.Attribute) and call.args and all(isinstance(a, ast.Constant) for a in call.args)):
        return None
    if func.attr == "system":  # !pip install x  ->  get_ipython().system('pip install x')
        words = shlex.split(call.args[0].value)
        for prefix in (["pip", "install"], ["pip3", "install"], ["python", "-m", "pip", "install"],
                       ["python3", "-m", "pip", "install"]):
            if words[:len(prefix)] == prefix:
                return words[len(prefix):]
    if func.attr == "run_line_magic" and len(call.args) == 2 and call.args[0].value == "pip":
        words = shlex.split(call.args[1].value)  # %pip install x
        if words[:1] == ["install"]:
            return words[1:]
    return None


def _packages(args: list[str]) -> list[str]:
    packages, skip = [], False
    for word in args:
        if skip:
            skip = False
        elif word in PIP_OPTIONS_WITH_VALUE:
            skip = True
        elif not word.startswith("-") and not word.startswith("{") and not word.startswith("$"):
            packages.append(word)
    return packages


def _is_drive_mount(call: ast.Call) -> bool:
    """drive.mount(...) or google.colab.drive.mount(...)."""
    func = call.func
    return (isinstance(func, ast.Attribute) and func.attr == "mount" and
            ast.unparse(func.value) in ("drive", "google.colab.drive"))


def _is_export(call: ast.Call) -> bool:
    """%to_sagemaker ... or colabkit.to_sagemaker(...): an export must not run inside the job."""
    func = call.func
    if isinstance(func, ast.Attribute) and func.attr == "run_line_magic" and call.args:
        first = call.args[0]
        return isinstance(first, ast.Constant) and first.value == "to_sagemaker"
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return name == "to_sagemaker"


def _imports_colab(node: ast.stmt) -> bool:
    if isinstance(node, ast.ImportFrom):
        return (node.module or "").startswith("google.colab")
    return isinstance(node, ast.Import) and all(a.name.startswith("google.colab") for a in node.names)


def split_installs(cell: Cell) -> tuple[list[str], Cell]:
    """The packages a cell installs, and the cell as the job runs it: those lines commented out
    (requirements.txt installs them first), Colab's Drive imports dropped, `drive.mount(...)`
    replaced by colabkit's mount (the job's Drive files come in as an input channel), and any
    earlier export (`%to_sagemaker ... --local`) left out."""
    tree = cell.tree
    if tree is None:
        return [], cell
    packages, edits = [], {}  # first line -> (last line, text put before the first; the rest commented out)
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            args = _pip_install_args(node.value)
            if args is not None:
                packages += _packages(args)
                edits[node.lineno] = (node.end_lineno, "# (installed from requirements.txt) ")
            elif _is_export(node.value):
                edits[node.lineno] = (node.end_lineno, "pass  # colabkit: the export does not run in the job, was ")
            elif _is_drive_mount(node.value):
                edits[node.lineno] = (node.end_lineno, "import colabkit; colabkit.mount()  # colabkit: was ")
        elif isinstance(node, (ast.Import, ast.ImportFrom)) and _imports_colab(node):
            edits[node.lineno] = (node.end_lineno, "pass  # colabkit: Colab only, was ")
    source_lines = cell.source.splitlines()
    if not edits or len(cell.python.splitlines()) != len(source_lines):
        return packages, cell  # a cell magic wraps the whole cell: leave it as it is
    kept = list(source_lines)
    for first, (last, prefix) in edits.items():
        line = kept[first - 1]
        indent = line[:len(line) - len(line.lstrip())]
        kept[first - 1] = indent + prefix + line.lstrip()
        for number in range(first + 1, last + 1):
            kept[number - 1] = "# " + kept[number - 1]
    return packages, Cell(cell.number, "\n".join(kept))


def drive_paths(cells, mount_point: str) -> list[Path]:
    """The files and folders under the Drive mount that the cells name in string literals."""
    root, found = Path(mount_point), []
    for cell in cells:
        for node in ast.walk(cell.tree) if cell.tree is not None else ():
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(f"{root}/"):
                path = Path(node.value)
                if path.exists() and path not in found:
                    found.append(path)
    return [path for path in found if not any(other in path.parents for other in found)]


def _name(requirement: str) -> str:
    """The project name at the start of a PEP 508 requirement ("torch==2.1" -> "torch")."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    return match.group(0).lower() if match else ""


def convert(cells: list[Cell] | tuple[Cell, ...], folder: Path) -> SourceFolder:
    """Write the source folder for these cells into `folder` (created, emptied first)."""
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    requirements, job_cells = [], []
    for cell in cells:
        packages, job_cell = split_installs(cell)
        requirements += [p for p in packages if p not in requirements]
        job_cells.append(job_cell)
    built = wheel.build(folder)
    # `pip install colabkit` in a notebook would fetch the unrelated PyPI package: the wheel replaces it.
    lines = [p for p in requirements if _name(p) != "colabkit"]
    (folder / "requirements.txt").write_text("\n".join(lines + [f"./{built.name}"]) + "\n")
    (folder / "cells.json").write_text(json.dumps([{"number": c.number, "source": c.source} for c in job_cells],
                                                  indent=1))
    shutil.copyfile(Path(__file__).with_name("entry.py"), folder / ENTRY)
    return SourceFolder(folder, tuple(lines), tuple(job_cells))

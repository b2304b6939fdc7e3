"""Notebook cells -> a SageMaker script-mode source folder.

    entry.py            runs cells.json in the job (runner.py does the work)
    cells.json          the cells exactly as the notebook has them: `!pip install` lines included,
                        which run in the job where and as they ran on Colab
    requirements.txt    what the cells import and don't install, pinned (packages.py), and colabkit
                        itself as the wheel beside it
    colabkit-*.whl      this colabkit, built from the installed package (never from PyPI by name)

Nothing in the cells is rewritten: google.colab, input(), an earlier `%to_sagemaker` and `!`
commands behave in the job as runner.py says, so a cell runs the same wherever its text came from.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from . import packages, wheel
from .capture import Cell

ENTRY = "entry.py"


@dataclass(frozen=True)
class SourceFolder:
    path: Path
    requirements: tuple[str, ...]  # the pins, without the wheel
    cells: tuple[Cell, ...]


def convert(cells: list[Cell] | tuple[Cell, ...], folder: Path, pins: list[str]) -> SourceFolder:
    """Write the source folder for these cells into `folder` (created, emptied first)."""
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    built = wheel.build(folder)
    # `pip install colabkit` in a notebook would fetch the unrelated PyPI package: the wheel comes first.
    lines = [p for p in pins if packages.normalize(p.split("==")[0]) != "colabkit"]
    (folder / "requirements.txt").write_text("\n".join([f"./{built.name}"] + lines) + "\n")
    (folder / "cells.json").write_text(json.dumps([{"number": c.number, "source": c.source} for c in cells], indent=1))
    shutil.copyfile(Path(__file__).with_name(ENTRY), folder / ENTRY)
    return SourceFolder(folder, tuple(lines), tuple(cells))

"""What a job's cells wrote comes back to the notebook, by one stated rule.

In the job (runner.py): every file the cells wrote under the working folder (/content) is copied
into the model folder under `content/`, with its path relative to /content, so SageMaker uploads
it in model.tar.gz. Left out: links (the Drive files the job was given), caches and version
control (see SKIP), and whatever would pass LIMIT in all, the largest first, each named. Back at
the notebook (job.fetch, local.run): each file lands at the same relative path in the notebook's
folder (on Colab, /content), so `model.pt` is where the notebook expects it; a file already there
with other bytes is left alone, and the job's copy stays in the job's folder, said.
"""

from __future__ import annotations

import filecmp
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..units import format_bytes

CONTENT = "content"  # under the model folder: what the cells wrote under /content
LIMIT = 5 << 30
SKIP = frozenset({".git", "__pycache__", ".ipynb_checkpoints", ".cache", ".config", ".ipython", ".local",
                  "site-packages", "sample_data"})
RULE = (f"what comes back: every file the cells write under /content (the working folder), at the same "
        f"path beside the notebook, up to {format_bytes(LIMIT)} in all; not caches or version control "
        f"({', '.join(sorted(SKIP))}), not the Drive files the job was given")


@dataclass
class Collected:
    kept: list[tuple[str, int]] = field(default_factory=list)  # relative path, bytes
    left_out: list[tuple[str, int, str]] = field(default_factory=list)  # relative path, bytes, why


def _written(content: Path):
    for folder, subfolders, files in os.walk(content):  # links to folders (Drive) are not entered
        subfolders[:] = [name for name in subfolders if name not in SKIP]
        for name in files:
            path = Path(folder) / name
            if not path.is_symlink():
                yield path


def collect(content: Path, into: Path, limit: int = LIMIT) -> Collected:
    """Inside the job: copy what the cells wrote under `content` into `into`, by the rule above."""
    found = sorted(((p, p.stat().st_size) for p in _written(content)), key=lambda item: item[1])
    collected, total = Collected(), 0
    for path, size in found:
        relative = path.relative_to(content).as_posix()
        if total + size > limit:
            collected.left_out.append((relative, size, f"over the {format_bytes(limit)} limit"))
            continue
        target = into / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        total += size
        collected.kept.append((relative, size))
    return collected


def describe_collected(collected: Collected) -> str:
    total = sum(size for _, size in collected.kept)
    lines = [f"[colabkit] results: {len(collected.kept)} file(s), {format_bytes(total)}, come back with the job"]
    lines += [f"[colabkit] left out: {path} ({format_bytes(size)}): {why}" for path, size, why in collected.left_out]
    return "\n".join(lines)


def place(model_folder: Path, notebook_folder: Path) -> tuple[list[Path], list[tuple[Path, Path]]]:
    """Back at the notebook: put the job's files at their paths in `notebook_folder`. Returns the
    files placed, and (the job's copy, the notebook's different file) for each left alone."""
    source = Path(model_folder) / CONTENT
    placed, kept_apart = [], []
    if not source.is_dir():
        return placed, kept_apart
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        target = Path(notebook_folder) / path.relative_to(source)
        if target.exists() and not (target.is_file() and filecmp.cmp(path, target, shallow=False)):
            kept_apart.append((path, target))
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        placed.append(target)
    return placed, kept_apart


def describe_placed(placed: list[Path], kept_apart: list[tuple[Path, Path]], notebook_folder: Path) -> list[str]:
    lines = []
    if placed:
        shown = ", ".join(str(p.relative_to(notebook_folder)) for p in placed[:10])
        more = f" and {len(placed) - 10} more" if len(placed) > 10 else ""
        lines.append(f"[colabkit] the job's files are in {notebook_folder}: {shown}{more}")
    for ours, theirs in kept_apart:
        lines.append(f"[colabkit] {theirs} is different here, so it was left as it is; the job's version is {ours}")
    return lines

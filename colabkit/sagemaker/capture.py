"""The notebook's code cells, in order, up to the cell that called the export.

Where they come from, best first: on Colab the notebook itself (`get_ipynb` from the browser);
in Jupyter the .ipynb file the kernel was started for (JPY_SESSION_NAME, read with nbformat);
elsewhere the session's input history, which holds what actually ran.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ColabkitError


@dataclass(frozen=True)
class Cell:
    number: int  # 1-based, as a person counts the notebook's code cells
    source: str


@dataclass(frozen=True)
class Captured:
    cells: tuple[Cell, ...]
    origin: str  # "colab", the .ipynb path, or "history"
    name: str  # the notebook's name, for the job's name and tags


def _colab_notebook() -> dict | None:
    from .. import platform

    if platform.detect_name() != platform.COLAB:
        return None
    from google.colab import _message

    reply = _message.blocking_request("get_ipynb", request="", timeout_sec=10)
    return reply.get("ipynb") if isinstance(reply, dict) else None


def _notebook_file() -> Path | None:
    session = os.environ.get("JPY_SESSION_NAME")
    if not session:
        return None
    for candidate in (Path(session), Path.cwd() / Path(session).name):
        if candidate.suffix == ".ipynb" and candidate.is_file():
            return candidate
    return None


def _code_cells(notebook: dict) -> list[Cell]:
    cells, number = [], 0
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        number += 1
        source = cell.get("source", "")
        cells.append(Cell(number, "".join(source) if isinstance(source, list) else source))
    return cells


def _upto(cells: list[Cell], calling_source: str | None) -> list[Cell]:
    """The cells before the one that called the export (matched by its text)."""
    if calling_source is None:
        return cells
    wanted = calling_source.strip()
    for index in range(len(cells) - 1, -1, -1):
        if cells[index].source.strip() == wanted:
            return cells[:index]
    raise ColabkitError(
        "The cell that called the export is not in the saved notebook (it has changes that are not "
        "saved yet). Save the notebook (Ctrl+S) and run the export again, or use --all.")


def capture(shell=None, calling_source: str | None = None, all_cells: bool = False) -> Captured:
    """The code cells to export. `calling_source` is the text of the cell running the export."""
    upto = None if all_cells else calling_source
    notebook = _colab_notebook()
    if notebook is not None:
        name = notebook.get("metadata", {}).get("colab", {}).get("name", "notebook.ipynb")
        return Captured(tuple(_upto(_code_cells(notebook), upto)), "colab", Path(name).stem)
    path = _notebook_file()
    if path is not None:
        import nbformat  # only when a notebook file is read

        notebook = nbformat.read(path, as_version=4)
        return Captured(tuple(_upto(_code_cells(notebook), upto)), str(path), path.stem)
    if shell is None:
        raise ColabkitError("There is no notebook to export here: run the export from a notebook, or "
                            "give the .ipynb file to `colabkit export NOTEBOOK.ipynb`.")
    history = [source for source in shell.user_ns.get("In", [])[1:] if source.strip()]
    if not all_cells and history:
        history = history[:-1]  # the last input is the cell running the export
    cells = tuple(Cell(i + 1, source) for i, source in enumerate(history))
    return Captured(cells, "history", "session")


def read_notebook(path: str | os.PathLike) -> Captured:
    """Every code cell of an .ipynb file (the terminal's `colabkit export NOTEBOOK.ipynb`)."""
    import nbformat

    path = Path(path)
    try:
        notebook = nbformat.read(path, as_version=4)
    except FileNotFoundError:
        raise ColabkitError(f"There is no notebook at {path}.") from None
    except Exception as exc:  # not JSON, not a notebook
        raise ColabkitError(f"{path} is not a notebook nbformat can read ({exc}).") from None
    return Captured(tuple(_code_cells(notebook)), str(path), path.stem)

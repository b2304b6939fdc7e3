"""The notebook's code cells, in order, up to the cell that called the export.

Where they come from, best first: on Colab the notebook itself (`get_ipynb` from the browser);
in Jupyter the .ipynb file the kernel was started for (JupyterLab's JPY_SESSION_NAME, VS Code's
`__vsc_ipynb_file__`); elsewhere the session's input history, which holds what actually ran.
The calling cell is matched by its raw text as the person typed it (IPython's `input_hist_raw`),
never by IPython's transformed code, which no saved notebook contains.
"""

from __future__ import annotations

import ast
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..errors import ColabkitError


# Cell magics whose body is the notebook's own code: it is read as code (for installs, imports and
# Colab calls), where the body of %%bash or %%writefile is not.
CODE_CELL_MAGICS = ("%%capture", "%%time", "%%timeit")


@dataclass(frozen=True)
class Cell:
    number: int  # 1-based, as a person counts the notebook's code cells
    source: str

    @cached_property
    def _code(self) -> tuple[str, int]:
        """The code to read, and how many lines of the cell come before it."""
        blank = len(self.source) - len(self.source.lstrip("\n"))  # empty lines above the magic
        first, _, body = self.source[blank:].partition("\n")
        if first.split()[:1] and first.split()[0] in CODE_CELL_MAGICS:
            return body, blank + 1
        return self.source, 0

    @cached_property
    def python(self) -> str:
        """The cell's code as IPython runs it: magics and `!` lines turned into Python calls."""
        from IPython.core.inputtransformer2 import TransformerManager

        return TransformerManager().transform_cell(self._code[0])

    def raw_line(self, line: int) -> int:
        """The line of the cell as the person sees it, for a line of its transformed Python (IPython
        joins a `!command \\` and its continuation lines into one)."""
        code, before = self._code
        if len(self.python.splitlines()) == len(code.splitlines()):
            return line + before
        raw, starts, index = code.splitlines(), [], 0
        while index < len(raw):
            starts.append(index + 1)
            if raw[index].lstrip().startswith(("!", "%")) and not raw[index].lstrip().startswith("%%"):
                while raw[index].rstrip().endswith("\\") and index + 1 < len(raw):
                    index += 1
            index += 1
        known = len(starts) == len(self.python.splitlines()) and 0 < line <= len(starts)
        return (starts[line - 1] if known else line) + before

    @cached_property
    def tree(self) -> ast.Module | None:
        """The cell's Python, parsed once for every check and conversion; None when it doesn't parse."""
        try:
            return ast.parse(self.python)
        except SyntaxError:
            return None


@dataclass(frozen=True)
class Captured:
    cells: tuple[Cell, ...]
    origin: str  # "colab", the .ipynb path, or "history"
    name: str  # the notebook's name, as its storage is named (notebook.identify)
    left_out: tuple[str, ...] = ()  # history only: the cells that raised, as "In[N] (TypeError)"


def calling_cell(shell) -> str | None:
    """The raw text of the cell running now, as the person typed it."""
    history = getattr(getattr(shell, "history_manager", None), "input_hist_raw", None)
    return history[-1] if history else None


def _code_cells(notebook: dict) -> list[Cell]:
    """The code cells of an nbformat v4 notebook (or v3's first worksheet)."""
    cells = notebook.get("cells")
    if cells is None:  # nbformat 3: cells in worksheets, code in "input"
        cells = [dict(c, source=c.get("input", "")) for w in notebook.get("worksheets", []) for c in w.get("cells", [])]
    found = []
    for cell in cells:
        if isinstance(cell, dict) and cell.get("cell_type") == "code":
            source = cell.get("source", "")
            found.append(Cell(len(found) + 1, "".join(source) if isinstance(source, list) else str(source)))
    return found


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


def _history(shell, calling_source: str | None, failed: dict[int, str]) -> tuple[list[Cell], tuple[str, ...]]:
    """What ran in this session, in order: not the cells that raised (the person moved on from
    them; named in `left_out`), nor the cell running the export. A cell stopped by an interrupt
    stays: the training it was doing is what the job goes on with."""
    raw = list(getattr(shell.history_manager, "input_hist_raw", []))
    last = len(raw) - 1
    ran = [source for count, source in enumerate(raw) if count and count not in failed and source.strip()
           and not (count == last and calling_source is not None and source == calling_source)]
    left_out = tuple(f"In[{count}] ({error})" for count, error in sorted(failed.items()) if count < len(raw))
    return [Cell(i + 1, source) for i, source in enumerate(ran)], left_out


def capture(runtime, calling_source: str | None = None, all_cells: bool = False) -> Captured:
    """The code cells to export from the kernel `runtime` runs. `calling_source` is the raw text
    of the cell running the export (None: every cell)."""
    from ..notebook import colab_ipynb

    upto = None if all_cells else calling_source
    name = runtime.notebook.name
    notebook = colab_ipynb()
    if notebook is not None:
        return Captured(tuple(_upto(_code_cells(notebook), upto)), "colab", name)
    path = runtime.notebook.path
    if path is not None and path.suffix == ".ipynb" and path.is_file():
        return Captured(tuple(_upto(_code_cells(_read_json(path)), upto)), str(path), name)
    if runtime.shell is None:
        raise ColabkitError("There is no notebook to export here: run the export from a notebook, or "
                            "give the .ipynb file to `colabkit export NOTEBOOK.ipynb`.")
    cells, left_out = _history(runtime.shell, upto, runtime.failed_cells)
    return Captured(tuple(cells), "history", name, left_out)


def _read_json(path: Path) -> dict:
    try:
        notebook = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ColabkitError(f"There is no notebook at {path}.") from None
    except (OSError, ValueError) as exc:  # not JSON, not readable
        raise ColabkitError(f"{path} is not a notebook colabkit can read ({exc}).") from None
    if not isinstance(notebook, dict) or not ("cells" in notebook or "worksheets" in notebook):
        raise ColabkitError(f"{path} is not a notebook colabkit can read (no cells in it).")
    return notebook


def read_notebook(path: str | os.PathLike) -> Captured:
    """Every code cell of an .ipynb file (the terminal's `colabkit export NOTEBOOK.ipynb`)."""
    from ..notebook import from_file

    return Captured(tuple(_code_cells(_read_json(Path(path)))), str(path), from_file(path).name)

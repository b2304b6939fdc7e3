"""Which notebook this is: the name and folder that its storage, checkpoints and exports are kept by.

Two notebooks in one folder must never share checkpoints (a second notebook once resumed the
first one's run and finished green on the wrong task), so everything colabkit keeps is filed
under the notebook's name. Where the name comes from, first that answers:

1. `COLABKIT_NOTEBOOK`, the user's own word;
2. on Colab, the notebook's metadata, asked from the browser (`get_ipynb`);
3. JupyterLab / Notebook 7 / Jupyter Server: `JPY_SESSION_NAME`, the notebook's path;
4. VS Code: the `__vsc_ipynb_file__` it puts in the kernel's namespace;
5. a script: its file name; terminal IPython: "ipython";
6. a kernel whose frontend says nothing (nbclient, papermill): "notebook", said loudly where it
   matters, since every such notebook in the folder then shares one name.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from . import settings

UNNAMED = "notebook"


@dataclass(frozen=True)
class Notebook:
    name: str  # folder- and job-safe: letters, digits, '.', '_' and '-'
    path: Path | None  # the .ipynb (or script) file, when known
    folder: Path  # where its local storage goes: beside the notebook
    source: str  # how the name was found: "COLABKIT_NOTEBOOK", "colab", "JPY_SESSION_NAME", ...

    @property
    def named(self) -> bool:
        return self.source != "unnamed"


def safe_name(text: str) -> str:
    stem = Path(text).stem if text.endswith((".ipynb", ".py")) else Path(text).name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or UNNAMED


def from_file(path) -> Notebook:
    """A notebook named by its .ipynb file (`colabkit export NOTEBOOK.ipynb`): storage beside it."""
    path = Path(path).resolve()
    return Notebook(safe_name(path.name), path, path.parent, "file")


def colab_ipynb(timeout: float = 10.0) -> dict | None:
    """The notebook as Colab's browser holds it now (cells included), or None off Colab or without an
    answer. The one place colabkit asks the frontend for it."""
    from . import platform

    if platform.detect_name() != platform.COLAB:
        return None
    try:
        from google.colab import _message

        reply = _message.blocking_request("get_ipynb", request="", timeout_sec=timeout)
    except Exception:  # no frontend attached (a background execution), or a timeout
        return None
    notebook = reply.get("ipynb") if isinstance(reply, dict) else None
    return notebook if isinstance(notebook, dict) else None


def _session_file(value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else Path.cwd() / path.name


def identify(shell, environ=None) -> Notebook:
    """The notebook that `shell` (the IPython shell, or None in plain Python) runs, found as the
    module docstring says."""
    from . import platform

    env = os.environ if environ is None else environ
    cwd = Path.cwd()
    given = settings.get("COLABKIT_NOTEBOOK", env)
    if given:
        return Notebook(safe_name(given), None, cwd, "COLABKIT_NOTEBOOK")
    if platform.detect_name(env) == platform.COLAB:
        name = ((colab_ipynb(5.0) or {}).get("metadata", {}).get("colab", {}) or {}).get("name")
        if name:
            return Notebook(safe_name(name), None, cwd, "colab")
    if env.get("JPY_SESSION_NAME"):
        path = _session_file(env["JPY_SESSION_NAME"])
        return Notebook(safe_name(path.name), path, path.parent if path.parent.is_dir() else cwd, "JPY_SESSION_NAME")
    vscode = (getattr(shell, "user_ns", None) or {}).get("__vsc_ipynb_file__")
    if vscode:
        path = Path(vscode)
        return Notebook(safe_name(path.name), path, path.parent, "VS Code")
    if shell is None:
        script = getattr(sys.modules.get("__main__"), "__file__", None)
        if script:
            path = Path(script).resolve()
            return Notebook(safe_name(path.name), path, path.parent, "script")
    if platform.kind_of_shell(shell) == platform.TERMINAL:
        return Notebook("ipython", None, cwd, "terminal")
    return Notebook(UNNAMED, None, cwd, "unnamed")


def unnamed_note(notebook: Notebook, folder: Path) -> str | None:
    """What to say when this notebook's files are kept under the shared unnamed name."""
    if notebook.named:
        return None
    return (f"this notebook has no name colabkit can read (its frontend, such as nbclient or papermill, doesn't "
            f"say it), so its files go to {folder}, shared with every other unnamed notebook in this folder. "
            "Name it to keep them apart: %env COLABKIT_NOTEBOOK=my-run")

"""Capturing a notebook's cells for export (the secret scanner: test_sagemaker_secrets.py)."""

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from colabkit.errors import ColabkitError
from colabkit.runtime import Runtime
from colabkit.sagemaker.capture import calling_cell, capture, read_notebook

CELLS = ["!pip install -q timm==0.9.16", "import torch\nmodel = torch.nn.Linear(2, 2)", "%checkpoint every 15m model",
         "%to_sagemaker ml.g5.xlarge"]


def notebook():
    nb = new_notebook(cells=[new_markdown_cell("# title")] + [new_code_cell(s) for s in CELLS])
    nb.metadata["colab"] = {"name": "My Run.ipynb"}
    return nb


def test_read_a_notebook_file(tmp_path):
    nbformat.write(notebook(), tmp_path / "train.ipynb")
    got = read_notebook(tmp_path / "train.ipynb")
    assert [c.source for c in got.cells] == CELLS and [c.number for c in got.cells] == [1, 2, 3, 4]
    assert got.name == "train"
    with pytest.raises(ColabkitError, match="no notebook at"):
        read_notebook(tmp_path / "missing.ipynb")
    (tmp_path / "bad.ipynb").write_text("{not json")
    with pytest.raises(ColabkitError, match="not a notebook"):
        read_notebook(tmp_path / "bad.ipynb")


def test_on_colab_the_cells_come_from_the_browser_up_to_the_calling_cell(fake_colab):
    from google.colab import _message

    _message.FRONTEND["get_ipynb"] = lambda request: {"ipynb": notebook()}
    got = capture(Runtime(), calling_source="%to_sagemaker ml.g5.xlarge\n")
    assert got.origin == "colab" and got.name == "My-Run" and [c.number for c in got.cells] == [1, 2, 3]
    assert [c.number for c in capture(Runtime(), calling_source=CELLS[3], all_cells=True).cells] == [1, 2, 3, 4]
    assert ("get_ipynb", "") in _message.SENT
    with pytest.raises(ColabkitError, match="not saved yet"):
        capture(Runtime(), calling_source="%to_sagemaker ml.p4d.24xlarge")


def test_in_jupyter_the_cells_come_from_the_notebook_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    nbformat.write(notebook(), tmp_path / "train.ipynb")
    monkeypatch.setenv("JPY_SESSION_NAME", "projects/x/train.ipynb")  # relative to the server's root
    got = capture(Runtime(), calling_source=CELLS[3])
    assert got.origin.endswith("train.ipynb") and [c.source for c in got.cells] == CELLS[:3]
    assert got.name == "train"


def test_elsewhere_the_session_history(shell, monkeypatch):
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    for source in ("a = 1", "b = a + 1", "export_here = True"):
        shell.run_cell(source, store_history=True)  # as a kernel runs every cell
    got = capture(Runtime(shell), calling_cell(shell))
    assert got.origin == "history" and [c.source.strip() for c in got.cells][-2:] == ["a = 1", "b = a + 1"]


def test_history_leaves_out_the_cells_that_raised(shell, monkeypatch):
    """The person moved on from a cell that failed: the job must not fail there."""
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    from colabkit import runtime

    for source in ("a = 1", "b = a / 0", "b = a + 1", "%to_sagemaker ml.m5.large --dry-run"):
        shell.run_cell(source, store_history=True)
    got = capture(runtime.current(), "%to_sagemaker ml.m5.large --dry-run")
    assert [c.source for c in got.cells][-2:] == ["a = 1", "b = a + 1"]
    count = shell.execution_count - 3  # the cell that raised
    assert f"In[{count}] (ZeroDivisionError)" in got.left_out


def test_history_keeps_a_cell_stopped_by_an_interrupt(shell, monkeypatch):
    """Training interrupted to move it to a job is what the job must run: left out, the job would
    do nothing and end green."""
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    from colabkit import runtime

    for source in ("a = 1", "for step in range(10):\n    a += 1\n    if step == 2:\n        raise KeyboardInterrupt"):
        shell.run_cell(source, store_history=True)
    got = capture(runtime.current(), None)
    assert got.cells[-1].source.startswith("for step in range(10)")
    assert not any("KeyboardInterrupt" in note for note in got.left_out)


def test_two_exports_in_the_same_second_get_two_names():
    from colabkit.sagemaker import validate

    names = {validate.job_name_for("My Notebook", 1_800_000_000.0) for _ in range(20)}
    assert len(names) == 20 and all(validate.job_name(n) == n for n in names)
    assert all(n.startswith("colabkit-my-notebook-20270115-") for n in names)

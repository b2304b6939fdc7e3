"""The exported source folder: requirements, cells, the colabkit wheel, and entry.py running them."""

import json
import subprocess
import sys
import zipfile

from IPython.core.inputtransformer2 import TransformerManager

from colabkit import __version__
from colabkit.sagemaker.capture import Cell
from colabkit.sagemaker.convert import convert, split_installs


def test_installs_become_requirements_and_leave_the_cells():
    packages, cell = split_installs(Cell(1, "!pip install -q timm==0.9.16 'numpy<2' --index-url https://x/simple\n"
                                            "%pip install -U transformers\nimport timm\n!ls -la"))
    assert packages == ["timm==0.9.16", "numpy<2", "transformers"]
    assert cell.source.splitlines() == [
        "# (installed from requirements.txt) !pip install -q timm==0.9.16 'numpy<2' --index-url https://x/simple",
        "# (installed from requirements.txt) %pip install -U transformers", "import timm", "!ls -la"]
    packages, cell = split_installs(Cell(2, "%%capture\n!pip install foo"))
    assert packages == [] and cell.source == "%%capture\n!pip install foo"  # a cell magic runs as is


def test_source_folder(tmp_path):
    cells = [Cell(1, "!pip install colabkit einops==0.8.0"), Cell(2, "x = 1"), Cell(3, "%pip install einops==0.8.0")]
    out = convert(cells, tmp_path / "source")
    names = sorted(p.name for p in out.path.iterdir())
    assert names == ["cells.json", "colabkit-%s-py3-none-any.whl" % __version__, "entry.py", "requirements.txt"]
    assert (out.path / "requirements.txt").read_text().splitlines() == [
        "einops==0.8.0", f"./colabkit-{__version__}-py3-none-any.whl"]  # never `colabkit` from PyPI
    saved = json.loads((out.path / "cells.json").read_text())
    assert [c["number"] for c in saved] == [1, 2, 3] and saved[1]["source"] == "x = 1"


def test_the_wheel_installs_offline_and_is_this_colabkit(tmp_path):
    out = convert([Cell(1, "x = 1")], tmp_path / "source")
    wheel = next(out.path.glob("*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "colabkit/checkpoint/store.py" in names and "colabkit/views/served_panel.html" in names
    assert not [n for n in names if "__pycache__" in n]
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target",
                    str(target), str(wheel)], check=True)
    shown = subprocess.run([sys.executable, "-c", "import colabkit, sys; print(colabkit.__version__, colabkit.__file__)"],
                           env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                           check=True, cwd=tmp_path).stdout.split()
    assert shown[0] == __version__ and shown[1].startswith(str(target))


def test_entry_runs_the_cells_with_magics_and_names_the_failing_cell(tmp_path):
    cells = [Cell(1, "%load_ext colabkit\nvalues = [1, 2]"), Cell(2, "files = !echo hello\nprint(files[0], sum(values))"),
             Cell(3, "print('before')\n1 / 0"), Cell(4, "print('never')")]
    out = convert(cells, tmp_path / "source")
    done = subprocess.run([sys.executable, "entry.py"], cwd=out.path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "hello 3" in done.stdout and "before" in done.stdout and "never" not in done.stdout
    assert "cell 3 failed with ZeroDivisionError" in done.stderr and "--- cell 3 ---\nprint('before')\n1 / 0" in done.stderr
    ok = convert(cells[:2], tmp_path / "ok")
    assert subprocess.run([sys.executable, "entry.py"], cwd=ok.path, capture_output=True, timeout=60).returncode == 0


def test_colab_only_lines_and_earlier_exports_become_what_runs_in_a_job():
    source = ("from google.colab import drive\n"
              "drive.mount('/content/drive')\n"
              "if True:\n"
              "    %to_sagemaker ml.g5.xlarge --local\n"
              "import colabkit\n"
              "colabkit.to_sagemaker('ml.g5.xlarge',\n"
              "                      local=True)\n"
              "x = 1")
    _, cell = split_installs(Cell(3, source))
    lines = cell.source.splitlines()
    assert lines[0] == "pass  # colabkit: Colab only, was from google.colab import drive"
    assert lines[1] == "import colabkit; colabkit.mount()  # colabkit: was drive.mount('/content/drive')"
    assert lines[3] == "    pass  # colabkit: the export does not run in the job, was %to_sagemaker ml.g5.xlarge --local"
    assert lines[5].startswith("pass  # colabkit: the export") and lines[6].startswith("# ")
    assert lines[7] == "x = 1"
    compile(TransformerManager().transform_cell(cell.source), "cell", "exec")  # still valid Python


def test_drive_paths_are_the_existing_files_the_cells_name(tmp_path):
    from colabkit.sagemaker.convert import drive_paths

    mount = tmp_path / "drive"
    (mount / "MyDrive" / "data").mkdir(parents=True)
    (mount / "MyDrive" / "data" / "a.csv").write_text("1")
    (mount / "MyDrive" / "b.txt").write_text("2")
    cells = [Cell(1, f"df = open('{mount}/MyDrive/data/a.csv')\nopen('{mount}/MyDrive/missing.csv')"),
             Cell(2, f"DATA = '{mount}/MyDrive/data'\n!ls {mount}/MyDrive\nb = '{mount}/MyDrive/b.txt'")]
    assert drive_paths(cells, str(mount)) == [mount / "MyDrive" / "data", mount / "MyDrive" / "b.txt"]

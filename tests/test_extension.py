"""`%load_ext colabkit` as every notebook pays for it: light, and clean to unload and load again."""

import json
import subprocess
import sys

from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

HEAVY = ("boto3", "botocore", "torch", "ipywidgets", "nbformat", "psutil", "pynvml")


def test_load_ext_imports_nothing_heavy():
    probe = (
        "import sys, json\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "ip = InteractiveShell.instance()\n"
        "ip.run_line_magic('load_ext', 'colabkit')\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []


def test_unload_and_load_again_keeps_the_magics_working(state_dir):
    ip = InteractiveShell.instance()
    for _ in range(3):
        ip.run_line_magic("load_ext", "colabkit")
        with capture_output() as out:
            ip.run_cell("%gpuwatch --once")
            ip.run_cell("%mount?")
        assert "CPU" in out.stdout and "--to" in out.stdout
        ip.run_line_magic("unload_ext", "colabkit")
        assert "gpuwatch" not in ip.magics_manager.magics["line"]

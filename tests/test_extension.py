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


def test_unload_and_load_again_keeps_the_magics_working():
    ip = InteractiveShell.instance()
    for _ in range(3):
        ip.run_line_magic("load_ext", "colabkit")
        with capture_output() as out:
            ip.run_cell("%gpuwatch --once")
            ip.run_cell("%mount?")
        assert "CPU" in out.stdout and "--to" in out.stdout
        ip.run_line_magic("unload_ext", "colabkit")
        assert "gpuwatch" not in ip.magics_manager.magics["line"]


def test_every_public_name_is_what_it_says_after_every_submodule_is_imported():
    """`colabkit.watch` was once shadowed by the submodule colabkit/watch.py once it was imported."""
    import importlib
    import pkgutil

    import colabkit

    for module in pkgutil.walk_packages(colabkit.__path__, "colabkit."):
        # The job's entry point runs as a script; a framework adapter imports its framework, so it is
        # loaded only once the notebook has imported that framework.
        if not module.name.endswith(".entry") and ".adapters." not in module.name:
            importlib.import_module(module.name)
    for name in colabkit.__all__:
        defined = getattr(importlib.import_module(f"colabkit.{colabkit._API[name]}"), name)
        assert getattr(colabkit, name) is defined, name
    assert callable(colabkit.watch) and callable(colabkit.mount) and callable(colabkit.resumable)

"""Inside the job: the exported cells run as Colab runs them, and what they wrote comes back.

- Cells run in order in one IPython shell; a cell that raises ends the job, named with its line.
- A `!` command that exits non-zero fails its cell and the job (on Colab it scrolls by unseen, and
  a crashed `!python train.py` would end as a green job); a notebook that wants to go on writes
  `|| true`, as on a terminal. `%%bash` cells already raise CalledProcessError.
- `/content` is the working folder, so hard-coded Colab paths work. In a real job it is /content
  itself; where the job runs on someone's machine (--local, the tests) it is a folder of the job
  (COLABKIT_CONTENT) and `/content` in the cells' text leads there.
- The secrets given with --secret are read before the first cell (job_secrets.py) into the
  environment, where os.environ[NAME], userdata.get(NAME) and the libraries' logins find them.
- `google.colab` is a stand-in (colab_standin.py); input() and getpass() fail at once: a job has
  nobody to answer, and a prompt would hang it until its time runs out.
- Tracebacks and logs are plain text (no colour codes in CloudWatch or output/failure), a print
  is one log line, and
  `%matplotlib inline` works (figures are drawn, not shown: there is no screen).
- At the end, success or not, the files the cells wrote under the working folder are copied to
  the model folder (SM_MODEL_DIR/content/...), which SageMaker uploads as model.tar.gz, by the
  rule in `results.py`.
"""

from __future__ import annotations

import builtins
import getpass
import json
import os
import re
import sys
import time
import traceback
from pathlib import Path

from ..units import format_clock
from . import colab_standin, job_secrets, results

NOTEBOOK_CONTENT = "/content"
_CONTENT_PATH = re.compile(r"(?<![\w.:/~-])/content(?=/|\b)")


class CommandFailed(RuntimeError):
    """A `!` command of the notebook exited with a non-zero status."""

    def _render_traceback_(self):
        # IPython shows these lines instead of a traceback through the runner's own code.
        return [f"CommandFailed: {self}"]


def _nobody_answers(what: str):
    def refuse(*args, **kwargs):
        raise EOFError(f"{what} waits for someone to type an answer, and a job has nobody to answer. Give the "
                       "value in the code or the job's environment instead (see the export's report).")

    return refuse


def _fail_on_command_errors(shell) -> None:
    system = shell.system

    def checked(command, *args, **kwargs):
        system(command, *args, **kwargs)
        status = shell.user_ns.get("_exit_code", 0)
        if status:
            raise CommandFailed(f"the command `!{command.strip()}` exited with status {status}. In the job a failed "
                                "command fails the cell; end it with `|| true` if the notebook should go on.")

    shell.system = checked


def _cell_line(error: BaseException, execution_count: int) -> int | None:
    """The line of the cell (the statement it was running) where `error` came from."""
    cell_file = f"<ipython-input-{execution_count}-"
    for frame, lineno in traceback.walk_tb(error.__traceback__):
        if frame.f_code.co_filename.startswith(cell_file):
            return lineno
    return None


def main(folder: Path) -> int:
    from IPython.core.interactiveshell import InteractiveShell

    cells = json.loads((folder / "cells.json").read_text())
    try:
        given = job_secrets.load()
    except job_secrets.Unavailable as exc:
        print(f"[colabkit] {exc}", file=sys.stderr, flush=True)
        return 1
    if given:
        print(f"[colabkit] secrets given to the job: {', '.join(given)}", flush=True)
    content = Path(os.environ.get("COLABKIT_CONTENT") or NOTEBOOK_CONTENT)
    content.mkdir(parents=True, exist_ok=True)
    moved = str(content) != NOTEBOOK_CONTENT

    def to_job_path(path: str) -> str:
        return _CONTENT_PATH.sub(str(content), path) if moved else path

    model_dir = Path(os.environ.get("SM_MODEL_DIR", folder / "model"))
    os.chdir(content)
    drive_channel = os.environ.get("SM_CHANNEL_DRIVE")
    colab_standin.install(content, model_dir, drive_channel, to_job_path)
    if drive_channel and os.environ.get("COLABKIT_DRIVE_MOUNT"):  # Drive paths work even with no mount cell
        sys.modules["google.colab.drive"].mount(os.environ["COLABKIT_DRIVE_MOUNT"])
    builtins.input = _nobody_answers("input()")
    getpass.getpass = _nobody_answers("getpass()")
    for stream in (sys.stdout, sys.stderr):
        # Whole lines: the toolkit logs what it reads as it reads it, and an unbuffered print("a", 1)
        # would reach CloudWatch as three lines.
        stream.reconfigure(line_buffering=True, write_through=False)
    os.environ.setdefault("NO_COLOR", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")  # figures are drawn to files, never to a screen
    shell = InteractiveShell.instance(colors="nocolor" if _ipython_major() >= 9 else "NoColor")
    shell.enable_gui = lambda gui=None: None  # `%matplotlib inline` asks for a GUI event loop: a job has none
    _fail_on_command_errors(shell)
    status, started, last = 0, time.monotonic(), max((cell["number"] for cell in cells), default=0)
    try:
        for cell in cells:
            print(f"[colabkit] running cell {cell['number']} of {last}, "
                  f"{format_clock(time.monotonic() - started)} so far", flush=True)
            source = to_job_path(cell["source"])
            result = shell.run_cell(source, store_history=True)
            if not result.success:
                error = result.error_in_exec or result.error_before_exec
                line = _cell_line(error, shell.execution_count - 1)
                where = f"cell {cell['number']}" + (f", line {line}" if line else "")
                print(f"[colabkit] {where} failed with {type(error).__name__}: {error}\n"
                      f"--- cell {cell['number']} ---\n{cell['source']}\n---", file=sys.stderr, flush=True)
                status = 1
                break
    finally:
        try:
            status = _finish_checkpoints() or status
        finally:
            kept = results.collect(content, model_dir / results.CONTENT)
            print(results.describe_collected(kept), flush=True)
    return status


def _finish_checkpoints() -> int:
    """Wait for the notebook's last checkpoints; 1 when one is not saved. Left to the exit, a
    failure went unsaid and the job ended green, so the notebook would bring back an older one."""
    from ..checkpoint.checkpointer import close_all

    failures = close_all()
    for failure in failures:
        print(f"[colabkit] the job's last checkpoint failed: {failure}", file=sys.stderr, flush=True)
    return 1 if failures else 0


def _ipython_major() -> int:
    import IPython

    return int(IPython.__version__.split(".")[0])

"""The job's entry point: runs the exported notebook cells in order under an IPython shell.

Copied into the job's source folder as entry.py (SageMaker's `sagemaker_program`). Magics and
`!` commands work as in the notebook. A cell that raises ends the job with a non-zero exit, and
the error names the cell's number and shows its source. Drive paths the notebook read
(/content/drive/...) lead to the job's "drive" input channel.
"""

import json
import os
import sys
from pathlib import Path


def link_drive() -> None:
    mount, channel = os.environ.get("COLABKIT_DRIVE_MOUNT"), os.environ.get("SM_CHANNEL_DRIVE")
    if not mount or not channel or os.path.lexists(mount):
        return  # no Drive files, or a real Drive (a --local run on Colab)
    try:
        os.makedirs(os.path.dirname(mount), exist_ok=True)
        os.symlink(channel, mount)
    except OSError as exc:
        print(f"[colabkit] could not make {mount} lead to the Drive files in {channel} ({exc})", flush=True)


def main() -> int:
    from IPython.core.interactiveshell import InteractiveShell

    cells = json.loads(Path(__file__).with_name("cells.json").read_text())
    link_drive()
    shell = InteractiveShell.instance()
    for cell in cells:
        print(f"[colabkit] running cell {cell['number']}", flush=True)
        result = shell.run_cell(cell["source"], store_history=True)
        if not result.success:
            error = result.error_in_exec or result.error_before_exec
            print(f"[colabkit] cell {cell['number']} failed with {type(error).__name__}: {error}\n"
                  f"--- cell {cell['number']} ---\n{cell['source']}\n---", file=sys.stderr, flush=True)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

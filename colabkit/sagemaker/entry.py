"""The job's entry point: runs the exported notebook cells in order under an IPython shell.

Copied into the job's source folder as entry.py (SageMaker's `sagemaker_program`). Magics and
`!` commands work as in the notebook. A cell that raises ends the job with a non-zero exit, and
the error names the cell's number and shows its source.
"""

import json
import sys
from pathlib import Path


def main() -> int:
    from IPython.core.interactiveshell import InteractiveShell

    cells = json.loads(Path(__file__).with_name("cells.json").read_text())
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

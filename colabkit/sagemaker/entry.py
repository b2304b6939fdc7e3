"""The job's entry point (SageMaker's `sagemaker_program`): runs the exported cells.

Copied into the job's source folder as entry.py. The job installs its own colabkit wheel from
requirements.txt before this runs, so the work is colabkit.sagemaker.runner's.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    from colabkit.sagemaker import runner

    sys.exit(runner.main(Path(__file__).resolve().parent))

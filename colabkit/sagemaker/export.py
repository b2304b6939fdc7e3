"""`%to_sagemaker`: capture the notebook's run, convert it, and run it as a SageMaker job.

Where it is written: <storage>/sagemaker/<job name>/source (the job's source folder) and, with
local=True, <storage>/sagemaker/<job name>/local (the /opt/ml stand-in it ran in).
"""

from __future__ import annotations

import time

from ..errors import ColabkitError
from . import capture, convert, local, secrets, validate


def _notebook_store():
    """The checkpoint store the job should start from: the active %checkpoint's, else the default."""
    from .. import storage
    from ..checkpoint import session
    from ..checkpoint.store import CheckpointStore

    active = session.active()
    if active is not None:
        active.wait()  # a save in flight is part of the run
        return active.store
    folder = (storage.current() or storage.mount()) / "checkpoints"
    return CheckpointStore(folder) if folder.is_dir() else None


def to_sagemaker(instance_type: str, run_local: bool = False, all_cells: bool = False,
                 allow_secrets: tuple[str, ...] = (), shell=None, calling_source: str | None = None,
                 echo=print) -> local.LocalRun:
    """Export this notebook's run (cells up to the calling one) and run it; see the module doc."""
    from .. import storage

    validate.instance_type(instance_type)
    if not run_local:
        raise ColabkitError(
            "Submitting the job to SageMaker is not available in this colabkit version yet. Run "
            f"%to_sagemaker {instance_type} --local to build the export and run it on this machine as "
            "SageMaker would.")
    captured = capture.capture(shell, calling_source, all_cells)
    if not captured.cells:
        raise ColabkitError("There are no code cells to export before this one.")
    secrets.check(captured.cells, allow_secrets)
    name = validate.job_name_for(captured.name, time.time())
    folder = (storage.current() or storage.mount()) / "sagemaker" / name
    source = convert.convert(captured.cells, folder / "source")
    echo(f"[colabkit] exported {len(captured.cells)} cell(s) from {captured.origin} to {source.path}"
         + (f"; requirements: {', '.join(source.requirements)}" if source.requirements else ""))
    return local.run(source, _notebook_store(), folder / "local", name, echo=echo)

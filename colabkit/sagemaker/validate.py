"""Checks made offline, from botocore's own SageMaker service model, before anything is sent.

botocore validates only required fields, unknown keys, types and minimums; it does not check the
instance type's enum or the job name's pattern, so colabkit does, with the same model.
"""

from __future__ import annotations

import difflib
import functools
import re

from ..errors import ColabkitError


@functools.lru_cache(maxsize=1)
def _model():
    import botocore.session  # only when exporting: it costs ~0.4 s

    return botocore.session.get_session().get_service_model("sagemaker")


def instance_type(name: str) -> str:
    known = _model().shape_for("TrainingInstanceType").enum
    if name in known:
        return name
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else " Training types look like ml.g5.xlarge."
    raise ColabkitError(f"{name!r} is not a SageMaker training instance type.{hint}")


def job_name(name: str) -> str:
    shape = _model().shape_for("TrainingJobName")
    pattern, longest = shape.metadata["pattern"], shape.metadata["max"]
    if len(name) > longest or not re.fullmatch(pattern, name):
        raise ColabkitError(f"{name!r} can't name a SageMaker training job: use up to {longest} letters, "
                            "digits and hyphens, starting with a letter or digit.")
    return name


def slug(notebook: str) -> str:
    """The notebook's name in letters, digits and hyphens, for job names and S3 prefixes."""
    return re.sub(r"[^A-Za-z0-9]+", "-", notebook).strip("-").lower() or "notebook"


def job_name_for(notebook: str, when: float) -> str:
    """colabkit-<notebook>-<UTC time>-<4 random hex digits>, trimmed and cleaned to the job-name
    pattern: two exports in the same second get two names (and two folders)."""
    import secrets
    import time

    stamp = f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime(when))}-{secrets.token_hex(2)}"
    stem = slug(notebook)
    return job_name(f"colabkit-{stem[:63 - len('colabkit--') - len(stamp)]}-{stamp}".replace("--", "-"))

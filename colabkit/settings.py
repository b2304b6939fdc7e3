"""Every environment variable colabkit reads, with what it means: the one place to look them up.

Options given to a magic or function win over these; these win over colabkit's defaults.
"""

from __future__ import annotations

import os

SETTINGS = {
    "COLABKIT_TIER": "Your Colab tier (free, pro, pro+): the session cap can't be read from inside.",
    "COLABKIT_IDLE_TIMEOUT": "An idle-disconnect limit to count down, e.g. 90m (no platform documents one).",
    "COLABKIT_NOTEBOOK": "This notebook's name, where the frontend doesn't say it (nbclient, papermill): "
                         "storage and checkpoints are kept per notebook name.",
    "COLABKIT_SAGEMAKER_ROLE": "The IAM role SageMaker jobs run as (what --role gives).",
    "COLABKIT_CONFIG": "Another path for ~/.config/colabkit/sagemaker.json ({role, bucket, region}).",
    "COLABKIT_DRIVE_MOUNT": "Inside an exported job: where the notebook mounted Google Drive.",
}


def get(name: str, environ=None) -> str | None:
    """The setting's value, None when unset or empty."""
    assert name in SETTINGS, name  # a setting read here must be documented above
    value = (os.environ if environ is None else environ).get(name)
    return value or None
